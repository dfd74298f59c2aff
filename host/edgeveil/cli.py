"""The `edgeveil` command line: a thin layer over the library.

Exit codes: 0 success, 1 findings (verify), 2 edgeveil refused or could not do the work
(bad input, missing tool; the message says which), 3 internal error (a bug: please report).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EdgeveilError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeveil")
def cli() -> None:
    """edgeveil: keep personal data on the device, and prove it.

    \b
    Examples:
      edgeveil demo                 run the privacy pipeline on the virtual defaults
      edgeveil boards               list the boards edgeveil knows
      edgeveil vboard start --flash board.img --firmware
                                    a virtual ESP32 for mpremote, ampy and esptool
    """


@cli.command()
@click.option(
    "--board", default="esp32-generic", show_default=True, help="board whose heap to use"
)
def demo(board: str) -> None:
    """Run the device pipeline in the MicroPython VM and show what it would send."""
    from .demo import run_demo

    run_demo(board, out=sys.stdout)


@cli.command()
def boards() -> None:
    """List the boards in boards/ with chip, flash and heap."""
    from .boards import load_board
    from .paths import boards_dir

    for path in sorted(boards_dir().glob("*.toml")):
        b = load_board(path)
        click.echo(
            f"{b.name:<20} {b.chip:<8} flash {b.flash_size // 1048576} MiB  "
            f"heap {b.heap_bytes // 1024} KiB  {b.description}"
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
@click.option("--board", default="esp32-generic", show_default=True, help="board file name")
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
@click.option("--board", default="esp32-generic", show_default=True)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and maps errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="edgeveil", standalone_mode=False)
    except EdgeveilError as exc:
        click.echo(f"edgeveil: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("edgeveil: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
