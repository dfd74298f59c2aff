"""The board's `esp32` module on the virtual ESP32: Partition and NVS over the flash file.

    import esp32, vfs
    esp32.Partition.find(esp32.Partition.TYPE_DATA, label='vfs')[0].info()
    vfs.VfsLfs2(esp32.Partition('vfs'))          # the block device protocol, as on a board
    nvs = esp32.NVS('veil')
    nvs.set_i32('boots', 3); nvs.set_blob('key', b'...'); nvs.commit()
    n = nvs.get_blob('key', buf)                  # length; OSError if missing or too small

MicroPython code run inside the VM; the prelude calls `_init(cfg)` once with
`cfg['flash']` (a vbflash.Flash) and installs this module as `esp32`. It imports nothing
from disk later. The API and its errors are MicroPython's (ports/esp32/esp32_partition.c,
esp32_nvs.c): a missing partition label raises OSError(ENOENT); flash errors are
OSError(-esp_err); NVS errors are OSError(-code, 'ESP_ERR_NVS_...'), so a missing key is
OSError(-4354, 'ESP_ERR_NVS_NOT_FOUND'), exactly as on a board.

The partition table is ESP-IDF's binary one at 0x8000: 32-byte entries (magic AA 50,
type, subtype, offset, size, label[16], flags; bit 0 = encrypted), an optional MD5 entry
(EB EB, 14 x FF, MD5 of the entries before it) and 0xFF after the last. A table whose MD5
does not match, or with an entry that is neither, is refused with OSError(EIO) (the
bootloader would not start the app). NVS lives in the partition labelled 'nvs', in
ESP-IDF's NVS format (vbnvs, vbnvspage); `_init` loads it as MicroPython's boot calls
nvs_flash_init(), and like that boot erases and re-initialises a partition that reports
no free pages or a newer format.

Not modelled: OTA data (BOOT and RUNNING are the factory app, set_boot() does nothing),
flash encryption, and the rest of the esp32 module (RMT, ULP, wake-up sources).
"""

import hashlib
import struct
from errno import EIO, ENODEV, ENOENT

import vbnvs
import vbnvspage

_TABLE = const(0x8000)
_TABLE_SIZE = const(0xC00)
_SECTOR = const(4096)
_SUBTYPE_NVS = const(0x02)
_ERR_INVALID_ARG = const(0x102)
_ERR_INVALID_SIZE = const(0x104)

_flash = None
_table = None
_store = None


def _init(cfg):
    global _flash, _table, _store
    _flash = cfg["flash"]
    _table = None
    _store = None
    try:
        # MicroPython's boot calls nvs_flash_init(): load (and repair) NVS now, so its
        # tables are part of the emulation's heap, not what user code allocates later.
        _nvs()
    except OSError:
        pass  # no usable table or nvs partition: NVS() raises when used, as on a board


def _parts():
    # The partition table as (type, subtype, address, size, label, encrypted) tuples.
    global _table
    if _table is None:
        if _flash is None:
            raise OSError(ENODEV)
        buf = bytearray(_TABLE_SIZE)
        _flash.readinto(_TABLE, buf)
        md5 = hashlib.md5()
        out = []
        for o in range(0, _TABLE_SIZE, 32):
            magic = buf[o] | buf[o + 1] << 8
            if magic == 0x50AA:
                typ, sub, addr, size = struct.unpack_from("<BBII", buf, o + 2)
                n = 0
                while n < 16 and buf[o + 12 + n]:
                    n += 1
                label = bytes(buf[o + 12 : o + 12 + n]).decode()
                enc = bool(buf[o + 28] & 1)
                out.append((typ, sub, addr, size, label, enc))
                md5.update(buf[o : o + 32])
            elif magic == 0xEBEB:
                if md5.digest() != bytes(buf[o + 16 : o + 32]):
                    raise OSError(EIO, "partition table MD5 mismatch")
            elif magic == 0xFFFF:
                break
            else:
                raise OSError(EIO, "partition table corrupt")
        _table = out
    return _table


def _first(typ, sub, label):
    for p in _parts():
        if (typ == 0xFF or p[0] == typ) and (sub == 0xFF or p[1] == sub):
            if label is None or p[4] == label:
                return p
    return None


def _esp_err(code):
    raise OSError(-code)


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_SECTOR):
        if isinstance(id, tuple):  # from find()
            p = id
        elif isinstance(id, int):
            if id != Partition.BOOT and id != Partition.RUNNING:
                raise ValueError
            p = _first(0, 0x00, None) or _first(0, 0xFF, None)
        else:
            p = _first(0, 0xFF, id) or _first(1, 0xFF, id)
        if p is None:
            raise OSError(ENOENT)
        self._p = p
        self._bs = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None):
        return [
            Partition(p)
            for p in _parts()
            if (type == 0xFF or p[0] == type)
            and (subtype == 0xFF or p[1] == subtype)
            and (label is None or p[4] == label)
        ]

    @staticmethod
    def mark_app_valid_cancel_rollback():
        pass

    def __repr__(self):
        r = "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>"
        return r % self._p

    def info(self):
        return self._p

    def _span(self, off, n):
        # esp_partition_read/write's bounds check; returns the flash address.
        if off > self._p[3]:
            _esp_err(_ERR_INVALID_ARG)
        if off + n > self._p[3]:
            _esp_err(_ERR_INVALID_SIZE)
        return self._p[2] + off

    def _erase(self, off, n):
        # esp_partition_erase_range
        if off + n > self._p[3] or n % _SECTOR:
            _esp_err(_ERR_INVALID_SIZE)
        if off % _SECTOR:
            _esp_err(_ERR_INVALID_ARG)
        _flash.erase(self._p[2] + off, n)

    def readblocks(self, block_num, buf, offset=0):
        off = block_num * self._bs + offset
        _flash.readinto(self._span(off, len(buf)), buf)

    def writeblocks(self, block_num, buf, offset=None):
        off = block_num * self._bs
        if offset is None:
            self._erase(off, len(buf))
        else:
            off += offset
        _flash.write(self._span(off, len(buf)), buf)

    def ioctl(self, cmd, arg):
        if cmd == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self._p[3] // self._bs
        if cmd == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return self._bs
        if cmd == 6:  # MP_BLOCKDEV_IOCTL_BLOCK_ERASE
            self._erase(arg * self._bs, self._bs)
            return 0
        if 1 <= cmd <= 3:  # INIT, DEINIT, SYNC
            return 0
        return None

    def set_boot(self):
        pass

    def get_next_update(self):
        ota = [p for p in _parts() if p[0] == 0 and 0x10 <= p[1] <= 0x1F]
        if not ota:
            raise OSError(ENOENT)
        i = ota.index(self._p) + 1 if self._p in ota else 0
        return Partition(ota[i % len(ota)])


def _nvs():
    # nvs_flash_init() on the partition labelled 'nvs', as MicroPython's boot calls it.
    global _store
    if _store is None:
        p = _first(1, _SUBTYPE_NVS, "nvs")
        if p is None:
            raise vbnvspage.error(vbnvspage.NOT_INITIALIZED)
        try:
            _store = vbnvs.Store(_flash, p[2], p[3])
        except OSError as e:
            if e.errno != -vbnvspage.NO_FREE_PAGES and e.errno != -vbnvspage.NEW_VERSION_FOUND:
                raise
            _flash.erase(p[2], p[3])
            _store = vbnvs.Store(_flash, p[2], p[3])
    return _store


class NVS:
    def __init__(self, namespace):
        if not isinstance(namespace, str):
            raise TypeError("can't convert to str implicitly")
        self._s = _nvs()
        self._ns = self._s.namespace(namespace)

    def __repr__(self):
        return "<NVS namespace>"

    def set_i32(self, key, value):
        self._s.set_i32(self._ns, key, value)

    def get_i32(self, key):
        return self._s.get_i32(self._ns, key)

    def set_blob(self, key, value):
        self._s.set_blob(self._ns, key, value)

    def get_blob(self, key, buffer):
        return self._s.get_blob(self._ns, key, buffer)

    def erase_key(self, key):
        self._s.erase_key(self._ns, key)

    def commit(self):
        pass  # ESP-IDF's nvs_commit(): every set is already on flash
