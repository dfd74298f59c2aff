"""Dwell-time histogram of ids (BLE addresses) per window, bounded memory, no allocation.

    from veil.dwell import Dwell

    d = Dwell([30, 120, 240], 300, key16, 300)  # edges (s), bound, key, window length (s)
    d.add(addr6, t)            # id seen at event time t (int s); allocates nothing
    d.n                        # ids held this window: min(distinct ids, bound)
    d.result()                 # [ids with dwell < 30, 30..119, 120..239, >= 240]
    d.rekey(next_key16)        # new key each window: hashes unlinkable across windows

An id's dwell in a window is the time between its first and last sighting in that window
(0 for an id seen once): at most the window's length minus 1. Bins as in
veil.aggregate.Histogram: a dwell equal to an edge goes to the bin above it.
Sensitivity 2 * cap (see sensitivity()); docs/policy.md and docs/footfall.md.
"""

# Ids are hashed as veil.distinct does it: the id (1..15 bytes), zero-padded, with its
# length in the last byte, is one AES-128 block encrypted under a per-window key (a keyed
# PRF); the input buffer is zeroed after each use. Bytes 0..5 of the hash are the id's
# fingerprint in an open-addressing set (linear probing) over 1.5 * bound slots; a slot
# also holds the first and last sighting as offsets into the window (3 bytes each:
# windows are at most 2**24 s). Once `bound` ids are held a new id is probed, then
# dropped, and nothing records that the set filled (a flag would be a data-dependent
# output, as in veil.distinct). Memory: 12 bytes a slot, 18 * bound bytes, in 192-byte
# chunks (a fragmented heap has many small holes and few large ones, docs/memory.md: the
# demo needed 117 KB of VM heap with 448-byte chunks of 8-byte fingerprints, 109 KB so).
#
# Sensitivity (L1, add or remove one person who shows at most `cap` addresses in a
# window): 2 * cap. Each of the person's ids adds 1 to one bin; and once the set is full
# each of them can keep one other id out (that id's bin then loses 1 against the data
# set without the person). The bound is the policy's, fixed before any id arrives, so
# the noise covers both in every window. A phone that rotates its address within a
# window shows two addresses (docs/footfall.md). Fingerprints (6 bytes) could collide,
# merging two ids, with probability about n**2 / 2**49 a window (1.6e-10 for n = 300).
#
# The set, fingerprints and sighting times are as sensitive as the ids: nothing returns
# them, reset() and rekey() zero them. add() and reset() allocate nothing (the tests
# prove it under micropython.heap_lock()); the constructor, rekey(), result() allocate.

from array import array

from micropython import const

from veil.aggregate import AggregateError, _check_cap, _zero
from veil.distinct import _Keyed, keyed_hash

_FP = const(6)  # fingerprint bytes
_FIRST = const(6)  # offset of the first sighting in a slot (3 bytes)
_LAST = const(9)  # offset of the last sighting (3 bytes)
_SLOT = const(12)  # bytes a slot
_CHUNK_BITS = const(4)  # 16 slots a chunk: 192 bytes
_CHUNK_MASK = const(15)
_CHUNK_SLOTS = const(16)
_BOUND_MAX = const(0x10000)  # slot numbers stay < 2**17, hash prefix < 2**24
_WINDOW_MAX = const(0x1000000)  # offsets fit 3 bytes


def _get24(buf, i):
    return (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]


def _put24(buf, i, v):
    buf[i] = v >> 16
    buf[i + 1] = (v >> 8) & 0xFF
    buf[i + 2] = v & 0xFF


class Dwell(_Keyed):
    """Per-window histogram of first-to-last sighting times of distinct ids."""

    clamped = 0  # nothing to clamp: the outer bins are open

    def __init__(self, edges, bound, key16, window):
        if type(window) is not int or window < 1 or window > _WINDOW_MAX:
            raise AggregateError("window must be an int in [1, 2**24] seconds")
        if type(bound) is not int or bound < 1 or bound > _BOUND_MAX:
            raise AggregateError("bound must be an int in [1, 2**16]")
        if type(edges) not in (list, tuple) or not edges:
            raise AggregateError("a dwell histogram needs at least one edge")
        prev = 0
        for e in edges:
            if type(e) is not int or e <= prev or e >= _WINDOW_MAX:
                raise AggregateError("edges must be increasing ints in [1, 2**24)")
            prev = e
        self._edges = array("i", edges)
        self._window = window
        self.bound = bound
        self._slots = bound + (bound + 1) // 2  # > bound: a probe always finds a hole
        n = (self._slots + _CHUNK_SLOTS - 1) >> _CHUNK_BITS
        self._tbl = [bytearray(_CHUNK_SLOTS * _SLOT) for _ in range(n)]
        self._occ = bytearray((self._slots + 7) >> 3)
        _Keyed.__init__(self, key16)  # hash buffers and key; rekey() empties the set

    def reset(self):
        """Empty the set, keeping the key; allocates nothing."""
        self.n = 0  # ids held: min(distinct ids, bound)
        for chunk in self._tbl:
            _zero(chunk)
        _zero(self._occ)
        _zero(self._out)

    def _hash(self, ident):
        # The keyed hash of one id in self._out; the id does not stay in self._in.
        return keyed_hash(self._aes, self._in, self._out, ident)

    def add(self, ident, t):
        """Id `ident` seen at event time `t` (int seconds, this window); allocates nothing."""
        if type(t) is not int or t < 0:
            raise AggregateError("t must be an int >= 0")
        h = self._hash(ident)
        off = t % self._window  # the offset into the (aligned) window: < 2**24
        chunks = self._tbl
        occ = self._occ
        slots = self._slots
        s = (h[0] | (h[1] << 8) | (h[2] << 16)) % slots
        while True:
            tbl = chunks[s >> _CHUNK_BITS]
            base = (s & _CHUNK_MASK) * _SLOT
            if not occ[s >> 3] & (1 << (s & 7)):
                if self.n < self.bound:
                    i = 0
                    while i < _FP:
                        tbl[base + i] = h[i]
                        i += 1
                    _put24(tbl, base + _FIRST, off)
                    _put24(tbl, base + _LAST, off)
                    occ[s >> 3] |= 1 << (s & 7)
                    self.n += 1
                return  # a new id: stored, or past the bound and dropped
            i = 0
            while i < _FP and tbl[base + i] == h[i]:
                i += 1
            if i == _FP:  # seen already: widen its [first, last]
                if off < _get24(tbl, base + _FIRST):
                    _put24(tbl, base + _FIRST, off)
                elif off > _get24(tbl, base + _LAST):
                    _put24(tbl, base + _LAST, off)
                return
            s += 1
            if s == slots:
                s = 0

    def result(self):
        """Ids per dwell bin, a list of len(edges) + 1 ints (allocates)."""
        edges = self._edges
        bins = [0] * (len(edges) + 1)
        occ = self._occ
        for s in range(self._slots):
            if not occ[s >> 3] & (1 << (s & 7)):
                continue
            tbl = self._tbl[s >> _CHUNK_BITS]
            base = (s & _CHUNK_MASK) * _SLOT
            d = _get24(tbl, base + _LAST) - _get24(tbl, base + _FIRST)
            a = 0
            b = len(edges)
            while a < b:  # the number of edges <= d is d's bin
                mid = (a + b) >> 1
                if d < edges[mid]:
                    b = mid
                else:
                    a = mid + 1
            bins[a] += 1
        return bins

    def sensitivity(self, cap=1):
        """L1 sensitivity of result() when one person shows at most `cap` ids: 2 * cap.

        Each id adds 1 to one bin, and (once the set holds `bound` ids) can keep one
        other id out of it; see the module docstring.
        """
        _check_cap(cap)
        return 2 * cap
