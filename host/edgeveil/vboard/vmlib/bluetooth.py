"""Emulated `bluetooth` of the virtual ESP32: the observer role (BLE scanning), fed by
replayed advertisements (`"kind": "ble"` events, docs/vboard-replay.md).

    ble = bluetooth.BLE()
    ble.active(True)
    ble.irq(handler)              # handler(event, data)
    ble.gap_scan(10000)           # 10 s of board time: _IRQ_SCAN_RESULT (5) per advert heard,
                                  # then _IRQ_SCAN_DONE (6); gap_scan(None) stops at once

As on the board, `addr` and `adv_data` in a scan result are memoryviews into one buffer
that the next event overwrites: copy them (`bytes(addr)`) to keep them. The replay holds
what the radio heard, so every advertisement that falls due while a scan runs is
delivered, whatever `interval_us`/`window_us` say; scan responses (adv_type 4) only reach
an active scan. Advertisements that fall due while no scan runs are lost, as on air.

Differences from the board (documented in docs/vboard-replay.md): the event data is one
reused list, not a tuple (unpacking and indexing work the same; the board builds its tuple
on the stack, which Python code cannot), and its memoryviews are writable. Delivering an
advertisement allocates nothing. Only scanning is modelled: no advertising, GATT or
connections.
"""

import errno
import sys

import replayio
import vbclock
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_ADV_TYPE_SCAN_RSP = const(4)
_ADV_MAX = const(31)  # legacy advertising payload; the ESP32 (BLE 4.2) has no extended adverts

_addr = bytearray(6)
_data = bytearray(_ADV_MAX)
_mv = memoryview(_data)
_data_mv = [_mv[:n] for n in range(_ADV_MAX + 1)]  # one view per payload length: none made later
_args = [0, memoryview(_addr), 0, 0, _data_mv[0]]

_mac = bytes(6)
_active = False
_handler = None
_scanning = False
_scan_rsp = False  # the running scan is active (asks for scan responses)
_gap_name = b"ESP32"  # MICROPY_PY_BLUETOOTH_DEFAULT_GAP_NAME on the esp32 port
dropped = 0  # advertisements that fell due while no scan was running


class _ScanEnd:
    """Clock timer: the running scan's duration elapses."""

    _due = None

    def _fire(self):
        _stop_scan()


_end = _ScanEnd()
vbclock.add_timer(_end)


def _init(cfg):
    global _mac, _active, _handler, _scanning, dropped
    m = cfg["mac"]
    _mac = bytes(m[:5]) + bytes(((m[5] + 2) & 0xFF,))  # ESP-IDF: BT address = base MAC + 2
    _active = _scanning = False
    _handler = None
    _end._due = None
    dropped = 0


def _call(event, data):
    if _handler is None:
        return
    try:
        _handler(event, data)
    except Exception as e:  # the board prints the exception and carries on
        sys.print_exception(e)


def _stop_scan():
    global _scanning
    _scanning = False
    _end._due = None
    _call(_IRQ_SCAN_DONE, ())


def _prepare(ev):
    """Replay event -> (addr_type, addr, adv_type, rssi, adv_data); raises ValueError."""
    addr = ev.get("addr")
    if type(addr) is not str or len(addr) != 17 or addr.count(":") != 5:
        raise ValueError("addr: 'xx:xx:xx:xx:xx:xx' required")
    return (
        replayio.intfield(ev, "addr_type", 0, 1, 1),
        replayio.hexbytes({"addr": addr.replace(":", "")}, "addr", 6),
        replayio.intfield(ev, "adv_type", 0, 4, 0),
        replayio.intfield(ev, "rssi", -127, 20),
        replayio.hexbytes(ev, "adv_data", _ADV_MAX),
    )


def _deliver(p):
    """Hand one prepared advertisement to the IRQ handler. Allocates nothing."""
    global dropped
    if not _scanning or (p[2] == _ADV_TYPE_SCAN_RSP and not _scan_rsp):
        dropped += 1
        return
    _addr[:] = p[1]
    d = p[4]
    n = len(d)
    _data[:n] = d
    a = _args
    a[0] = p[0]
    a[2] = p[2]
    a[3] = p[3]
    a[4] = _data_mv[n]
    _call(_IRQ_SCAN_RESULT, a)


replayio.register("ble", _prepare, _deliver)


def _need_active():
    if not _active:
        raise OSError(errno.ENODEV)  # ERRNO_BLUETOOTH_NOT_ACTIVE


class BLE:
    """The BLE radio; `BLE()` always returns the same object."""

    _it = None

    def __new__(cls):
        if BLE._it is None:
            BLE._it = object.__new__(cls)
        return BLE._it

    def active(self, state=None):
        global _active, _scanning
        if state is not None:
            _active = bool(state)
            if not _active:
                _scanning = False  # the stack stops; no _IRQ_SCAN_DONE
                _end._due = None
        return _active

    def irq(self, handler):
        global _handler
        _handler = handler

    def config(self, *args, **kw):
        global _gap_name
        if args:
            if len(args) != 1 or kw:
                raise TypeError("must query one param")
            p = args[0]
            if p == "mac":
                _need_active()
                return (0, _mac)  # the public address
            if p == "gap_name":
                return _gap_name
            raise ValueError("unknown config param")
        for k, v in kw.items():
            if k == "gap_name":
                _gap_name = v.encode() if type(v) is str else bytes(v)
            elif k not in ("rxbuf", "mtu", "addr_mode", "bond", "mitm", "io", "le_secure"):
                raise ValueError("unknown config param")

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        global _scanning, _scan_rsp
        _need_active()
        if duration_ms is None:
            if _scanning:
                _stop_scan()
            return
        if _scanning:
            raise OSError(errno.EALREADY)  # NimBLE: discovery already in progress
        if duration_ms < 0 or interval_us <= 0 or window_us <= 0:
            raise ValueError("bad scan parameters")
        _scanning = True
        _scan_rsp = bool(active)
        _end._due = vbclock._now() + duration_ms * 1000 if duration_ms else None


class UUID:
    """A 16-, 32- or 128-bit UUID, from an int, a canonical string or its bytes (LE)."""

    def __init__(self, value):
        if isinstance(value, UUID):
            b = value._b
        elif type(value) is int:
            if not 0 <= value <= 0xFFFF:
                raise ValueError("invalid UUID")
            b = bytes((value & 0xFF, value >> 8))
        elif type(value) is str:
            h = value.replace("-", "")
            if len(h) != 32:
                raise ValueError("invalid UUID")
            b = bytes(int(h[i : i + 2], 16) for i in range(30, -2, -2))  # stored little-endian
        else:
            b = bytes(value)
            if len(b) not in (2, 4, 16):
                raise ValueError("invalid UUID")
        self._b = b

    def __eq__(self, other):
        return isinstance(other, UUID) and self._b == other._b

    def __hash__(self):
        return hash(self._b)

    def __bytes__(self):
        return self._b

    def __repr__(self):
        b = self._b
        if len(b) != 16:
            return "UUID(0x%s)" % "".join("%02x" % x for x in reversed(b))
        h = "".join("%02x" % x for x in reversed(b))
        return "UUID('%s-%s-%s-%s-%s')" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
