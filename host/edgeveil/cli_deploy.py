"""`edgeveil deploy`: the device code to one board or a jig of them (edgeveil.deploy)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from .cli_common import KEY_FILE_OPTION, PORTS_OPTION, REGISTRY_OPTION, need_one_port, run_on_ports


@click.command("deploy")
@click.option("--port", help="one board's serial port (/dev/ttyUSB0, /dev/pts/N, rfc2217://...)")
@PORTS_OPTION
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
@REGISTRY_OPTION
@KEY_FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="machine-readable report on stdout")
def deploy_cmd(
    port: str | None,
    ports_spec: str | None,
    board: str | None,
    via: str,
    src: Path | None,
    registry_path: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Compile device/ for the board and sync it by content hash; print the code hash.

    The tree is compiled with mpy-cross for the .mpy version and architecture the device
    reports. Only files whose SHA-256 differs from what the board holds are sent; the rest
    are copied on the board or kept. The new version is written into the board's spare slot
    (/app/a or /app/b), verified file by file against the host's hashes, and only then made
    current by an atomic rename of /app/current; a deploy interrupted at any point leaves
    the previous version booting. boot.py and main.py are replaced by a small loader.
    The printed code hash identifies the deployed code. If the board is provisioned and
    the registry (--registry, EDGEVEIL_REGISTRY or ./edgeveil-registry.db) exists, the hash
    is recorded for its device there (`registry show` says which code a device runs); a
    registry that cannot take it is reported, and the deploy still succeeds.

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
    from .deploy import DeployReport, deploy, record_code
    from .link import open_link

    need_one_port(port, ports_spec)
    b = load_board(board) if board else None

    def work(p: str, progress: Any) -> DeployReport:
        with open_link(p, via) as link:
            report = deploy(link, b, src, progress)
            note = record_code(link, registry_path, key_file, report.code_hash)
        return dataclasses.replace(report, registry=note)

    run_on_ports("deploy", port, ports_spec, work, as_json)
