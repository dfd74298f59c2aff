"""The `edgeveil` command line: a thin layer over the library.

Commands live here and in cli_*.py (one module per larger command), added to `cli` below.

Exit codes: 0 success, 1 findings (verify), 2 edgeveil refused or could not do the work
(bad input, missing tool; the message says which), 3 internal error (a bug: please report).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_common import KEY_FILE_OPTION, REGISTRY_OPTION, open_registry
from .errors import EdgeveilError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeveil")
def cli() -> None:
    """edgeveil: keep personal data on the device, and prove it.

    \b
    Examples:
      edgeveil demo                 the footfall scenario on a virtual board, verified
      edgeveil boards               list the boards edgeveil knows
      edgeveil vboard start --flash board.img --firmware
                                    a virtual ESP32 for mpremote, ampy and esptool
      edgeveil capture --serial /dev/ttyUSB0 -o run.capture
      edgeveil verify --capture run.capture --canaries crowd.jsonl
    """


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("edgeveil-demo"),
    show_default=True,
    help="directory for the replay, registry, capture, reports and picture",
)
@click.option("--phones", default=60, show_default=True, help="phones in the crowd")
@click.option("--minutes", default=60, show_default=True, help="length of the replay")
@click.option("--seed", default=7, show_default=True, help="seed of the crowd")
@click.option(
    "--vm-only",
    is_flag=True,
    help="only the device pipeline in the MicroPython VM, no virtual board (seconds)",
)
@click.option("--board", default="esp32-generic", show_default=True, help="with --vm-only: heap")
@click.pass_context
def demo(
    ctx: click.Context,
    out_dir: Path,
    phones: int,
    minutes: int,
    seed: int,
    vm_only: bool,
    board: str,
) -> None:
    """The footfall scenario on a virtual board, verified: did any raw address leave it?

    A crowd of phones passes a shop's BLE scanner. A virtual ESP32 is flashed (esptool),
    the device code deployed, keys and the default policy provisioned; the board reports
    per 5-minute window over serial; the capture is verified (authenticity, policy, leak
    scan for every address in every encoding, noise statistics). Prints the verdict and
    writes OUT/footfall.png (true versus reported visitors), OUT/verify.json and
    OUT/verify.xml. Exit status as `edgeveil verify`: 0 PASS, 1 findings, 2 could not verify.

    \b
    Examples:
      edgeveil demo                          about 15 s
      edgeveil demo --phones 200 --minutes 120 --out /tmp/shop
      edgeveil demo --vm-only                the pipeline alone, decoded
    """
    if vm_only:
        from .demo import run_demo

        run_demo(board, out=sys.stdout)
        return
    from .scenario import run_footfall

    result = run_footfall(out_dir, seed=seed, phones=phones, minutes=minutes, out=sys.stdout)
    (out_dir / "verify.json").write_text(result.report.dumps())
    (out_dir / "verify.xml").write_text(result.report.to_junit())
    click.echo(result.report.summary(), nl=False)
    shown = [(t, v) for _, t, v in result.rows]
    click.echo(
        "visitors per window, true -> reported (-: not sent): "
        + ", ".join(f"{t}->{'-' if v is None else v}" for t, v in shown)
    )
    click.echo(f"picture: {result.picture}")
    ctx.exit(result.report.exit_code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="every field of every board, as JSON")
def boards(as_json: bool) -> None:
    """List the boards in boards/: chip, flash, firmware offset, mpy arch, heap.

    A malformed board file stops the listing with the file and the field named.
    """
    from .boards import list_boards

    found = list_boards()
    if as_json:
        click.echo(json.dumps([b.as_json() for b in found], indent=2))
        return
    for b in found:
        click.echo(
            f"{b.name:<16} {b.chip:<8} flash {b.flash_size >> 20:>2} MiB at "
            f"{hex(b.firmware_offset):<6}  mpy {b.mpy_arch:<9} heap {b.heap_bytes // 1024} KiB  "
            f"{b.description}"
        )


@cli.group()
def vboard() -> None:
    """Virtual ESP32 boards: the real MicroPython VM behind a serial port.

    A virtual board serves a pseudo-terminal (use it as you would /dev/ttyUSB0) and an
    RFC 2217 port (rfc2217://127.0.0.1:PORT, which carries DTR/RTS for esptool's resets).
    Its flash is one file laid out like the board's: partition table, NVS, app, and a
    littlefs `vfs` partition mounted at `/`. A blank flash boots into the ROM's
    invalid-header loop until firmware is written; `--firmware` writes edgeveil's
    labelled virtual MicroPython firmware first.

    \b
    Examples:
      edgeveil vboard start --flash board.img --firmware --detach
      mpremote connect /dev/pts/5 fs ls
      esptool --port /dev/pts/5 flash-id
      edgeveil vboard status
      edgeveil vboard stop
    """


@vboard.command("start")
@click.option(
    "--board",
    default="esp32-virtual",
    show_default=True,
    help="board file name (the virtual variant reports the VM's x64 .mpy arch; any ESP32 "
    "board file with the same layout works)",
)
@click.option(
    "--flash",
    "flash_path",
    type=click.Path(path_type=Path),
    required=True,
    help="flash image file; created blank (erased) if missing",
)
@click.option(
    "--firmware",
    "with_firmware",
    is_flag=True,
    help="write edgeveil's virtual MicroPython firmware into the image first",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="raw-event replay for the emulated peripherals (docs/vboard-replay.md)",
)
@click.option(
    "--speed",
    default=1,
    show_default=True,
    help="replay speed factor; 0 = as fast as the VM can go",
)
@click.option("--name", default="vboard0", show_default=True, help="name for status/stop")
@click.option("--mac", default="240ac4000001", show_default=True, help="base MAC, 12 hex digits")
@click.option("--rfc2217-port", default=0, show_default=True, help="TCP port; 0 picks a free one")
@click.option("--no-rfc2217", is_flag=True, help="serve only the pseudo-terminal")
@click.option("--detach", is_flag=True, help="run in the background and return")
@click.option("--json", "as_json", is_flag=True, help="print the board's ports as JSON")
def vboard_start(
    board: str,
    flash_path: Path,
    with_firmware: bool,
    replay: Path | None,
    speed: int,
    name: str,
    mac: str,
    rfc2217_port: int,
    no_rfc2217: bool,
    detach: bool,
    as_json: bool,
) -> None:
    """Start a virtual board; print its serial port; run until stopped (Ctrl-C)."""
    from .boards import load_board
    from .vboard import runner
    from .vboard.board import BoardSpec

    try:
        mac_bytes = bytes.fromhex(mac)
    except ValueError:
        mac_bytes = b""
    if len(mac_bytes) != 6:
        raise click.BadParameter("need 12 hex digits, got %r" % mac, param_hint="--mac")
    spec = BoardSpec(
        board=load_board(board),
        flash=flash_path.resolve(),
        mac=mac_bytes,
        replay=replay.resolve() if replay else None,
        speed=speed,
        rfc2217_port=None if no_rfc2217 else rfc2217_port,
    )
    runner.prepare_flash(spec.flash, spec.board, with_firmware)

    def show(info: runner.BoardInfo) -> None:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(info)))
        else:
            click.echo(
                "%s: serial port %s%s  (flash %s, pid %d)"
                % (
                    info.name,
                    info.port,
                    ", " + info.rfc2217 if info.rfc2217 else "",
                    info.flash,
                    info.pid,
                )
            )
        sys.stdout.flush()

    if detach:
        show(runner.spawn(spec, name))
    else:
        runner.run_foreground(spec, name, ready=show)


@vboard.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def vboard_status(as_json: bool) -> None:
    """List running virtual boards and their ports."""
    from .vboard import runner

    boards = runner.list_boards()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(b) for b in boards]))
        return
    if not boards:
        click.echo("no virtual boards running")
    for b in boards:
        click.echo("%-12s %-14s %-28s %s" % (b.name, b.port, b.rfc2217 or "-", b.flash))


@vboard.command("stop")
@click.argument("names", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="stop every running virtual board")
def vboard_stop(names: tuple[str, ...], stop_all: bool) -> None:
    """Stop virtual boards by name (default: vboard0)."""
    from .vboard import runner

    targets = [b.name for b in runner.list_boards()] if stop_all else list(names) or ["vboard0"]
    for n in targets:
        info = runner.stop(n)
        click.echo("stopped %s (%s)" % (info.name, info.port))


@vboard.command("firmware")
@click.option("--board", default="esp32-virtual", show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def vboard_firmware(board: str, out: Path) -> None:
    """Write edgeveil's labelled virtual MicroPython firmware (for esptool write-flash).

    It runs only on the virtual board. Write it at the board's firmware offset:
    esptool --port PORT write-flash 0x1000 FILE
    """
    from .boards import load_board
    from .vboard import firmware

    b = load_board(board)
    out.write_bytes(firmware.build_firmware(b))
    click.echo(
        "wrote %s (%d bytes); write it at 0x%x" % (out, out.stat().st_size, b.firmware_offset)
    )


# --- registry (edgeveil init, edgeveil registry ...) ---


@cli.command("init")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def init_cmd(registry_path: Path | None, key_file: Path | None) -> None:
    """Create a device registry and its master key (refuses to overwrite either).

    The master key is 32 random bytes written to a new file only you can read (mode 0600),
    by default next to the database as <registry>.key; or, if EDGEVEIL_MASTER_KEY is set
    (64 hex digits), that key and no file. Back the key up apart from the database: without
    it the devices' keys cannot be recovered.

    \b
    Examples:
      edgeveil init                          ./edgeveil-registry.db and its .key
      edgeveil init --registry /srv/edgeveil/fleet.db --key-file /secure/fleet.key
      EDGEVEIL_MASTER_KEY=$(cat fleet.key.hex) edgeveil init --registry fleet.db
    """
    import os

    from .registry_db import init_registry
    from .registry_keys import ENV_MASTER_KEY, default_key_path

    db = init_registry(registry_path, key_file)
    if key_file is None and os.environ.get(ENV_MASTER_KEY):
        where = f"from {ENV_MASTER_KEY} (not written anywhere)"
    else:
        where = f"{key_file or default_key_path(db)} (mode 0600): back it up"
    click.echo(f"created registry {db}\nmaster key: {where}")


@cli.group("registry")
@REGISTRY_OPTION
@KEY_FILE_OPTION
@click.pass_context
def registry_group(ctx: click.Context, registry_path: Path | None, key_file: Path | None) -> None:
    """The device registry: devices, their status, and their keys wrapped under a master key.

    Keys are never printed. `export --format cose-key --include-secrets` is the one way a
    backend gets them. --registry and --key-file go here or on each command; the master
    key may instead come from EDGEVEIL_MASTER_KEY. list and show need no master key.

    \b
    Examples:
      edgeveil registry list --status active
      edgeveil registry --registry fleet.db show 3f9a0c12d4e5b6a7 --json
      edgeveil registry revoke 3f9a0c12d4e5b6a7
      edgeveil registry export --format cose-key --include-secrets -o backend-keys.cbor
      edgeveil registry export --format json | jq '.devices[].dev_id'
    """
    ctx.ensure_object(dict).update(registry_path=registry_path, key_file=key_file)


def _show_record(rec: Any) -> None:
    for name, value in rec.to_json().items():
        if isinstance(value, bool):
            value = "yes" if value else "NO: no master key, nothing vouches for these values"
        click.echo(f"{name + ':':<13} {'-' if value is None else value}")


_UNAUTHENTICATED = "metadata NOT authenticated: no master key (rows read without their tags)"


@registry_group.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "active", "revoked", "wiped"]),
    help="only devices with this status",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_list(
    status: str | None, as_json: bool, registry_path: Path | None, key_file: Path | None
) -> None:
    """List devices (no secrets), oldest first."""
    with open_registry(registry_path, key_file) as reg:
        recs = reg.list(status)
        authenticated = reg.has_key
    if as_json:
        click.echo(json.dumps([r.to_json() for r in recs], indent=2))
        return
    if not recs:
        click.echo("no devices" + (f" with status {status}" if status else ""))
    else:
        head = f"{'DEV_ID':<17} {'BOARD':<16} {'STATUS':<8} {'COUNTER':>8}  {'PORT':<14} UPDATED"
        click.echo(head)
    for r in recs:
        counter = "-" if r.last_counter is None else str(r.last_counter)
        click.echo(
            f"{r.dev_id.hex():<17} {r.board:<16} {r.status:<8} {counter:>8}  "
            f"{r.port or '-':<14} {r.updated_at}"
        )
    if not authenticated:
        click.echo(_UNAUTHENTICATED)


@registry_group.command("show")
@click.argument("dev_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_show(
    dev_id: str, as_json: bool, registry_path: Path | None, key_file: Path | None
) -> None:
    """Show one device (DEV_ID in hex): board, status, hashes, last counter. No secrets."""
    with open_registry(registry_path, key_file) as reg:
        rec = reg.get(dev_id)
    if as_json:
        click.echo(json.dumps(rec.to_json(), indent=2))
    else:
        _show_record(rec)


@registry_group.command("revoke")
@click.argument("dev_id")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_revoke(dev_id: str, registry_path: Path | None, key_file: Path | None) -> None:
    """Revoke a device: its keys are no longer exported and its messages not accepted."""
    with open_registry(registry_path, key_file) as reg:
        before = reg.get(dev_id).status
        reg.revoke(dev_id)
    click.echo(f"revoked {dev_id.lower()}" + (f" (was {before})" if before != "revoked" else ""))


@registry_group.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cose-key", "json"]),
    required=True,
    help="cose-key: CBOR array of COSE_Key (needs --include-secrets); json: metadata",
)
@click.option(
    "--include-secrets",
    is_flag=True,
    help="include each active device's COSE key and Base IV (never the pseudonym key)",
)
@click.option("--device", "devices", multiple=True, help="only this DEV_ID (repeatable)")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="write here (a new file, mode 0600 with secrets) instead of stdout",
)
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_export(
    fmt: str,
    include_secrets: bool,
    devices: tuple[str, ...],
    output: Path | None,
    registry_path: Path | None,
    key_file: Path | None,
) -> None:
    """Export devices for a backend: keys only when asked for explicitly.

    With --include-secrets only active devices are exported, to a new file (created with
    mode 0600, never overwritten) or a pipe; keys are never written to a terminal.

    \b
    Examples:
      edgeveil registry export --format cose-key --include-secrets -o keys.cbor
      edgeveil registry export --format json --include-secrets | backend-import
      edgeveil registry export --format json -o fleet.json
    """
    from .errors import RegistryError
    from .registry_export import export_cose_keys, export_json
    from .registry_keys import write_exclusive

    if fmt == "cose-key" and not include_secrets:
        raise click.UsageError("--format cose-key holds keys: add --include-secrets")
    to_stdout = output is None or str(output) == "-"
    if to_stdout and (include_secrets or fmt == "cose-key") and sys.stdout.isatty():
        raise RegistryError("refusing to write keys to a terminal: use -o FILE or a pipe")
    with open_registry(registry_path, key_file) as reg:
        selected = list(devices) or None
        if fmt == "cose-key":
            data = export_cose_keys(reg, selected, include_secrets=True)
        else:
            data = export_json(reg, selected, include_secrets=include_secrets)
    if to_stdout:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif include_secrets:
        assert output is not None
        write_exclusive(output, data, "export file")
        click.echo(f"wrote {output} (mode 0600): device keys, handle as a secret", err=True)
    else:
        assert output is not None
        output.write_bytes(data)
        click.echo(f"wrote {output}", err=True)


# --- end registry ---


# --- flash (edgeveil flash) ---


class _ByteBar:
    """A click progress bar on stderr for one board, sized on its first update; nothing
    when stderr is not a terminal."""

    def __init__(self, label: str) -> None:
        self.label, self.at = label, 0
        self.bar: Any = None

    def update(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.at)
        self.at = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


# Shared by flash, deploy and provision: the jig form of --port.
_PORTS_OPTION = click.option(
    "--ports",
    "ports_spec",
    metavar="P1,P2,...|auto",
    help="many boards in parallel; auto = running virtual boards, /dev/ttyUSB*, /dev/ttyACM*",
)


@cli.command("flash")
@click.option("--board", required=True, help="board file name (see `edgeveil boards`)")
@click.option("--port", help="one board's serial port (/dev/ttyUSB0, rfc2217://host:port)")
@_PORTS_OPTION
@click.option(
    "--firmware",
    "firmware_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="MicroPython firmware: the combined .bin MicroPython ships, or an app image",
)
@click.option("--erase", is_flag=True, help="erase the whole flash first (keys and files too)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report on stdout")
def flash_cmd(
    board: str,
    port: str | None,
    ports_spec: str | None,
    firmware_path: Path,
    erase: bool,
    as_json: bool,
) -> None:
    """Write MicroPython firmware to one board or many, verify it, and reset.

    The file is checked before any port is opened: an ESP32-family image for the board's
    chip, with an app descriptor and the board file's partition table. A file for another
    chip is refused before anything is erased, and so is a board whose chip (as esptool
    detects it) is not the board file's. Only the bootloader, partition table and app are
    written and each is MD5-verified by the chip: the NVS partition (the device's keys)
    and the filesystem survive a reflash unless --erase.

    With --ports the boards are flashed in parallel, with a progress line each and then a
    table; one failing does not stop the others. Exit code 0 if every board was flashed,
    2 if one was refused or failed (the table and the last line on stderr name it).

    \b
    Examples:
      desk, one board:
        edgeveil flash --board esp32-generic --port /dev/ttyUSB0 --firmware ESP32_GENERIC.bin
      start from a blank chip (erases keys and files too):
        edgeveil flash --board esp32-generic --port /dev/ttyUSB0 --firmware fw.bin --erase
      jig, many boards at once:
        edgeveil flash --board esp32s3-generic --ports /dev/ttyUSB0,/dev/ttyUSB1 --firmware fw.bin
        edgeveil flash --board esp32-virtual --ports auto --firmware fw.bin --json
    """
    from .boards import load_board
    from .flash import load_firmware, write_firmware

    if (port is None) == (ports_spec is None):
        raise click.UsageError("give either --port P or --ports P1,P2,...|auto")
    b = load_board(board)
    load_firmware(firmware_path, b)  # a wrong file is refused once, before any port
    if port is not None:
        bar = _ByteBar(f"flash {port}")
        try:
            report = write_firmware(port, b, firmware_path, erase, progress=bar.update)
        finally:
            bar.close()
        click.echo(json.dumps(report.as_json()) if as_json else f"{port}: {report.summary()}")
        return
    from .fleet import resolve_ports, run_many

    assert ports_spec is not None
    result = run_many(
        resolve_ports(ports_spec),
        lambda p, progress: write_firmware(p, b, firmware_path, erase, progress),
        "flash",
        summary=not as_json,
    )
    if as_json:
        click.echo(json.dumps(result.as_json()))
    result.raise_for_failures()


# --- end flash ---


# --- deploy (edgeveil deploy) ---


@cli.command("deploy")
@click.option("--port", help="one board's serial port (/dev/ttyUSB0, /dev/pts/N, rfc2217://...)")
@_PORTS_OPTION
@click.option(
    "--board",
    help="board file name; the device's .mpy arch must be the board's (default: the device's)",
)
@click.option(
    "--via",
    type=click.Choice(["mpremote", "ampy"]),
    default="mpremote",
    show_default=True,
    help="the library that talks to the board's raw REPL",
)
@click.option(
    "--src",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the MicroPython tree to deploy (default: the project's device/)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable report on stdout")
def deploy_cmd(
    port: str | None,
    ports_spec: str | None,
    board: str | None,
    via: str,
    src: Path | None,
    as_json: bool,
) -> None:
    """Compile device/ for the board and sync it by content hash; print the code hash.

    The tree is compiled with mpy-cross for the .mpy version and architecture the device
    reports. Only files whose SHA-256 differs from what the board holds are sent; the rest
    are copied on the board or kept. The new version is written into the board's spare slot
    (/app/a or /app/b), verified file by file against the host's hashes, and only then made
    current by an atomic rename of /app/current; a deploy interrupted at any point leaves
    the previous version booting. boot.py and main.py are replaced by a small loader.
    The printed code hash identifies the deployed code; the registry records it.

    With --ports the boards are deployed in parallel, with a progress line each and then a
    table; one failing does not stop the others. Exit code 0 if every board was deployed,
    2 if one was refused or failed.

    \b
    Examples:
      desk, one board:
        edgeveil deploy --port /dev/ttyUSB0 --board esp32-generic
      a virtual board, through ampy:
        edgeveil deploy --port /dev/pts/5 --board esp32-virtual --via ampy
      jig, every board attached, for a script:
        edgeveil deploy --ports auto --json | jq -r '.boards[].result.code_hash'
    """
    from .boards import load_board
    from .deploy import DeployReport, deploy
    from .link import open_link

    if (port is None) == (ports_spec is None):
        raise click.UsageError("give either --port P or --ports P1,P2,...|auto")
    b = load_board(board) if board else None

    def work(p: str, progress: Any) -> DeployReport:
        with open_link(p, via) as link:
            return deploy(link, b, src, progress)

    if port is not None:
        bar = _ByteBar(f"deploy {port}")

        def show(done: int, total: int) -> None:
            if total:  # nothing to place: no bar
                bar.update(done, total)

        try:
            report = work(port, show)
        finally:
            bar.close()
        click.echo(json.dumps(report.as_json()) if as_json else f"{port}: {report.summary()}")
        return
    from .fleet import resolve_ports, run_many

    assert ports_spec is not None
    result = run_many(resolve_ports(ports_spec), work, "deploy", summary=not as_json)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    result.raise_for_failures()


# --- end deploy ---


# --- provision (edgeveil provision) ---


@cli.command("provision")
@click.option("--port", help="one board's serial port")
@_PORTS_OPTION
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
    from .fleet import jsonable
    from .link import open_link
    from .policy import compile_policy, default_policy, load_policy_file
    from .provision import ResumeReport, provision, resume_board

    if (port is None) == (ports_spec is None):
        raise click.UsageError("give either --port P or --ports P1,P2,...|auto")
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

    if port is not None:
        bar = _ByteBar(f"factory {port}")  # the one long step: the esptool pass
        try:
            report = work(port, bar.update)
        finally:
            bar.close()
        click.echo(json.dumps(jsonable(report)) if as_json else f"{port}: {report.summary()}")
        return
    from .fleet import resolve_ports, run_many

    assert ports_spec is not None
    result = run_many(resolve_ports(ports_spec), work, "provision", summary=not as_json)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    result.raise_for_failures()


# --- end provision ---


def _add_commands() -> None:
    from .cli_capture import capture_cmd
    from .cli_verify import verify_cmd

    cli.add_command(verify_cmd)
    cli.add_command(capture_cmd)


_add_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and maps errors to exit codes."""
    try:
        rv = cli.main(args=argv, prog_name="edgeveil", standalone_mode=False)
    except EdgeveilError as exc:
        click.echo(f"edgeveil: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("edgeveil: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    # A command that ends with ctx.exit(code) (verify: 1 = findings) returns its code here.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
