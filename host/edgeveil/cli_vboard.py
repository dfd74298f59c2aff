"""`edgeveil vboard start|status|stop|firmware`: virtual boards from the command line.

The work is in `edgeveil.vboard.runner` (processes and state files) and
`edgeveil.vboard.firmware` (the labelled firmware image).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click


@click.group()
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
@click.option(
    "--mac",
    default="",
    help="base MAC, 12 hex digits, colons allowed  [default: 24:0a:c4 and a hash of the "
    "flash file's path, so each board file is its own chip]",
)
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
    """Start a virtual board; print its serial port; run until stopped (Ctrl-C).

    \b
    Examples:
      edgeveil vboard start --flash board.img --firmware       in the foreground
      edgeveil vboard start --flash b1.img --firmware --detach --name b1
      edgeveil vboard start --flash s3.img --board esp32s3-virtual --firmware --detach
      edgeveil vboard start --flash board.img --replay crowd.jsonl --speed 0 --json
    """
    from .boards import load_board
    from .vboard import runner
    from .vboard.board import BoardSpec

    mac_bytes = b""  # none given: BoardSpec derives one from the flash file
    if mac:
        try:
            mac_bytes = bytes.fromhex(mac.replace(":", "").replace("-", ""))
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
    """List running virtual boards and their ports.

    \b
    Examples:
      edgeveil vboard status
      edgeveil vboard status --json | jq -r '.[].port'
    """
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
@click.option(
    "--name",
    "named",
    multiple=True,
    help="a board to stop, as named by `start --name` (repeatable; or give names as arguments)",
)
@click.option("--all", "stop_all", is_flag=True, help="stop every running virtual board")
def vboard_stop(names: tuple[str, ...], named: tuple[str, ...], stop_all: bool) -> None:
    """Stop virtual boards by name (default: vboard0).

    \b
    Examples:
      edgeveil vboard stop                   the board started without --name
      edgeveil vboard stop --name b1         as it was started
      edgeveil vboard stop b1 b2
      edgeveil vboard stop --all
    """
    from .vboard import runner

    given = list(dict.fromkeys(names + named))  # each once, in the order given
    targets = [b.name for b in runner.list_boards()] if stop_all else given or ["vboard0"]
    for n in targets:
        info = runner.stop(n)
        click.echo("stopped %s (%s)" % (info.name, info.port))


@vboard.command("firmware")
@click.option("--board", default="esp32-virtual", show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def vboard_firmware(board: str, out: Path) -> None:
    """Write edgeveil's labelled virtual MicroPython firmware (for esptool write-flash).

    It runs only on the virtual board. Write it at the board's firmware offset (as the
    command prints), with esptool or `edgeveil flash`.

    \b
    Examples:
      edgeveil vboard firmware -o fw.bin
      esptool --port /dev/pts/5 write-flash 0x1000 fw.bin       # ESP32: at 0x1000
      edgeveil flash --board esp32-virtual --port /dev/pts/5 --firmware fw.bin
      edgeveil vboard firmware --board esp32s3-virtual -o s3.bin   # S3, C3: at 0x0
    """
    from .boards import load_board
    from .vboard import firmware

    b = load_board(board)
    out.write_bytes(firmware.build_firmware(b))
    click.echo(
        "wrote %s (%d bytes); write it at 0x%x" % (out, out.stat().st_size, b.firmware_offset)
    )
