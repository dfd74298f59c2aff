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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgeveil.boards import load_board
from edgeveil.mpy import compile_tree
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


_DEVICE_LIB = pytest.StashKey[Path]()


def _device_lib(config: pytest.Config) -> Path:
    """device/ compiled to .mpy once per test process, as deploy puts it on a board.

    Importing .py source compiles it in the VM's heap, which a board never does (deploy
    sends .mpy); with source the margin of a 100 KiB heap would depend on the length of
    the checkout's path. The tests themselves and their helper modules stay source.
    """
    if _DEVICE_LIB not in config.stash:
        out = config._tmp_path_factory.mktemp("device-mpy")  # type: ignore[attr-defined]
        compile_tree(device_dir(), out)
        config.stash[_DEVICE_LIB] = out
    return config.stash[_DEVICE_LIB]


class DeviceTestFailure(Exception):
    pass


class DeviceItem(pytest.Item):
    def runtest(self) -> None:
        board = load_board(self.config.getoption("--board"))
        tmp = self.config._tmp_path_factory.mktemp(self.name)  # type: ignore[attr-defined]
        code = _RUNNER.format(cwd=str(tmp), module=self.path.stem, name=self.name, marker=_PASS)
        result = run_code(code, board.heap_bytes, path=[DEVICE_TESTS, _device_lib(self.config)])
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


# --- Mosquitto: a real MQTT broker on loopback, one per test -------------------------------

_MOSQUITTO_MISSING = (
    "mosquitto (the MQTT broker, Debian package `mosquitto`) is not installed: run .ci/run "
    "as root, or `apt-get install mosquitto`; it is /usr/sbin/mosquitto, off a user's PATH"
)


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1:`port` (anonymous, no persistence) for one test.

    `kill()` is a crash (SIGKILL); `start()` brings it back on the same port.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        import socket

        self.binary, self.workdir = binary, workdir
        self.host = "127.0.0.1"
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            "listener %d %s\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            % (self.port, self.host)
        )
        self.log = workdir / "mosquitto.log"
        self.proc: Any = None

    @property
    def url(self) -> str:
        return "%s:%d" % (self.host, self.port)

    def start(self, timeout: float = 10.0) -> None:
        import socket
        import subprocess
        import time

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("mosquitto did not start:\n" + self.log.read_text())
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001 - it would not stop: kill it
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A running Mosquitto on a free loopback port; fails (never skips) if not installed."""
    import shutil

    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if binary is None:
        pytest.fail(_MOSQUITTO_MISSING)
    broker = Mosquitto(binary, tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
