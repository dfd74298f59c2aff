"""A client's single Ctrl-C reaches the REPL of a virtual board whose main.py never returns,
whenever during boot it arrives: before boot.py starts, while boot.py runs, or later.

mpremote sends one Ctrl-C (b"\\r\\x03") and then Ctrl-A; on an ESP32 a Ctrl-C that cuts
boot.py short also skips main.py (the port's main.c runs main.py only after a boot.py that
did not fail), so either way the client gets a REPL. These tests speak mpremote's bytes
over pyserial so they can aim at moments of the boot."""

from __future__ import annotations

import time

import serial
from vbtest import APP_STARTS, Console, VBoard

FOREVER = "import time\nprint('main: running')\nwhile True:\n    time.sleep_ms(5)\n"


def test_a_ctrl_c_that_cuts_boot_py_short_skips_main_py(vboard: VBoard) -> None:
    with serial.Serial(vboard.port, 115200, timeout=0.05) as port:
        con = Console(port, vboard)
        con.ctrl_c_then_raw()
        con.put("main.py", FOREVER)
        boot = "import time\nprint('boot: start')\ntime.sleep_ms(3000)\nprint('boot: done')\n"
        con.put("boot.py", boot)
        # Once as the app starts (the board holds the Ctrl-C until boot.py runs), once
        # while boot.py is seen running: both times boot.py is interrupted, main.py skipped.
        for wait_for in (APP_STARTS, b"boot: start"):
            con.hard_reset()
            seen = con.until(wait_for) if wait_for != APP_STARTS else b""
            seen += con.ctrl_c_then_raw()
            # Held until boot.py starts, the Ctrl-C may land before its first line, or
            # where the unix VM dies of it (the board then restarts it to the REPL,
            # skipping main.py): either way boot.py does not finish and main.py never runs.
            assert b"boot: done" not in seen and b"main: running" not in seen, (
                repr(seen) + con.log_tail()
            )
            if wait_for != APP_STARTS:  # seen running: the Ctrl-C interrupts boot.py
                assert b"KeyboardInterrupt" in seen, repr(seen) + con.log_tail()


def test_one_ctrl_c_gets_a_repl_at_any_moment_of_boot(vboard: VBoard) -> None:
    with serial.Serial(vboard.port, 115200, timeout=0.05) as port:
        con = Console(port, vboard)
        con.ctrl_c_then_raw()
        con.put("main.py", FOREVER)
        con.put("boot.py", "import time\ntime.sleep_ms(150)\n")
        # 0 .. 0.6 s after the app starts: the VM starting, boot.py, main.py's loop (how
        # far a moment gets depends on the machine's load), each answered by a REPL.
        for step in range(13):
            con.hard_reset()
            time.sleep(step * 0.05)
            con.ctrl_c_then_raw()
        # And the last moment for certain: main.py's loop seen running.
        con.hard_reset()
        seen = con.until(b"main: running")
        seen += con.ctrl_c_then_raw()
        assert b"KeyboardInterrupt" in seen, repr(seen) + con.log_tail()
