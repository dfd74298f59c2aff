"""ESP-IDF's NVS (non-volatile storage) on a flash partition: what esp32.NVS runs on.

    s = Store(flash, 0x9000, 0x6000)   # loads and repairs, as nvs_flash_init() does
    ns = s.namespace('veil')           # nvs_open(READWRITE): creates the namespace entry
    s.set_i32(ns, 'boots', 7); s.get_i32(ns, 'boots')
    s.set_blob(ns, 'key', b'...'); n = s.get_blob(ns, 'key', buf)
    s.erase_key(ns, 'boots')

MicroPython code run inside the VM by the emulated `esp32` module. The item layer, in
ESP-IDF's format (nvs_storage.cpp) over the page layer in vbnvspage:

- namespaces: U8 items in namespace 0, key = name, value = index 1..254.
- blobs (version 2): BLOB_DATA chunks of up to 4000 bytes, chunk index = version offset
  (0x00 or 0x80, toggled on each rewrite) + n, then BLOB_IDX (size u32, chunk count u8,
  version offset u8). Version 1 single-page BLOB items are read too.
- a key holds one value: writing another type replaces it (ESP-IDF 5 without
  CONFIG_NVS_LEGACY_DUP_KEYS_COMPATIBILITY); reading the wrong type is TYPE_MISMATCH.

Writes follow ESP-IDF's order: the new item is written in full (a blob's chunks, then its
index), then the old item is erased (a blob's index first, then its chunks). Where power
went between the two, the next load keeps the newer copy (later page, then later entry)
and erases the older, as ESP-IDF does, and erases blob chunks no index claims; so after
a power loss at any point a key reads back either its old or its new value, never a mix
(tests/host/test_vboard_nvs.py cuts the power at every write to check this).

Errors are the board's: OSError(-code, 'ESP_ERR_NVS_...') with ESP-IDF's codes, e.g. a
missing key raises OSError(-4354, 'ESP_ERR_NVS_NOT_FOUND') (0x1102).

Allocation: reads and writes reuse the page layer's buffers and allocate only small
memoryview slices, the key's bytes, struct results and errors.
"""

import struct

from vbnvspage import (
    INVALID_LENGTH,
    NO_FREE_PAGES,
    NOT_ENOUGH_SPACE,
    NOT_FOUND,
    TYPE_MISMATCH,
    VALUE_TOO_LONG,
    Pages,
    crc32,
    error,
)

# The page layer's constants (const() names are private to their module).
_N = const(126)
_CHUNK_MAX = const(4000)
_ACTIVE = const(1)
_FULL = const(2)
_U8 = const(0x01)
_I32 = const(0x14)
_BLOB = const(0x41)
_BLOB_DATA = const(0x42)
_BLOB_IDX = const(0x48)
_ANY = const(0xFF)


class Store(Pages):
    def __init__(self, flash, base, size):
        Pages.__init__(self, flash, base, size)
        self._ns = {}
        if self._load():
            self._dedupe()
            self._index()
            if not self._free:
                raise error(NO_FREE_PAGES)

    def _drop(self, ns, typ, start, count):
        # Erase the replaced item (tracked in _trk); a blob's index first, then its chunks.
        j = self._trk
        self._trk = -1
        self._erase(j // _N, j % _N)
        if typ == _BLOB_IDX:
            for c in range(count):
                j = self._find(ns, start + c)
                if j >= 0:
                    self._erase(j // _N, j % _N)

    def _setp(self, ns, typ, fmt, value):
        j = self._find(ns, _ANY)
        e = self._e
        if j >= 0:
            if e[1] == typ and struct.unpack_from(fmt, e, 24)[0] == value:
                return  # unchanged: ESP-IDF skips the write
            old = e[1]
            start = e[29]
            count = e[28]
        self._trk = j
        p = self._room(1)
        self._emit(p, ns, typ, _ANY, fmt, (value,), None)
        if j >= 0:
            self._drop(ns, old, start, count)

    def _write_blob(self, ns, mv, start):
        # Storage::writeMultiPageBlob
        n = len(mv)
        if n > min(self._n - 1, 127) * _CHUNK_MAX:
            raise error(VALUE_TOO_LONG)
        count = 0
        off = 0
        try:
            while True:
                p = self._pages[-1]
                tail = self._tail(p)
                if not count and (tail < n or not tail) and tail < _CHUNK_MAX // 10:
                    if self._st[p] == _ACTIVE:
                        self._set_state(p, _FULL)
                    self._new_page()
                    if self._tail(self._pages[-1]) == tail:
                        raise error(NOT_ENOUGH_SPACE)
                    continue
                if not tail:
                    raise error(NOT_ENOUGH_SPACE)
                size = min(n - off, tail)
                self._emit(p, ns, _BLOB_DATA, start + count, None, None, mv[off : off + size])
                count += 1
                off += size
                if off < n or tail - size < 32:
                    if self._st[p] == _ACTIVE:
                        self._set_state(p, _FULL)
                    self._new_page()
                if off == n:
                    p = self._pages[-1]
                    self._emit(p, ns, _BLOB_IDX, _ANY, "<IBB", (n, count, start), None)
                    return
        except OSError:
            for c in range(count):
                j = self._find(ns, start + c)
                if j >= 0:
                    self._erase(j // _N, j % _N)
            raise

    def _blob_same(self, ns, size, count, start, mv):
        # Storage::cmpMultiPageBlob: the stored blob equals mv byte for byte.
        if size != len(mv):
            return False
        e = self._e
        off = 0
        for c in range(count):
            j = self._find(ns, start + c)
            if j < 0:
                return False
            n = e[24] | e[25] << 8
            if off + n > size:
                return False
            p = j // _N
            i = j % _N + 1
            while n > 0:
                m = min(n, 32)
                self._rd(p, i)
                if (e if m == 32 else e[:m]) != mv[off : off + m]:
                    return False
                off += m
                n -= m
                i += 1
        return off == size

    def _dedupe(self):
        # A write stopped between the new item and erasing the old: keep the newer.
        p = self._pages[-1]
        base = p * _N
        e = self._e
        for i in range(self._nxt[p]):
            if not self._h[base + i]:
                continue
            self._rd(p, i)
            ns = e[0]
            chunk = e[3]
            self._key_from_entry()
            while True:
                j = self._find(ns, chunk)
                if j < 0 or j == base + i:
                    break
                self._erase(j // _N, j % _N)

    def _index(self):
        # Storage::init: the namespace list, and blob chunks no index claims are erased.
        e = self._e
        for p in self._pages:
            base = p * _N
            for i in range(self._nxt[p]):
                if not self._h[base + i]:
                    continue
                self._rd(p, i)
                if e[1] == _BLOB_DATA:
                    ns = e[0]
                    c = e[3]
                    self._key_from_entry()
                    j = self._find(ns, _ANY)
                    if j < 0 or e[1] != _BLOB_IDX or not e[29] <= c < e[29] + e[28]:
                        self._erase(p, i)
                elif e[0] == 0 and e[1] == _U8:
                    n = 0
                    while n < 15 and e[8 + n]:
                        n += 1
                    self._ns[bytes(self._ev[8 : 8 + n]).decode()] = e[24]

    def namespace(self, name):
        i = self._ns.get(name)
        if i is not None:
            return i
        self._key(name)
        taken = self._ns.values()
        for i in range(1, 255):
            if i not in taken:
                break
        else:
            raise error(NOT_ENOUGH_SPACE)
        self._setp(0, _U8, "<B", i)
        self._ns[name] = i
        return i

    def set_i32(self, ns, key, value):
        if isinstance(value, float):
            raise TypeError("can't convert float to int")
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        self._key(key)
        self._setp(ns, _I32, "<i", value)

    def get_i32(self, ns, key):
        self._key(key)
        if self._find(ns, _ANY) < 0:
            raise error(NOT_FOUND)
        if self._e[1] != _I32:
            raise error(TYPE_MISMATCH)
        return struct.unpack_from("<i", self._e, 24)[0]

    def set_blob(self, ns, key, value):
        self._key(key)
        mv = memoryview(value)
        j = self._find(ns, _ANY)
        e = self._e
        start = 0
        if j >= 0:
            old = e[1]
            ostart = e[29]
            count = e[28]
            if old == _BLOB_IDX:
                size = struct.unpack_from("<I", e, 24)[0]
                if self._blob_same(ns, size, count, ostart, mv):
                    return  # unchanged: ESP-IDF skips the write
                start = 0 if ostart else 0x80
        self._trk = j
        self._write_blob(ns, mv, start)
        if j >= 0:
            self._drop(ns, old, ostart, count)

    def get_blob(self, ns, key, buf):
        self._key(key)
        j = self._find(ns, _ANY)
        if j < 0:
            raise error(NOT_FOUND)
        e = self._e
        typ = e[1]
        if typ == _BLOB_IDX:
            size, count, start = struct.unpack_from("<IBB", e, 24)
        elif typ == _BLOB:
            size = e[24] | e[25] << 8
            count = 1
        else:
            raise error(TYPE_MISMATCH)
        if not len(buf):
            return size  # an empty bytearray's buffer is NULL: ESP-IDF reports the size
        if len(buf) < size:
            raise error(INVALID_LENGTH)
        mv = memoryview(buf)
        off = 0
        for c in range(count):
            if typ == _BLOB_IDX:
                j = self._find(ns, start + c)
                if j < 0:
                    break
            n = e[24] | e[25] << 8
            crc = struct.unpack_from("<I", e, 28)[0]
            if n > size - off:
                break
            self._f.readinto(self._addr(j // _N, j % _N + 1), mv[off : off + n])
            if crc32(mv[off : off + n]) != crc:
                self._erase(j // _N, j % _N)  # Page::readItem drops a chunk that fails
                break
            off += n
        if off != size:
            if typ == _BLOB_IDX:
                self.erase_key(ns, key)  # Storage::readMultiPageBlob's cleanup
            raise error(NOT_FOUND)
        return size

    def erase_key(self, ns, key):
        self._key(key)
        j = self._find(ns, _ANY)
        if j < 0:
            raise error(NOT_FOUND)
        e = self._e
        self._trk = j
        self._drop(ns, e[1], e[29], e[28])
