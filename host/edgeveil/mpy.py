"""Compile the device tree to .mpy with mpy-cross, as deploy does for a board.

Precompiled bytecode is what a board runs: compiling .py on the device costs heap that a
100 KiB ESP32 heap cannot spare.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .errors import VMError


def mpy_cross_path() -> str:
    return str(Path(sys.executable).parent / "mpy-cross")


def compile_tree(src: Path, out: Path, arch: str | None = None) -> list[Path]:
    """Compile every .py under `src` into `out` (same layout); returns the .mpy files.

    Raises:
        VMError: mpy-cross rejected a file (the message names it).
    """
    made = []
    for py in sorted(src.rglob("*.py")):
        rel = py.relative_to(src)
        if rel.name == "manifest.py":
            continue
        dst = out / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [mpy_cross_path(), "-o", str(dst), "-s", str(rel)]
        if arch:
            cmd.append(f"-march={arch}")
        proc = subprocess.run([*cmd, str(py)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise VMError(f"mpy-cross rejected {rel}: {proc.stderr.strip()}")
        made.append(dst)
    return made


def tree_hash(files: list[Path], root: Path) -> str:
    """SHA-256 over the compiled files' relative paths and contents."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
