"""esptool's console output, kept apart per thread.

esptool logs through one process-wide logger (`EspLog.instance`). Boards flashed in
parallel (`edgeveil.fleet.run_many`) each run esptool in a thread of their own, so this
logger keeps, for a thread inside `session()`, its lines (quoted in a FlashError) and its
progress (turned into bytes written across a pass's regions); any other thread's output
goes to the logger that was installed before.

    log = esptool_log()
    with log.session(sizes=[0x7000, 0x1000, 0x180000], callback=cb) as session:
        ...                                  # esptool calls, in this thread
    session.tail()                           # its last lines, for an error message
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from esp_pylib.logger import EspLog, EspLogBase

ProgressCallback = Callable[[int, int], None]
"""`progress(bytes_done, bytes_total)`, called from the flashing thread."""

LOG_TAIL = 6  # esptool lines quoted in a FlashError


@dataclass
class Session:
    """One write_firmware call's share of esptool's log: its lines and its progress."""

    sizes: list[int]
    callback: ProgressCallback | None
    region: int = -1
    lines: list[str] = field(default_factory=list)

    def update(self, cur: int, total: int) -> None:
        if self.callback is None or not 0 <= self.region < len(self.sizes):
            return
        size = self.sizes[self.region]
        here = size * cur // total if total > 0 else size
        self.callback(sum(self.sizes[: self.region]) + here, sum(self.sizes))

    def tail(self) -> str:
        lines = [line for line in self.lines if line.strip(" .\n")][-LOG_TAIL:]
        return ("\n  esptool: " + "\n  esptool: ".join(lines)) if lines else ""


class EsptoolLog(EspLogBase):
    """esptool's log: a thread inside `session()` keeps its lines and progress; any other
    thread's output goes to the logger that was installed before (esptool's own)."""

    def __init__(self, fallback: EspLogBase | None) -> None:
        self.fallback = fallback
        self._local = threading.local()

    @contextmanager
    def session(self, sizes: list[int], callback: ProgressCallback | None) -> Iterator[Session]:
        if EspLog.instance is not self:  # someone installed another logger meanwhile
            self.fallback, EspLog.instance = EspLog.instance, self
        self._local.session = Session(sizes, callback)
        try:
            yield self._local.session
        finally:
            self._local.session = None

    def _session(self) -> Session | None:
        return getattr(self._local, "session", None)

    def _other(self) -> EspLogBase:
        if self.fallback is None:
            from esptool.logger import EsptoolLogger

            self.fallback = EsptoolLogger()
        return self.fallback

    def _keep(self, *args: Any) -> bool:
        s = self._session()
        if s is not None:
            s.lines.append(" ".join(str(a) for a in args))
        return s is not None

    def print(self, *args: Any, **kwargs: Any) -> None:
        if not self._keep(*args):
            self._other().print(*args, **kwargs)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        if not self._keep(*args):
            self._other().err(*args, suggestion=suggestion)

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        if not self._keep(*args):
            self._other().warn(*args, suggestion=suggestion)

    error, warning = err, warn  # esptool's older names

    def note(self, *args: Any) -> None:
        if self._session() is None:  # a session drops notes ("no VID/PID for a pty")
            self._other().note(*args)

    def hint(self, *args: Any) -> None:
        if not self._keep(*args):
            self._other().hint(*args)

    def debug(self, *args: Any) -> None:
        if self._session() is None:
            self._other().debug(*args)

    def stage(self, finish: bool = False) -> None:
        if self._session() is None:
            self._other().stage(finish)

    def set_verbosity(self, mode: int | str) -> None:
        self._other().set_verbosity(mode)

    @contextmanager  # type: ignore[override]
    def progress(
        self,
        total: int,
        description: str = "",
        bar_length: int = 30,
        *,
        file: Any = None,
        disable: bool = False,
        unit: str | None = None,
    ) -> Iterator[Any]:
        s = self._session()
        if s is None:
            with self._other().progress(
                total, description, bar_length, file=file, disable=disable, unit=unit
            ) as task:
                yield task
            return
        s.region += 1  # write_flash opens one progress bar per region, in order
        with super().progress(total, description, bar_length, disable=disable) as task:
            yield task

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        s = self._session()
        if s is not None:
            s.update(cur_iter, total_iters)
        else:
            self._other().progress_bar(cur_iter, total_iters, prefix, suffix, bar_length)

    def __getattr__(self, name: str) -> Any:  # anything else esptool's logger offers
        return getattr(self._other(), name)


_install = threading.Lock()
_log: EsptoolLog | None = None


def esptool_log() -> EsptoolLog:
    """Install the per-thread log. Done before esptool is first imported where possible,
    so that esptool's one-shot warnings (bound to the log at import) are captured too."""
    global _log
    with _install:
        if _log is None:
            _log = EsptoolLog(EspLog.instance)
            EspLog.instance = _log
            import esptool  # noqa: F401 - its logger installs itself only if none is set
        return _log
