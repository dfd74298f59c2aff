"""pytest wiring shared by all tests.

Device tests (`tests/device/test_*.py`) are MicroPython modules: pytest collects each
top-level `test_*` function as its own item and runs it in a fresh MicroPython unix VM
with the GC heap of the board under test (`EDGEVEIL_BOARD`, default esp32-generic).
An assertion, exception or MemoryError inside the VM fails the item with the VM's own
message and traceback.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.paths import device_dir
from edgeveil.vm import run_code

pytest_plugins = ["pytester"]

DEVICE_TESTS = Path(__file__).parent / "device"
_PASS = "@@EDGEVEIL-PASS@@"

# Each item: chdir to its own empty directory (device code persists files relative to
# the cwd, as on the board's flash), import the module, call the one test.
_RUNNER = """\
import os, sys
os.chdir({cwd!r})
import {module} as _m
try:
    _m.{name}()
except BaseException as _e:
    sys.print_exception(_e)
    sys.exit(1)
print({marker!r})
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--board",
        default=os.environ.get("EDGEVEIL_BOARD", "esp32-generic"),
        help="board whose GC heap the device tests run in (default esp32-generic)",
    )


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.File | None:
    # Replaces pytest's own Module for device tests: CPython never imports them.
    if DEVICE_TESTS in module_path.parents:
        return DeviceModule.from_parent(parent, path=module_path)
    return None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Helper modules beside the device tests are MicroPython too: never import them here.
    if DEVICE_TESTS in collection_path.parents and collection_path.suffix == ".py":
        return not collection_path.name.startswith("test_")
    return None


class DeviceModule(pytest.File):
    def collect(self):  # type: ignore[override]
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield DeviceItem.from_parent(self, name=node.name)


class DeviceTestFailure(Exception):
    pass


class DeviceItem(pytest.Item):
    def runtest(self) -> None:
        board = load_board(self.config.getoption("--board"))
        tmp = self.config._tmp_path_factory.mktemp(self.name)  # type: ignore[attr-defined]
        code = _RUNNER.format(cwd=str(tmp), module=self.path.stem, name=self.name, marker=_PASS)
        result = run_code(code, board.heap_bytes, path=[DEVICE_TESTS, device_dir()])
        out = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0 or _PASS not in out:
            err = result.stderr.decode("utf-8", "replace")
            raise DeviceTestFailure(
                f"in MicroPython (heap {board.heap_bytes} B, board {board.name}), "
                f"exit {result.returncode}:\n{out}{err}"
            )

    def repr_failure(self, excinfo, style=None):  # type: ignore[override]
        if isinstance(excinfo.value, DeviceTestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):  # type: ignore[override]
        return self.path, None, f"{self.path.name}::{self.name} [micropython]"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`hardware` tests need a real board: skipped (and said so) unless EDGEVEIL_PORT is set.

    A bare `pytest` therefore never opens a serial port.
    """
    if os.environ.get("EDGEVEIL_PORT"):
        return
    skip = pytest.mark.skip(reason="needs a real board: set EDGEVEIL_PORT=/dev/ttyUSB0")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
