"""Emulated `machine` of the virtual ESP32 (ESP32 MicroPython's names and values).

    machine.unique_id()          # the board's 6-byte base MAC, as esptool read_mac shows it
    machine.reset()              # hard reset: the VM stops at once, the board boots again
    wdt = machine.WDT(timeout=5000); wdt.feed()
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
    i2c.readfrom_mem(0x57, 0x07, 3)          # registers as the replay last set them
    uart = machine.UART(1, 9600, rx=16); uart.readline()   # bytes replayed as "uart" events

Sensors and buses are fed by the raw-event replay (docs/vboard-replay.md): "i2c" events set
a device's register contents (a device answers from its first event on; before that it
NACKs, OSError ENODEV), "uart" events put bytes in a UART's receive buffer, "pin" events
drive a GPIO input (and fire its irq). Resets, the watchdog and deep sleep are told to the
board process as one line on `cfg['ctl']` (b"reset\\n", b"soft\\n", b"wdt\\n",
b"deepsleep <ms>\\n", -1 for no timer), after the board's calendar time (b"clock <s>\\n")
and RTC memory (b"rtcmem <hex>\\n"), which the next boot keeps. A soft reset then exits
the VM (finalising what is open, as a board's soft reset does); a hard reset, the watchdog
and deep sleep stop it at once, as a chip's CPU stops: no `finally`, no finaliser, so a
file left open loses what it had not written, as on a board.

Not modelled: Timer, ADC, SPI, PWM, I2S, TouchPad, time_pulse_us.
"""

import errno
import sys

import replayio
import vbclock
from micropython import const

PWRON_RESET = const(1)  # reset_reason_t in ports/esp32/modmachine.c
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
SLEEP = const(2)
DEEPSLEEP = const(4)
PIN_WAKE = const(2)  # esp_sleep_wakeup_cause_t
EXT0_WAKE = const(2)
EXT1_WAKE = const(3)
TIMER_WAKE = const(4)
TOUCHPAD_WAKE = const(5)
ULP_WAKE = const(6)

_RTC_MEM_MAX = const(2048)  # MICROPY_HW_RTC_USER_MEM_MAX
_FREQS = (20, 40, 80, 160, 240)

_mac = bytes(6)
_ctl = None
_cause = PWRON_RESET
_wake = 0
_rtc_mem = b""


def _init(cfg):
    global _mac, _ctl, _cause, _wake, _rtc_mem
    _mac = bytes(cfg["mac"])
    if len(_mac) != 6:
        raise ValueError("cfg['mac'] must be 6 bytes")
    _ctl = cfg.get("ctl")
    _cause = cfg.get("reset_cause", PWRON_RESET)
    _wake = TIMER_WAKE if _cause == DEEPSLEEP_RESET else 0
    _rtc_mem = bytes(cfg.get("rtc_mem", b""))  # kept across resets, lost at power-off
    vbclock._cpu_mhz = 160
    _wdt._due = None
    _devs.clear()
    _rx.clear()
    for i in range(40):
        _pin_ext[i] = 255
        _pin_irq[i] = None


def _tell(line):
    c = _ctl
    if c is not None:
        c.write(line)
        if hasattr(c, "flush"):
            c.flush()


def unique_id():
    return _mac


def _state():
    """Tell the board what outlives the VM: its calendar time and the RTC memory."""
    _tell(b"clock %d\n" % (vbclock._t0 + vbclock._now() // 1000000))
    _tell(b"rtcmem %s\n" % _rtc_mem.hex().encode())


def _halt(line):
    """The CPU stops here: tell the board (which boots again or sleeps), then end the VM
    at once. Nothing after runs: no `finally`, no `with` exit, no finaliser."""
    _state()
    _tell(line)
    import os

    os.system("kill -9 $PPID")  # the shell's parent: this VM
    sys.exit(0)  # not reached; without a shell the board still acts on the line


def reset():
    _halt(b"reset\n")


def soft_reset():
    _tell(b"soft\n")
    raise SystemExit


def reset_cause():
    return _cause


def wake_reason():
    return _wake


def freq(hz=None):
    if hz is None:
        return vbclock._cpu_mhz * 1000000
    if hz // 1000000 not in _FREQS:
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    vbclock._cpu_mhz = hz // 1000000


def idle():
    vbclock.idle()


def lightsleep(time_ms=None):
    vbclock.lightsleep(time_ms)


def deepsleep(time_ms=None):
    # No time, or a negative one (which the ESP32 port takes as a huge unsigned time):
    # asleep until a reset.
    _halt(("deepsleep %d\n" % (-1 if time_ms is None or time_ms < 0 else time_ms)).encode())


def disable_irq():
    was = vbclock._irq_off
    vbclock._irq_off = True
    return 1 if was else 0


def enable_irq(state=0):
    vbclock._irq_off = bool(state)


class RTC:
    """Calendar clock: datetime() is (year, month, day, weekday, hour, minute, second, us)."""

    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            now = vbclock._wall_us + vbclock._now()
            t = vbclock.gmtime(now // 1000000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], now % 1000000)
        secs = vbclock.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        vbclock._wall_set(secs, dt[7] if len(dt) > 7 else 0)

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        global _rtc_mem
        if data is None:
            return _rtc_mem
        if len(data) > _RTC_MEM_MAX:
            raise ValueError("buffer too long")
        _rtc_mem = bytes(data)


class _Watchdog:
    """Clock timer: the task watchdog, armed by WDT(); firing resets the board."""

    _due = None
    _us = 0

    def _fire(self):
        _halt(b"wdt\n")


_wdt = _Watchdog()
vbclock.add_timer(_wdt)


class WDT:
    """WDT(id=0, timeout=5000): reset unless fed within `timeout` ms of board time.

    Once started it cannot be stopped; a second WDT() sets a new timeout, as on the ESP32.
    """

    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _wdt._us = timeout * 1000
        self.feed()

    def feed(self):
        _wdt._due = vbclock._now() + _wdt._us


# GPIO: levels and handlers live per GPIO number, so every Pin(n) object shares them.
_pin_mode = bytearray(40)
_pin_out = bytearray(40)
_pin_pull = bytearray(40)
_pin_ext = bytearray(b"\xff" * 40)  # level driven from outside (replay); 255 = floating
_pin_irq = [None] * 40  # (pin, handler, trigger)
_NO_GPIO = (20, 24, 28, 29, 30, 31)


class Pin:
    IN = const(1)  # GPIO_MODE_INPUT
    OUT = const(3)  # GPIO_MODE_INPUT_OUTPUT: an output reads back its level
    OPEN_DRAIN = const(7)
    PULL_DOWN = const(1)
    PULL_UP = const(2)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)
    WAKE_LOW = const(4)
    WAKE_HIGH = const(5)
    DRIVE_0 = const(0)
    DRIVE_1 = const(1)
    DRIVE_2 = const(2)
    DRIVE_3 = const(3)

    def __init__(self, id, mode=None, pull=-1, *, value=None, drive=None, hold=None):
        if type(id) is not int or not 0 <= id < 40 or id in _NO_GPIO:
            raise ValueError("invalid pin")
        self._id = id
        if mode is not None or pull != -1 or value is not None:
            self.init(mode, pull, value=value)

    def init(self, mode=None, pull=-1, *, value=None, drive=None, hold=None):
        i = self._id
        if value is not None:
            _pin_out[i] = 1 if value else 0
        if mode is not None:
            if i >= 34 and mode & 2:
                raise ValueError("pin can only be input")
            _pin_mode[i] = mode
        if pull != -1:
            _pin_pull[i] = pull or 0

    def value(self, v=None):
        i = self._id
        if v is not None:
            _pin_out[i] = 1 if v else 0
            return None
        if _pin_mode[i] == Pin.OUT:
            return _pin_out[i]
        if _pin_mode[i] == Pin.OPEN_DRAIN and not _pin_out[i]:
            return 0
        e = _pin_ext[i]
        if e != 255:
            return e
        return 1 if _pin_pull[i] & Pin.PULL_UP else 0

    __call__ = value

    def on(self):
        _pin_out[self._id] = 1

    def off(self):
        _pin_out[self._id] = 0

    def toggle(self):
        _pin_out[self._id] ^= 1

    def irq(self, handler=None, trigger=3, wake=None):
        """Call handler(pin) on replayed edges matching trigger. Returns None here."""
        _pin_irq[self._id] = None if handler is None else (self, handler, trigger)

    def __repr__(self):
        return "Pin(%d)" % self._id


def _pin_prepare(ev):
    p = replayio.intfield(ev, "pin", 0, 39)
    return (p, replayio.intfield(ev, "value", 0, 1))


def _pin_deliver(p):
    i, v = p
    before = Pin(i).value()
    _pin_ext[i] = v
    after = Pin(i).value()
    h = _pin_irq[i]
    if h is not None and before != after and h[2] & (Pin.IRQ_RISING if after else Pin.IRQ_FALLING):
        try:
            h[1](h[0])
        except Exception as e:
            sys.print_exception(e)


replayio.register("pin", _pin_prepare, _pin_deliver)

# I2C: one bus; each device is [register bytes, pointer, {register: contents}].
_devs = {}


def _i2c_prepare(ev):
    size = replayio.intfield(ev, "regsize", 8, 16, 8)
    if size not in (8, 16):
        raise ValueError("regsize: 8 or 16 required")
    return (
        replayio.intfield(ev, "addr", 0, 127),
        size // 8,
        replayio.intfield(ev, "reg", 0, (1 << size) - 1, 0),
        replayio.hexbytes(ev, "data", 256),
    )


def _i2c_deliver(p):
    d = _devs.get(p[0])
    if d is None:
        d = _devs[p[0]] = [p[1], 0, {}]
    d[2][p[2]] = p[3]


replayio.register("i2c", _i2c_prepare, _i2c_deliver)


def _regread(d, reg, n):
    b = d[2].get(reg, b"")
    return b[:n] if len(b) >= n else b + bytes(n - len(b))  # unset bytes read as 0x00


class I2C:
    """I2C controller. A write's first register-size bytes select a register (the
    pointer); the bytes after them are written into it. Reads answer from the pointer,
    or from `memaddr` in readfrom_mem."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self._freq = freq

    def init(self, *args, **kw):
        pass

    def deinit(self):
        pass

    def scan(self):
        vbclock.poll()
        return sorted(_devs)

    def _dev(self, addr):
        vbclock.poll()
        d = _devs.get(addr)
        if d is None:
            raise OSError(errno.ENODEV)  # no ACK
        return d

    def readfrom(self, addr, nbytes, stop=True):
        d = self._dev(addr)
        return _regread(d, d[1], nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        buf[:] = self.readfrom(addr, len(buf))

    def writeto(self, addr, buf, stop=True):
        d = self._dev(addr)
        n = d[0]
        if len(buf) >= n:
            d[1] = int.from_bytes(bytes(buf[:n]), "big")
            if len(buf) > n:
                d[2][d[1]] = bytes(buf[n:])
        return len(buf)  # every byte ACKed

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        return _regread(self._dev(addr), memaddr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        buf[:] = self.readfrom_mem(addr, memaddr, len(buf))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._dev(addr)[2][memaddr] = bytes(buf)


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self._freq = freq


# UART: receive buffers per UART number, filled by replayed "uart" events once UART(n) has
# been created (its driver installed).
_rx = {}  # id -> [bytearray, capacity, bytes dropped on overflow]
_RXBUF = const(256)


def _rxbuf(i):
    b = _rx.get(i)
    if b is None:
        b = _rx[i] = [bytearray(), _RXBUF, 0]
    return b


def _uart_prepare(ev):
    u = replayio.intfield(ev, "uart", 0, 2, 1)
    if "hex" in ev:
        return (u, replayio.hexbytes(ev, "hex", 4096))
    d = ev.get("data")
    if type(d) is not str:
        raise ValueError("data: text required (or 'hex')")
    return (u, d.encode())


def _uart_deliver(p):
    b = _rx.get(p[0])
    if b is None:  # no driver installed yet: the bytes go nowhere, as on the board
        return
    room = b[1] - len(b[0])
    data = p[1]
    if len(data) > room:  # the driver's ring buffer is full: the rest is lost
        b[2] += len(data) - room
        data = data[:room]
    b[0].extend(data)


replayio.register("uart", _uart_prepare, _uart_deliver)


class UART:
    """UART(id, baudrate=115200, ..., rxbuf=256, timeout=0). Reads wait up to `timeout`
    ms of board time; writes are accepted and discarded (UART 0 is not the console)."""

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        if type(id) is not int or not 0 <= id <= 2:
            raise ValueError("UART(%s) does not exist" % (id,))
        self._id = id
        self._timeout = 0
        self.init(baudrate, bits, parity, stop, **kw)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, rxbuf=_RXBUF, timeout=0, **kw):
        self._baud = baudrate
        self._timeout = timeout
        _rxbuf(self._id)[1] = max(rxbuf, 0)

    def deinit(self):
        pass

    def _wait(self, ready):
        buf = _rxbuf(self._id)[0]
        vbclock.poll()
        if self._timeout > 0 and not ready(buf):
            end = vbclock._now() + self._timeout * 1000
            while not ready(buf) and vbclock._now() < end:
                vbclock.idle()
        return buf

    def _take(self, n):
        b = _rxbuf(self._id)
        out = bytes(b[0][:n])
        b[0][:n] = b""
        return out or None

    def any(self):
        vbclock.poll()
        return len(_rxbuf(self._id)[0])

    def read(self, nbytes=None):
        if nbytes is None:
            buf = self._wait(lambda b: len(b) > 0)
            return self._take(len(buf))
        self._wait(lambda b: len(b) >= nbytes)
        return self._take(nbytes)

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        buf = self._wait(lambda b: b.find(b"\n") >= 0)
        i = buf.find(b"\n")
        return self._take(len(buf) if i < 0 else i + 1)

    def write(self, buf):
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass
