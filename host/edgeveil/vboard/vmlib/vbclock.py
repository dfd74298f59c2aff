"""The virtual ESP32's clock, installed as the board's `time` module (docs/vboard-replay.md).

Board code uses it as it uses `time` on an ESP32:

    import time
    time.sleep_ms(500)      # 500 ms of board time pass; replayed events due meanwhile arrive
    time.time()             # integer seconds since the ESP32 Epoch, 2000-01-01 UTC

Board time starts at 0 at boot (ticks) and at `cfg['t0']` (Unix seconds) on the calendar.
It runs at `cfg['speed']` times real time: 1 (the default) is real time, N is N times
faster, and 0 is as fast as possible: a sleep takes no real time at all and only the
code's own running moves the clock in between.

Emulated devices that must act at a board time (the replay reader, a BLE scan ending, the
watchdog) register a timer: any object with a `_due` attribute (board microseconds since
boot, or None when idle) and a `_fire()` method. Due timers fire, earliest first, when the
program sleeps, idles (`machine.idle`, `machine.lightsleep`) or reads the clock, which is
where an ESP32 runs its scheduled callbacks (BLE and Pin IRQs run in the scheduler there),
and never inside one another: a handler that sleeps only lets time pass.

Allocation: `ticks_*`, `sleep_ms`, `sleep_us` and `time` allocate nothing themselves (the
timers they fire may); `gmtime`, `localtime` and `mktime` build tuples.
"""

import time as _rt

from micropython import const

if getattr(_rt, "_VBCLOCK", False):  # already replaced by an earlier instance: use its source
    _rt = _rt._rt

_VBCLOCK = True  # marks this module (see above)
_TICKS_PERIOD = const(0x40000000)  # 2**30, as on the ESP32 port (MICROPY_PY_TIME_TICKS_PERIOD)
_TICKS_MAX = const(0x3FFFFFFF)
_TICKS_HALF = const(0x20000000)
_EPOCH_2000 = const(946684800)  # Unix seconds at 2000-01-01 00:00 UTC
_IDLE_US = const(10000)  # one FreeRTOS tick (CONFIG_FREERTOS_HZ=100): idle() waits at most this
_CHUNK_MS = const(200)  # real waits are cut into chunks so Ctrl-C stays prompt

_speed = 1  # board seconds per real second; 0 = as fast as possible
_v_us = 0  # board microseconds since boot, as of the last sync
_r_us = 0  # the host's ticks_us at the last sync
_wall_us = 0  # calendar microseconds since the board's Epoch at boot (moved by RTC.datetime)
_epoch_off = _EPOCH_2000  # Unix seconds at the board's Epoch
_t0 = 0  # Unix seconds at boot: replayed events are placed against this
_cpu_mhz = 160  # machine.freq() / 1e6; ticks_cpu counts cycles
_timers = []
_busy = False  # a timer is firing (the scheduler is locked)
_irq_off = False  # machine.disable_irq() is in force


def _init(cfg):
    """Start the clock: cfg['t0'] (Unix seconds, default: the host's time), cfg['speed']
    (default 1), cfg['epoch'] (2000, the ESP32's, or 1970); and the replay, cfg['replay']."""
    global _speed, _v_us, _r_us, _wall_us, _epoch_off, _t0, _busy, _irq_off
    speed = cfg.get("speed")
    _speed = 1 if speed is None else int(speed)
    if _speed < 0:
        raise ValueError("speed must be >= 0")
    _epoch_off = 0 if cfg.get("epoch") == 1970 else _EPOCH_2000
    t0 = cfg.get("t0")
    _t0 = int(_rt.time()) if t0 is None else int(t0)
    _v_us = 0
    _r_us = _rt.ticks_us()
    _wall_us = (_t0 - _epoch_off) * 1000000
    _busy = _irq_off = False  # timers stay: each device resets its own in its _init
    import replayio  # imported here, not above: it imports this module

    replayio._init(cfg)


def add_timer(obj):
    """Register `obj` (attributes `_due`, `_fire()`) with the clock; idempotent."""
    if obj not in _timers:
        _timers.append(obj)


def _now():
    """Board microseconds since boot (never decreases)."""
    global _v_us, _r_us
    r = _rt.ticks_us()
    d = _rt.ticks_diff(r, _r_us)  # the unix port's ticks period is 2**62: no wrap to fear
    if d > 0:
        _v_us += d * _speed if _speed else d
        _r_us = r
    return _v_us


def _wait(target):
    """Let board time reach `target`, waiting the real time the speed calls for."""
    global _v_us
    while True:
        d = target - _now()
        if d <= 0:
            return
        if not _speed:
            _v_us = target
            return
        d = (d + _speed - 1) // _speed  # real microseconds
        if d >= 1000:
            _rt.sleep_ms(min(d // 1000, _CHUNK_MS))
        else:
            _rt.sleep_us(d)


def _next_due(limit):
    best = None
    for o in _timers:
        d = o._due
        if d is not None and d <= limit and (best is None or d < best._due):
            best = o
    return best


def _run(limit, first_only):
    """Fire the timers due by board time `limit`, earliest first; True if any fired."""
    global _busy
    if _busy or _irq_off:
        return False
    fired = False
    _busy = True
    try:
        while True:
            o = _next_due(limit)
            if o is None:
                return fired
            _wait(o._due)
            fired = True
            o._fire()
            if first_only:
                return True
    finally:
        _busy = False


def poll():
    """Deliver what is due now (devices call this before they answer a read)."""
    _run(_now(), False)


def _sleep(us):
    target = _now() + us
    _run(target, False)
    _wait(target)


def idle():
    """machine.idle(): wait for the next event, but at most one FreeRTOS tick."""
    target = _now() + _IDLE_US
    if not _run(target, True):
        _wait(target)


def lightsleep(ms=None):
    """machine.lightsleep(): `ms` of board time, or until the next event when None."""
    if ms is None:
        if not _run(1 << 60, True):
            _wait(_now() + _IDLE_US)
    else:
        _sleep(ms * 1000)


def sleep(seconds):
    _sleep(seconds * 1000000 if type(seconds) is int else int(seconds * 1000000))


def sleep_ms(ms):
    if type(ms) is not int:
        raise TypeError("can't convert %s to int" % type(ms).__name__)
    _sleep(ms * 1000 if ms > 0 else 0)


def sleep_us(us):
    if type(us) is not int:
        raise TypeError("can't convert %s to int" % type(us).__name__)
    _sleep(us if us > 0 else 0)


def ticks_us():
    poll()
    return _v_us & _TICKS_MAX


def ticks_ms():
    poll()
    return (_v_us // 1000) & _TICKS_MAX


def ticks_cpu():
    poll()
    return (_v_us * _cpu_mhz) & _TICKS_MAX


def ticks_add(ticks, delta):
    if not -_TICKS_HALF <= delta < _TICKS_HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & _TICKS_MAX


def ticks_diff(end, start):
    return ((end - start + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


def time():
    """Integer seconds since the Epoch, as on an ESP32 (not a float as on unix)."""
    poll()
    return (_wall_us + _v_us) // 1000000


def time_ns():
    poll()
    return (_wall_us + _v_us) * 1000


def _wall_set(secs, us):
    """Set the calendar (RTC.datetime): `secs` since the Epoch plus `us` microseconds."""
    global _wall_us
    _wall_us = secs * 1000000 + us - _now()


# Calendar arithmetic on days since 1970-01-01 (proleptic Gregorian, 400-year eras).


def _civil(days):
    days += 719468  # shift to 0000-03-01, so the leap day ends each era's year
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days(year, month, day):
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def gmtime(secs=None):
    """(year, month, mday, hour, minute, second, weekday 0=Monday, yearday) in UTC."""
    if secs is None:
        secs = time()
    s = int(secs) + _epoch_off
    days = s // 86400
    s -= days * 86400
    y, m, d = _civil(days)
    return (y, m, d, s // 3600, s // 60 % 60, s % 60, (days + 3) % 7, days - _days(y, 1, 1) + 1)


localtime = gmtime  # an ESP32 keeps no time zone


def mktime(t):
    """Inverse of localtime(): seconds since the Epoch; out-of-range fields carry over."""
    if not 8 <= len(t) <= 9:
        raise TypeError("mktime needs a tuple of length 8 or 9")
    y, mo = t[0], t[1] - 1
    y += mo // 12
    days = _days(y, mo % 12 + 1, 1) + t[2] - 1
    return days * 86400 + t[3] * 3600 + t[4] * 60 + t[5] - _epoch_off
