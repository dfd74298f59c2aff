"""O(1)-memory aggregators for one window, allocation-free per sample.

    from veil.aggregate import Count, Sum, Min, Max, Mean, Histogram, Distinct

    s = Sum(0, 250)          # values clamped to [0, 250]; s.clamped counts the clamped
    s.add(72)                # allocates nothing
    s.result()               # at window close (may allocate)
    s.sensitivity(cap=10)    # L1 sensitivity when one person adds at most 10 values
    s.reset()                # for the next window; allocates nothing

    d = Distinct(1000, key16)    # distinct BLE addresses, exact up to 1000
    d.add(addr6)                 # bytes-like id, 1..15 bytes; allocates nothing
    d.result(); d.rekey(next_key16)   # new key each window: hashes unlinkable

Values are ints (fixed point, normalized by the sources). Every aggregator has `n` (the
contributions accepted this window), `clamped`, `add()`, `reset()`, `result()` and
`sensitivity()`. State is made in __init__; add() and reset() allocate nothing (the tests
prove it under micropython.heap_lock()); result(), sensitivity(), rekey() and the
constructors may allocate. Error paths (AggregateError) allocate too.

ESP32 small ints are 31-bit: an int >= 2**30 is a heap-allocated long. On the per-sample
path every int stays below 2**30 by construction: ranges are limited to |v| < 2**28, sums
are kept in two limbs (a carry count and a remainder below 2**28), `n` stops at
2**30 - 1 (add() ignores samples past it: 12 days of 1 kHz samples in one window), and
hash bytes are read one at a time (at most 3 at once, < 2**24), never as 64-bit ints.

Sensitivity (L1, add/remove one person who contributes at most `cap` values):
  Count -> cap;  Sum -> cap * max(|lo|, |hi|);  Histogram -> cap;
  Min, Max, Mean -> hi - lo: the window is treated as one person's (the device is the
  privacy unit), so any change stays within the clamped range;
  Distinct -> see Distinct.sensitivity().
"""

from array import array

import cryptolib
from micropython import const

from veil import VeilError

_N_MAX = const(0x3FFFFFFF)  # largest ESP32 small int: `n` saturates here
_V_MAX = const(0xFFFFFFF)  # |lo|, |hi| <= 2**28 - 1
_LIMB = const(0x10000000)  # 2**28: sums are carry * 2**28 + rem, |rem| < 2**28
_HLL_K = const(64)  # fixed point of the HLL sum: 2**(64 - M) with M <= 49
_RANK_MAX = const(49)  # 48 hash bits for the rank, +1 (HLL's rho)
_BOUND_MAX = const(0x100000)  # Distinct bound <= 2**20 (slot offsets stay < 2**24)


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


class Distinct:
    """Distinct count of ids in bounded memory: exact up to `bound`, HyperLogLog above.

    Each id (bytes-like, 1..15 bytes) is hashed with a key: the id, zero-padded, with its
    length in the last byte (so the padding is unambiguous), is one AES-128 block,
    encrypted in place of a keyed PRF (cryptolib.aes ECB, encrypt(in, out) into a
    preallocated buffer: no allocation). Of the 16 output bytes, 0..7 are the id's
    fingerprint in the exact set and 8..15 feed the HLL (8..9 register, 10..15 rank).

    Exact part: open addressing (linear probing) over 1.5 * bound slots of 8 bytes in one
    bytearray, plus an occupancy bitmap. When a new id finds `bound` ids already stored,
    it is not inserted and `overflow` is set: the count is then > bound.
    Sketch part: m one-byte HLL registers, always updated.
    result(): the exact count, or after overflow the HLL raw estimate (integer
    arithmetic) clamped to [bound, cap_hi].

    The set and the registers are as sensitive as the ids: nothing returns them, and
    reset()/rekey() zero them. Memory: 8 * 1.5 * bound + bound / 5.3 + m bytes of
    buffers, about 13.3 KB for bound=1000, m=1024.
    """

    clamped = 0

    def __init__(self, bound, key16, m=1024, cap_hi=None):
        if type(bound) is not int or bound < 1 or bound > _BOUND_MAX:
            raise AggregateError("bound must be an int in [1, 2**20]")
        if type(m) is not int or m < 16 or m > 65536 or m & (m - 1):
            raise AggregateError("m must be a power of two in [16, 65536]")
        if cap_hi is None:
            cap_hi = 4 * bound
        if type(cap_hi) is not int or cap_hi < bound:
            raise AggregateError("cap_hi must be an int >= bound")
        # A = alpha_m * m^2 as anum / aden. alpha_m: Flajolet, Fusy, Gandouet, Meunier,
        # "HyperLogLog" (AofA 2007), Fig. 3: 0.673 (m=16), 0.697 (32), 0.709 (64),
        # 0.7213 / (1 + 1.079 / m) = 7213 m / (10000 m + 10790) for m >= 128.
        if m >= 128:
            self._anum = 7213 * m * m * m
            self._aden = 10000 * m + 10790
        else:
            self._anum = {16: 673, 32: 697, 64: 709}[m] * m * m
            self._aden = 1000
        if cap_hi * self._aden >= self._anum:
            raise AggregateError("cap_hi must be below alpha_m * m^2")
        self.bound = bound
        self.cap_hi = cap_hi
        self.m = m
        self._mask = m - 1
        self._slots = bound + (bound + 1) // 2  # > bound: a probe always finds a hole
        # The set lives in 1 KiB chunks (128 slots each), not one block: a fragmented
        # heap on a board rarely has 8+ KiB in one piece, but has many 1 KiB holes.
        self._tbl = [bytearray(1024) for _ in range((self._slots + 127) >> 7)]
        self._occ = bytearray((self._slots + 7) >> 3)
        self._reg = bytearray(m)
        self._in = bytearray(16)
        self._out = bytearray(16)
        self.rekey(key16)

    def rekey(self, key16):
        """Reset everything and hash with a new 16-byte key from now on (allocates)."""
        if type(key16) not in (bytes, bytearray) or len(key16) != 16:
            raise AggregateError("key16 must be 16 bytes")
        self._aes = cryptolib.aes(key16, 1)  # 1 = MODE_ECB: one block, one PRF call
        self.reset()

    def reset(self):
        """Empty the set and the sketch, keeping the key; allocates nothing."""
        self.n = 0
        self._count = 0
        self.overflow = False
        for chunk in self._tbl:
            _zero(chunk)
        _zero(self._occ)
        _zero(self._reg)
        _zero(self._out)

    def add(self, ident):
        t = type(ident)
        if t is not bytes and t is not bytearray and t is not memoryview:
            raise AggregateError("an id must be bytes-like")
        k = len(ident)
        if k < 1 or k > 15:
            raise AggregateError("an id must be 1..15 bytes")
        if self.n >= _N_MAX:
            return
        buf = self._in
        i = 0
        while i < k:
            buf[i] = ident[i]
            i += 1
        buf[15] = k  # the rest is zero (it is zeroed after each use)
        out = self._out
        self._aes.encrypt(buf, out)
        i = 0
        while i < k:  # leave no id in the buffer
            buf[i] = 0
            i += 1
        buf[15] = 0
        self.n += 1
        # HLL (Flajolet et al. 2007): register from bytes 8..9, rank = 1 + leading zeros
        # of the 48 bits in bytes 10..15 (rho), at most 49.
        j = (out[8] | (out[9] << 8)) & self._mask
        r = 1
        i = 10
        while i < 16 and out[i] == 0:
            r += 8
            i += 1
        if i < 16:
            b = out[i]
            while not b & 0x80:
                b <<= 1
                r += 1
        if r > self._reg[j]:
            self._reg[j] = r
        if not self.overflow:
            self._insert(out)

    def _insert(self, h):
        chunks = self._tbl
        occ = self._occ
        slots = self._slots
        s = (h[0] | (h[1] << 8) | (h[2] << 16)) % slots  # < 2**24
        while True:
            if not occ[s >> 3] & (1 << (s & 7)):
                if self._count >= self.bound:
                    self.overflow = True  # a new id beyond the bound
                    return
                tbl = chunks[s >> 7]
                base = (s & 127) << 3
                i = 0
                while i < 8:
                    tbl[base + i] = h[i]
                    i += 1
                occ[s >> 3] |= 1 << (s & 7)
                self._count += 1
                return
            tbl = chunks[s >> 7]
            base = (s & 127) << 3
            i = 0
            while i < 8 and tbl[base + i] == h[i]:
                i += 1
            if i == 8:
                return  # seen already
            s += 1
            if s == slots:
                s = 0

    def result(self):
        """The distinct count: exact, or after overflow the clamped HLL estimate."""
        if not self.overflow:
            return self._count
        # Raw estimate E = alpha_m m^2 / Z, Z = sum 2^-M_j (Flajolet et al. 2007, Fig. 3),
        # in fixed point: Zk = sum 2^(K - M_j) = Z * 2^K, E = anum 2^K / (aden Zk),
        # rounded to nearest. Long ints here: result() runs once per window.
        zk = 0
        for r in self._reg:
            zk += 1 << (_HLL_K - r)
        den = self._aden * zk
        e = ((self._anum << (_HLL_K + 1)) + den) // (2 * den)
        return min(max(e, self.bound), self.cap_hi)

    def _step(self):
        # Sketch mode, one id added or removed. It raises at most one register, from M to
        # M' > M, so Z changes by 2^-M - 2^-M' < 1 (M >= 0). With C = cap_hi and A =
        # alpha_m m^2: an unclamped E = A/Z <= C means Z >= A/C; if Z' = Z - d, 0 <= d <= 1,
        # then |A/Z' - A/Z| = A d / (Z Z') <= A / ((A/C)(A/C - 1)) = C^2 / (A - C), which
        # needs C < A (checked in __init__). Clamping to [bound, C] only shrinks a change
        # (clamp is 1-Lipschitz); rounding E to an int adds at most 1.
        # C^2 / (A - C) = C^2 aden / (anum - C aden), rounded up.
        c = self.cap_hi
        num = c * c * self._aden
        den = self._anum - c * self._aden
        return (num + den - 1) // den + 1

    def sensitivity(self, cap=1):
        """L1 sensitivity of result() when one person adds at most `cap` distinct ids.

        Exact mode: cap (each id moves the count by exactly 1). Sketch mode: cap times
        the one-id bound ceil(C^2 / (A - C)) + 1, C = cap_hi, A = alpha_m m^2 (derived in
        _step). Which mode applies depends on the data: see sensitivity_bound().
        """
        _check_cap(cap)
        if not self.overflow:
            return cap
        return cap * self._step()

    def sketch_sensitivity(self, cap=1):
        """The sketch-mode bound, cap * (ceil(C^2 / (A - C)) + 1), whatever the mode now."""
        _check_cap(cap)
        return cap * self._step()

    def sensitivity_bound(self, cap=1):
        """A data-independent bound, valid in either mode and across the switch.

        Crossing the bound moves result() from an exact count c >= bound - cap + 1 to an
        estimate in [bound, cap_hi]: by at most cap_hi - bound + cap - 1.
        """
        _check_cap(cap)
        return max(cap * self._step(), self.cap_hi - self.bound + cap - 1)
