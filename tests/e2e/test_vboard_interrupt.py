"""A client's single Ctrl-C reaches the REPL of a virtual board whose main.py never returns,
whenever during boot it arrives: before boot.py starts, while boot.py runs, or later.

mpremote sends one Ctrl-C (b"\\r\\x03") and then Ctrl-A; on an ESP32 a Ctrl-C that cuts
boot.py short also skips main.py (the port's main.c runs main.py only after a boot.py that
did not fail), so either way the client gets a REPL. These tests speak mpremote's bytes
over pyserial so they can aim at moments of the boot."""

from __future__ import annotations

import time

import serial
from vbtest import VBoard

BANNER = b"raw REPL; CTRL-B to exit\r\n>"
APP_STARTS = b"entry 0x40080400\r\n"  # the bootloader's last line before the app runs
FOREVER = "import time\nprint('main: running')\nwhile True:\n    time.sleep_ms(5)\n"


def _until(port: serial.Serial, mark: bytes, timeout: float = 10.0) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while mark not in buf and time.monotonic() < end:
        buf += port.read(port.in_waiting or 1)
    assert mark in buf, "no %r within %g s; the board said: %r" % (mark, timeout, buf[-400:])
    return buf


def _ctrl_c_then_raw(port: serial.Serial) -> bytes:
    """What mpremote does to get a raw REPL: one Ctrl-C, drain, Ctrl-A, wait for it."""
    port.write(b"\r\x03")
    while port.in_waiting:
        port.read(port.in_waiting)
    port.write(b"\r\x01")
    return _until(port, BANNER)


def _put(port: serial.Serial, name: str, text: str) -> None:
    """Write a file on the board from its raw REPL (the port is at the raw prompt)."""
    port.write(b"open(%r, 'w').write(%r)\x04" % (name.encode(), text.encode()))
    _until(port, b"\x04>")


def _hard_reset(port: serial.Serial) -> None:
    """machine.reset() from the raw REPL; returns as the bootloader hands over to the app."""
    port.write(b"import machine; machine.reset()\x04")
    _until(port, APP_STARTS)


def test_a_ctrl_c_that_cuts_boot_py_short_skips_main_py(vboard: VBoard) -> None:
    with serial.Serial(vboard.port, 115200, timeout=0.05) as port:
        _ctrl_c_then_raw(port)
        _put(port, "main.py", FOREVER)
        boot = "import time\nprint('boot: start')\ntime.sleep_ms(3000)\nprint('boot: done')\n"
        _put(port, "boot.py", boot)
        # Once as the app starts (the board holds the Ctrl-C until boot.py runs), once
        # while boot.py is seen running: both times boot.py is interrupted, main.py skipped.
        for wait_for in (APP_STARTS, b"boot: start"):
            _hard_reset(port)
            seen = _until(port, wait_for) if wait_for != APP_STARTS else b""
            seen += _ctrl_c_then_raw(port)
            # Held until boot.py starts, the Ctrl-C may land before its first line, or
            # where the unix VM dies of it (the board then restarts it to the REPL,
            # skipping main.py): either way boot.py does not finish and main.py never runs.
            assert b"boot: done" not in seen and b"main: running" not in seen, seen
            if wait_for != APP_STARTS:  # seen running: the Ctrl-C interrupts boot.py
                assert b"KeyboardInterrupt" in seen, seen


def test_one_ctrl_c_gets_a_repl_at_any_moment_of_boot(vboard: VBoard) -> None:
    with serial.Serial(vboard.port, 115200, timeout=0.05) as port:
        _ctrl_c_then_raw(port)
        _put(port, "main.py", FOREVER)
        _put(port, "boot.py", "import time\ntime.sleep_ms(150)\n")
        # 0 .. 0.6 s after the app starts: the VM starting, boot.py, main.py's loop.
        hit_main = False
        for step in range(13):
            _hard_reset(port)
            seen = b""
            end = time.monotonic() + step * 0.05
            while time.monotonic() < end:
                seen += port.read(port.in_waiting or 1)
            seen += _ctrl_c_then_raw(port)
            hit_main = hit_main or b"main: running" in seen
    assert hit_main  # the later moments did catch main.py running
