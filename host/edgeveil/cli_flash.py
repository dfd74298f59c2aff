"""`edgeveil flash`: firmware to one board or a jig of them (edgeveil.flash does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import (
    KEY_FILE_OPTION,
    PORTS_OPTION,
    REGISTRY_OPTION,
    need_one_port,
    open_registry,
    run_on_ports,
)

if TYPE_CHECKING:
    from .flash import FlashReport


@click.command("flash")
@click.option("--board", required=True, help="board file name (see `edgeveil boards`)")
@click.option("--port", help="one board's serial port (/dev/ttyUSB0, rfc2217://host:port)")
@PORTS_OPTION
@click.option(
    "--firmware",
    "firmware_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="MicroPython firmware: the combined .bin MicroPython ships, or an app image",
)
@click.option("--erase", is_flag=True, help="erase the whole flash first (keys and files too)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report on stdout")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def flash_cmd(
    board: str,
    port: str | None,
    ports_spec: str | None,
    firmware_path: Path,
    erase: bool,
    as_json: bool,
    registry_path: Path | None,
    key_file: Path | None,
) -> None:
    """Write MicroPython firmware to one board or many, verify it, and reset.

    The file is checked before any port is opened: an ESP32-family image for the board's
    chip, with an app descriptor and the board file's partition table. A file for another
    chip is refused before anything is erased, and so is a board whose chip (as esptool
    detects it) is not the board file's. Only the bootloader, partition table and app are
    written and each is MD5-verified by the chip: the NVS partition (the device's keys)
    and the filesystem survive a reflash unless --erase. After --erase, devices the
    registry (--registry, EDGEVEIL_REGISTRY or ./edgeveil-registry.db, if there is one with
    its master key) holds as active on that chip are named in a warning: their keys are
    gone from the board, `edgeveil registry revoke` retires them.

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

    need_one_port(port, ports_spec)
    b = load_board(board)
    load_firmware(firmware_path, b)  # a wrong file is refused once, before any port

    def erased(report: FlashReport) -> None:
        _warn_erased_keys(report, registry_path, key_file)

    if erase:  # esptool reports no progress while the chip erases itself
        click.echo(
            "edgeveil: erasing the whole flash first (a real chip takes 10-40 s, no progress "
            "shows meanwhile)",
            err=True,
        )

    run_on_ports(
        "flash",
        port,
        ports_spec,
        lambda p, progress: write_firmware(p, b, firmware_path, erase, progress),
        as_json,
        each_ok=erased if erase else None,
    )


def _warn_erased_keys(
    report: FlashReport, registry_path: Path | None, key_file: Path | None
) -> None:
    """After --erase: warn about the registry's active devices recorded with this chip's
    MAC, whose keys the erase just removed from the board.

    Silent when there is no registry or no master key (the MAC is kept as a keyed hash); a
    registry that cannot be read gets a note. Never fails the flash: it is done.
    """
    from .registry_db import default_registry_path

    db = registry_path or default_registry_path()
    if not db.exists():
        return
    try:
        with open_registry(db, key_file) as reg:
            if not reg.has_key:
                return
            mac = bytes.fromhex(report.mac.replace(":", ""))
            gone = [r.dev_id.hex() for r in reg.find_mac(mac) if r.status == "active"]
    except Exception as exc:  # noqa: BLE001 - the flash succeeded; this is advice only
        click.echo(
            f"edgeveil: note: {report.port}: could not look up this chip's devices in "
            f"registry {db}: {exc}",
            err=True,
        )
        return
    if gone:
        devices = ("device " if len(gone) == 1 else "devices ") + ", ".join(gone)
        click.echo(
            f"edgeveil: warning: {report.port}: --erase removed the keys of active {devices} "
            f"(registry {db}, chip {report.mac}) from the board; retire them with "
            "`edgeveil registry revoke DEV_ID`, then `edgeveil provision` gives the board "
            "new keys",
            err=True,
        )
