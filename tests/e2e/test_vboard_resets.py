"""A virtual board's hard resets and deep sleep, as a chip does them: the CPU stops where it
is (nothing after runs, a file left open loses what it buffered), deep sleep is silent for
its time on the board's clock and wakes with DEEPSLEEP_RESET, and RTC memory outlives both."""

from __future__ import annotations

import serial
from vbtest import APP_STARTS, Console, VBoard


def test_a_hard_reset_stops_the_cpu_where_it_is(vboard: VBoard) -> None:
    with serial.Serial(vboard.port, 115200, timeout=0.05) as port:
        con = Console(port, vboard)
        con.ctrl_c_then_raw()
        con.put("kept.txt", "closed before the reset")
        # Left open, and held by a global so that no collection closes it first.
        assert con.run("lost = open('lost.txt', 'w')\nlost.write('x' * 64)") == ""
        port.write(
            b"import machine\ntry:\n    machine.reset()\nfinally:\n    print('finally ran')\n\x04"
        )
        seen = con.until(APP_STARTS)
        seen += con.ctrl_c_then_raw()
        assert b"rst:0xc (SW_CPU_RESET)" in seen
        assert b"finally ran" not in seen
        assert con.run("print(open('kept.txt').read())") == "closed before the reset"
        lost = con.run(
            "import os\nprint(open('lost.txt').read() if 'lost.txt' in os.listdir() else '')"
        )
        assert lost == ""  # littlefs had not committed what was written to it
        assert con.run("import machine\nprint(machine.reset_cause())") == "5"  # SOFT_RESET, as
        # MicroPython's ESP32 port reports a software CPU reset


def test_deep_sleep_is_silent_for_its_time_then_boots_with_its_cause(vboard: VBoard) -> None:
    with serial.Serial(vboard.port, 115200, timeout=0.05) as port:
        con = Console(port, vboard)
        con.ctrl_c_then_raw()
        before = int(con.run("import time\nprint(time.time())"))
        port.write(b"import machine\nmachine.RTC().memory(b'kept')\nmachine.deepsleep(2000)\n\x04")
        seen = con.until(APP_STARTS)
        seen += con.ctrl_c_then_raw()
        assert b"rst:0x5 (DEEPSLEEP_RESET)" in seen, repr(seen) + con.log_tail()
        assert seen.count(b"rst:") == 1, repr(seen) + con.log_tail()  # one wake, no other boot
        out = con.run(
            "import machine, time\nprint(machine.reset_cause(), machine.wake_reason(), "
            "machine.RTC().memory(), time.time())"
        )
        cause, wake, memory, after = out.split()
        # DEEPSLEEP_RESET 4, TIMER_WAKE 4; RTC memory kept; the board's clock slept too.
        assert (cause, wake, memory) == ("4", "4", "b'kept'")
        assert int(after) >= before + 2
