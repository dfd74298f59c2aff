"""Helpers for end-to-end tests against virtual boards (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import serial
from edgeveil.vboard import runner
from edgeveil.vboard.board import BoardSpec

BIN = Path(sys.executable).parent


class VBoard:
    """A running virtual board in a test: its ports, flash file and log."""

    def __init__(self, info: runner.BoardInfo, spec: BoardSpec, root: Path, log: Path) -> None:
        self.info, self.spec, self.root, self.log = info, spec, root, log
        self.port = info.port
        self.rfc2217 = info.rfc2217
        self.flash = spec.flash
        self.name = info.name

    def stop(self) -> None:
        runner.stop(self.name, self.root)

    def restart(self) -> None:
        """Power the board off and on again (a new board process on the same flash)."""
        if any(b.name == self.name for b in runner.list_boards(self.root)):
            self.stop()
        self.info = runner.spawn(self.spec, self.name, self.root, log_path=self.log)
        self.port, self.rfc2217 = self.info.port, self.info.rfc2217

    def kill(self) -> None:
        """SIGKILL the board process and its VM: a power cut.

        The board process dies first: killed together, the VM may die a moment earlier and
        the board process, still running, report that as a crash and reboot; a board whose
        power is cut says nothing more."""
        group = os.getpgid(self.info.pid)
        os.kill(self.info.pid, signal.SIGKILL)
        while _running(self.info.pid):
            time.sleep(0.001)
        try:
            os.killpg(group, signal.SIGKILL)  # the VM, and anything else the board started
        except ProcessLookupError:
            pass  # they died with the board


def _running(pid: int) -> bool:
    """Whether `pid` is alive and not yet a zombie."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def tool(
    name: str, *args: str, timeout: float = 60, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client (mpremote, ampy, esptool) from the venv as a user would."""
    res = subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    if check and res.returncode != 0:
        raise AssertionError(
            "%s %s failed (%d):\n%s\n%s"
            % (name, " ".join(args), res.returncode, res.stdout, res.stderr)
        )
    return res


def edgeveil(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the edgeveil CLI as a user would, with the registry at `tmp_path`/reg.db."""
    env = dict(os.environ, EDGEVEIL_REGISTRY=str(tmp_path / "reg.db"))
    return subprocess.run(
        [str(BIN / "edgeveil"), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def on_board(vb: VBoard, code: str) -> str:
    """What `code` prints when run on the board through mpremote."""
    return tool("mpremote", "connect", vb.port, "exec", code, timeout=60).stdout.strip()


def nvs_blob(vb: VBoard, name: str) -> str:
    """The hex of blob `name` in the board's NVS namespace "veil", read by MicroPython
    ("" when there is none)."""
    return on_board(
        vb,
        "import esp32\nn = esp32.NVS('veil')\nb = bytearray(2048)\n"
        "try:\n    print(bytes(b[:n.get_blob(%r, b)]).hex())\n"
        "except OSError:\n    print('')" % name,
    )


BANNER = b"raw REPL; CTRL-B to exit\r\n>"
APP_STARTS = b"entry 0x40080400\r\n"  # the ESP32 bootloader's last line before the app


class Console:
    """The board's serial output as a test reads it: nothing read is ever dropped, so an
    assertion sees all the board said (the bytes past a mark stay for the next wait)."""

    def __init__(self, port: serial.Serial, vboard: VBoard) -> None:
        self.port, self.vboard, self.pending = port, vboard, b""

    def until(self, mark: bytes, timeout: float = 10.0) -> bytes:
        """Read up to and including `mark`; what follows it is kept for the next call."""
        buf, self.pending = self.pending, b""
        end = time.monotonic() + timeout
        while mark not in buf and time.monotonic() < end:
            buf += self.port.read(self.port.in_waiting or 1)
        assert mark in buf, "no %r within %g s; the board said: %r%s" % (
            mark, timeout, buf[-400:], self.log_tail())  # fmt: skip
        cut = buf.index(mark) + len(mark)
        self.pending = buf[cut:]
        return buf[:cut]

    def drain(self) -> bytes:
        """What has arrived so far (mpremote throws it away; a test keeps it)."""
        buf, self.pending = self.pending, b""
        while self.port.in_waiting:
            buf += self.port.read(self.port.in_waiting)
        return buf

    def ctrl_c_then_raw(self) -> bytes:
        """What mpremote does to get a raw REPL: one Ctrl-C, drain, Ctrl-A, wait for it."""
        self.port.write(b"\r\x03")
        seen = self.drain()
        self.port.write(b"\r\x01")
        return seen + self.until(BANNER)

    def run(self, code: str) -> str:
        """Run `code` at the raw prompt; its output (a traceback fails the test)."""
        self.port.write(code.encode() + b"\x04")
        answer = self.until(b"\x04>")
        out, sep, err = answer[2 : -len(b"\x04>")].partition(b"\x04")  # OK out ^D err ^D>
        assert answer.startswith(b"OK") and sep and not err, "%r%s" % (answer, self.log_tail())
        return out.decode().strip()

    def put(self, name: str, text: str) -> None:
        """Write a file on the board from its raw REPL (the port is at the raw prompt). The
        file is closed: a hard reset finalises nothing on a board, so an unclosed file's
        data would be lost there."""
        assert self.run("with open(%r, 'w') as f:\n f.write(%r)\n" % (name, text)) == ""

    def hard_reset(self) -> None:
        """machine.reset() from the raw REPL; returns as the bootloader hands over to the app."""
        self.port.write(b"import machine; machine.reset()\x04")
        self.until(APP_STARTS)

    def log_tail(self) -> str:
        return "\nboard log:\n" + "".join(self.vboard.log.read_text().splitlines(True)[-30:])
