"""Options and helpers shared by the `edgeveil` command modules (cli.py, cli_*.py).

`run_on_ports` is the one-board and many-board shape of flash, deploy and provision;
`failure` turns whatever ended a command into its message and exit code (main() and the
JSON a failed board prints agree through it).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from .errors import EdgeveilError

Progress = Callable[[int, int], None]
Work = Callable[[str, Progress], Any]
DEBUG_ENV = "EDGEVEIL_DEBUG"

REGISTRY_OPTION = click.option(
    "--registry",
    "registry_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="registry database [env EDGEVEIL_REGISTRY; default ./edgeveil-registry.db]",
)
KEY_FILE_OPTION = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="master key file [default <registry>.key; EDGEVEIL_MASTER_KEY holds the key as hex]",
)


def open_registry(registry_path: Path | None, key_file: Path | None) -> Any:
    """The registry named on the command (or on `registry`, or by the environment)."""
    from .registry import Registry
    from .registry_db import SCHEMA_VERSION

    group = click.get_current_context().find_object(dict) or {}
    reg = Registry.open(
        registry_path or group.get("registry_path"), key_path=key_file or group.get("key_file")
    )
    if reg.upgraded_from is not None:
        click.echo(
            f"edgeveil: upgraded registry {reg.path} from schema version {reg.upgraded_from} "
            f"to {SCHEMA_VERSION}: every device row tagged as it stood (docs/registry.md)",
            err=True,
        )
    return reg


class ByteBar:
    """A click progress bar on stderr for one board, sized on its first update; nothing
    when stderr is not a terminal."""

    def __init__(self, label: str) -> None:
        self.label, self.at = label, 0
        self.bar: Any = None

    def update(self, done: int, total: int) -> None:
        if not total or not sys.stderr.isatty():  # nothing to measure (deploy: no change)
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
PORTS_OPTION = click.option(
    "--ports",
    "ports_spec",
    metavar="P1,P2,...|auto",
    help="many boards in parallel; auto = running virtual boards, /dev/ttyUSB*, /dev/ttyACM*",
)


def need_one_port(port: str | None, ports_spec: str | None) -> None:
    """Refuse a command given both --port and --ports, or neither."""
    if (port is None) == (ports_spec is None):
        raise click.UsageError("give either --port P or --ports P1,P2,...|auto")


def run_on_ports(
    label: str,
    port: str | None,
    ports_spec: str | None,
    work: Work,
    as_json: bool,
    *,
    bar_label: str | None = None,
    each_ok: Callable[[Any], None] | None = None,
) -> None:
    """Run `work(port, progress)` on --port or on every board of --ports, and report.

    One port: a progress bar on a terminal, then "PORT: summary" or the report as JSON;
    if it fails, with --json, one object on stdout in fleet's names (port, ok, seconds,
    message, result, exit_code) before the error propagates. Many: `fleet.run_many`'s
    lines and table, or its JSON. An OSError about a path the user gave becomes an
    `EdgeveilError` ("cannot write X: ...") in both forms.

    Args:
        label: the job's name ("flash"), for progress lines and the summary.
        bar_label: the one-port progress bar's label (default "LABEL PORT").
        each_ok: called with each board's report that succeeded, after the output and
            before a failure is raised (in the main thread).

    Raises:
        EdgeveilError: the board failed (one port), or `FleetError` naming those that did.
    """
    guarded = _guard(work, _given_paths(click.get_current_context()))
    if port is not None:
        report = _run_one(port, guarded, as_json, bar_label or f"{label} {port}")
        if each_ok is not None:
            each_ok(report)
        return
    from .fleet import resolve_ports, run_many

    assert ports_spec is not None
    result = run_many(resolve_ports(ports_spec), guarded, label, summary=not as_json)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    for board in result.boards:
        if board.ok and each_ok is not None:
            each_ok(board.value)
    result.raise_for_failures()


def _run_one(port: str, work: Work, as_json: bool, bar_label: str) -> Any:
    from .fleet import BoardResult, jsonable

    bar, start = ByteBar(bar_label), time.monotonic()
    try:
        try:
            report = work(port, bar.update)
        finally:
            bar.close()
    except Exception as exc:
        if as_json:
            message, code = failure(exc, ())
            failed: BoardResult[Any] = BoardResult(
                port, False, time.monotonic() - start, message, None, exc
            )
            click.echo(json.dumps({**failed.as_json(), "exit_code": code}))
        raise
    click.echo(json.dumps(jsonable(report)) if as_json else f"{port}: {report.summary()}")
    return report


def _guard(work: Work, given: list[str]) -> Work:
    """`work` with an OSError about a path in `given` raised as an EdgeveilError."""

    def guarded(port: str, progress: Progress) -> Any:
        try:
            return work(port, progress)
        except OSError as exc:
            message = user_path_error(exc, given)
            if message is None:
                raise
            raise EdgeveilError(message) from exc

    return guarded


def _given_paths(ctx: click.Context | None) -> list[str]:
    """The values of a command's options and its groups' that could name a path."""
    out: list[str] = []
    while ctx is not None:
        for value in ctx.params.values():
            for v in value if isinstance(value, tuple | list) else (value,):
                if isinstance(v, str | os.PathLike):
                    out.append(os.fspath(v))
        ctx = ctx.parent
    return out


def argv_paths(argv: Iterable[str]) -> list[str]:
    """The words of a command line that could name a path, with option values written
    --opt=VALUE or -oVALUE."""
    out = []
    for word in argv:
        if word.startswith("--"):
            if "=" in word:
                out.append(word.split("=", 1)[1])
        elif word.startswith("-"):
            out.append(word[2:])  # -oFILE
        elif word:
            out.append(word)
    return out


# A write that fails for the machine's sake (a full disk, a read-only filesystem, an I/O
# error) often carries no file name (it comes from write(), not open()).
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


def user_path_error(exc: OSError, given: Iterable[str]) -> str | None:
    """ "cannot write X: why" if `exc` is about a path in `given` (or one inside such a
    directory), else None: the user can act on it, it is not a bug."""
    name = exc.filename
    if not isinstance(name, str | bytes | os.PathLike):
        return None
    shown = os.fsdecode(name)
    try:
        target = Path(shown).resolve()
        hits = [p for p in (Path(g).resolve() for g in given if g) if p != Path(p.anchor)]
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL in a word
        return None
    if not any(p == target or p in target.parents for p in hits):
        return None
    # A file that is there but that we may not read was being read; anything else, written.
    verb = "read" if target.exists() and not os.access(target, os.R_OK) else "write"
    return f"cannot {verb} {shown}: {exc.strerror or exc}"


def failure(exc: BaseException, given: Iterable[str]) -> tuple[str, int]:
    """The message (without "edgeveil: ") and exit code for what ended a command.

    An `EdgeveilError` carries both; an OSError about a path the user gave is theirs to fix
    (2); anything else is a bug in edgeveil (3).
    """
    if isinstance(exc, EdgeveilError):
        return str(exc), exc.exit_code
    if isinstance(exc, OSError):
        message = user_path_error(exc, given)
        if message is not None:
            return message, 2
        if exc.errno in _MACHINE_ERRNOS:  # the disk or the device, not edgeveil
            return f"cannot write: {exc.strerror or exc}", 2
    return (
        f"internal error: {type(exc).__name__}: {exc} "
        f"(a bug; run with {DEBUG_ENV}=1 for the traceback)",
        3,
    )
