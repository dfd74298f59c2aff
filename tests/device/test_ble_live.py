# The live BLE source (veil.sources.ble_live) in the MicroPython VM with a fake radio:
# the IRQ ring keeps order, time and RSSI, allocates nothing, and keeps no raw address.
import micropython
from bletest import Clock, FakeBLE
from bletest import adv as _adv
from bletest import mac as _mac
from veil.sources.ble_live import Scanner

START = 81000  # veil time


def test_ring_keeps_order_time_and_rssi_and_counts_overflow():
    clock = Clock(START + 5)
    sc = Scanner(FakeBLE(), 4, clock)  # 4 slots hold 3 sightings
    for i in range(5):
        clock.t = START + i
        sc._irq(5, _adv(_mac(i), -40 - i))
    sc._irq(6, ())  # _IRQ_SCAN_DONE: ignored
    assert sc.overflow == 2
    got = []
    n = sc.drain(lambda t, ch, v: got.append((t, ch, bytes(v) if ch == "ble" else v)))
    assert n == 3
    assert got == [
        (START, "ble", _mac(0)),
        (START, "rssi", -40),
        (START + 1, "ble", _mac(1)),
        (START + 1, "rssi", -41),
        (START + 2, "ble", _mac(2)),
        (START + 2, "rssi", -42),
    ]
    assert not any(sc._buf) and not any(sc._addr)  # no raw address left in RAM
    assert sc.drain(lambda *a: 1 / 0) == 0


def test_unset_clock_drops_sightings():
    sc = Scanner(FakeBLE(), 8, Clock(-5))  # a board in 2000: before veil time
    sc._irq(5, _adv(_mac(1), -60))
    assert sc.unclocked == 1 and sc.drain(print) == 0


def test_irq_and_drain_allocate_nothing():
    clock = Clock(START)
    sc = Scanner(FakeBLE(), 64, clock)
    advs = [_adv(_mac(i), -50) for i in range(40)]
    seen = bytearray(1)

    def feed(t, ch, v):
        seen[0] += 1

    micropython.heap_lock()
    try:
        for rep in range(3):
            for i in range(40):
                clock.t = START + i
                sc._irq(5, advs[i])
            sc.drain(feed)
    finally:
        micropython.heap_unlock()
    assert seen[0] == 240


def test_start_and_stop_drive_the_radio():
    ble = FakeBLE()
    sc = Scanner(ble, 8, Clock(START))
    sc.start(100000, 50000)
    assert ble.calls == [("active", True), ("irq", True), ("gap_scan", 0, 100000, 50000, False)]
    sc._irq(5, _adv(_mac(1), -60))
    sc.stop()
    assert ble.calls[-2:] == [("gap_scan", None, None, None, False), ("irq", False)]
    assert not any(sc._buf)
