"""O(1)-memory aggregators for one window, allocation-free per sample.

    from veil.aggregate import Count, Sum, Min, Max, Mean, Histogram

    s = Sum(0, 250)          # values clamped to [0, 250]; s.clamped counts the clamped
    s.add(72)                # allocates nothing
    s.result()               # at window close (may allocate)
    s.sensitivity(cap=10)    # L1 sensitivity when one person adds at most 10 values
    s.reset()                # for the next window; allocates nothing

Distinct counts of ids (BLE addresses) are in veil.distinct, imported only by a policy
that has one.

Values are ints (fixed point, normalized by the sources). Every aggregator has `n` (the
contributions accepted this window), `clamped`, `add()`, `reset()`, `result()` and
`sensitivity()`. State is made in __init__; add() and reset() allocate nothing (the tests
prove it under micropython.heap_lock()); result(), sensitivity(), rekey() and the
constructors may allocate. Error paths (AggregateError) allocate too.

ESP32 small ints are 31-bit: an int >= 2**30 is a heap-allocated long. On the per-sample
path every int stays below 2**30 by construction: ranges are limited to |v| < 2**28, sums
are kept in two limbs (a carry count and a remainder below 2**28), `n` stops at
2**30 - 1 (add() ignores samples past it: 12 days of 1 kHz samples in one window).

Sensitivity (L1, add/remove one person who contributes at most `cap` values):
  Count -> cap;  Sum -> cap * max(|lo|, |hi|);  Histogram -> cap;
  Min, Max, Mean -> hi - lo: the window is treated as one person's (the device is the
  privacy unit), so any change stays within the clamped range;
  Distinct -> cap;  DistinctSketch -> cap * (ceil(C^2 / (A - C)) + 1) (veil.distinct).
Every sensitivity is a function of the constructor's parameters only, never of the data:
noise calibrated to it is fixed before the window opens (docs/policy.md).
"""

from array import array

from micropython import const

from veil import VeilError

_N_MAX = const(0x3FFFFFFF)  # largest ESP32 small int: `n` saturates here
_V_MAX = const(0xFFFFFFF)  # |lo|, |hi| <= 2**28 - 1
_LIMB = const(0x10000000)  # 2**28: sums are carry * 2**28 + rem, |rem| < 2**28


class AggregateError(VeilError):
    """A bad aggregator parameter or sample."""


def _check_range(lo, hi):
    if type(lo) is not int or type(hi) is not int:
        raise AggregateError("lo and hi must be ints")
    if lo > hi or lo < -_V_MAX or hi > _V_MAX:
        raise AggregateError("need -(2**28 - 1) <= lo <= hi <= 2**28 - 1")


def _check_cap(cap):
    if type(cap) is not int or cap < 1:
        raise AggregateError("cap must be an int >= 1")


def _bad_value():
    raise AggregateError("values must be ints")


def _zero(buf):
    # A plain loop: slice stores only avoid the heap on recent firmware.
    i = 0
    k = len(buf)
    while i < k:
        buf[i] = 0
        i += 1


class Count:
    """How many values were added. Sensitivity: cap."""

    clamped = 0  # nothing to clamp

    def __init__(self):
        self.n = 0

    def add(self, v=None):
        if self.n < _N_MAX:
            self.n += 1

    def reset(self):
        self.n = 0

    def result(self):
        return self.n

    def sensitivity(self, cap):
        _check_cap(cap)
        return cap


class _Clamped:
    # Shared by the range aggregators: add() clamps v into [lo, hi] and counts it.
    def __init__(self, lo, hi):
        _check_range(lo, hi)
        self.lo = lo
        self.hi = hi
        self.reset()

    def reset(self):
        self.n = 0
        self.clamped = 0
        self._reset()

    def add(self, v):
        if type(v) is not int:
            _bad_value()
        if self.n >= _N_MAX:
            return
        if v < self.lo:
            v = self.lo
            self.clamped += 1
        elif v > self.hi:
            v = self.hi
            self.clamped += 1
        self.n += 1
        self._add(v)  # |v| < 2**28 from here on

    def sensitivity(self, cap):
        # Min, Max, Mean: the device is the privacy unit, the change stays in [lo, hi].
        _check_cap(cap)
        return self.hi - self.lo


class Sum(_Clamped):
    """Sum of clamped values. Sensitivity: cap * max(|lo|, |hi|)."""

    def _reset(self):
        self._carry = 0  # multiples of 2**28; |carry| <= n < 2**30
        self._rem = 0  # |rem| < 2**28

    def _add(self, v):
        # |rem + v| < 2**29 < 2**30; one carry step brings it back under 2**28.
        s = self._rem + v
        if s >= _LIMB:
            s -= _LIMB
            self._carry += 1
        elif s <= -_LIMB:
            s += _LIMB
            self._carry -= 1
        self._rem = s

    def result(self):
        return self._carry * _LIMB + self._rem  # may be a long int: allocates

    def sensitivity(self, cap):
        _check_cap(cap)
        return cap * max(abs(self.lo), abs(self.hi))


class Mean(Sum):
    """(sum, count) of clamped values; mean() rounds. Sensitivity of the mean: hi - lo."""

    def result(self):
        return (Sum.result(self), self.n)

    def mean(self):
        """The mean rounded to the nearest int (halves up, towards +inf); None if empty."""
        if self.n == 0:
            return None
        s = Sum.result(self)
        return (2 * s + self.n) // (2 * self.n)

    def sensitivity(self, cap):
        return _Clamped.sensitivity(self, cap)


class Min(_Clamped):
    """Smallest clamped value (None if empty). Sensitivity: hi - lo."""

    def _reset(self):
        self._v = 0

    def _add(self, v):
        if self.n == 1 or v < self._v:
            self._v = v

    def result(self):
        return self._v if self.n else None


class Max(_Clamped):
    """Largest clamped value (None if empty). Sensitivity: hi - lo."""

    def _reset(self):
        self._v = 0

    def _add(self, v):
        if self.n == 1 or v > self._v:
            self._v = v

    def result(self):
        return self._v if self.n else None


class Histogram:
    """Counts per fixed bin; k sorted edges make k + 1 bins. Sensitivity: cap.

    Bin 0 is (-inf, e0), bin i is [e(i-1), e(i)), bin k is [e(k-1), +inf): a value equal
    to an edge goes to the bin above it. The outer bins are open, so nothing is clamped.
    """

    clamped = 0

    def __init__(self, edges):
        k = len(edges)
        if k < 1:
            raise AggregateError("a histogram needs at least one edge")
        prev = None
        for e in edges:
            if type(e) is not int or e < -_V_MAX or e > _V_MAX:
                raise AggregateError("edges must be ints with |e| < 2**28")
            if prev is not None and e <= prev:
                raise AggregateError("edges must be strictly increasing")
            prev = e
        self._edges = array("i", edges)
        self._bins = array("i", [0] * (k + 1))
        self.n = 0

    def add(self, v):
        if type(v) is not int:
            _bad_value()
        if self.n >= _N_MAX:
            return
        # Binary search for the number of edges <= v: that is v's bin.
        edges = self._edges
        a = 0
        b = len(edges)  # k edges
        while a < b:
            mid = (a + b) >> 1
            if v < edges[mid]:
                b = mid
            else:
                a = mid + 1
        self._bins[a] += 1  # <= n < 2**30
        self.n += 1

    def reset(self):
        self.n = 0
        bins = self._bins
        i = 0
        k = len(bins)
        while i < k:
            bins[i] = 0
            i += 1

    def result(self):
        return list(self._bins)

    def sensitivity(self, cap):
        _check_cap(cap)
        return cap
