# Helpers shared by the live BLE tests (test_ble_live.py, test_footfall.py) in the VM.


class FakeBLE:
    """bluetooth.BLE's scanning calls, recorded; events are pushed with scanner._irq."""

    def __init__(self):
        self.calls = []
        self.handler = None

    def active(self, on=None):
        self.calls.append(("active", on))

    def irq(self, handler):
        self.handler = handler
        self.calls.append(("irq", handler is not None))

    def gap_scan(self, duration, interval_us=None, window_us=None, active=False):
        self.calls.append(("gap_scan", duration, interval_us, window_us, active))


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def adv(addr, rssi):
    # _IRQ_SCAN_RESULT data as a board passes it: (addr_type, addr, adv_type, rssi, adv)
    return (1, memoryview(addr), 0, rssi, memoryview(b"\x02\x01\x06"))


def mac(i):
    return bytes((0x5A, 0x1E, 0x22, 0x90, i >> 8, i & 0xFF))
