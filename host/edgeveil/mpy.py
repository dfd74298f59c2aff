"""Compile the device tree to .mpy with mpy-cross, as deploy does for a board.

Precompiled bytecode is what a board runs: compiling .py on the device costs heap that a
100 KiB ESP32 heap cannot spare.

    files, code_hash = compile_for(device_dir(), "xtensawin")   # cached per file
    compile_tree(src, out)                                       # plain, uncached
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .errors import DeployError, VMError


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


@functools.lru_cache(maxsize=1)
def mpy_cross_version() -> tuple[int, int]:
    """The .mpy version the installed mpy-cross emits, e.g. (6, 3).

    Raises:
        DeployError: mpy-cross is missing or says something unexpected.
    """
    try:
        out = subprocess.run(
            [mpy_cross_path(), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DeployError(f"cannot run mpy-cross: {exc}") from exc
    tail = out.rsplit("mpy v", 1)[-1].split()[0] if "mpy v" in out else ""
    try:
        major, sub = (int(x) for x in tail.split("."))
    except ValueError as exc:
        raise DeployError(f"unexpected `mpy-cross --version` output: {out.strip()!r}") from exc
    return major, sub


def cache_dir() -> Path:
    """Where compiled files are cached: $EDGEVEIL_CACHE_DIR, else ~/.cache/edgeveil/mpy."""
    env = os.environ.get("EDGEVEIL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeveil" / "mpy"


def compile_for(
    src: Path, arch: str | None, cache: Path | None = None
) -> tuple[dict[str, bytes], str]:
    """Compile the tree at `src` for `arch` (None: bytecode only) with `compile_tree`.

    Each source file is compiled once per content, arch and mpy-cross version; the rest
    come from the cache, so a one-file change runs mpy-cross once.

    Returns:
        ({"veil/app.mpy": bytes, ...}, the tree's hash as `edgeveil.mpy.tree_hash` gives it)

    Raises:
        VMError: mpy-cross rejected a file.
    """
    with _COMPILING:  # parallel deploys (a jig) compile once, then hit the cache
        return _compile_for(src, arch, cache or cache_dir())


_COMPILING = threading.Lock()


def _compile_for(src: Path, arch: str | None, cache: Path) -> tuple[dict[str, bytes], str]:
    tag = "%d.%d/%s" % (*mpy_cross_version(), arch or "bytecode")
    with tempfile.TemporaryDirectory(prefix="edgeveil-deploy-") as tmp:
        miss_src, miss_out, out = Path(tmp, "src"), Path(tmp, "mpy"), Path(tmp, "tree")
        keys: dict[str, str] = {}
        for py in sorted(p for p in src.rglob("*.py") if p.is_file()):
            rel = py.relative_to(src).as_posix()
            data = py.read_bytes()
            keys[rel] = key = hashlib.sha256(f"{tag}\0{rel}\0".encode() + data).hexdigest()
            hit = _cache_get(cache / key[:2] / (key + ".mpy"))
            if hit is not None:
                _write(out / Path(rel).with_suffix(".mpy"), hit)
            else:
                _write(miss_src / rel, data)
        if miss_src.exists():  # compile_tree decides what is compiled (not manifest.py)
            for made in compile_tree(miss_src, miss_out, arch):
                rel_mpy = made.relative_to(miss_out)
                data = made.read_bytes()
                _write(out / rel_mpy, data)
                key = keys[rel_mpy.with_suffix(".py").as_posix()]
                _cache_put(cache / key[:2] / (key + ".mpy"), data)
        files = sorted(out.rglob("*.mpy"))
        code_hash = tree_hash(files, out)
        return {f.relative_to(out).as_posix(): f.read_bytes() for f in files}, code_hash


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _cache_get(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # A cached file is an .mpy of the version mpy-cross emits, or it is not used.
    return data if data[:2] == bytes((ord("M"), mpy_cross_version()[0])) else None


def _cache_put(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: processes and threads share the cache
    except OSError:
        pass  # a read-only cache only costs time
