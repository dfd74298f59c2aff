"""ESP32-family firmware images: parse, validate and build them, as the ROM and esptool do.

    image = parse_image(data, chip="esp32")      # ImageError if wrong, for another chip...
    image.app_desc.project_name                  # 'micropython'
    info = check_firmware(open("firmware.bin", "rb").read(), "esp32")
    info.write_offset(board)                     # 0x1000 for a combined ESP32 file

Image layout (ESP-IDF "App Image Format"), all little-endian:
- header, 8 bytes: magic 0xE9, segment count, SPI mode, flash size (high nibble) and
  frequency (low nibble), entry address;
- extended header, 16 bytes: WP pin, three bytes of SPI pin drive strengths, chip id (u16),
  min_rev (u8), min/max chip revision "full" (u16 each), 4 reserved, hash_appended (u8);
- segments: load address (u32), length (u32), data;
- 0 padding so that the checksum byte (XOR of all segment data, seeded 0xEF) ends on a
  16-byte boundary; then, if hash_appended, the SHA-256 of everything before it.
An app's first segment starts with `esp_app_desc_t` (magic 0xABCD5432); a second-stage
bootloader's data segment may start with `esp_bootloader_desc_t` (magic byte 0x50).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .boards import Board
from .errors import ImageError
from .partitions import TABLE_MAX_LEN, TABLE_OFFSET, Partition, boot_app_partition, decode_table

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
BOOTLOADER_DESC_MAGIC = 0x50
HEADER_LEN = 24
SEGMENT_HEADER_LEN = 8
MAX_SEGMENTS = 16
MMU_PAGE = 0x10000  # flash-mapped segments must sit at the same offset within a 64 KiB page

_HEADER = struct.Struct("<BBBBI")
_EXT_HEADER = struct.Struct("<BBBBHBHH4sB")
_SEGMENT = struct.Struct("<II")
# esp_app_desc_t: magic, secure_version, reserv1[2], version[32], project_name[32],
# time[16], date[16], idf_ver[32], app_elf_sha256[32], min/max efuse block revision,
# mmu_page_size (log2), reserv3[3], reserv2[18] (u32) = 256 bytes.
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")
# esp_bootloader_desc_t: magic byte, reserved[3], version, idf_ver[32], date_time[24],
# reserved2[16] = 80 bytes.
_BOOT_DESC = struct.Struct("<B3sI32s24s16s")

FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}
FLASH_SIZES = {  # high nibble of header byte 3
    1 << 20: 0x00,
    2 << 20: 0x10,
    4 << 20: 0x20,
    8 << 20: 0x30,
    16 << 20: 0x40,
    32 << 20: 0x50,
    64 << 20: 0x60,
    128 << 20: 0x70,
}
FLASH_FREQS = {"40m": 0x0, "26m": 0x1, "20m": 0x2, "80m": 0xF}  # low nibble
WP_PIN_DISABLED = 0xEE


@dataclass(frozen=True)
class Target:
    """What differs between chips for images: data only (esptool's CHIP_DEFS, reduced)."""

    name: str
    image_chip_id: int
    bootloader_offset: int  # where the ROM reads the second-stage bootloader
    drom: tuple[int, int]  # flash-mapped data (the app descriptor's segment)
    irom: tuple[int, int]  # flash-mapped code
    # Load addresses the virtual firmware uses (inside ESP-IDF's usual ranges).
    bootloader_dram: int
    bootloader_iram: int
    app_iram: int
    idle_code: bytes  # one instruction that jumps to itself (Xtensa `j .`, RISC-V `j .`)


# The one table of chip ids (esptool's IMAGE_CHIP_ID) and per-chip image facts.
TARGETS: dict[str, Target] = {
    "esp32": Target(
        "esp32", 0, 0x1000, (0x3F400000, 0x3F800000), (0x400D0000, 0x40400000),
        0x3FFF0030, 0x40080400, 0x40080000, b"\x06\xff\xff\x00",
    ),
    "esp32s3": Target(
        "esp32s3", 9, 0x0, (0x3C000000, 0x3E000000), (0x42000000, 0x44000000),
        0x3FCE3810, 0x403C9700, 0x40374000, b"\x06\xff\xff\x00",
    ),
    "esp32c3": Target(
        "esp32c3", 5, 0x0, (0x3C000000, 0x3C800000), (0x42000000, 0x42800000),
        0x3FCD5820, 0x403CC710, 0x40380000, b"\x6f\x00\x00\x00",
    ),
}  # fmt: skip


def target(chip: str) -> Target:
    """The `Target` of a chip name ("esp32", "esp32s3", "esp32c3").

    Raises:
        ImageError: edgeveil does not know the chip.
    """
    if chip not in TARGETS:
        raise ImageError(f"unknown chip {chip!r} (known: {', '.join(TARGETS)})")
    return TARGETS[chip]


def chip_for_id(chip_id: int) -> str | None:
    """The chip name an image's chip id stands for, or None if edgeveil does not know it."""
    return next((t.name for t in TARGETS.values() if t.image_chip_id == chip_id), None)


def is_flash_mapped(chip: str, addr: int) -> bool:
    """Whether `addr` lies in the chip's flash-mapped (cache) address ranges."""
    t = target(chip)
    return any(lo <= addr < hi for lo, hi in (t.drom, t.irom))


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _field(text: str, size: int, what: str) -> bytes:
    raw = text.encode()
    if len(raw) >= size:  # ESP-IDF keeps a terminating NUL in every string field
        raise ImageError(f"{what} {text!r} is longer than {size - 1} bytes")
    return raw.ljust(size, b"\x00")


@dataclass(frozen=True)
class AppDesc:
    """`esp_app_desc_t`: who built the app, and what it is."""

    project_name: str
    version: str
    idf_ver: str = ""
    date: str = ""
    time: str = ""
    secure_version: int = 0
    app_elf_sha256: bytes = bytes(32)

    SIZE = _APP_DESC.size

    def encode(self) -> bytes:
        if len(self.app_elf_sha256) != 32:
            raise ImageError("app_elf_sha256 must be 32 bytes")
        return _APP_DESC.pack(
            APP_DESC_MAGIC, self.secure_version, bytes(8),
            _field(self.version, 32, "version"), _field(self.project_name, 32, "project_name"),
            _field(self.time, 16, "time"), _field(self.date, 16, "date"),
            _field(self.idf_ver, 32, "idf_ver"), self.app_elf_sha256,
            0, 0, 0, bytes(3), bytes(72),
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> AppDesc | None:
        """The descriptor at the start of `data`, or None if its magic is absent."""
        if len(data) < _APP_DESC.size:
            return None
        f = _APP_DESC.unpack_from(data)
        if f[0] != APP_DESC_MAGIC:
            return None
        return cls(
            project_name=_cstr(f[4]), version=_cstr(f[3]), idf_ver=_cstr(f[7]),
            date=_cstr(f[6]), time=_cstr(f[5]), secure_version=f[1], app_elf_sha256=f[8],
        )  # fmt: skip


@dataclass(frozen=True)
class BootloaderDesc:
    """`esp_bootloader_desc_t`, at the start of a second-stage bootloader's data."""

    version: int
    idf_ver: str
    date_time: str

    SIZE = _BOOT_DESC.size

    def encode(self) -> bytes:
        return _BOOT_DESC.pack(
            BOOTLOADER_DESC_MAGIC, bytes(3), self.version, _field(self.idf_ver, 32, "idf_ver"),
            _field(self.date_time, 24, "date_time"), bytes(16),
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> BootloaderDesc | None:
        if len(data) < _BOOT_DESC.size or data[0] != BOOTLOADER_DESC_MAGIC:
            return None
        _, _, version, idf_ver, date_time, _ = _BOOT_DESC.unpack_from(data)
        return cls(version, _cstr(idf_ver), _cstr(date_time))


@dataclass(frozen=True)
class Segment:
    addr: int
    data: bytes
    file_offset: int = 0  # offset of the data (after the 8-byte segment header) in the image


@dataclass(frozen=True)
class EspImage:
    """A parsed image. `length` covers the checksum and the SHA-256 when appended."""

    chip: str
    chip_id: int
    entry: int
    flash_mode: str
    flash_size: int | None  # bytes; None if the header's code is not a known size
    flash_freq: str | None
    wp_pin: int
    min_rev_full: int
    max_rev_full: int
    segments: tuple[Segment, ...]
    checksum: int
    checksum_ok: bool
    hash_appended: bool
    sha256: bytes | None  # stored digest
    sha256_ok: bool | None  # None when no digest is appended
    length: int
    app_desc: AppDesc | None
    bootloader_desc: BootloaderDesc | None


def checksum(chunks: Iterable[bytes], seed: int = CHECKSUM_SEED) -> int:
    """The ROM's image checksum: XOR of every byte of every chunk, starting from `seed`."""
    value = seed
    for chunk in chunks:
        # Fold the chunk in halves (as one big integer) until one byte is left: each step
        # keeps the XOR of all bytes, and runs in C rather than a Python loop per byte.
        n, width = int.from_bytes(chunk, "little"), len(chunk)
        while width > 1:
            half = (width + 1) // 2
            n = (n >> (8 * half)) ^ (n & ((1 << (8 * half)) - 1))
            width = half
        value ^= n
    return value


def _need(data: bytes, end: int, what: str) -> None:
    if len(data) < end:
        raise ImageError(f"image truncated: {what} needs {end} bytes, the image has {len(data)}")


def parse_image(data: bytes, chip: str | None = None, *, verify: bool = True) -> EspImage:
    """Parse the image at the start of `data` (bytes after the image are ignored).

    Args:
        data: the image, possibly followed by anything (e.g. the rest of a flash dump).
        chip: if given, the image's chip id must be this chip's.
        verify: raise on a wrong checksum or SHA-256 (with False, report them in the result).

    Raises:
        ImageError: no 0xE9 magic, truncated, unknown or wrong chip, more than 16 segments,
            a bad hash_appended byte, or (with `verify`) a checksum or digest mismatch.
    """
    if not data:
        raise ImageError("not an ESP image: it is empty")
    if data[0] != IMAGE_MAGIC:
        raise ImageError(f"not an ESP image: first byte {data[0]:#04x} (expected 0xe9)")
    _need(data, HEADER_LEN, "the 24-byte header")
    _, count, mode, size_freq, entry = _HEADER.unpack_from(data)
    wp, _d1, _d2, _d3, chip_id, _min_rev, min_full, max_full, _, hashed = _EXT_HEADER.unpack_from(
        data, 8
    )
    name = chip_for_id(chip_id)
    if name is None:
        known = ", ".join(f"{t.name} {t.image_chip_id}" for t in TARGETS.values())
        raise ImageError(f"image has unknown chip id {chip_id} (known: {known})")
    if chip is not None and name != target(chip).name:
        raise ImageError(f"image is for {name} (chip id {chip_id}), board is {chip}")
    if count == 0 or count > MAX_SEGMENTS:
        raise ImageError(f"image has {count} segments (1 to {MAX_SEGMENTS} allowed)")
    if hashed not in (0, 1):
        raise ImageError(f"image's hash_appended byte is {hashed:#04x} (expected 0 or 1)")
    pos, segments = HEADER_LEN, []
    for i in range(count):
        _need(data, pos + SEGMENT_HEADER_LEN, f"segment {i} header at {pos:#x}")
        addr, length = _SEGMENT.unpack_from(data, pos)
        pos += SEGMENT_HEADER_LEN
        _need(data, pos + length, f"segment {i} ({length} bytes at {pos:#x})")
        segments.append(Segment(addr, bytes(data[pos : pos + length]), pos))
        pos += length
    csum_pos = pos | 0xF  # the checksum byte ends the 16-byte-aligned block
    _need(data, csum_pos + 1, "the checksum")
    stored, computed = data[csum_pos], checksum(s.data for s in segments)
    end = csum_pos + 1
    digest: bytes | None = None
    sha_ok: bool | None = None
    if hashed:
        _need(data, end + 32, "the appended SHA-256")
        digest = bytes(data[end : end + 32])
        sha_ok = hashlib.sha256(data[:end]).digest() == digest
        end += 32
    if verify and stored != computed:
        raise ImageError(f"checksum mismatch: stored {stored:#04x}, computed {computed:#04x}")
    if verify and sha_ok is False:
        raise ImageError("SHA-256 mismatch: the image is corrupt")
    return EspImage(
        chip=name,
        chip_id=chip_id,
        entry=entry,
        flash_mode=next((k for k, v in FLASH_MODES.items() if v == mode), f"{mode:#x}"),
        flash_size=next((k for k, v in FLASH_SIZES.items() if v == size_freq & 0xF0), None),
        flash_freq=next((k for k, v in FLASH_FREQS.items() if v == size_freq & 0x0F), None),
        wp_pin=wp,
        min_rev_full=min_full,
        max_rev_full=max_full,
        segments=tuple(segments),
        checksum=stored,
        checksum_ok=stored == computed,
        hash_appended=bool(hashed),
        sha256=digest,
        sha256_ok=sha_ok,
        length=end,
        app_desc=AppDesc.decode(segments[0].data),
        bootloader_desc=BootloaderDesc.decode(segments[0].data),
    )


def build_image(
    chip: str,
    segments: Sequence[tuple[int, bytes] | Segment],
    entry: int,
    app_desc: AppDesc | None = None,
    *,
    flash_mode: str = "dio",
    flash_freq: str = "40m",
    flash_size: int = 4 << 20,
    hash_appended: bool = True,
    max_rev_full: int = 0xFFFF,
) -> bytes:
    """Build an image in the layout above (the inverse of `parse_image`).

    Args:
        chip: target chip; sets the chip id.
        segments: (load address, data) pairs, in file order; data is 0-padded to 4 bytes.
        entry: entry point address.
        app_desc: put at the start of the first segment's data (which should be in DROM).
        flash_mode, flash_freq, flash_size: SPI settings the ROM reads from the header.
        hash_appended: append the SHA-256 (ESP-IDF does for apps and bootloaders).
        max_rev_full: highest chip revision (major*100+minor); 0xFFFF is "no limit".

    Raises:
        ImageError: bad chip, settings, segment count, or a flash-mapped segment whose
            address does not match its offset within a 64 KiB page.
    """
    t = target(chip)
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ImageError(f"an image holds 1 to {MAX_SEGMENTS} segments, not {len(segments)}")
    try:
        mode, freq, size = (
            FLASH_MODES[flash_mode],
            FLASH_FREQS[flash_freq],
            FLASH_SIZES[flash_size],
        )
    except KeyError as exc:
        raise ImageError(f"unsupported flash setting {exc.args[0]!r}") from None
    out = bytearray(_HEADER.pack(IMAGE_MAGIC, len(segments), mode, size | freq, entry))
    out += _EXT_HEADER.pack(
        WP_PIN_DISABLED, 0, 0, 0, t.image_chip_id, 0, 0, max_rev_full, bytes(4), hash_appended
    )
    datas = []
    for i, seg in enumerate(segments):
        addr, data = (seg.addr, seg.data) if isinstance(seg, Segment) else seg
        if i == 0 and app_desc is not None:
            data = app_desc.encode() + data
        data = bytes(data) + bytes(-len(data) % 4)
        where = len(out) + SEGMENT_HEADER_LEN
        if is_flash_mapped(chip, addr) and (addr - where) % MMU_PAGE:
            raise ImageError(
                f"segment {i} at {addr:#x} is flash-mapped but sits at image offset {where:#x}"
            )
        out += _SEGMENT.pack(addr, len(data)) + data
        datas.append(data)
    out += bytes(15 - len(out) % 16)
    out.append(checksum(datas))
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


@dataclass(frozen=True)
class FirmwareInfo:
    """What `check_firmware` found in a firmware file."""

    kind: str  # "combined" (bootloader + table + app, at the bootloader offset) or "app"
    chip: str
    app: EspImage
    app_desc: AppDesc
    bootloader: EspImage | None = None
    partitions: tuple[Partition, ...] = ()
    app_partition: Partition | None = None  # combined files: where the app lies in flash
    data: bytes = field(default=b"", repr=False)  # the file

    def write_offset(self, board: Board) -> int:
        """Where this file goes in `board`'s flash.

        Raises:
            ImageError: the file is for another chip, or the board has no app partition.
        """
        if board.chip != self.chip:
            raise ImageError(f"image is for {self.chip}, board {board.name} is {board.chip}")
        if self.kind == "combined":
            if board.firmware_offset != target(self.chip).bootloader_offset:
                raise ImageError(
                    f"board {board.name} puts firmware at {board.firmware_offset:#x}, but "
                    f"the {self.chip} ROM reads its bootloader at "
                    f"{target(self.chip).bootloader_offset:#x}"
                )
            return board.firmware_offset
        app = boot_app_partition(board.partitions)
        if app is None:
            raise ImageError(f"board {board.name} has no app partition")
        return app.offset

    def regions(self, board: Board) -> list[tuple[int, bytes]]:
        """(flash offset, bytes) of each image and the table, without the 0xFF gaps.

        A combined file covers the NVS and PHY partitions with 0xFF; writing these pieces
        instead lets one esptool pass also write an NVS image (esptool refuses overlaps).

        Raises:
            ImageError: as `write_offset`.
        """
        base = self.write_offset(board)
        if self.kind == "app":
            return [(base, self.data[: self.app.length])]
        assert self.bootloader is not None and self.app_partition is not None
        table_at, app_at = TABLE_OFFSET - base, self.app_partition.offset - base
        return [
            (base, self.data[: self.bootloader.length]),
            (TABLE_OFFSET, self.data[table_at : table_at + TABLE_MAX_LEN]),
            (self.app_partition.offset, self.data[app_at : app_at + self.app.length]),
        ]


def check_firmware(data: bytes, chip: str) -> FirmwareInfo:
    """Validate a firmware file before anything is written to a board.

    Accepts a combined file as MicroPython ships it (the second-stage bootloader at its
    start, to be written at the chip's bootloader offset, the partition table at
    0x8000 - that offset, and the boot app where the table puts it) or a bare app image.

    Raises:
        ImageError: naming the part that is wrong: not an image, wrong chip, bad checksum
            or digest, bad partition table, no app, or an app without an app descriptor.
    """
    t = target(chip)
    first = _part("firmware file", lambda: parse_image(data, chip))
    if first.app_desc is not None:
        return FirmwareInfo("app", t.name, first, first.app_desc, data=bytes(data))
    table_at = TABLE_OFFSET - t.bootloader_offset
    if len(data) < table_at + 32:
        raise ImageError(
            f"firmware file holds one image without an app descriptor and ends before the "
            f"partition table (+{table_at:#x}): neither an app nor a combined firmware file"
        )
    parts = _part(
        "partition table", lambda: decode_table(data[table_at : table_at + TABLE_MAX_LEN])
    )
    app_part = boot_app_partition(parts)
    if app_part is None:
        raise ImageError("partition table has no app partition")
    at = app_part.offset - t.bootloader_offset
    if len(data) <= at:
        raise ImageError(
            f"firmware file ends at +{len(data):#x}, before the app partition "
            f"'{app_part.name}' (+{at:#x})"
        )
    app = _part(f"app at {app_part.offset:#x}", lambda: parse_image(data[at:], chip))
    if app.app_desc is None:
        raise ImageError(f"app at {app_part.offset:#x}: no app descriptor (magic 0xabcd5432)")
    if app.length > app_part.size:
        raise ImageError(
            f"app at {app_part.offset:#x}: {app.length} bytes do not fit the "
            f"'{app_part.name}' partition ({app_part.size} bytes)"
        )
    return FirmwareInfo(
        "combined", t.name, app, app.app_desc, first, tuple(parts), app_part, bytes(data)
    )


_T = TypeVar("_T")


def _part(what: str, parse: Callable[[], _T]) -> _T:
    try:
        return parse()
    except ImageError as exc:
        raise ImageError(f"{what}: {exc}") from exc
