"""One job on many boards at once: the ports of a factory jig, in parallel.

    ports = resolve_ports("auto")            # or "/dev/ttyUSB0,/dev/ttyUSB1"
    result = run_many(ports, lambda port, progress: work(port, progress), "flash")
    result.exit_code                         # 0 if every board succeeded, else 2
    print(json.dumps(result.as_json()))      # what `--json` prints
    result.raise_for_failures()              # FleetError naming the boards that failed

`work(port, progress)` runs in its own thread per port and returns a value (a report) or
raises; `progress(done, total)` reports how far it is, in any unit. A board whose work
raises is marked failed with the error's message and the others carry on: nothing one
board does stops another. On a terminal each board gets a progress line redrawn in place;
when the stream is not a terminal (a jig's log) each board prints plain lines instead
(started, 25/50/75 %, ok or FAILED). Then a summary table: port, ok/FAILED, seconds,
message, and the boards per minute of the whole run.

A work function that raises something other than `EdgeveilError` has a bug; its board
fails with "internal error: ..." and the traceback goes to the progress stream, and the
other boards still finish. Ctrl-C does not abort a board mid-write: the boards already
running finish, then the interrupt propagates.
"""

from __future__ import annotations

import dataclasses
import glob
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TextIO, TypeVar

import click

from .errors import EdgeveilError, FleetError

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""`progress(done, total)`: how far one board's work is (bytes, files, steps...)."""

_REAL_PORT_GLOBS = ("/dev/ttyUSB*", "/dev/ttyACM*")
_REDRAW_S = 0.1  # at most ten redraws a second on a terminal
_BAR = 24


@dataclass(frozen=True)
class BoardResult(Generic[T]):
    """What happened on one port. `value` is what `work` returned (None if it failed)."""

    port: str
    ok: bool
    seconds: float
    message: str
    value: T | None = None
    error: BaseException | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, object]:
        return {
            "port": self.port,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "message": self.message,
            "result": jsonable(self.value) if self.ok else None,
        }


@dataclass(frozen=True)
class FleetResult(Generic[T]):
    """The outcome of `run_many`: one `BoardResult` per port, in the order given."""

    label: str
    boards: tuple[BoardResult[T], ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.boards)

    @property
    def failed(self) -> list[BoardResult[T]]:
        return [b for b in self.boards if not b.ok]

    @property
    def exit_code(self) -> int:
        """0 if every board succeeded, 2 if any failed (edgeveil's "refused/failed" code)."""
        return 0 if self.ok else 2

    @property
    def boards_per_minute(self) -> float:
        done = sum(1 for b in self.boards if b.ok)
        return 60.0 * done / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "boards": [b.as_json() for b in self.boards],
        }

    def table(self, width: int | None = None) -> str:
        """The summary table as plain text; messages cut to `width` columns if given."""
        return _table(self, width)

    def raise_for_failures(self) -> None:
        """Raise `FleetError` naming every failed port, if any failed.

        Raises:
            FleetError: "2 of 8 boards failed (flash): /dev/ttyUSB3, /dev/ttyUSB5".
        """
        if self.failed:
            names = ", ".join(b.port for b in self.failed)
            raise FleetError(
                f"{len(self.failed)} of {len(self.boards)} boards failed ({self.label}): {names}"
            )


def jsonable(value: object) -> object:
    """`value` as JSON-ready data: `as_json()` if it has one, dataclasses as dicts, bytes as
    hex, paths as strings, tuples as lists."""
    if hasattr(value, "as_json") and callable(value.as_json):
        return value.as_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    return value


def _describe(value: object) -> str:
    summary = getattr(value, "summary", None)
    return str(summary()) if callable(summary) else ("" if value is None else str(value))


def resolve_ports(spec: str, state_root: Path | None = None) -> list[str]:
    """The ports a `--ports` value names.

    Args:
        spec: "auto" (every running virtual board, then /dev/ttyUSB* and /dev/ttyACM*), or
            a comma-separated list such as "/dev/ttyUSB0,/dev/ttyUSB1".
        state_root: where virtual boards keep their state files (tests); default
            `edgeveil.vboard.runner.state_dir()`.

    Raises:
        EdgeveilError: an empty name, a port named twice, or "auto" found nothing.
    """
    if spec.strip() == "auto":
        from .vboard.runner import list_boards

        ports = [b.port for b in list_boards(state_root)]
        for pattern in _REAL_PORT_GLOBS:
            ports += sorted(p for p in glob.glob(pattern) if p not in ports)
        if not ports:
            raise EdgeveilError(
                "--ports auto found no ports: no virtual board is running and there is no "
                "/dev/ttyUSB* or /dev/ttyACM*"
            )
        return ports
    ports = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in ports):
        raise EdgeveilError(f"--ports {spec!r}: empty port name (use P1,P2,... or auto)")
    twice = sorted({p for p in ports if ports.count(p) > 1})
    if twice:
        raise EdgeveilError(f"--ports names {', '.join(twice)} more than once")
    return ports


class _Display:
    """Per-board progress: lines redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, ports: Sequence[str], label: str, stream: TextIO | None) -> None:
        self.ports, self.label, self.stream = list(ports), label, stream
        self.tty = stream is not None and _isatty(stream)
        self.width = max(len(p) for p in self.ports)
        self.done: dict[str, tuple[int, int]] = {p: (0, 0) for p in self.ports}
        self.status: dict[str, str] = {p: "waiting" for p in self.ports}
        self.step: dict[str, int] = {p: 0 for p in self.ports}
        self.lock = threading.Lock()
        self.drawn = False
        self.last = 0.0

    def begin(self, port: str) -> None:
        with self.lock:
            self.status[port] = "running"
            if self.tty:
                self._redraw(force=True)
            else:
                self._line(f"{self.label} {port}: started")

    def progress(self, port: str, done: int, total: int) -> None:
        with self.lock:
            self.done[port] = (done, total)
            if self.tty:
                self._redraw()
                return
            quarter = 4 * done // total if total > 0 else 0
            if self.step[port] < quarter < 4:
                self.step[port] = quarter
                self._line(f"{self.label} {port}: {25 * quarter}%")

    def end(self, result: BoardResult) -> None:
        with self.lock:
            if result.ok:
                done, total = self.done[result.port]
                self.done[result.port] = (max(done, total, 1), max(total, 1))
            self.status[result.port] = (
                f"ok {result.seconds:.1f} s" if result.ok else f"FAILED: {_short(result)}"
            )
            if self.tty:
                self._redraw(force=True)
            else:
                self._line(f"{self.label} {result.port}: {self.status[result.port]}")

    def traceback(self, port: str, exc: BaseException) -> None:
        with self.lock:
            if self.stream is None:
                return
            text = "".join(traceback.format_exception(exc))
            self._line(f"{self.label} {port}: internal error (a bug, please report):\n{text}")
            self.drawn = False  # the traceback scrolled the lines away: draw them anew

    def _line(self, text: str) -> None:
        if self.stream is not None:
            click.echo(text, file=self.stream)

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < _REDRAW_S:
            return
        self.last = now
        assert self.stream is not None
        cols = shutil.get_terminal_size((100, 24)).columns
        out = [f"\x1b[{len(self.ports)}A"] if self.drawn else []
        for port in self.ports:
            done, total = self.done[port]
            frac = min(done / total, 1.0) if total > 0 else 0.0
            fill = int(frac * _BAR)
            status = self.status[port]
            colour = "green" if status.startswith("ok") else "red" if "FAILED" in status else None
            text = f"{port:<{self.width}} [{'#' * fill}{'-' * (_BAR - fill)}] {frac:4.0%}  "
            text += status[: max(cols - len(text) - 1, 10)]
            out.append("\r\x1b[2K" + (click.style(text, fg=colour) if colour else text) + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self.drawn = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _short(result: BoardResult) -> str:
    """The message without the port it starts with (the table has a port column)."""
    msg = result.message
    prefix = f"{result.port}: "
    msg = msg[len(prefix) :] if msg.startswith(prefix) else msg
    return " ".join(msg.split())


def _table(result: FleetResult, width: int | None) -> str:
    pw = max([len("port")] + [len(b.port) for b in result.boards])
    lines = [f"{'port':<{pw}}  {'result':<6}  {'seconds':>7}  message"]
    for b in result.boards:
        head = f"{b.port:<{pw}}  {'ok' if b.ok else 'FAILED':<6}  {b.seconds:7.2f}  "
        msg = _short(b)
        lines.append(head + (msg[: max(width - len(head), 20)] if width else msg))
    n, bad = len(result.boards), len(result.failed)
    lines.append(
        f"{result.label}: {n} board{'s' if n != 1 else ''}, {n - bad} ok, {bad} failed, "
        f"{result.seconds:.2f} s ({result.boards_per_minute:.0f} boards/min)"
    )
    return "\n".join(lines)


def run_many(
    ports: Sequence[str],
    work: Callable[[str, Progress], T],
    label: str,
    *,
    progress_stream: TextIO | None = None,
    summary_stream: TextIO | None = None,
    summary: bool = True,
    quiet: bool = False,
    max_workers: int | None = None,
) -> FleetResult[T]:
    """Run `work(port, progress)` for every port in parallel threads.

    Args:
        ports: the ports (see `resolve_ports`); each at most once.
        work: the job for one board; returns its report or raises (an `EdgeveilError`
            for a refusal or failure the user can act on).
        label: what the job is called in progress lines and the summary ("flash").
        progress_stream: where progress goes (default stderr).
        summary_stream: where the summary table goes (default stdout).
        summary: print the summary table (off for `--json`, which prints `as_json()`).
        quiet: print nothing at all (library use, tests).
        max_workers: threads; default one per port.

    Returns:
        A `FleetResult`, boards in the order of `ports`. It does not raise when boards
        fail: check `ok`/`exit_code`, or call `raise_for_failures()`.

    Raises:
        EdgeveilError: no ports, or a port named twice (before any work starts).
    """
    ports = list(ports)
    if not ports:
        raise EdgeveilError(f"{label}: no ports given")
    if len(set(ports)) != len(ports):
        raise EdgeveilError(f"{label}: a port is named more than once: {', '.join(ports)}")
    display = _Display(ports, label, None if quiet else (progress_stream or sys.stderr))

    def one(port: str) -> BoardResult[T]:
        start = time.monotonic()
        display.begin(port)
        try:
            value = work(port, lambda done, total: display.progress(port, done, total))
        except EdgeveilError as exc:
            res: BoardResult[T] = BoardResult(
                port, False, time.monotonic() - start, str(exc), None, exc
            )
        except Exception as exc:  # noqa: BLE001 - a bug in work fails this board only
            display.traceback(port, exc)
            message = f"internal error: {type(exc).__name__}: {exc}"
            res = BoardResult(port, False, time.monotonic() - start, message, None, exc)
        else:
            res = BoardResult(port, True, time.monotonic() - start, _describe(value), value)
        display.end(res)
        return res

    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max_workers or len(ports), thread_name_prefix=label)
    try:
        futures = [pool.submit(one, p) for p in ports]
        results = tuple(f.result() for f in futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    result = FleetResult(label, results, time.monotonic() - start)
    if summary and not quiet:
        out = summary_stream or sys.stdout
        width = shutil.get_terminal_size().columns if _isatty(out) else None
        click.echo(result.table(width), file=out)
    return result
