"""Every device file compiles with mpy-cross for each board's architecture.

CPython parses syntax MicroPython does not have (`match`, PEP 701 f-strings, ...); ruff and
mypy would let it through, and the failure would only show on a board. One item per file
and architecture, failing with mpy-cross's own message; and a check that the same helper
refuses such syntax, so this test can fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.errors import VMError
from edgeveil.mpy import compile_tree, mpy_cross_path
from edgeveil.paths import boards_dir, device_dir

DEVICE = device_dir()
FILES = sorted(DEVICE.rglob("*.py"))
ARCHS = sorted({load_board(p.stem).mpy_arch for p in boards_dir().glob("*.toml")})

# Valid CPython 3.10+, a SyntaxError for MicroPython.
_MATCH = "def f(x):\n    match x:\n        case 1:\n            return 2\n    return 0\n"


def mpy_cross(py: Path, out: Path, arch: str) -> None:
    """Compile one file as deploy does; raises AssertionError with mpy-cross's message."""
    cmd = [mpy_cross_path(), f"-march={arch}", "-o", str(out), str(py)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"mpy-cross -march={arch} rejected {py}:\n{proc.stderr.strip()}")
    assert out.stat().st_size > 0


def test_there_are_device_files_and_boards() -> None:
    assert len(FILES) > 10 and (DEVICE / "veil" / "pipeline.py") in FILES
    assert "xtensawin" in ARCHS  # boards/esp32-generic.toml


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("py", FILES, ids=[str(p.relative_to(DEVICE)) for p in FILES])
def test_device_file_compiles(py: Path, arch: str, tmp_path: Path) -> None:
    mpy_cross(py, tmp_path / py.with_suffix(".mpy").name, arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_micropython_only_syntax_is_refused(arch: str, tmp_path: Path) -> None:
    bad = tmp_path / "src" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(_MATCH)
    compile(_MATCH, str(bad), "exec")  # CPython accepts it ...
    with pytest.raises(AssertionError, match="SyntaxError"):  # ... mpy-cross does not
        mpy_cross(bad, tmp_path / "bad.mpy", arch)
    with pytest.raises(VMError, match="bad.py"):  # nor does deploy's compile_tree
        compile_tree(bad.parent, tmp_path / "out", arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_compile_tree_builds_the_whole_device_tree(arch: str, tmp_path: Path) -> None:
    made = compile_tree(DEVICE, tmp_path, arch)
    assert len(made) == len([p for p in FILES if p.name != "manifest.py"])
