"""The `edgeveil` command line: a thin layer over the library.

Here: the group, `demo`, `boards` and `main()`. The other commands live in one module
each, added to `cli` by `_add_commands()`: cli_registry (init, registry), cli_flash,
cli_deploy, cli_provision, cli_vboard, cli_capture, cli_verify; what they share
(registry options, --ports, the progress bar, one port or many, error messages) is in
cli_common.

Exit codes: 0 success, 1 findings (verify), 2 edgeveil refused or could not do the work
(bad input, missing tool, a path the user gave that cannot be written; the message says
which), 3 internal error (a bug: please report; EDGEVEIL_DEBUG=1 prints the traceback),
130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .cli_common import DEBUG_ENV, argv_paths, failure
from .errors import EdgeveilError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeveil")
def cli() -> None:
    """edgeveil: keep personal data on the device, and prove it.

    Each command's --help has more examples; --json gives machine-readable output.

    \b
    Examples:
      edgeveil demo                 the footfall scenario on a virtual board, verified
      edgeveil boards               list the boards edgeveil knows
      edgeveil vboard start --flash board.img --firmware
                                    a virtual ESP32 for mpremote, ampy and esptool
    \b
      desk, one board:
        edgeveil init               registry and master key (once)
        edgeveil flash --board esp32-generic --port /dev/ttyUSB0 --firmware fw.bin
        edgeveil deploy --port /dev/ttyUSB0
        edgeveil provision --port /dev/ttyUSB0 --policy shop.toml
    \b
      jig, every board attached (a line each, then a table):
        edgeveil flash --board esp32-generic --ports auto --firmware fw.bin
        edgeveil deploy --ports auto --json
        edgeveil provision --ports auto --policy shop.toml --json
        edgeveil provision --factory --firmware fw.bin --ports auto --policy shop.toml
    \b
      did anything raw leave the board?
        edgeveil capture --serial /dev/ttyUSB0 -o run.capture
        edgeveil verify --capture run.capture --canaries crowd.jsonl

    \b
    Exit codes:
      0    success
      1    findings: verify (and demo) found a problem in what the board sent
      2    refused or failed: bad input, a board that failed (the message says which)
      3    internal error: a bug in edgeveil (EDGEVEIL_DEBUG=1 shows the traceback)
      130  interrupted (Ctrl-C)
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

    \b
    Examples:
      edgeveil boards
      edgeveil boards --json | jq '.[] | {name, chip, firmware_offset}'
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


def _add_commands() -> None:
    from .cli_capture import capture_cmd
    from .cli_deploy import deploy_cmd
    from .cli_flash import flash_cmd
    from .cli_provision import provision_cmd
    from .cli_registry import init_cmd, registry_group
    from .cli_vboard import vboard
    from .cli_verify import verify_cmd

    for command in (
        vboard, init_cmd, registry_group, flash_cmd, deploy_cmd, provision_cmd, verify_cmd,
        capture_cmd,
    ):  # fmt: skip
        cli.add_command(command)


_add_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and maps what ends it to an exit code.

    0 success; 1 findings (a command that ends with ctx.exit(1): verify, demo); 2 refused
    or failed (an `EdgeveilError`, a usage error, an OSError about a path the user gave);
    3 any other exception, a bug (its traceback with EDGEVEIL_DEBUG=1); 130 interrupted.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        rv = cli.main(args=args, prog_name="edgeveil", standalone_mode=False)
    except EdgeveilError as exc:
        click.echo(f"edgeveil: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("edgeveil: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into exit 3
        message, code = failure(exc, argv_paths(args))
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        click.echo(f"edgeveil: {message}", err=True)
        return code
    # A command that ends with ctx.exit(code) (verify: 1 = findings) returns its code here.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
