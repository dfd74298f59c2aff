"""The ESP-IDF partition table in its binary form, as the bootloader reads it at 0x8000.

    table = table_for_board(load_board("esp32-generic"))   # 0xC00 bytes
    parts = decode_table(table)                              # strict: magic, MD5, overlaps
    find_partition(parts, "vfs").offset                      # 0x200000

Format (ESP-IDF "Partition Tables", esp_partition.h): 32-byte little-endian entries
`AA 50 | type u8 | subtype u8 | offset u32 | size u32 | label[16] | flags u32`, then one
MD5 entry `EB EB` + 14 x FF + MD5 of all the entries before it, then 0xFF up to 0xC00 bytes
(at most 95 partitions). A 32-byte run of 0xFF ends the table.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import ImageError

if TYPE_CHECKING:  # boards.py takes its Partition from here
    from .boards import Board

TABLE_OFFSET = 0x8000  # CONFIG_PARTITION_TABLE_OFFSET, the default on ESP32, -S3 and -C3
TABLE_MAX_LEN = 0xC00  # the table; the rest of the 4 KiB sector is for a signature
TABLE_SECTOR = 0x1000
ENTRY_LEN = 32
MAX_ENTRIES = TABLE_MAX_LEN // ENTRY_LEN - 1  # one slot for the MD5 entry

_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_MD5_PREFIX = _MD5_MAGIC + b"\xff" * 14
_ENTRY = struct.Struct("<2sBBII16sI")

# Type and subtype numbers (esp_partition.h; names as in the CSV format).
TYPES: dict[str, int] = {"app": 0x00, "data": 0x01, "bootloader": 0x02, "partition_table": 0x03}
SUBTYPES: dict[int, dict[str, int]] = {
    0x00: {"factory": 0x00, **{f"ota_{i}": 0x10 + i for i in range(16)}, "test": 0x20},
    0x01: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
    },
    0x02: {"primary": 0x00, "ota": 0x01, "recovery": 0x02},
    0x03: {"primary": 0x00, "ota": 0x01},
}
FLAG_ENCRYPTED = 1 << 0
FLAG_READONLY = 1 << 1
_APP_ALIGN = 0x10000  # app partitions start on a 64 KiB MMU page
_DATA_ALIGN = 0x1000  # everything else on a 4 KiB flash sector


class PartitionLike(Protocol):
    """Anything with a partition's fields."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def subtype(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class Partition:
    """One table entry. `type`/`subtype` are CSV names, or "0x40" for an unnamed number."""

    name: str
    type: str
    subtype: str
    offset: int
    size: int
    encrypted: bool = False
    readonly: bool = False

    @property
    def type_id(self) -> int:
        return type_id(self.type)

    @property
    def subtype_id(self) -> int:
        return subtype_id(self.type, self.subtype)

    @property
    def end(self) -> int:
        return self.offset + self.size


def _number(text: str, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ImageError(f"unknown partition {what} {text!r}") from None
    if not 0 <= value <= 0xFF:
        raise ImageError(f"partition {what} {text!r} does not fit in a byte")
    return value


def type_id(name: str) -> int:
    """The type byte for a type name ("app", "data") or number ("0x40").

    Raises:
        ImageError: unknown name.
    """
    return TYPES[name] if name in TYPES else _number(name, "type")


def subtype_id(type_name: str, name: str) -> int:
    """The subtype byte for `name` ("factory", "ota_0", "nvs", "fat"...) under `type_name`.

    Raises:
        ImageError: unknown name.
    """
    names = SUBTYPES.get(type_id(type_name), {})
    return names[name] if name in names else _number(name, f"{type_name} subtype")


def _type_name(tid: int) -> str:
    return next((n for n, v in TYPES.items() if v == tid), f"{tid:#04x}")


def _subtype_name(tid: int, sid: int) -> str:
    return next((n for n, v in SUBTYPES.get(tid, {}).items() if v == sid), f"{sid:#04x}")


def _check_layout(parts: list[Partition], where: str) -> None:
    """Alignment, size, names and overlaps, as ESP-IDF's gen_esp32part.py verifies them."""
    seen: set[str] = set()
    for i, p in enumerate(parts):
        what = f"{where} entry {i} ('{p.name}')"
        if p.name in seen:
            raise ImageError(f"{what}: duplicate name")
        seen.add(p.name)
        align = _APP_ALIGN if p.type_id == TYPES["app"] else _DATA_ALIGN
        if p.offset % align:
            raise ImageError(f"{what}: offset {p.offset:#x} is not aligned to {align:#x}")
        if p.size <= 0:
            raise ImageError(f"{what}: size must be positive")
        if p.offset < TABLE_OFFSET + TABLE_SECTOR:
            raise ImageError(
                f"{what}: offset {p.offset:#x} lies below the end of the partition table "
                f"({TABLE_OFFSET + TABLE_SECTOR:#x})"
            )
    order = sorted(range(len(parts)), key=lambda k: parts[k].offset)
    for a, b in zip(order, order[1:], strict=False):
        if parts[b].offset < parts[a].end:
            raise ImageError(
                f"{where} entry {b} ('{parts[b].name}') at {parts[b].offset:#x} overlaps "
                f"entry {a} ('{parts[a].name}', {parts[a].offset:#x}-{parts[a].end - 1:#x})"
            )


def _as_partition(p: PartitionLike) -> Partition:
    if isinstance(p, Partition):
        return p
    return Partition(p.name, p.type, p.subtype, p.offset, p.size)


def encode_table(partitions: Iterable[PartitionLike]) -> bytes:
    """The 0xC00-byte binary table, MD5 entry included, 0xFF-filled.

    Raises:
        ImageError: a name, type, alignment or overlap is wrong, or there are too many.
    """
    parts = [_as_partition(p) for p in partitions]
    if len(parts) > MAX_ENTRIES:
        raise ImageError(f"{len(parts)} partitions: a table holds at most {MAX_ENTRIES}")
    _check_layout(parts, "partition")
    out = bytearray()
    for i, p in enumerate(parts):
        label = p.name.encode()
        if not label or len(label) > 16:
            raise ImageError(f"partition entry {i}: name {p.name!r} must be 1-16 bytes")
        flags = (FLAG_ENCRYPTED if p.encrypted else 0) | (FLAG_READONLY if p.readonly else 0)
        out += _ENTRY.pack(_MAGIC, p.type_id, p.subtype_id, p.offset, p.size, label, flags)
    out += _MD5_PREFIX + hashlib.md5(out).digest()
    return bytes(out) + b"\xff" * (TABLE_MAX_LEN - len(out))


def decode_table(data: bytes) -> list[Partition]:
    """Parse a binary table (from 0x8000), strictly.

    Args:
        data: the table; at least up to its end marker (reading 0xC00 bytes is enough).

    Raises:
        ImageError: naming the entry whose magic, MD5, label or layout is wrong, or the
            table has no MD5 entry or no end.
    """
    parts: list[Partition] = []
    md5_ok = False
    for i in range(min(len(data), TABLE_MAX_LEN) // ENTRY_LEN):
        raw = data[i * ENTRY_LEN : (i + 1) * ENTRY_LEN]
        where = f"partition table entry {i} (at +{i * ENTRY_LEN:#x})"
        if raw == b"\xff" * ENTRY_LEN:
            if not md5_ok:
                raise ImageError(f"{where}: table ends without an MD5 entry")
            _check_layout(parts, "partition table")
            return parts
        if md5_ok:
            raise ImageError(f"{where}: entry after the MD5 entry (expected the end, all 0xFF)")
        if raw[:2] == _MD5_MAGIC:
            expect = hashlib.md5(data[: i * ENTRY_LEN]).digest()
            if raw[:16] != _MD5_PREFIX or raw[16:] != expect:
                raise ImageError(
                    f"{where}: MD5 mismatch (stored {raw[16:].hex()}, computed {expect.hex()})"
                )
            md5_ok = True
            continue
        magic, tid, sid, offset, size, label, flags = _ENTRY.unpack(raw)
        if magic != _MAGIC:
            raise ImageError(f"{where}: bad magic {magic.hex(' ')} (expected aa 50)")
        try:
            name = label.split(b"\x00", 1)[0].decode()
        except UnicodeDecodeError:
            raise ImageError(f"{where}: label {label!r} is not UTF-8") from None
        parts.append(
            Partition(
                name=name,
                type=_type_name(tid),
                subtype=_subtype_name(tid, sid),
                offset=offset,
                size=size,
                encrypted=bool(flags & FLAG_ENCRYPTED),
                readonly=bool(flags & FLAG_READONLY),
            )
        )
    raise ImageError(f"partition table has no end marker within {len(data[:TABLE_MAX_LEN])} bytes")


def table_for_board(board: Board) -> bytes:
    """The binary table of `board`'s partitions (`boards/<name>.toml`).

    Raises:
        ImageError: the board's partitions do not make a valid table.
    """
    if not board.partitions:
        raise ImageError(f"board {board.name} defines no partitions")
    return encode_table(board.partitions)


def find_partition(partitions: Iterable[PartitionLike], name: str) -> Partition:
    """The partition labelled `name`.

    Raises:
        ImageError: there is none.
    """
    for p in partitions:
        if p.name == name:
            return _as_partition(p)
    raise ImageError(f"no partition named '{name}'")


def boot_app_partition(partitions: Iterable[PartitionLike]) -> Partition | None:
    """The app the bootloader starts with no OTA data: factory, else the first OTA slot."""
    apps = [_as_partition(p) for p in partitions if p.type == "app"]
    factory = [p for p in apps if p.subtype == "factory"]
    ota = sorted((p for p in apps if p.subtype.startswith("ota_")), key=lambda p: p.subtype_id)
    for p in factory + ota:
        return p
    return None
