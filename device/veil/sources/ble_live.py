"""BLE presence, live: a passive scan's advertisements, through an IRQ ring buffer.

    import bluetooth
    from veil.sources.ble_live import Scanner

    sc = Scanner(bluetooth.BLE(), 128)      # ring of 128 sightings, made here
    sc.start(100000, 50000)                 # gap_scan(0, interval_us, window_us, False)
    sc.drain(pipe.feed)                     # main loop: feed(t, "ble", addr), ("rssi", dBm)
    sc.stop()

The same channels as the replay normalizer (veil.sources.ble): "ble" (the 6-byte address,
bytes-like) and "rssi" (dBm, int), so the policy cannot tell a board from a recording.
The IRQ handler stores (event time, address, RSSI) in a preallocated ring and returns:
it allocates nothing, and a sighting that finds the ring full is dropped and counted in
`overflow` (kept in RAM only: a printed count would be a data-dependent output that no
noise covers). drain() hands each sighting to the pipeline, which keeps only keyed
hashes; the ring slot and the address buffer are zeroed as soon as it returns, so a raw
address stays in RAM only between the radio and the aggregators.

Event time is veil time (seconds since veil.T0), read from `time.time()` when the
advertisement is handled. MicroPython's ESP32 port counts `time.time()` from 2000-01-01,
the unix port from 1970; the offset is taken from `time.gmtime(0)`. A board whose clock
was never set (no NTP, no RTC) starts in 2000, before veil time: its sightings are
dropped and counted in `unclocked`.
"""

import time

from micropython import const

from veil import T0

_IRQ_SCAN_RESULT = const(5)
_REC = const(11)  # a ring slot: event time (4 bytes, big-endian), address (6), RSSI (1)
_EPOCH_2000 = const(946684800)  # Unix seconds at 2000-01-01 00:00 UTC

# veil time = time.time() + _OFF (a small int on a board either way: 2000-based time fits)
_OFF = (_EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0) - T0


def now():
    """The board's clock in veil time (int seconds; negative while the clock is unset)."""
    return time.time() + _OFF


class Scanner:
    """A passive BLE scan feeding a ring of sightings; drain() empties it into a pipeline.

    Allocation: the constructor allocates the ring; the IRQ handler and drain() allocate
    nothing themselves (drain's `feed` may, when a window closes); start() and stop() may.
    """

    def __init__(self, ble, size=128, clock=now):
        if type(size) is not int or size < 2 or size > 1024:
            raise ValueError("ring size must be an int in 2..1024")
        self._ble = ble
        self._clock = clock
        self._size = size
        self._buf = bytearray(size * _REC)
        self._addr = bytearray(6)  # what drain() hands to the pipeline, zeroed after
        self._head = 0  # written by the IRQ handler only
        self._tail = 0  # written by drain() only
        self._irq_cb = self._irq  # one bound method, made here, not per event
        self.overflow = 0  # sightings dropped because the ring was full
        self.unclocked = 0  # sightings dropped because the clock was not set
        self.scanning = False

    def start(self, interval_us=100000, window_us=50000):
        """Scan until stop(): passive (no scan requests), every advertisement heard."""
        ble = self._ble
        ble.active(True)
        ble.irq(self._irq_cb)
        ble.gap_scan(0, interval_us, window_us, False)
        self.scanning = True

    def stop(self):
        """End the scan and forget the handler; the ring is zeroed (never raises)."""
        self.scanning = False
        try:
            self._ble.gap_scan(None)
        except OSError:
            pass
        self._ble.irq(None)
        buf = self._buf
        i = 0
        k = len(buf)
        while i < k:
            buf[i] = 0
            i += 1
        self._head = self._tail = 0

    def _irq(self, event, data):
        # _IRQ_SCAN_RESULT data: (addr_type, addr, adv_type, rssi, adv_data); addr is a
        # memoryview the next event overwrites: copied here, nothing kept of adv_data.
        if event != _IRQ_SCAN_RESULT:
            return
        t = self._clock()
        if t < 0:
            self.unclocked += 1
            return
        head = self._head
        nxt = head + 1
        if nxt == self._size:
            nxt = 0
        if nxt == self._tail:
            self.overflow += 1
            return
        buf = self._buf
        o = head * _REC
        buf[o] = (t >> 24) & 0xFF
        buf[o + 1] = (t >> 16) & 0xFF
        buf[o + 2] = (t >> 8) & 0xFF
        buf[o + 3] = t & 0xFF
        addr = data[1]
        i = 0
        while i < 6:
            buf[o + 4 + i] = addr[i]
            i += 1
        buf[o + 10] = data[3] & 0xFF
        self._head = nxt  # last: the slot is complete before drain() can see it

    def drain(self, feed):
        """Feed every queued sighting as feed(t, "ble", addr) and feed(t, "rssi", rssi).

        Returns how many were fed. The slot is released (and zeroed) before `feed` runs,
        so a sighting whose feed raises is not fed again.
        """
        buf = self._buf
        addr = self._addr
        n = 0
        while self._tail != self._head:
            o = self._tail * _REC
            t = (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]
            i = 0
            while i < 6:
                addr[i] = buf[o + 4 + i]
                i += 1
            rssi = buf[o + 10]
            i = 0
            while i < _REC:
                buf[o + i] = 0
                i += 1
            if rssi > 127:
                rssi -= 256
            nxt = self._tail + 1
            self._tail = 0 if nxt == self._size else nxt
            try:
                feed(t, "ble", addr)
                feed(t, "rssi", rssi)
            finally:
                i = 0
                while i < 6:
                    addr[i] = 0
                    i += 1
            n += 1
        return n
