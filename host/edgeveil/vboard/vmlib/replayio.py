"""Raw-event replay reader of the virtual ESP32 (format: docs/vboard-replay.md).

Reads `cfg['replay']` (an open file of JSON Lines) one line at a time, never the whole
file, and hands each event, when it falls due on the board's clock (vbclock), to the
emulated device that owns its kind:

    replayio.register("ble", prepare, deliver)

`prepare(event)` runs when the line is read, one event ahead of the clock: it checks the
event (raising ValueError with a short reason) and returns a payload in the form the
device wants. `deliver(payload)` runs when the event is due and should not allocate, as a
device's interrupt would not. A malformed line is reported on the console and skipped; a
line whose time goes backwards stops the replay, with a message saying which line.
`vbclock._init(cfg)` starts the replay (it calls `_init` here); the first line is read
when the clock is first consulted, so every device has registered its kinds by then.

Heap: the replay is read in the board code's heap, which on an ESP32 the radio and the
buses do not touch. Lines are read into one buffer of _BLOCK bytes, made when this module
is imported (at boot, on the emulation's allowance, before board code runs), and parsed
from there: a line that fits costs no allocation but its parsed form, a few small blocks,
so board code that left its heap in small pieces is not stopped by a MemoryError from the
emulation. Only a line longer than the buffer is joined in an allocated block.
"""

import json
from binascii import unhexlify

import vbclock
from micropython import const

_BLOCK = const(2048)  # the line buffer; it is filled with readinto(), not readline(),
# which makes one system call per byte in the unix VM
_SPACE = (32, 9, 10, 11, 12, 13)  # what str.strip() removes, as bytes
_owners = {}  # kind -> (prepare, deliver)
# Who takes each kind, so an event read before its module was initialised still finds it.
_KIND_MODULE = {"ble": "bluetooth", "i2c": "machine", "uart": "machine", "pin": "machine"}
_TRANSIENT = ("ble", "uart")  # kinds that happen once, as opposed to state


def register(kind, prepare, deliver):
    _owners[kind] = (prepare, deliver)


def _say(msg):
    print("vboard: replay: " + msg)


class _Replay:
    """The clock timer that walks the replay; `_due` is the head event's board time."""

    def __init__(self):
        self._blk = bytearray(_BLOCK)
        self._mv = memoryview(self._blk)
        self._reset(None)

    def _reset(self, f):
        self._f = f
        self._pos = self._end = 0  # the buffer's unread bytes: self._blk[_pos:_end]
        self._line = 0
        self._last_t = None
        self._payload = None
        self._deliver = None
        self._unowned = []
        self.delivered = self.rejected = self.skipped = 0
        self.stopped = None  # the reason the replay stopped early, if it did
        # Read lazily, at the first pump, so that every device module is imported and
        # registered by then, whatever order the prelude initialises them in.
        self._due = 0 if f is not None else None

    def _fire(self):
        deliver, payload = self._deliver, self._payload
        self._read()
        if deliver is not None:
            self.delivered += 1
            deliver(payload)

    def _stop(self, why):
        self.stopped = why
        _say(why)
        self._f = None
        self._due = None

    def _readline(self):
        """The next line without its newline, or None at the end.

        A memoryview into the buffer, valid until the next call; bytes (allocated) for a
        line longer than the buffer.
        """
        blk = self._blk
        mv = self._mv
        long = None  # the first _BLOCK-byte pieces of a line longer than the buffer
        while True:
            i = blk.find(b"\n", self._pos, self._end)
            if i >= 0:
                line = mv[self._pos : i]
                self._pos = i + 1
                return line if long is None else long + bytes(line)
            n = self._end - self._pos  # part of a line: to the front, then fill the rest
            if n == _BLOCK:
                long = bytes(blk) if long is None else long + bytes(blk)
                n = 0
            elif self._pos:
                _move(blk, mv, self._pos, n)
            self._pos = 0
            self._end = n
            got = self._f.readinto(mv[n:])
            if not got:  # the end: a last line without a newline, if any
                self._pos = n
                if long is not None:
                    return long + bytes(mv[:n])
                return mv[:n] if n else None
            self._end = n + got

    def _read(self):
        self._deliver = self._payload = None
        while self._f is not None:
            line = self._readline()
            if line is None:
                self._f = None
                break
            self._line += 1
            if _blank(line):
                continue
            try:
                ev = json.loads(line)
                t = ev["t"]
                if type(t) is not int and type(t) is not float:
                    raise ValueError("'t' must be a number of Unix seconds")
                kind = ev["kind"]
            except (ValueError, KeyError, TypeError) as e:
                self.rejected += 1
                _say("line %d rejected: %s" % (self._line, _why(e)))
                continue
            if self._last_t is not None and t < self._last_t:
                self._stop(
                    "line %d: t=%r is earlier than the line before it (t=%r); a replay must "
                    "be in time order. Replay stopped." % (self._line, t, self._last_t)
                )
                break
            self._last_t = t
            if t < vbclock._t0 and kind in _TRANSIENT:
                # Before this boot: an advertisement or UART bytes nobody was listening
                # for are gone (i2c registers and pin levels are state, and still apply).
                self.skipped += 1
                continue
            own = _owners.get(kind)
            if own is None and kind in _KIND_MODULE:
                try:
                    __import__(_KIND_MODULE[kind])  # registers its kinds
                except ImportError:
                    pass
                own = _owners.get(kind)
            if own is None:
                self.skipped += 1
                if kind not in self._unowned:
                    self._unowned.append(kind)
                    _say(
                        "no emulated device takes kind %r (line %d); skipped" % (kind, self._line)
                    )
                continue
            try:
                self._payload = own[0](ev)
            except (ValueError, TypeError, KeyError) as e:
                self.rejected += 1
                _say("line %d rejected: %s" % (self._line, _why(e)))
                continue
            self._deliver = own[1]
            self._due = int((t - vbclock._t0) * 1000000)
            return
        self._due = None


def _move(blk, mv, src, n):
    # blk[0:n] = blk[src:src + n] without a temporary copy (forward: src > 0).
    if n <= src:
        blk[0:n] = mv[src : src + n]  # the two do not overlap
        return
    i = 0
    while i < n:
        blk[i] = blk[src + i]
        i += 1


def _blank(line):
    for c in line:
        if c not in _SPACE:
            return False
    return True


def _why(e):
    if isinstance(e, KeyError):
        return "missing field %s" % e.args[0]
    return str(e) or type(e).__name__


replay = _Replay()  # the one replay; its counters serve diagnostics and tests
vbclock.add_timer(replay)


def _init(cfg):
    replay._reset(cfg.get("replay"))


# Field helpers for the devices' prepare() functions (they allocate; that is fine there).


def hexbytes(ev, key, maxlen):
    s = ev.get(key, "")
    if type(s) is not str or len(s) % 2:
        raise ValueError("%s: even-length hex text required" % key)
    if len(s) > 2 * maxlen:
        raise ValueError("%s: at most %d bytes" % (key, maxlen))
    try:
        return unhexlify(s)
    except ValueError:
        raise ValueError("%s: not hexadecimal" % key)


def intfield(ev, key, lo, hi, default=None):
    v = ev.get(key, default)
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError("%s: integer %d..%d required" % (key, lo, hi))
    return v
