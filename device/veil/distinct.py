"""Distinct counts of ids (BLE addresses) in bounded memory, allocation-free per id.

    from veil.distinct import Distinct, DistinctSketch

    d = Distinct(1000, key16)     # min(exact number of distinct ids, 1000)
    d.add(addr6)                  # bytes-like id, 1..15 bytes; allocates nothing
    d.result(); d.rekey(next_key16)   # new key each window: hashes unlinkable
    h = DistinctSketch(50000, key16, m=4096)  # HyperLogLog estimate, at most 50000

The two are two policy choices (`agg = "distinct"` / `"distinct_sketch"`, docs/policy.md),
not two modes one object switches between: which one a field uses, and hence the noise
scale (sensitivity() depends on the constructor's parameters only), is fixed before any
id arrives. The same interface as veil.aggregate: n, clamped, add(), reset(), result(),
sensitivity(cap); add() and reset() allocate nothing, the rest may.

Ints: the ESP32's small ints are 31-bit; on the per-id path hash bytes are read one at a
time (at most 3 at once, < 2**24) and n stops at 2**30 - 1.
"""

import cryptolib
from micropython import const

from veil.aggregate import AggregateError, _check_cap, _zero

_N_MAX = const(0x3FFFFFFF)  # largest ESP32 small int: `n` saturates here
_HLL_K = const(64)  # fixed point of the HLL sum: 2**(64 - M) with M <= 49
_CHUNK_BITS = const(6)  # the exact set in chunks of 2**6 slots (512 bytes)
_CHUNK_SLOTS = const(64)
_BOUND_MAX = const(0x100000)  # Distinct bound <= 2**20 (slot offsets stay < 2**24)


def keyed_prf(key16):
    """The per-window keyed PRF: AES-128 in ECB mode, one block per id (allocates)."""
    if type(key16) not in (bytes, bytearray) or len(key16) != 16:
        raise AggregateError("key16 must be 16 bytes")
    return cryptolib.aes(key16, 1)  # 1 = MODE_ECB: one block, one PRF call


def keyed_hash(prf, buf, out, ident):
    """The keyed hash of `ident` (1..15 bytes) into `out` (16 bytes); allocates nothing.

    The id, zero-padded, with its length in the last byte (so the padding is
    unambiguous), is one block in `buf` (16 zero bytes), encrypted by `prf` into `out`;
    `buf` is zeroed again before returning, so no id stays in RAM.
    """
    t = type(ident)
    if t is not bytes and t is not bytearray and t is not memoryview:
        raise AggregateError("an id must be bytes-like")
    k = len(ident)
    if k < 1 or k > 15:
        raise AggregateError("an id must be 1..15 bytes")
    i = 0
    while i < k:
        buf[i] = ident[i]
        i += 1
    buf[15] = k  # the rest is zero (it is zeroed after each use)
    prf.encrypt(buf, out)
    i = 0
    while i < k:  # leave no id in the buffer
        buf[i] = 0
        i += 1
    buf[15] = 0
    return out


class _Keyed:
    """Shared by the distinct counters: ids hashed with a per-window key, no allocation.

    The id (1..15 bytes), zero-padded, with its length in the last byte (so the padding
    is unambiguous), is one AES-128 block, encrypted in place of a keyed PRF
    (cryptolib.aes ECB, encrypt(in, out) into a preallocated buffer). The input buffer is
    zeroed after each use, so no id stays in RAM past add().
    """

    clamped = 0

    def __init__(self, key16):
        self._in = bytearray(16)
        self._out = bytearray(16)
        self.rekey(key16)

    def rekey(self, key16):
        """Reset everything and hash with a new 16-byte key from now on (allocates)."""
        self._aes = keyed_prf(key16)
        self.reset()

    def _hash(self, ident):
        # The keyed hash of one id in self._out, or None once n saturated.
        out = keyed_hash(self._aes, self._in, self._out, ident)
        if self.n >= _N_MAX:
            return None
        self.n += 1
        return out


class Distinct(_Keyed):
    """Exact distinct count of ids, clamped: result() is min(distinct ids, bound).

    Bytes 0..7 of an id's keyed hash are its fingerprint in an open-addressing set
    (linear probing) over 1.5 * bound slots of 8 bytes, plus an occupancy bitmap. Once
    `bound` ids are stored, a new id is not inserted and counted by nothing: the count
    stays at `bound`. Sensitivity: cap, in every window. min(x, bound) is 1-Lipschitz,
    so one person's `cap` ids move the result by at most cap whether or not the set is
    full. Whether it filled is not recorded anywhere: a flag would be a data-dependent
    output, and a noise scale or a report chosen by it would not be epsilon-DP (an
    earlier version switched to a HyperLogLog estimate, with wider noise, past the
    bound; the width itself told whether the bound was crossed). For counts above any
    bound the memory allows, a policy chooses DistinctSketch instead, for every window.

    The set is as sensitive as the ids: nothing returns it, and reset()/rekey() zero it.
    Memory: 12 * bound bytes (in whole 512-byte chunks) + bound / 5.3 bytes of bitmap, about
    12.5 KB for bound=1000.
    """

    def __init__(self, bound, key16):
        if type(bound) is not int or bound < 1 or bound > _BOUND_MAX:
            raise AggregateError("bound must be an int in [1, 2**20]")
        self.bound = bound
        self._slots = bound + (bound + 1) // 2  # > bound: a probe always finds a hole
        # The set lives in 512-byte chunks (64 slots each), not one block: a fragmented
        # heap on a board rarely has 8+ KiB in one piece, but has many small holes. With
        # 1 KiB chunks the demo needed about 116 KB of VM heap, with 512 B 100 KB (docs/memory.md).
        n = (self._slots + _CHUNK_SLOTS - 1) >> _CHUNK_BITS
        self._tbl = [bytearray(_CHUNK_SLOTS * 8) for _ in range(n)]
        self._occ = bytearray((self._slots + 7) >> 3)
        _Keyed.__init__(self, key16)

    def reset(self):
        """Empty the set, keeping the key; allocates nothing."""
        self.n = 0
        self._count = 0
        for chunk in self._tbl:
            _zero(chunk)
        _zero(self._occ)
        _zero(self._out)

    def add(self, ident):
        h = self._hash(ident)
        if h is None:
            return
        # A full set still probes (same work per id whether or not it is full).
        chunks = self._tbl
        occ = self._occ
        slots = self._slots
        s = (h[0] | (h[1] << 8) | (h[2] << 16)) % slots  # < 2**24
        while True:
            if not occ[s >> 3] & (1 << (s & 7)):
                if self._count < self.bound:
                    tbl = chunks[s >> _CHUNK_BITS]
                    base = (s & (_CHUNK_SLOTS - 1)) << 3
                    i = 0
                    while i < 8:
                        tbl[base + i] = h[i]
                        i += 1
                    occ[s >> 3] |= 1 << (s & 7)
                    self._count += 1
                return  # a new id: stored, or past the bound and counted by nothing
            tbl = chunks[s >> _CHUNK_BITS]
            base = (s & (_CHUNK_SLOTS - 1)) << 3
            i = 0
            while i < 8 and tbl[base + i] == h[i]:
                i += 1
            if i == 8:
                return  # seen already
            s += 1
            if s == slots:
                s = 0

    def result(self):
        """min(number of distinct ids added, bound)."""
        return self._count

    def sensitivity(self, cap=1):
        """L1 sensitivity of result() when one person adds at most `cap` distinct ids: cap."""
        _check_cap(cap)
        return cap


class DistinctSketch(_Keyed):
    """HyperLogLog estimate of the distinct ids, clamped to at most `cap_hi`, always.

    Flajolet, Fusy, Gandouet, Meunier, "HyperLogLog" (AofA 2007): m one-byte registers;
    bytes 8..9 of an id's keyed hash pick the register, 1 + the leading zeros of bytes
    10..15 (48 bits) are its rank (rho), at most 49. result() is the raw estimate
    E = alpha_m m^2 / sum(2^-M_j) in integer arithmetic, min(E, cap_hi). There is no
    small-range correction (its switch to linear counting would be a data-dependent jump):
    below about 2.5 m the raw estimate overshoots (it is alpha_m * m ~ 0.72 m for no ids
    at all), so choose m well below the counts expected. Standard error 1.04 / sqrt(m).

    Sensitivity (data-independent, see _step): cap * (ceil(C^2 / (A - C)) + 1) with
    C = cap_hi, A = alpha_m m^2; C < A is required. The registers are as sensitive as the
    ids: nothing returns them, and reset()/rekey() zero them. Memory: m bytes + objects.
    """

    def __init__(self, cap_hi, key16, m=1024):
        if type(m) is not int or m < 16 or m > 65536 or m & (m - 1):
            raise AggregateError("m must be a power of two in [16, 65536]")
        # A = alpha_m * m^2 as anum / aden. alpha_m: Flajolet et al. 2007, Fig. 3: 0.673
        # (m=16), 0.697 (32), 0.709 (64), 0.7213 / (1 + 1.079 / m) for m >= 128.
        if m >= 128:
            self._anum = 7213 * m * m * m
            self._aden = 10000 * m + 10790
        else:
            self._anum = {16: 673, 32: 697, 64: 709}[m] * m * m
            self._aden = 1000
        if type(cap_hi) is not int or cap_hi < 1 or cap_hi > _N_MAX:
            raise AggregateError("cap_hi must be a positive int")
        if cap_hi * self._aden >= self._anum:
            raise AggregateError("cap_hi must be below alpha_m * m^2")
        self.cap_hi = cap_hi
        self.m = m
        self._mask = m - 1
        self._reg = bytearray(m)
        _Keyed.__init__(self, key16)

    def reset(self):
        """Empty the sketch, keeping the key; allocates nothing."""
        self.n = 0
        _zero(self._reg)
        _zero(self._out)

    def add(self, ident):
        out = self._hash(ident)
        if out is None:
            return
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

    def result(self):
        """min(E, cap_hi), E the raw HLL estimate rounded to nearest (allocates)."""
        # E = alpha_m m^2 / Z, Z = sum 2^-M_j (Flajolet et al. 2007, Fig. 3), in fixed
        # point: Zk = sum 2^(K - M_j) = Z * 2^K, E = anum 2^K / (aden Zk). Long ints here:
        # result() runs once per window.
        zk = 0
        for r in self._reg:
            zk += 1 << (_HLL_K - r)
        den = self._aden * zk
        e = ((self._anum << (_HLL_K + 1)) + den) // (2 * den)
        return min(e, self.cap_hi)

    def _step(self):
        # One id added or removed raises or lowers at most one register, from M to
        # M' > M, so Z changes by 2^-M - 2^-M' < 1 (M >= 0). With C = cap_hi and A =
        # alpha_m m^2: an unclamped E = A/Z <= C means Z >= A/C; if Z' = Z - d, 0 <= d <= 1,
        # then |A/Z' - A/Z| = A d / (Z Z') <= A / ((A/C)(A/C - 1)) = C^2 / (A - C), which
        # needs C < A (checked in __init__). min(., C) only shrinks a change (it is
        # 1-Lipschitz); rounding E to an int adds at most 1. The bound holds for every
        # key and every data set, so it is the same in every window.
        # C^2 / (A - C) = C^2 aden / (anum - C aden), rounded up.
        c = self.cap_hi
        num = c * c * self._aden
        den = self._anum - c * self._aden
        return (num + den - 1) // den + 1

    def sensitivity(self, cap=1):
        """L1 sensitivity of result() when one person adds at most `cap` distinct ids.

        cap * (ceil(C^2 / (A - C)) + 1), C = cap_hi, A = alpha_m m^2 (derived in _step):
        a chain of cap single-id steps.
        """
        _check_cap(cap)
        return cap * self._step()
