"""Tumbling event-time windows, aligned to multiples of their length.

    from veil.window import Window, CLOSE, LATE

    w = Window(60)                   # [0, 60), [60, 120), ... in event time
    for t, v in samples:             # t: the sample's own timestamp (int seconds)
        r = w.place(t)
        if r == LATE:                # before the current window: dropped, w.late counts it
            continue
        if r == CLOSE:               # at or past w.end: release the window first
            release(w.start, w.end, agg.result())
            agg.reset()
            w.advance(t)             # now the window that holds t (empty ones skipped)
        agg.add(v)

Windows follow the samples' timestamps only, never the wall clock: the first sample
opens the window that contains it, and a window closes when a sample at or past its end
arrives. A window's span is [start, end) with start = a multiple of the length.

Timestamps are int seconds on an epoch that keeps them below 2**30 (a small int on the
ESP32, whose 31-bit small ints would otherwise allocate a long int per sample): for
example MicroPython's 2000-01-01 embedded epoch, good until 2034 (a source on a 1970 clock
subtracts 946684800). place() and advance() reject larger ones, so every int they compute
(start, end = start + length) stays below 2**30 by construction.

Allocation: place() and advance() allocate nothing (tests prove it under heap_lock);
only their error paths do, when they raise WindowError.
"""

from micropython import const

from veil import VeilError

_SAME = const(0)  # t falls in the current window
_CLOSE = const(1)  # t is at or after the end: close, then advance(t)
_LATE = const(2)  # t is before the start: dropped and counted

SAME = _SAME
CLOSE = _CLOSE
LATE = _LATE

_SMALL_MAX = const(0x3FFFFFFF)  # largest ESP32 small int (2**30 - 1)
_MAX_LENGTH = const(0x1000000)  # 2**24 s, about 194 days


class WindowError(VeilError):
    """A bad window length or timestamp."""


class Window:
    """One tumbling window at a time, [start, end), placed by event time."""

    def __init__(self, length_s):
        if type(length_s) is not int or length_s < 1 or length_s > _MAX_LENGTH:
            raise WindowError("window length must be an int in [1, 2**24] seconds")
        self.length = length_s
        # Largest timestamp accepted: its window's end is at most _SMALL_MAX.
        self._t_max = _SMALL_MAX - length_s
        self.opened = False  # False until the first sample opens a window
        self.start = None
        self.end = None
        self.late = 0  # samples dropped for arriving before the current window

    def _check(self, t):
        if type(t) is not int or t < 0 or t > self._t_max:
            raise WindowError("timestamp must be an int in [0, 2**30 - 1 - length]")

    def _move(self, t):
        # t >= 0, so t % length is the offset into its aligned window.
        start = t - t % self.length
        self.start = start
        self.end = start + self.length

    def place(self, t):
        """Classify timestamp t: SAME (0), CLOSE (1) or LATE (2); allocates nothing.

        The first sample ever placed opens the window containing it and is SAME.
        A LATE sample is counted in `late`; the caller drops it.
        """
        self._check(t)
        if not self.opened:
            self._move(t)
            self.opened = True
            return _SAME
        if t < self.start:
            self.late += 1
            return _LATE
        if t >= self.end:
            return _CLOSE
        return _SAME

    def advance(self, t):
        """Move to the window containing t (t >= end), after the caller closed this one.

        Returns how many empty windows lay between the old window and the new one
        (0 when t falls in the very next window). Allocates nothing.
        """
        self._check(t)
        if not self.opened:
            self._move(t)
            self.opened = True
            return 0
        if t < self.end:
            raise WindowError("advance() needs a timestamp at or after the window's end")
        old_end = self.end
        self._move(t)
        # Both are multiples of length, below 2**30: the quotient is a small int.
        return (self.start - old_end) // self.length
