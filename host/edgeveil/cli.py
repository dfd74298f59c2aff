"""The `edgeveil` command line: a thin layer over the library.

Exit codes: 0 success, 1 findings (verify), 2 edgeveil refused or could not do the work
(bad input, missing tool; the message says which), 3 internal error (a bug: please report).
"""

from __future__ import annotations

import sys

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
