"""The virtual ESP32's emulated modules (host/edgeveil/vboard/vmlib), run in the real VM.

Each test writes a raw-event replay (docs/vboard-replay.md), starts a fresh MicroPython
unix VM with the vmlib modules initialised as the board's prelude does, and compares what
the board code saw with what the test put in the replay. Speed 0 throughout, so a board
hour takes well under a second; the expected values come from the replay, never from the
modules under test.
"""

from __future__ import annotations

import calendar
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import edgeveil
import pytest
from edgeveil.errors import VBoardError
from edgeveil.vboard.rawreplay import (
    ble_footfall,
    first_time,
    i2c_event,
    pin_event,
    uart_event,
    write_raw_replay,
)
from edgeveil.vm import VMResult, run_code

VMLIB = Path(edgeveil.__file__).parent / "vboard" / "vmlib"
HEAP = 131072
MAC = bytes.fromhex("240ac4123456")
T0 = 1_700_000_000
EPOCH_2000 = 946_684_800


def run_board(
    code: str,
    replay: Path | None = None,
    *,
    ctl: Path | None = None,
    speed: int = 0,
    t0: int = T0,
    wlan: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> VMResult:
    """Run `code` after initialising the modules the way the board prelude does."""
    cfg = (
        "{'mac': %r, 'replay': %s, 'ctl': %s, 'speed': %r, 't0': %r, 'reset_cause': 1, 'wlan': %r}"
        % (
            MAC,
            "open(%r)" % str(replay) if replay else "None",
            "open(%r, 'wb')" % str(ctl) if ctl else "None",
            speed,
            t0,
            wlan,
        )
    )
    prelude = (
        "import sys, json\n"
        "import vbclock\n"
        "cfg = %s\n"
        "vbclock._init(cfg)\n"
        "sys.modules['time'] = vbclock\n"
        "import machine, bluetooth, network, replayio\n"
        "for _m in (machine, bluetooth, network):\n"
        "    _m._init(cfg)\n"
        "import time\n"
        "def out(*v):\n"
        "    print('R', json.dumps(v))\n" % cfg
    )
    return run_code(prelude + code, heap_bytes=HEAP, path=[VMLIB], stdin=stdin)


def results(r: VMResult, halted: bool = False) -> list[Any]:
    """The `out()` lines of a run; `halted`: the run ends as a chip's CPU stops (a hard
    reset, the watchdog, deep sleep), by SIGKILL, so nothing after it ran."""
    if halted:
        assert r.returncode == -signal.SIGKILL, (r.stdout + r.stderr).decode()
    else:
        assert r.ok, (r.stdout + r.stderr).decode()
    return [json.loads(line[2:]) for line in r.stdout.decode().splitlines() if line[:2] == "R "]


SCAN_CODE = """
ble = bluetooth.BLE()
assert ble is bluetooth.BLE()
ble.active(True)
got = []
def irq(event, data):
    if event == 5:
        addr_type, addr, adv_type, rssi, adv_data = data
        assert type(addr) is memoryview and type(adv_data) is memoryview
        got.append((event, addr_type, bytes(addr).hex(), adv_type, rssi, bytes(adv_data).hex(),
                    time.ticks_ms()))
    else:
        got.append((event, time.ticks_ms()))
ble.irq(irq)
ble.gap_scan(%d, 1280000, 11250, %r)
time.sleep(%d)
for g in got:
    out(*g)
out('stats', replayio.replay.delivered, bluetooth.dropped)
"""


def _adv(e: dict[str, Any]) -> list[Any]:
    return [5, e["addr_type"], e["addr"].replace(":", ""), e["adv_type"], e["rssi"], e["adv_data"]]


def test_scan_delivers_the_replayed_advertisements_in_order(tmp_path: Path) -> None:
    events = ble_footfall(seed=3, n_phones=6, minutes=3, start=T0 + 5)
    replay = tmp_path / "ble.jsonl"
    write_raw_replay(replay, events)
    due = [round((e["t"] - T0) * 1000) for e in events]  # board ms after boot
    # End the scan in a quiet second after 2 minutes: at speed 0 the board clock also
    # counts the code's real running time, so the scan's edges move a little between runs.
    gap = next(
        i for i in range(1, len(due)) if due[i - 1] > 120_000 and due[i] - due[i - 1] > 1000
    )
    scan_ms = (due[gap - 1] + due[gap]) // 2
    got = results(run_board(SCAN_CODE % (scan_ms, False, 200), replay))
    *advs, done, stats = got
    in_scan = events[:gap]
    assert 20 < len(in_scan) < len(events)
    assert [a[:6] for a in advs] == [_adv(e) for e in in_scan]
    for a, d in zip(advs, due, strict=False):  # each arrives when it falls due
        assert -1 <= a[6] - d <= 200
    assert done[0] == 6 and scan_ms <= done[1] <= scan_ms + 200
    assert stats == ["stats", len(events), len(events) - len(in_scan)]


def test_scan_responses_reach_only_an_active_scan_and_views_are_reused(tmp_path: Path) -> None:
    replay = tmp_path / "rsp.jsonl"
    write_raw_replay(
        replay,
        [
            {"t": T0 + 1, "kind": "ble", "addr": "c4:7e:11:02:9a:3b", "addr_type": 0,
             "rssi": -60, "adv_data": "0201060302aafe"},
            {"t": T0 + 2, "kind": "ble", "addr": "c4:7e:11:02:9a:3b", "addr_type": 0,
             "adv_type": 4, "rssi": -61, "adv_data": "0909657367766569"},
        ],
    )  # fmt: skip
    passive = results(run_board(SCAN_CODE % (5000, False, 6), replay))
    assert [g[0] for g in passive] == [5, 6, "stats"]
    active = results(run_board(SCAN_CODE % (5000, True, 6), replay))
    assert [g[3] for g in active[:2]] == [0, 4]
    assert active[1][5] == "0909657367766569"
    code = """
ble = bluetooth.BLE(); ble.active(True)
kept = []
ble.irq(lambda e, d: kept.append(d[4]) if e == 5 else None)
ble.gap_scan(0, 1280000, 11250, True)
time.sleep(3)
ble.gap_scan(None)
out(bytes(kept[0]).hex(), bytes(kept[1]).hex())
"""
    first, second = results(run_board(code, replay))[0]
    assert first == second[: len(first)]  # the first view now shows the second event's bytes


def test_scan_control_errors_and_stop(tmp_path: Path) -> None:
    code = """
ble = bluetooth.BLE()
try:
    ble.gap_scan(1000)
except OSError as e:
    out('inactive', e.errno == __import__('errno').ENODEV)
ble.active(True)
ble.irq(lambda e, d: out('irq', e, time.ticks_ms()))
ble.gap_scan(0)
try:
    ble.gap_scan(1000)
except OSError as e:
    out('again', e.errno == __import__('errno').EALREADY)
time.sleep_ms(700)
ble.gap_scan(None)
ble.gap_scan(None)
out('mac', ble.config('mac')[0], ble.config('mac')[1].hex())
"""
    got = results(run_board(code))
    assert got[0] == ["inactive", True]
    assert got[1] == ["again", True]
    assert got[2][:2] == ["irq", 6] and 700 <= got[2][2] < 900  # stopped once, not twice
    assert got[3] == ["mac", 0, (MAC[:5] + bytes([MAC[5] + 2])).hex()]  # ESP-IDF: base + 2


def test_speed_zero_replays_an_hour_in_well_under_real_time(tmp_path: Path) -> None:
    events = ble_footfall(seed=11, n_phones=40, minutes=60, start=T0)
    replay = tmp_path / "hour.jsonl"
    write_raw_replay(replay, events)
    code = """
ble = bluetooth.BLE(); ble.active(True)
n = [0, 0]
def irq(event, data):
    n[event - 5] += 1
ble.irq(irq)
ble.gap_scan(3700000)
t = vbclock._rt.ticks_ms()
time.sleep(3700)
real = vbclock._rt.ticks_diff(vbclock._rt.ticks_ms(), t)
out(n[0], n[1], time.time() - cfg['t0'] + 946684800, real)
"""
    t = time.monotonic()
    (count, done, board_s, real_ms), *_ = results(run_board(code, replay))
    wall = time.monotonic() - t
    assert len(events) > 4000
    assert (count, done, board_s) == (len(events), 1, 3700)
    print(f"{len(events)} advertisements, an hour of board time: {real_ms} ms in the VM, "
          f"{wall:.2f} s with VM start")  # fmt: skip


def test_speed_n_runs_n_times_faster_than_real_time() -> None:
    code = """
t = vbclock._rt.ticks_ms()
b = time.ticks_ms()
time.sleep_ms(2000)
out(time.ticks_diff(time.ticks_ms(), b), vbclock._rt.ticks_diff(vbclock._rt.ticks_ms(), t))
"""
    ((board_ms, real_ms),) = results(run_board(code, speed=50))
    assert 2000 <= board_ms < 3000
    assert 2000 / 50 - 2 <= real_ms < 1000


def test_time_module_is_the_board_clock() -> None:
    code = """
import utime
builtin = utime is not vbclock
sys.modules['utime'] = vbclock
import utime
out(sys.modules['time'] is vbclock and builtin, utime is vbclock, time.time(), time.gmtime(0))
out(time.ticks_add(0, -1), time.ticks_diff(0, time.ticks_add(0, -1)),
    time.ticks_diff(time.ticks_add(5, (1 << 29) - 1), 5))
r = machine.RTC()
r.datetime((2024, 2, 29, 3, 23, 59, 58, 500000))
time.sleep_ms(1600)
out(r.datetime(), time.localtime())
cases = json.loads(sys.stdin.read())
for s in cases:  # one line per case: a single 200-tuple dump fragments a board-sized heap
    out(time.gmtime(s), time.mktime(time.gmtime(s)))
out(time.mktime((2024, 14, 1, 0, 0, 0, 0, 0)), time.mktime((2024, 3, 0, 24, 0, 0, 0, 0)))
"""
    rng = random.Random(5)
    cases = [rng.randrange(0, 2**32) for _ in range(200)] + [0, 59, 86399, 4107542399]
    r = run_board(code, stdin=json.dumps(cases).encode())
    (is_time, is_utime, now, epoch), ticks, (rtc, local), *per_case, (over, under) = results(r)
    tms = [tm for tm, _ in per_case]
    back = [b for _, b in per_case]
    assert is_time and is_utime  # the VM's utime alias needs its own sys.modules entry
    assert now == T0 - EPOCH_2000 and epoch[0] == 2000  # ESP32: Epoch 2000-01-01
    assert ticks == [2**30 - 1, 1, 2**29 - 1]
    assert rtc[:7] == [2024, 3, 1, 4, 0, 0, 0]  # a Friday: 1.6 s later, past the leap day
    assert 100000 <= rtc[7] < 500000
    assert local[:6] == [2024, 3, 1, 0, 0, 0]
    for s, tm in zip(cases, tms, strict=True):
        want = time.gmtime(s + EPOCH_2000)  # CPython's calendar is the oracle
        assert tm == [*want[:6], want.tm_wday, want.tm_yday]
    assert back == cases
    assert over == calendar.timegm((2025, 2, 1, 0, 0, 0)) - EPOCH_2000
    assert under == calendar.timegm((2024, 3, 1, 0, 0, 0)) - EPOCH_2000


def test_unique_id_and_interface_macs() -> None:
    code = """
w = network.WLAN(network.STA_IF)
a = network.WLAN(network.AP_IF)
out(machine.unique_id().hex(), w.config('mac').hex(), a.config('mac').hex(), a.config('essid'),
    machine.reset_cause(), machine.PWRON_RESET, machine.HARD_RESET, machine.WDT_RESET,
    machine.DEEPSLEEP_RESET, machine.SOFT_RESET, machine.freq())
"""
    (got,) = results(run_board(code))
    ap = MAC[:5] + bytes([MAC[5] + 1])
    assert got == [MAC.hex(), MAC.hex(), ap.hex(), "ESP_%02X%02X%02X" % (MAC[3], MAC[4], ap[5]),
                   1, 1, 2, 3, 4, 5, 160_000_000]  # fmt: skip


def test_reset_tells_the_board_and_stops_the_vm_at_once(tmp_path: Path) -> None:
    """As a chip's CPU: nothing after machine.reset() runs, not even a `finally`."""
    ctl = tmp_path / "ctl"
    code = "out('before')\ntry:\n    machine.reset()\nfinally:\n    out('finally')\nout('after')\n"
    r = run_board(code, ctl=ctl)
    assert results(r, halted=True) == [["before"]]
    # The board's calendar time (speed 0: the replay's start) and the RTC memory go first.
    assert ctl.read_bytes() == b"clock %d\nrtcmem \nreset\n" % T0


def test_deepsleep_and_soft_reset_tell_the_board(tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    code = "machine.RTC().memory(b'kept')\nmachine.deepsleep(30000)\nout('after')\n"
    r = run_board(code, ctl=ctl)
    assert results(r, halted=True) == []
    assert ctl.read_bytes() == b"clock %d\nrtcmem %s\ndeepsleep 30000\n" % (
        T0,
        b"kept".hex().encode(),
    )
    r = run_board("machine.soft_reset()\nprint('after')\n", ctl=ctl)
    assert r.ok and b"after" not in r.stdout
    assert ctl.read_bytes() == b"soft\n"


def test_unfed_watchdog_resets_at_its_timeout(tmp_path: Path) -> None:
    replay = tmp_path / "pins.jsonl"
    write_raw_replay(replay, [pin_event(T0 + 2.0, 4, 1), pin_event(T0 + 3.0, 4, 0)])
    ctl = tmp_path / "ctl"
    code = """
p = machine.Pin(4, machine.Pin.IN)
p.irq(lambda pin: out('edge', pin.value(), time.ticks_ms()))
wdt = machine.WDT(timeout=1000)
for i in range(3):
    time.sleep_ms(500)
    wdt.feed()
out('fed', time.ticks_ms())
time.sleep(10)
out('not reached')
"""
    r = run_board(code, replay, ctl=ctl)
    assert ctl.read_bytes().endswith(b"\nwdt\n")
    (fed, at), (edge, level, edge_at) = results(r, halted=True)  # nothing after the timeout
    assert fed == "fed" and 1500 <= at < 1900
    assert (edge, level) == ("edge", 1) and 2000 <= edge_at < 2200


def test_fed_watchdog_and_pin_levels(tmp_path: Path) -> None:
    replay = tmp_path / "pins.jsonl"
    write_raw_replay(replay, [pin_event(T0 + 0.75, 5, 1), pin_event(T0 + 1.75, 5, 0)])
    code = """
wdt = machine.WDT(timeout=1500)
p = machine.Pin(5, machine.Pin.IN, machine.Pin.PULL_UP)
o = machine.Pin(2, machine.Pin.OUT, value=1)
seen = [p.value()]
for i in range(6):
    time.sleep_ms(500)
    wdt.feed()
    seen.append(p.value())
o.off()
out(seen, o.value())
try:
    machine.Pin(36, machine.Pin.OUT)
except ValueError as e:
    out(str(e))
"""
    got = results(run_board(code, replay))
    assert got == [[[1, 1, 1, 1, 0, 0, 0], 0], ["pin can only be input"]]


def test_out_of_order_replay_stops_with_a_clear_message(tmp_path: Path) -> None:
    replay = tmp_path / "bad.jsonl"
    replay.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                pin_event(T0 + 10, 4, 1),
                {"t": "soon", "kind": "pin", "pin": 4, "value": 0},
                pin_event(T0 + 20, 4, 0),
                pin_event(T0 + 15, 4, 1),
                pin_event(T0 + 30, 4, 0),
            ]
        )
        + "\n"
    )
    code = """
p = machine.Pin(4, machine.Pin.IN)
p.irq(lambda pin: out('edge', pin.value(), time.ticks_ms()))
time.sleep(60)
r = replayio.replay
out('stats', r.delivered, r.rejected, r.stopped is not None)
"""
    r = run_board(code, replay)
    text = r.stdout.decode()
    assert "replay: line 2 rejected" in text
    assert "line 4: t=1700000015 is earlier than the line before it (t=1700000020)" in text
    assert "time order" in text and "Replay stopped" in text
    (e1, e2, stats) = results(r)
    assert e1[:2] == ["edge", 1] and 10000 <= e1[2] < 10200
    assert e2[:2] == ["edge", 0] and 20000 <= e2[2] < 20200
    assert stats == ["stats", 2, 1, True]


GGA = "$GPGGA,123519,4807.038,N*47\r\n"


def test_i2c_and_uart_read_the_replayed_values(tmp_path: Path) -> None:
    replay = tmp_path / "bus.jsonl"
    write_raw_replay(
        replay,
        [
            uart_event(T0 + 0.5, "lost: no UART yet\r\n"),
            i2c_event(T0 + 1, 0x62, 0xEC05, bytes.fromhex("01f4a2"), regsize=16),
            i2c_event(T0 + 1, 0x57, 0x07, bytes.fromhex("0102")),
            uart_event(T0 + 2, GGA + "$GPRMC,"),
            uart_event(T0 + 3, "123519,A*6A\r\n"),
            i2c_event(T0 + 5, 0x62, 0xEC05, bytes.fromhex("0320b4"), regsize=16),
            uart_event(T0 + 8, b"\xb5\x62\x01", uart=2),
        ],
    )
    code = """
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
try:
    i2c.readfrom(0x62, 3)
except OSError as e:
    out('absent', e.errno == __import__('errno').ENODEV)
time.sleep(1)
u = machine.UART(1, 9600, rx=16, tx=17)
time.sleep(1)
out(i2c.scan())
i2c.writeto(0x62, b'\\xec\\x05')
a = i2c.readfrom(0x62, 3)
out(a.hex(), i2c.readfrom_mem(0x57, 7, 2).hex(), i2c.readfrom_mem(0x57, 8, 2).hex())
out(u.any(), u.readline().decode(), u.any())
time.sleep(3)
i2c.writeto(0x62, b'\\xec\\x05')
buf = bytearray(3)
i2c.readfrom_into(0x62, buf)
out(buf.hex(), u.readline().decode())
u2 = machine.UART(2, 9600, timeout=5000)
out(u2.read(3).hex(), time.ticks_ms())
out(u2.read(1))
"""
    got = results(run_board(code, replay))
    assert got == [
        ["absent", True],
        [[0x57, 0x62]],
        ["01f4a2", "0102", "0000"],
        [len(GGA) + 7, GGA, 7],  # "$GPRMC," waits for the rest of its sentence
        ["0320b4", "$GPRMC,123519,A*6A\r\n"],
        ["b56201", got[5][1]],
        [None],
    ]
    assert 8000 <= got[5][1] < 8200  # waited for the bytes due at 8 s (timeout 5 s)


def test_wlan_connects_after_a_short_board_delay() -> None:
    code = """
w = network.WLAN(network.STA_IF)
try:
    w.connect('home', 'secret')
except OSError as e:
    out('inactive', str(e))
out(w.active(True), w.isconnected(), w.ifconfig()[0])
w.connect('home', 'secret')
out(w.status() == network.STAT_CONNECTING)
time.sleep(2)
out(w.isconnected(), w.status(), w.ifconfig()[0])
w.disconnect()
w.connect('home', 'wrong')
time.sleep(2)
s1 = w.status()
w.connect('elsewhere', 'x')
time.sleep(2)
out(s1, w.status(), w.isconnected())
"""
    got = results(run_board(code, wlan={"home": "secret"}))
    assert got == [
        ["inactive", "Wifi Not Started"],
        [True, False, "0.0.0.0"],
        [True],
        [True, 1010, "127.0.0.1"],
        [202, 201, False],  # STAT_WRONG_PASSWORD, STAT_NO_AP_FOUND
    ]


def test_delivering_an_advertisement_allocates_nothing() -> None:
    code = """
import micropython
ble = bluetooth.BLE(); ble.active(True)
seen = bytearray(8)
def irq(event, data):
    if event == 5:
        addr_type, addr, adv_type, rssi, adv_data = data
        seen[0] = addr[5]
        seen[1] = len(adv_data)
        seen[2] = -rssi
ble.irq(irq)
ble.gap_scan(0)
p = bluetooth._prepare({'addr': 'c4:7e:11:02:9a:3b', 'rssi': -71, 'adv_data': '0201061aff4c00'})
wdt = machine.WDT(timeout=60000)
def locked():
    micropython.heap_lock()
    try:
        bluetooth._deliver(p)
        bluetooth._deliver(p)
        wdt.feed()
        time.sleep_ms(5)
        time.ticks_ms()
        return True
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()
out(locked(), list(seen[:3]))
"""
    assert results(run_board(code)) == [[True, [0x3B, 7, 71]]]


def test_importing_the_modules_costs_a_bounded_heap() -> None:
    code = """
import gc
gc.collect()
before = gc.mem_alloc()
import vbclock, replayio, machine, bluetooth, network
gc.collect()
print(gc.mem_alloc() - before)
"""
    r = run_code(code, heap_bytes=HEAP, path=[VMLIB])
    assert r.ok, r.stderr
    cost = int(r.stdout)
    print(f"vmlib modules (vbclock, replayio, machine, bluetooth, network): {cost} bytes of heap")
    assert 0 < cost < 48 * 1024


def test_raw_replay_writer_and_footfall(tmp_path: Path) -> None:
    canary = "c0:ff:ee:00:00:01"
    ev = ble_footfall(seed=2, n_phones=10, minutes=40, start=T0, canary=canary)
    assert ev == ble_footfall(seed=2, n_phones=10, minutes=40, start=T0, canary=canary)
    times = [e["t"] for e in ev]
    assert times == sorted(times) and T0 <= times[0] and times[-1] < T0 + 40 * 60
    addrs = {e["addr"] for e in ev}
    assert canary in addrs and len(addrs) > 11  # phones rotate their addresses
    for a in addrs - {canary}:
        assert int(a[:2], 16) >> 6 == 0b01  # resolvable private addresses
    assert all(len(bytes.fromhex(e["adv_data"])) <= 31 for e in ev)
    path = tmp_path / "r.jsonl"
    assert write_raw_replay(path, ev) == len(ev)
    assert first_time(path) == times[0]
    with pytest.raises(VBoardError, match="before"):
        write_raw_replay(path, [pin_event(T0 + 2, 1, 1), pin_event(T0 + 1, 1, 0)])
