"""Read and build ESP-IDF NVS partition images (the board's `nvs` partition) on the host.

    image = make_nvs({"veil": {"boots": 3, "key": b"\\x01" * 16}}, size=0x6000)
    read_nvs(image)  # {"veil": {"boots": 3, "key": b"\\x01..."}}

`make_nvs` builds the image with Espressif's own generator (esp-idf-nvs-partition-gen, used
as a library), so factory provisioning writes exactly what ESP-IDF's tool writes.
`read_nvs` parses an image as a booting ESP-IDF would (components/nvs_flash): pages by
sequence number, the entry-state bitmap, CRC32 of every page header, entry and data, v2
multi-page blobs (BLOB_DATA chunks + BLOB_IDX), v1 blobs and strings.

A corrupt entry (CRC mismatch, a variable-length item missing data entries, a blob with a
missing or bad chunk) is **skipped, as ESP-IDF does** (it erases such entries on load and
answers ESP_ERR_NVS_NOT_FOUND), unless `strict=True`, which raises `ImageError` naming
the page and entry instead. Where power was lost between writing a new value and erasing
the old one, the newer is returned, as ESP-IDF keeps it; a page left FREEING by an
interrupted reclaim is read as ESP-IDF recovers it (its items win over the partial copy).

On the device only i32 and blob values are readable through MicroPython's `esp32.NVS`
(`get_i32`, `get_blob`); strings (SZ) and other integer widths read as
ESP_ERR_NVS_TYPE_MISMATCH there, so provision secrets and keys as bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import EdgeveilError, ImageError

NvsValue = int | bytes | str

PAGE_SIZE = 4096
ENTRIES_PER_PAGE = 126
MAX_KEY_LEN = 15  # bytes, without the terminating NUL

_ST_ACTIVE = 0xFFFFFFFE
_ST_FULL = 0xFFFFFFFC
_ST_FREEING = 0xFFFFFFF8
_ST_EMPTY = 0xFFFFFFFF
_INT_TYPES = {
    0x01: "<B", 0x11: "<b", 0x02: "<H", 0x12: "<h",
    0x04: "<I", 0x14: "<i", 0x08: "<Q", 0x18: "<q",
}  # fmt: skip
_SZ, _BLOB, _BLOB_DATA, _BLOB_IDX = 0x21, 0x41, 0x42, 0x48
_VARLEN = (_SZ, _BLOB, _BLOB_DATA)
_WRITTEN = 2


def _crc(data: bytes) -> int:
    # ESP-IDF's esp_rom_crc32_le(0xffffffff, ...) is zlib's CRC-32.
    return zlib.crc32(data, 0xFFFFFFFF)


@dataclass(frozen=True)
class _Item:
    order: tuple[int, int]  # (position of the page by sequence, entry index): later wins
    ns: int
    type: int
    chunk: int
    key: str
    raw: bytes  # the 32-byte entry
    data: bytes  # for variable-length items


class _Reader:
    def __init__(self, image: bytes, strict: bool) -> None:
        if not image or len(image) % PAGE_SIZE:
            raise ImageError(f"NVS image size {len(image)} is not a multiple of {PAGE_SIZE}")
        self.image = image
        self.strict = strict
        self.items: dict[tuple[int, str, int], _Item] = {}

    def bad(self, what: str) -> None:
        if self.strict:
            raise ImageError(f"NVS image: {what}")

    def pages(self) -> list[tuple[int, int]]:
        """(page number, state) of pages in use, in the order ESP-IDF ends up with them."""
        found: list[tuple[int, int, int]] = []
        for p in range(len(self.image) // PAGE_SIZE):
            head = self.image[p * PAGE_SIZE : p * PAGE_SIZE + 32]
            state, seq = struct.unpack_from("<II", head)
            if state == _ST_EMPTY:
                if self.image[p * PAGE_SIZE : (p + 1) * PAGE_SIZE].count(0xFF) != PAGE_SIZE:
                    self.bad(f"page {p} is marked empty but is not blank")
                continue
            if _crc(head[4:28]) != struct.unpack_from("<I", head, 28)[0]:
                self.bad(f"page {p} header fails its CRC")
                continue
            if head[8] < 0xFE:
                raise ImageError(f"NVS page {p} has format version {head[8]:#x}, newer than 2")
            if state not in (_ST_ACTIVE, _ST_FULL, _ST_FREEING):
                self.bad(f"page {p} is in state {state:#010x}")
                continue
            found.append((seq, p, state))
        found.sort()
        order = [(p, state) for _, p, state in found]
        freeing = [x for x in order if x[1] == _ST_FREEING]
        if freeing:
            # PageManager::load drops a partial copy (an ACTIVE last page) and redoes it.
            if order[-1][1] == _ST_ACTIVE:
                order.pop()
            order.remove(freeing[0])
            order.append(freeing[0])
        return order

    def load_page(self, pos: int, p: int, state: int) -> None:
        page = self.image[p * PAGE_SIZE : (p + 1) * PAGE_SIZE]
        bitmap = page[32:64]

        def written(i: int) -> bool:
            return (bitmap[i >> 2] >> ((i & 3) * 2)) & 3 == _WRITTEN

        i = 0
        while i < ENTRIES_PER_PAGE:
            if not written(i):
                i += 1
                continue
            raw = page[64 + 32 * i : 96 + 32 * i]
            if _crc(raw[0:4] + raw[8:32]) != struct.unpack_from("<I", raw, 4)[0]:
                self.bad(f"page {p} entry {i} fails its CRC")
                i += 1
                continue
            ns, typ, span, chunk = raw[0:4]
            key = raw[8:24].split(b"\0", 1)[0].decode("utf-8", "replace")
            data = b""
            if typ in _VARLEN:
                size, _, dcrc = struct.unpack_from("<HHI", raw, 24)
                if not (1 + (size + 31) // 32 <= span <= ENTRIES_PER_PAGE - i) or not all(
                    written(j) for j in range(i + 1, i + span)
                ):
                    self.bad(f"page {p} entry {i} ({key!r}) is missing data entries")
                    i += max(1, min(span, ENTRIES_PER_PAGE - i))
                    continue
                data = page[96 + 32 * i : 96 + 32 * i + size]
                if _crc(data) != dcrc:
                    self.bad(f"page {p} entry {i} ({key!r}): data fails its CRC")
                    i += span
                    continue
            else:
                span = 1
            self.items[(ns, key, chunk)] = _Item((pos, i), ns, typ, chunk, key, raw, data)
            i += span

    def value(self, item: _Item) -> NvsValue | None:
        if item.type in _INT_TYPES:
            return int(struct.unpack_from(_INT_TYPES[item.type], item.raw, 24)[0])
        if item.type == _SZ:
            return item.data.rstrip(b"\0").decode("utf-8", "replace")
        if item.type == _BLOB:
            return item.data
        if item.type == _BLOB_IDX:
            size, count, start = struct.unpack_from("<IBB", item.raw, 24)
            parts = []
            for c in range(start, start + count):
                chunk = self.items.get((item.ns, item.key, c))
                if chunk is None or chunk.type != _BLOB_DATA:
                    self.bad(f"blob {item.key!r} lacks chunk {c - start} of {count}")
                    return None
                parts.append(chunk.data)
            blob = b"".join(parts)
            if len(blob) != size:
                self.bad(f"blob {item.key!r}: chunks hold {len(blob)} bytes, index says {size}")
                return None
            return blob
        return None  # BLOB_DATA chunks are parts of a BLOB_IDX; unknown types are skipped


def read_nvs(image: bytes, *, strict: bool = False) -> dict[str, dict[str, NvsValue]]:
    """Parse an NVS partition image into {namespace: {key: value}}.

    Args:
        image: the whole partition (a multiple of 4096 bytes).
        strict: raise on any corrupt entry instead of skipping it as ESP-IDF does.

    Returns:
        Integers (any of ESP-IDF's widths) as `int`, blobs as `bytes`, strings as `str`.

    Raises:
        ImageError: the image size is wrong, a page uses a newer format, or (with
            `strict`) an entry, page header or blob is corrupt.
    """
    reader = _Reader(bytes(image), strict)
    for pos, (p, state) in enumerate(reader.pages()):
        reader.load_page(pos, p, state)
    names: dict[int, str] = {}
    for (ns, key, _), item in sorted(reader.items.items(), key=lambda kv: kv[1].order):
        if ns == 0 and item.type == 0x01:
            names[item.raw[24]] = key
    out: dict[str, dict[str, NvsValue]] = {name: {} for name in names.values()}
    for (ns, key, chunk), item in sorted(reader.items.items(), key=lambda kv: kv[1].order):
        if ns == 0 or chunk != 0xFF:
            continue
        if ns not in names:
            reader.bad(f"key {key!r} is in namespace index {ns}, which has no name")
            continue
        value = reader.value(item)
        if value is not None:
            out[names[ns]][key] = value
    return out


def _check_name(name: str, what: str) -> None:
    size = len(name.encode())
    if not 0 < size <= MAX_KEY_LEN:
        raise EdgeveilError(f"NVS {what} {name!r} must be 1 to {MAX_KEY_LEN} bytes")


def make_nvs(entries: Mapping[str, Mapping[str, NvsValue]], size: int) -> bytes:
    """Build an NVS partition image with esp-idf-nvs-partition-gen (format version 2).

    Args:
        entries: {namespace: {key: value}}; `int` values are stored as i32 (what
            `esp32.NVS.get_i32` reads), `bytes` as blobs (`get_blob`), `str` as strings.
        size: partition size, a multiple of 4096 and at least 0x3000; the last page stays
            empty, as ESP-IDF needs one free page.

    Returns:
        The image, `size` bytes.

    Raises:
        EdgeveilError: a name is too long, a value has an unsupported type or range, or the
            entries do not fit.
    """
    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    if size % PAGE_SIZE or size < 3 * PAGE_SIZE:
        raise EdgeveilError(f"NVS partition size {size:#x}: not a multiple of 0x1000 >= 0x3000")
    out = io.BytesIO()
    # nvs_open()'s size excludes the reserved page, as the tool's CSV front end does.
    nvs = gen.nvs_open(out, size - PAGE_SIZE, gen.Page.VERSION2)
    try:
        for namespace, items in entries.items():
            _check_name(namespace, "namespace")
            # The NVS object's own methods: the module-level write_entry() wrapper injects
            # extra Wi-Fi entries for keys named sta.ssid, sta.pswd and ap.*.
            nvs.write_namespace(namespace)
            for key, value in items.items():
                _check_name(key, "key")
                if type(value) is int:
                    if not -(2**31) <= value < 2**31:
                        raise EdgeveilError(f"NVS value for {key!r} does not fit an i32")
                    nvs.write_entry(key, str(value), "i32")
                elif isinstance(value, bytes | bytearray):
                    nvs.write_entry(key, bytes(value).hex(), "hex2bin")
                elif isinstance(value, str):
                    nvs.write_entry(key, value, "string")
                else:
                    raise EdgeveilError(
                        f"NVS value for {key!r} has unsupported type {type(value).__name__}"
                    )
        gen.nvs_close(nvs)
    except (gen.InsufficientSizeError, gen.InputError, gen.PageFullError) as exc:
        raise EdgeveilError(f"NVS image: {exc or 'entries do not fit'}") from exc
    image = out.getvalue()
    if len(image) != size:
        raise EdgeveilError(f"NVS generator produced {len(image)} bytes, expected {size}")
    return image
