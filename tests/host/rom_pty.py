"""TEST HARNESS ONLY: serve a `RomLoader` on a real pty from a thread.

A stand-in for the board process (which replaces it): open a pty, put the slave in raw
mode, then read master -> `loader.feed` -> write master. POLLHUP on the master means no
process holds the slave open; after a loader session that is esptool closing the port, and
the harness power-cycles the loader (`reset`) so the next esptool run meets the ROM.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from types import TracebackType

from edgeveil.vboard.rom import RomLoader


class RomPtyHarness:
    """``with RomPtyHarness(loader) as h: run esptool --port h.port``."""

    def __init__(self, loader: RomLoader) -> None:
        self.loader = loader
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        os.close(slave)
        self.lock = threading.Lock()  # held while the loader runs; tests take it to peek
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rom-pty", daemon=True)

    def __enter__(self) -> RomPtyHarness:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._master)

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(20))
            mask = events.get(self._master, 0)
            data = b""
            if mask & select.POLLIN:
                try:
                    data = os.read(self._master, 0x10000)
                except OSError:  # EIO: the slave side is closed
                    data = b""
            if data:
                with self.lock:
                    reply = self.loader.feed(data)
                view = memoryview(reply)
                while view:
                    view = view[os.write(self._master, view) :]
            elif mask & select.POLLHUP:
                with self.lock:
                    if self.loader.session_active:  # esptool closed the port
                        self.loader.reset()
                time.sleep(0.01)  # POLLHUP stays set while nobody has the port open
