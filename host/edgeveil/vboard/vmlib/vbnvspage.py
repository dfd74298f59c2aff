"""The page layer of the virtual board's NVS: ESP-IDF's NVS pages and entries on flash.

Used by vbnvs.Store (the item layer: namespaces, i32, blobs). MicroPython code run inside
the VM. The format is ESP-IDF's (components/nvs_flash; "NVS Partition" in the ESP-IDF
docs), so an image made by esp-idf-nvs-partition-gen reads back, and what is written here
reads on a board:

- page = one 4096-byte sector: header (state u32, seq u32, version u8 = 0xFE, CRC32 of
  bytes 4..27 at 28), entry-state bitmap (32 bytes, 2 bits per entry: 11 empty,
  10 written, 00 erased), then 126 entries of 32 bytes. Page states: 0xFFFFFFFF empty,
  ...FE active, ...FC full, ...F8 freeing, ...F0 corrupt.
- entry: ns u8, type u8, span u8, chunk index u8, CRC32 of bytes 0..3 + 8..31, key
  char[16] NUL padded, 8 data bytes: a primitive value (0xFF padded), or for a
  variable-length item size u16, 0xFFFF, CRC32 of the data, which fills span-1 entries.
- CRC32 is esp_rom_crc32_le(0xffffffff, ...) = binascii.crc32(data, 0xffffffff).

Writing an entry writes its 32 bytes, then its bitmap bits (Page::writeEntry). A full
page is marked FULL and a free one activated; when only one free page is left, the in-use
page with the most erased entries is marked FREEING, its live entries copied to the free
page, and it is erased (PageManager::requestNewPage), so one page always stays spare.
Loading repairs what a power loss left (Page::load, mLoadEntryTable, PageManager::load):
an entry written but not marked in the bitmap is marked erased; a variable-length item
missing data entries is erased; an entry whose CRC fails is erased; an interrupted reclaim
(a FREEING page) is redone.

Allocation: the page tables (about 200 bytes a page) at load, plus a scratch buffer it
drops; entry reads and writes reuse one 32-byte buffer and allocate only small memoryview
slices and struct results.
"""

import binascii
import struct


def crc32(data, crc=0xFFFFFFFF):
    # esp_rom_crc32_le(0xffffffff, data): zlib's CRC-32 continued from 0xFFFFFFFF
    return binascii.crc32(data, crc)


_PAGE = const(4096)
_N = const(126)  # entries per page
_CHUNK_MAX = const(4000)  # data bytes in one page: 125 entries
_VERSION = const(0xFE)  # NVS format version 2 (multi-page blobs)

# Page states as kept in RAM; the header word on flash is _WORDS[state].
_EMPTY = const(0)
_ACTIVE = const(1)
_FULL = const(2)
_FREEING = const(3)
_CORRUPT = const(4)
_WORDS = (0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFC, 0xFFFFFFF8, 0xFFFFFFF0)

# Entry states in the bitmap.
_E_EMPTY = const(3)
_E_WRITTEN = const(2)
_E_ERASED = const(0)

# Variable-length item types (SZ, v1 BLOB, BLOB_DATA): their data follows in span-1 entries.
_VAR = (0x21, 0x41, 0x42)

# ESP-IDF's error codes (nvs.h) and esp_err_to_name()'s names for them.
NOT_INITIALIZED = const(0x1101)
NOT_FOUND = const(0x1102)
TYPE_MISMATCH = const(0x1103)
NOT_ENOUGH_SPACE = const(0x1105)
KEY_TOO_LONG = const(0x1109)
INVALID_STATE = const(0x110B)
INVALID_LENGTH = const(0x110C)
NO_FREE_PAGES = const(0x110D)
VALUE_TOO_LONG = const(0x110E)
NEW_VERSION_FOUND = const(0x1110)
_NAMES = {
    0x1101: "NOT_INITIALIZED",
    0x1102: "NOT_FOUND",
    0x1103: "TYPE_MISMATCH",
    0x1105: "NOT_ENOUGH_SPACE",
    0x1109: "KEY_TOO_LONG",
    0x110B: "INVALID_STATE",
    0x110C: "INVALID_LENGTH",
    0x110D: "NO_FREE_PAGES",
    0x110E: "VALUE_TOO_LONG",
    0x1110: "NEW_VERSION_FOUND",
}


def error(code):
    # As MicroPython's check_esp_err() builds it on the board.
    return OSError(-code, "ESP_ERR_NVS_" + _NAMES[code])


def _hash(b, o, ns, chunk):
    # One byte per item head in RAM (0 = none), like ESP-IDF's HashList but smaller.
    h = ns * 257 + chunk
    for i in range(o, o + 15):
        c = b[i]
        if not c:
            break
        h = (h * 31 + c) & 0xFFFFFF
    h = (h ^ (h >> 8) ^ (h >> 16)) & 0xFF
    return h or 1


class Pages:
    def __init__(self, flash, base, size):
        n = size // _PAGE
        self._f = flash
        self._base = base
        self._n = n
        self._st = bytearray(n)
        self._seq = [0] * n
        self._nxt = bytearray(n)  # next free entry of each page
        self._used = bytearray(n)  # written entries of each page
        self._bm = bytearray(b"\xff" * (32 * n))
        self._bmv = memoryview(self._bm)
        self._h = bytearray(_N * n)
        self._h1 = bytearray(1)
        self._e = bytearray(32)
        self._ev = memoryview(self._e)
        self._k = bytearray(16)
        self._w = bytearray(4)
        self._pages = []  # in use, by sequence number; the last is the active page
        self._free = []
        self._seqn = 0
        self._trk = -1  # where the item being replaced is (it may move in a reclaim)

    def _addr(self, p, i):
        return self._base + p * _PAGE + 64 + i * 32

    def _rd(self, p, i):
        self._f.readinto(self._addr(p, i), self._e)

    def _get(self, p, i):
        return (self._bm[p * 32 + (i >> 2)] >> ((i & 3) << 1)) & 3

    def _mark(self, p, i, cnt, s):
        bm = self._bm
        for k in range(i, i + cnt):
            j = p * 32 + (k >> 2)
            sh = (k & 3) << 1
            bm[j] = (bm[j] & ~(3 << sh)) | (s << sh)
        w0 = (p * 32 + (i >> 2)) & ~3
        w1 = ((p * 32 + ((i + cnt - 1) >> 2)) & ~3) + 4
        self._f.write(self._base + p * _PAGE + 32 + w0 - p * 32, self._bmv[w0:w1])

    def _crc_ok(self):
        ev = self._ev
        return crc32(ev[8:32], crc32(ev[0:4])) == struct.unpack_from("<I", self._e, 4)[0]

    def _key(self, key):
        if isinstance(key, str):
            key = key.encode()
        elif not isinstance(key, bytes):
            raise TypeError("can't convert to str implicitly")
        n = len(key)
        if n > 15:
            raise error(KEY_TOO_LONG)
        k = self._k
        for i in range(16):
            k[i] = key[i] if i < n else 0

    def _key_from_entry(self):
        e = self._e
        k = self._k
        for i in range(16):
            k[i] = e[8 + i]

    def _keyeq(self):
        e = self._e
        k = self._k
        for i in range(15):
            c = k[i]
            if e[8 + i] != c:
                return False
            if not c:
                break
        return True

    def _set_state(self, p, s):
        struct.pack_into("<I", self._w, 0, _WORDS[s])
        self._f.write(self._base + p * _PAGE, self._w)
        self._st[p] = s

    def _init_page(self, p):
        e = self._e
        for j in range(32):
            e[j] = 0xFF
        struct.pack_into("<II", e, 0, _WORDS[_ACTIVE], self._seq[p])
        e[8] = _VERSION
        struct.pack_into("<I", e, 28, crc32(self._ev[4:28]))
        self._f.write(self._base + p * _PAGE, e)
        self._st[p] = _ACTIVE

    def _erase_page(self, p):
        self._f.erase(self._base + p * _PAGE, _PAGE)
        self._st[p] = _EMPTY
        self._nxt[p] = 0
        self._used[p] = 0
        for i in range(_N):
            self._h[p * _N + i] = 0
        for i in range(32):
            self._bm[p * 32 + i] = 0xFF

    def _activate(self):
        # PageManager::activatePage: the header is written on the first write to it.
        if not self._free:
            raise error(NOT_ENOUGH_SPACE)
        p = self._free.pop(0)
        if self._st[p] == _CORRUPT:
            self._erase_page(p)
        self._pages.append(p)
        self._seq[p] = self._seqn
        self._seqn += 1

    def _new_page(self):
        # PageManager::requestNewPage: keep one free page; reclaim the emptiest one.
        if not self._free:
            raise error(INVALID_STATE)
        if len(self._free) >= 2:
            self._activate()
            return
        best = -1
        most = 0
        for p in self._pages:
            if _N - self._used[p] > most:
                best = p
                most = _N - self._used[p]
        if not most:
            raise error(NOT_ENOUGH_SPACE)
        self._set_state(best, _FREEING)
        self._activate()
        self._copy(best, self._pages[-1])
        self._erase_page(best)
        self._pages.remove(best)
        self._free.append(best)

    def _copy(self, src, dst):
        if self._st[dst] == _EMPTY:
            self._init_page(dst)
        e = self._e
        i = 0
        while i < _N:
            if self._get(src, i) != _E_WRITTEN:
                i += 1
                continue
            self._rd(src, i)
            span = e[2] if e[1] in _VAR else 1
            span = max(1, min(span, _N - i))
            d = self._nxt[dst]
            if self._trk == src * _N + i:
                self._trk = dst * _N + d
            self._h[dst * _N + d] = self._h[src * _N + i]
            for k in range(span):
                if k:
                    self._rd(src, i + k)
                self._f.write(self._addr(dst, d + k), e)
                self._mark(dst, d + k, 1, _E_WRITTEN)
            self._nxt[dst] = d + span
            self._used[dst] += span
            i += span

    def _room(self, cnt):
        p = self._pages[-1]
        if self._st[p] != _FULL and self._nxt[p] + cnt <= _N:
            return p
        if self._st[p] == _ACTIVE:
            self._set_state(p, _FULL)
        self._new_page()
        p = self._pages[-1]
        if self._nxt[p] + cnt > _N:
            raise error(NOT_ENOUGH_SPACE)
        return p

    def _tail(self, p):
        # Page::getVarDataTailroom
        s = self._st[p]
        if s == _EMPTY:
            return _CHUNK_MAX
        if s == _FULL or self._nxt[p] >= _N - 1:
            return 0
        return (_N - 1 - self._nxt[p]) * 32

    def _find(self, ns, chunk):
        # The item (ns, self._k, chunk) as a global entry number, or -1; leaves it in _e.
        h1 = self._h1
        h1[0] = _hash(self._k, 0, ns, chunk)
        hs = self._h
        e = self._e
        for p in self._pages:
            base = p * _N
            end = base + self._nxt[p]
            j = base
            while True:
                j = hs.find(h1, j, end)
                if j < 0:
                    break
                self._rd(p, j - base)
                if e[0] == ns and e[3] == chunk and self._keyeq():
                    if self._crc_ok():
                        return j
                    self._erase(p, j - base)
                j += 1
        return -1

    def _erase(self, p, i):
        # Page::eraseEntryAndSpan
        self._rd(p, i)
        e = self._e
        span = 1
        if e[1] in _VAR and self._crc_ok():
            span = max(1, min(e[2], _N - i))
        w = 0
        for k in range(i, i + span):
            if self._get(p, k) == _E_WRITTEN:
                w += 1
        self._mark(p, i, span, _E_ERASED)
        self._used[p] -= w
        self._h[p * _N + i] = 0
        if i + span > self._nxt[p]:
            self._nxt[p] = i + span

    def _emit(self, p, ns, typ, chunk, fmt, val, data):
        # Page::writeItem: the entry, its bitmap bits, then the data entries and theirs.
        if self._st[p] == _EMPTY:
            self._init_page(p)
        e = self._e
        ev = self._ev
        f = self._f
        i = self._nxt[p]
        e[0] = ns
        e[1] = typ
        e[3] = chunk
        e[8:24] = self._k
        for j in range(24, 32):
            e[j] = 0xFF
        span = 1
        n = 0
        if data is not None:
            n = len(data)
            span = 1 + (n + 31) // 32
            struct.pack_into("<HHI", e, 24, n, 0xFFFF, crc32(data))
        else:
            struct.pack_into(fmt, e, 24, *val)
        e[2] = span
        struct.pack_into("<I", e, 4, crc32(ev[8:32], crc32(ev[0:4])))
        f.write(self._addr(p, i), e)
        self._mark(p, i, 1, _E_WRITTEN)
        self._h[p * _N + i] = _hash(e, 8, ns, chunk)
        full = n & ~31
        if full:
            f.write(self._addr(p, i + 1), data[0:full])
            self._mark(p, i + 1, full >> 5, _E_WRITTEN)
        if n > full:
            for j in range(32):
                e[j] = 0xFF
            e[0 : n - full] = data[full:n]
            f.write(self._addr(p, i + 1 + (full >> 5)), e)
            self._mark(p, i + 1 + (full >> 5), 1, _E_WRITTEN)
        self._nxt[p] = i + span
        self._used[p] += span

    def _load(self):
        # Page::load for every page, PageManager::load's ordering and FREEING recovery;
        # True when pages are in use.
        n = self._n
        scratch = bytearray(512)
        ff = b"\xff" * 512
        for p in range(n):
            self._load_page(p, scratch, ff)
        scratch = ff = None
        st = self._st
        used = [p for p in range(n) if _ACTIVE <= st[p] <= _FREEING]
        used.sort(key=lambda p: self._seq[p])
        self._pages = used
        self._free = [p for p in range(n) if st[p] == _EMPTY or st[p] == _CORRUPT]
        if not used:
            self._activate()
            return False
        self._seqn = self._seq[used[-1]] + 1
        self._recover()
        return True

    def _load_page(self, p, scratch, ff):
        # Page::load
        f = self._f
        e = self._e
        a = self._base + p * _PAGE
        f.readinto(a, e)
        w = struct.unpack_from("<I", e, 0)[0]
        if w == 0xFFFFFFFF:
            self._st[p] = _EMPTY
            for o in range(0, _PAGE, len(scratch)):
                f.readinto(a + o, scratch)
                if scratch != ff:
                    self._st[p] = _CORRUPT  # "uninitialised" but not blank
                    break
            return
        if crc32(self._ev[4:28]) != struct.unpack_from("<I", e, 28)[0]:
            self._st[p] = _CORRUPT
            return
        if e[8] < _VERSION:
            raise error(NEW_VERSION_FOUND)
        s = _WORDS.index(w) if w in _WORDS else _CORRUPT
        if s < _ACTIVE or s > _FREEING:
            self._st[p] = _CORRUPT
            return
        self._st[p] = s
        self._seq[p] = struct.unpack_from("<I", e, 4)[0]
        f.readinto(a + 32, self._bmv[p * 32 : p * 32 + 32])
        self._scan(p)

    def _scan(self, p):
        # Page::mLoadEntryTable
        e = self._e
        hb = p * _N
        end = _N
        if self._st[p] == _ACTIVE:
            end = 0
            while end < _N and self._get(p, end) != _E_EMPTY:
                end += 1
            while end < _N:  # written but not yet marked: power went mid-write
                self._rd(p, end)
                if e[0] & e[1] & e[2] & e[3] == 0xFF:
                    break
                self._mark(p, end, 1, _E_ERASED)
                end += 1
        self._nxt[p] = end
        i = 0
        while i < end:
            if self._get(p, i) != _E_WRITTEN:
                i += 1
                continue
            self._rd(p, i)
            if not self._crc_ok():
                self._mark(p, i, 1, _E_ERASED)
                i += 1
                continue
            span = 1
            if e[1] in _VAR:
                span = e[2]
                ok = 0 < span <= _N - i
                for j in range(i + 1, i + span if ok else i):
                    if self._get(p, j) != _E_WRITTEN:
                        ok = False
                        break
                if not ok:
                    span = max(1, min(span, _N - i))
                    self._mark(p, i, span, _E_ERASED)
                    if i + span > self._nxt[p]:
                        self._nxt[p] = i + span
                    i += span
                    continue
            self._h[hb + i] = _hash(e, 8, e[0], e[3])
            i += span
        used = 0
        for i in range(_N):
            if self._get(p, i) == _E_WRITTEN:
                used += 1
        self._used[p] = used

    def _recover(self):
        # PageManager::load: power went while a page was being freed; redo it.
        for p in self._pages:
            if self._st[p] == _FREEING:
                last = self._pages[-1]
                if self._st[last] == _ACTIVE:
                    self._erase_page(last)
                    self._pages.remove(last)
                    self._free.append(last)
                self._activate()
                self._copy(p, self._pages[-1])
                self._erase_page(p)
                self._pages.remove(p)
                self._free.append(p)
                return
