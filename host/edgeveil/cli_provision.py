"""`edgeveil provision`: keys and policy to one board or a jig of them, recorded in the
registry (edgeveil.provision, and edgeveil.factory for --factory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .cli_common import (
    KEY_FILE_OPTION,
    PORTS_OPTION,
    REGISTRY_OPTION,
    need_one_port,
    open_registry,
    run_on_ports,
)


@click.command("provision")
@click.option("--port", help="one board's serial port")
@PORTS_OPTION
@click.option(
    "--board",
    help="board file name (default: the one that fits what the device reports; "
    "esp32-generic with --factory); a board file that does not fit is refused",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="privacy policy TOML (default: the embedded default policy)",
)
@click.option("--force", is_flag=True, help="replace the keys of a device already provisioned")
@click.option(
    "--resume",
    "do_resume",
    is_flag=True,
    help="settle this port's pending registry entries: complete them or roll them back",
)
@click.option(
    "--factory",
    is_flag=True,
    help="blank board: firmware, an NVS image of the keys and a littlefs image of the code "
    "in one esptool pass (needs --firmware)",
)
@click.option(
    "--firmware",
    "firmware_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="with --factory: the MicroPython firmware file",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="with --factory: also keep each device's nvs.bin, vfs.bin and flash_args in "
    "DIR/<dev_id>/ (owner-only: the NVS image holds its keys)",
)
@REGISTRY_OPTION
@KEY_FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="machine-readable report on stdout")
def provision_cmd(
    port: str | None,
    ports_spec: str | None,
    board: str | None,
    policy_file: Path | None,
    force: bool,
    do_resume: bool,
    factory: bool,
    firmware_path: Path | None,
    out_dir: Path | None,
    registry_path: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Give a device its keys and signed policy (NVS namespace "veil"); record it.

    Two-phase: the registry records the new device as pending before anything reaches the
    board; the secrets and the policy (authenticated for this device) are written to NVS,
    read back and compared, and only then is the entry made active. A run killed anywhere
    leaves no device, or a pending entry that `--resume` completes (when any of its keys
    reached the board) or rolls back (when none did); never a board whose keys the
    registry lacks. Each entry records the board's MAC, and --resume settles only the
    entries of the board that answers on the port, wherever it was provisioned. No secret
    is printed.

    With --factory the board needs no MicroPython yet: the firmware, an NVS partition image
    holding the keys and a littlefs image of the deployed code are written in one esptool
    pass, verified, and the NVS partition read back before the entry is made active. A
    factory run cut off mid-write is settled with --factory --firmware F --resume, through
    the chip's ROM loader (the board need not boot): the pending entries recorded with
    that chip's MAC are completed (written again, the board's counter and budget kept) if
    any of their keys reached the NVS partition, else rolled back.

    \b
    Examples:
      edgeveil init                                   # once: registry and master key
      edgeveil provision --port /dev/ttyUSB0 --policy shop.toml
      edgeveil provision --ports auto --policy shop.toml --json
      edgeveil provision --port /dev/ttyUSB0 --policy shop.toml --resume
      edgeveil provision --factory --firmware fw.bin --port /dev/ttyUSB0 --out images/
      edgeveil provision --factory --firmware fw.bin --port /dev/ttyUSB0 --resume
    """
    from .boards import load_board
    from .factory import provision_factory, resume_factory
    from .link import open_link
    from .policy import compile_policy, default_policy, load_policy_file
    from .provision import ResumeReport, provision, resume_board

    need_one_port(port, ports_spec)
    if out_dir and do_resume:
        raise click.UsageError("--resume settles pending entries; it takes no --out")
    if factory != (firmware_path is not None) or (out_dir and not factory):
        raise click.UsageError("--factory needs --firmware F.bin (and --out only goes with it)")
    b = load_board(board) if board else None
    policy = load_policy_file(policy_file) if policy_file else default_policy()

    from .registry import Registry

    group = click.get_current_context().find_object(dict) or {}  # read here: click's
    reg_path = registry_path or group.get("registry_path")  # context is per thread
    key_path = key_file or group.get("key_file")
    open_registry(reg_path, key_path).close()  # fails early; says so if it upgrades it

    def work(p: str, progress: Any) -> Any:
        if factory:
            assert firmware_path is not None
            with Registry.open(reg_path, key_path=key_path) as reg:
                if do_resume:
                    settled = resume_factory(
                        p, b or load_board("esp32-generic"), reg, policy, firmware_path,
                        write_progress=progress,
                    )  # fmt: skip
                    return ResumeReport(p, settled)
                return provision_factory(
                    p, b or load_board("esp32-generic"), reg, policy, firmware_path,
                    out_dir=out_dir, write_progress=progress, force=force,
                )  # fmt: skip
        with Registry.open(reg_path, key_path=key_path) as reg, open_link(p) as link:
            if do_resume:
                blob_of = lambda s: compile_policy(policy, s.dev_id, s.policy_key)  # noqa: E731
                return ResumeReport(p, resume_board(link, reg, blob_of, p))
            return provision(link, b, reg, policy, p, force=force)

    # The one long step of a single board is --factory's esptool pass: its bar.
    run_on_ports("provision", port, ports_spec, work, as_json, bar_label=f"factory {port}")
