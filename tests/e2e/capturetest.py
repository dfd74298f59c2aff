"""Helpers for the capture tests: `edgeveil capture` as a subprocess, waiting on a condition."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


class Cli:
    """`edgeveil capture ...` as a subprocess, entered once it is recording."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "edgeveil"), "capture", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._err: list[str] = []
        self._reader = threading.Thread(target=self._read_err, daemon=True)
        self._reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._err.append(raw.decode())

    def __enter__(self) -> Cli:
        wait_for(
            lambda: (
                any("capture: recording" in x for x in self._err) or self.proc.poll() is not None
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    def wait(self) -> int:
        rc = self.proc.wait(30)
        self._reader.join(10)
        return rc

    def stderr(self) -> str:
        return "".join(self._err)

    def progress(self) -> int:
        """Messages the last progress line reported ("capture: N messages, ...")."""
        counts = [
            int(x.split()[1])
            for x in list(self._err)
            if x.startswith("capture: ") and x.split()[1].isdigit()
        ]
        return counts[-1] if counts else 0

    def json(self) -> Any:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.read())
