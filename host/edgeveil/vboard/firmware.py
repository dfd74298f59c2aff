"""The virtual board's firmware, and what its ROM and bootloader do with the flash at boot.

No real MicroPython ESP32 firmware can be downloaded here, so edgeveil builds a clearly
labelled stand-in: valid ESP-IDF-format images that esptool accepts, but holding no ESP32
code (each entry point is one instruction that jumps to itself), only text saying what
they are. The virtual board starts the MicroPython unix VM when it finds this app.

    data = build_firmware(board)              # write at board.firmware_offset
    decision = boot_check(read, board)        # read(offset, length) -> bytes from flash
    if decision.ok and decision.virtual_micropython: start the VM
    else: print decision.console, reset after a while, again
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..boards import Board
from ..errors import ImageError
from ..esp_image import (
    IMAGE_MAGIC,
    MMU_PAGE,
    AppDesc,
    BootloaderDesc,
    EspImage,
    build_image,
    checksum,
    is_flash_mapped,
    parse_image,
    target,
)
from ..partitions import (
    TABLE_MAX_LEN,
    TABLE_OFFSET,
    Partition,
    boot_app_partition,
    decode_table,
    encode_table,
)
from .esp32regs import TARGETS

# The app descriptor of the virtual firmware. The version pins the MicroPython the VM
# reports (`sys.implementation.version[:3]`, (1, 29, 0); a test keeps it true).
PROJECT_NAME = "micropython"
VERSION = "v1.29.0-edgeveil-virtual"
IDF_VER = "none (edgeveil virtual)"
BUILD_DATE, BUILD_TIME = "Jan  1 2026", "00:00:00"  # fixed: the same image every build
VIRTUAL_TAG = b"EDGEVEIL-VIRTUAL-MICROPYTHON/1"
BOOTLOADER_TAG = b"EDGEVEIL-VIRTUAL-BOOTLOADER/1"

_CLOCK_DIV = {"80m": 1, "40m": 2, "26m": 3, "20m": 4}
_DEFAULT_FLASH = 4 << 20


def _chip_name(chip: str) -> str:
    rom = TARGETS.get(chip)
    return rom.NAME if rom else chip.upper()


def bootloader_label(chip: str) -> str:
    return (
        f"edgeveil virtual {_chip_name(chip)} bootloader \u2014 runs only on the edgeveil "
        "virtual board; it holds no ESP32 code."
    )


def app_label(chip: str) -> str:
    return (
        f"edgeveil virtual MicroPython for {_chip_name(chip)} \u2014 runs only on the "
        "edgeveil virtual board, which starts the MicroPython unix VM when it finds this "
        "image. It holds no ESP32 code and does nothing on a real chip."
    )


def build_bootloader(chip: str, flash_size: int = _DEFAULT_FLASH) -> bytes:
    """The labelled second-stage bootloader image (about 300 bytes).

    `flash_size` goes into the image header, where the ROM and bootloader read it.
    """
    t = target(chip)
    desc = BootloaderDesc(version=1, idf_ver=IDF_VER, date_time=f"{BUILD_DATE} {BUILD_TIME}")
    text = desc.encode() + BOOTLOADER_TAG + b"\n" + bootloader_label(chip).encode() + b"\x00"
    return build_image(
        chip,
        [(t.bootloader_dram, text), (t.bootloader_iram, t.idle_code)],
        entry=t.bootloader_iram,
        flash_size=flash_size,
    )


def app_desc() -> AppDesc:
    return AppDesc(
        project_name=PROJECT_NAME,
        version=VERSION,
        idf_ver=IDF_VER,
        date=BUILD_DATE,
        time=BUILD_TIME,
    )


def build_app(chip: str, flash_size: int = _DEFAULT_FLASH) -> bytes:
    """The labelled app image: an app descriptor saying MicroPython, and the label."""
    t = target(chip)
    text = VIRTUAL_TAG + b"\n" + app_label(chip).encode() + b"\x00"
    # The descriptor's segment is flash-mapped data: its address is the 64 KiB page start
    # plus its offset in the image (0x20), as in every ESP-IDF app.
    return build_image(
        chip,
        [(t.drom[0] + 0x20, text), (t.app_iram, t.idle_code)],
        entry=t.app_iram,
        app_desc=app_desc(),
        flash_size=flash_size,
    )


def build_firmware(board: Board) -> bytes:
    """The combined firmware file, to be written at `board.firmware_offset`.

    Bootloader at its start, the board's partition table at 0x8000, the app at the boot
    app partition, 0xFF between them (as `esptool merge-bin` fills gaps). The image
    headers carry the board's chip and flash size.

    Raises:
        ImageError: the board's partitions make no valid table or hold no app partition.
    """
    table = encode_table(board.partitions)
    app_part = boot_app_partition(board.partitions)
    if app_part is None:
        raise ImageError(f"board {board.name} has no app partition")
    base = board.firmware_offset
    boot = build_bootloader(board.chip, board.flash_size)
    app = build_app(board.chip, board.flash_size)
    if base + len(boot) > TABLE_OFFSET:
        raise ImageError("bootloader overlaps the partition table")
    if len(app) > app_part.size:
        raise ImageError(f"app does not fit partition '{app_part.name}'")
    out = bytearray(b"\xff" * (app_part.offset - base + len(app)))
    out[0 : len(boot)] = boot
    out[TABLE_OFFSET - base : TABLE_OFFSET - base + len(table)] = table
    out[app_part.offset - base :] = app
    return bytes(out)


def write_firmware_file(board: Board, path: Path | str) -> Path:
    """Write `build_firmware(board)` to `path`; returns the path."""
    out = Path(path)
    out.write_bytes(build_firmware(board))
    return out


def is_virtual_app(image: EspImage) -> bool:
    """Whether `image` is edgeveil's virtual MicroPython app."""
    desc = image.app_desc
    return (
        desc is not None
        and desc.project_name == PROJECT_NAME
        and VIRTUAL_TAG in image.segments[0].data[AppDesc.SIZE :]
    )


@dataclass(frozen=True)
class BootDecision:
    """What the board does after a reset in SPI boot mode.

    `kind` is "ok" or what failed: "invalid_header" (no image at the bootloader offset:
    the ROM's loop), "bootloader" (the ROM rejects it), "partition_table", "no_app" (the
    bootloader finds no bootable app). `console` is what the board prints after the ROM
    banner and reset line, CRLF-terminated; on a failure the board then resets with
    `reboot_cause` and prints it all again.
    """

    kind: str
    message: str
    console: bytes
    reboot_cause: str | None = None
    virtual_micropython: bool = False
    app: EspImage | None = None
    app_desc: AppDesc | None = None
    app_partition: Partition | None = None
    partitions: tuple[Partition, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def _crlf(lines: list[str]) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def _fail(
    kind: str,
    rom: list[str],
    errors: list[str],
    cause: str,
    parts: list[Partition] | None = None,
    app_part: Partition | None = None,
) -> BootDecision:
    """A failed boot: `message` is the first error without its log prefix.

    ESP-IDF log lines carry milliseconds since boot ("E (64) tag: ..."); the virtual board
    prints nominal values, as it does not model the bootloader's timing.
    """
    first = errors[0]
    message = first.split(": ", 1)[1] if first.startswith("E (") else first
    return BootDecision(
        kind,
        message,
        _crlf(rom + errors),
        cause,
        app_partition=app_part,
        partitions=tuple(parts or ()),
    )


def _rom_lines(chip: str, image: EspImage) -> list[str]:
    """The ROM's lines for a valid bootloader, as the chip's ROM prints them."""
    rom = TARGETS[chip]
    mode = (
        f"mode:{image.flash_mode.upper()}, clock div:{_CLOCK_DIV.get(image.flash_freq or '', 2)}"
    )
    if rom.ROM_CONFIGSIP:
        head = [
            f"configsip: 0, SPIWP:{image.wp_pin:#04x}",
            "clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00",
            mode,
        ]
    else:
        head = [f"SPIWP:{image.wp_pin:#04x}", mode]
    loads = [
        f"load:{s.addr:#010x},len:{len(s.data):#x}"
        if rom.ROM_LEN_HEX
        else f"load:{s.addr:#010x},len:{len(s.data)}"
        for s in image.segments
    ]
    return head + loads + [f"entry {image.entry:#010x}"]


def _check_app(chip: str, data: bytes, part: Partition) -> tuple[EspImage | None, list[str]]:
    """The app in `part`, or the ESP-IDF bootloader's error lines for it."""
    if not data or data[0] != IMAGE_MAGIC:
        return None, [
            f"E (64) esp_image: image at {part.offset:#x} has invalid magic byte "
            "(nothing flashed here?)"
        ]
    try:
        image = parse_image(data, verify=False)
    except ImageError as exc:
        return None, [f"E (64) esp_image: image at {part.offset:#x}: {exc}"]
    t = target(chip)
    if image.chip_id != t.image_chip_id:
        return None, [
            f"E (64) boot_comm: mismatch chip ID, expected {t.image_chip_id}, "
            f"found {image.chip_id}"
        ]
    if image.length > part.size:
        return None, [
            f"E (64) esp_image: Image length {image.length} doesn't fit in partition "
            f"length {part.size}"
        ]
    for seg in image.segments:
        flash_addr = part.offset + seg.file_offset
        if is_flash_mapped(chip, seg.addr) and (seg.addr - flash_addr) % MMU_PAGE:
            return None, [
                f"E (64) esp_image: Segment load address {seg.addr:#010x}, doesn't match "
                f"data {flash_addr:#010x}"
            ]
    if not image.checksum_ok:
        return None, [
            f"E (64) esp_image: Checksum failed. Calculated 0x{_computed(image):x} "
            f"read 0x{image.checksum:x}"
        ]
    if image.sha256_ok is False:
        return None, ["E (64) esp_image: Image hash failed - image is corrupt"]
    return image, []


def _computed(image: EspImage) -> int:
    return checksum(s.data for s in image.segments)


def boot_check(read: Callable[[int, int], bytes], board: Board) -> BootDecision:
    """Decide what the board does at power-on, from its flash.

    Follows the ESP32-family boot: the ROM loads the second-stage bootloader at the firmware
    offset (checksum only, as the ROM does), the bootloader reads the partition table at
    0x8000 (magic and MD5) and verifies the boot app (factory, else ota_0; no OTA data is
    modelled): magic, chip id, size, mapping, checksum and SHA-256.

    Args:
        read: `read(offset, length)` returns flash bytes (the flash file).
        board: the board whose flash it is.
    """
    chip, base = board.chip, board.firmware_offset
    boot_data = read(base, TABLE_OFFSET - base)
    word = int.from_bytes(boot_data[:4].ljust(4, b"\xff"), "little")
    rom_chip = TARGETS[chip]
    if not boot_data or boot_data[0] != IMAGE_MAGIC:
        line = f"invalid header: {word:#010x}"
        lines = [line] * rom_chip.INVALID_HEADER_LINES
        return BootDecision("invalid_header", line, _crlf(lines), rom_chip.INVALID_HEADER_RESET)
    wdt = rom_chip.INVALID_HEADER_RESET  # the ROM gives up and waits for a watchdog
    try:
        boot = parse_image(boot_data, verify=False)
    except ImageError as exc:
        return _fail("bootloader", [], [f"edgeveil ROM: cannot load the bootloader: {exc}"], wdt)
    if not boot.checksum_ok:
        # What the ESP32 ROM prints for a bad bootloader checksum (from board logs).
        csum = f"csum err:{_computed(boot):#04x}!={boot.checksum:#04x}"
        return _fail("bootloader", [], [csum, "ets_main.c 371 "], wdt)
    rom = _rom_lines(chip, boot)
    chip_id = target(chip).image_chip_id
    if boot.chip_id != chip_id:
        error = f"E (30) boot_comm: mismatch chip ID, expected {chip_id}, found {boot.chip_id}"
        return _fail("bootloader", rom, [error], "SW_RESET")
    try:
        parts = decode_table(read(TABLE_OFFSET, TABLE_MAX_LEN))
    except ImageError as exc:
        errors = [
            f"E (42) flash_parts: {exc}",
            "E (42) boot: Failed to verify partition table",
            "E (42) boot: load partition table error!",
        ]
        return _fail("partition_table", rom, errors, "SW_RESET")
    app_part = boot_app_partition(parts)
    if app_part is None:
        none = "E (56) boot: No bootable app partitions in the partition table"
        return _fail("no_app", rom, [none], "SW_RESET", parts)
    image, errors = _check_app(chip, read(app_part.offset, app_part.size), app_part)
    if image is None:
        slot = (
            "Factory app partition"
            if app_part.subtype == "factory"
            else f"OTA app partition slot {app_part.subtype_id - 0x10}"
        )
        errors += [
            f"E (64) boot: {slot} is not bootable",
            "E (64) boot: No bootable app partitions in the partition table",
        ]
        return _fail("no_app", rom, errors, "SW_RESET", parts, app_part)
    virtual = is_virtual_app(image)
    desc = image.app_desc
    lines = rom
    if not virtual:
        what = f"'{desc.project_name}' {desc.version}" if desc else "without an app descriptor"
        lines = rom + [
            f"edgeveil virtual board: cannot run the app {what} (real ESP32 code); "
            "write edgeveil's virtual firmware (edgeveil vboard firmware)"
        ]
    message = (
        f"app {desc.project_name} {desc.version} at {app_part.offset:#x}"
        if desc
        else f"app at {app_part.offset:#x}"
    )
    return BootDecision(
        "ok",
        message,
        _crlf(lines),
        None if virtual else "SW_RESET",
        virtual_micropython=virtual,
        app=image,
        app_desc=desc,
        app_partition=app_part,
        partitions=tuple(parts),
    )
