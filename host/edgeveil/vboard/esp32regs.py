"""Chip constants for the virtual board's ROM loader: one class of constants per chip.

What esptool 5.6.0 reads from each chip's ROM loader, and what that ROM prints, read from
esptool's `targets/esp32.py`, `esp32s3.py`, `esp32c3.py` and `loader.py`
(notes/esptool-rom-protocol.md §3, §5, §8 for the ESP32):

- ESP32: esptool finds it by the magic word at 0x40001000 (GET_SECURITY_INFO fails) and
  sees an ESP32-D0WD-V3 (revision v3.1), 40 MHz crystal from UART_CLKDIV.
- ESP32-S3 and ESP32-C3: esptool finds them by the chip id that GET_SECURITY_INFO returns
  (9 and 5, their image chip ids) and reads package, revision and MAC from eFuse BLOCK1;
  their crystal is fixed at 40 MHz (no register read). They appear as an
  ESP32-S3 (QFN56) (revision v0.2) and an ESP32-C3 (QFN32) (revision v0.4).

All three: no secure boot, no flash encryption, quad SPI flash. `TARGETS` maps the board
file's ``chip`` to its class; code looks values up there instead of testing chip names.
"""

from __future__ import annotations

import struct
from typing import ClassVar


def _words(base: int, words: dict[int, int]) -> dict[int, int]:
    """{address: value} of eFuse words given as {word number: value} from `base`."""
    return {base + 4 * n: v for n, v in words.items()}


class RomChip:
    """What every chip's ROM loader shares; a subclass per chip sets the rest."""

    NAME: ClassVar[str]  # esptool's CHIP_NAME
    MCU_NAME: ClassVar[str]  # MicroPython's MICROPY_HW_MCU_NAME ("... module with ESP32S3")
    ROM_HEADER: ClassVar[tuple[str, ...]]  # the ROM's first console lines after a reset
    SYNC_VALUE = 0x20120707  # any non-zero SYNC value means "ROM", zero means "stub"

    # The word esptool reads at 0x40001000 to tell chips apart where GET_SECURITY_INFO
    # fails (ESP32); None where esptool identifies the chip by its security info instead.
    CHIP_MAGIC_REG = 0x40001000
    CHIP_MAGIC: ClassVar[int | None] = None
    SECURITY_INFO_CHIP_ID: ClassVar[int | None] = None  # None: GET_SECURITY_INFO "invalid"
    SECURITY_API_VERSION = 0

    # The base MAC's eFuse words: (MAC[2..5] most significant byte first, MAC[0..1] in
    # bits 15..0); esptool ignores the bits above (a CRC on the ESP32).
    MAC_REGS: ClassVar[tuple[int, int]]
    FIXED_REGS: ClassVar[dict[int, int]]  # read-only answers: eFuses, straps, clocks

    # SPI0 (the flash controller), used by esptool's "user command" engine.
    SPI_BASE: ClassVar[int]
    SPI_CMD = 0x00
    SPI_ADDR = 0x04
    SPI_USR: ClassVar[int]
    SPI_USR1: ClassVar[int]
    SPI_USR2: ClassVar[int]
    SPI_MISO_DLEN: ClassVar[int]
    SPI_W0: ClassVar[int]
    SPI_CMD_USR = 1 << 18
    SPI_ADDR_MSB: ClassVar[bool]  # the address register holds the address left-aligned

    BOOT_DOWNLOAD: ClassVar[str]
    BOOT_SPI: ClassVar[str]
    INVALID_HEADER_LINES = 7  # printed before a watchdog resets the chip
    INVALID_HEADER_RESET: ClassVar[str]  # the reset that ends each round of them
    # Reset causes by the ESP32 ROM's names (the ones the board code uses), as this
    # chip's ROM prints them: name -> (code, printed name).
    RESET_CAUSES: ClassVar[dict[str, tuple[int, str]]]
    # How the ROM reports a valid second-stage bootloader: the ESP32 prints "configsip"
    # and drive-strength lines and decimal segment lengths, later ROMs hexadecimal ones.
    ROM_CONFIGSIP = False
    ROM_LEN_HEX = True

    @classmethod
    def registers(cls, mac: bytes) -> dict[int, int]:
        """The read-only registers, with the base MAC burnt into its eFuse words."""
        regs = dict(cls.FIXED_REGS)
        low, high = cls.MAC_REGS
        regs[low] = int.from_bytes(mac[2:6], "big")
        regs[high] = int.from_bytes(mac[0:2], "big")
        if cls.CHIP_MAGIC is not None:
            regs[cls.CHIP_MAGIC_REG] = cls.CHIP_MAGIC
        return regs

    @classmethod
    def security_info(cls) -> bytes | None:
        """GET_SECURITY_INFO's answer (None: the ROM does not know the command).

        20 bytes: flags (u32: no secure boot, no secure download mode), flash_crypt_cnt
        (u8), 7 key purposes (u8 each, all USER/EMPTY), chip id (u32), API version (u32).
        """
        if cls.SECURITY_INFO_CHIP_ID is None:
            return None
        purposes = bytes(7)
        return struct.pack("<IB7sII", 0, 0, purposes, cls.SECURITY_INFO_CHIP_ID, 0)


_ESP32_EFUSE = 0x3FF5A000  # eFuse BLK0 read word n is at base + 4n


class ESP32(RomChip):
    """The original ESP32 (v3 ROM): an ESP32-D0WD-V3, revision v3.1."""

    NAME = "ESP32"
    MCU_NAME = "ESP32"
    # v3 ROM; v1 silicon prints "ets Jun  8 2016 00:22:57". A blank line follows.
    ROM_HEADER = ("ets Jul 29 2019 12:21:46", "")
    CHIP_MAGIC = 0x00F01D83

    MAC_REGS = (_ESP32_EFUSE + 4, _ESP32_EFUSE + 8)  # eFuse words 1 and 2
    FIXED_REGS: ClassVar[dict[int, int]] = {
        **_words(
            _ESP32_EFUSE,
            {
                0: 0x00000000,  # flash_crypt_cnt 0 (no encryption), nothing read-disabled
                3: 0x0000A200,  # pkg D0WD, 240 MHz rating, rev bit0 set
                4: 0x00001436,  # CK8M calibration 0x36, ADC vref trimmed
                5: 0x01100000,  # rev bit1 set, minor revision 1, default SPI pads
                6: 0x00000000,  # coding scheme None, no secure boot, DL encryption allowed
            },
        ),
        0x3FF6607C: 0x80000000,  # APB_CTL_DATE: rev bit2
        0x3FF40014: 0x0000015B,  # UART_CLKDIV: 347 at 115200 baud = 40 MHz
        0x3FF5F06C: 1896 << 7,  # RTCCALICFG1: ROM crystal calibration, ~40 MHz
        0x3FF44038: 0x00000003,  # GPIO_STRAP: download boot, bit5 low = 3.3 V flash
        0x3FF48074: 0x00000000,  # RTC_CNTL_SDIO_CONF: flash voltage not forced
    }

    SPI_BASE = 0x3FF42000
    SPI_USR = 0x1C
    SPI_USR1 = 0x20
    SPI_USR2 = 0x24
    SPI_MISO_DLEN = 0x2C
    SPI_W0 = 0x80
    SPI_ADDR_MSB = True

    BOOT_DOWNLOAD = "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
    BOOT_SPI = "boot:0x13 (SPI_FAST_FLASH_BOOT)"
    INVALID_HEADER_RESET = "RTCWDT_RTC_RESET"
    RESET_CAUSES: ClassVar[dict[str, tuple[int, str]]] = {
        name: (code, name)  # ESP32 ROM rtc.h RESET_REASON
        for name, code in (
            ("POWERON_RESET", 0x1),
            ("SW_RESET", 0x3),
            ("OWDT_RESET", 0x4),
            ("DEEPSLEEP_RESET", 0x5),
            ("SDIO_RESET", 0x6),
            ("TG0WDT_SYS_RESET", 0x7),
            ("TG1WDT_SYS_RESET", 0x8),
            ("RTCWDT_SYS_RESET", 0x9),
            ("INTRUSION_RESET", 0xA),
            ("TGWDT_CPU_RESET", 0xB),
            ("SW_CPU_RESET", 0xC),
            ("RTCWDT_CPU_RESET", 0xD),
            ("EXT_CPU_RESET", 0xE),
            ("RTCWDT_BROWN_OUT_RESET", 0xF),
            ("RTCWDT_RTC_RESET", 0x10),
        )
    }
    ROM_CONFIGSIP = True
    ROM_LEN_HEX = False


# The S3 and C3 ROMs print reset reasons in a shorter spelling than the ESP32's.
_LATER_RESET_CAUSES = {
    "POWERON_RESET": (0x1, "POWERON"),
    "SW_RESET": (0x3, "RTC_SW_SYS_RST"),
    "DEEPSLEEP_RESET": (0x5, "DSLEEP"),
    "TG0WDT_SYS_RESET": (0x7, "TG0WDT_SYS_RST"),
    "TG1WDT_SYS_RESET": (0x8, "TG1WDT_SYS_RST"),
    "RTCWDT_SYS_RESET": (0x9, "RTCWDT_SYS_RST"),
    "SW_CPU_RESET": (0xC, "RTC_SW_CPU_RST"),
    "RTCWDT_CPU_RESET": (0xD, "RTCWDT_CPU_RST"),
    "RTCWDT_BROWN_OUT_RESET": (0xF, "RTCWDT_BROWN_OUT_RST"),
    "RTCWDT_RTC_RESET": (0x10, "RTCWDT_RTC_RST"),
}


class _LaterChip(RomChip):
    """The SPI0 layout and console spelling the ESP32-S3 and ESP32-C3 share."""

    SPI_BASE = 0x60002000
    SPI_USR = 0x18
    SPI_USR1 = 0x1C
    SPI_USR2 = 0x20
    SPI_MISO_DLEN = 0x28
    SPI_W0 = 0x58
    SPI_ADDR_MSB = False  # esptool writes the address as is (SPI_ADDR_REG_MSB = False)
    RESET_CAUSES = _LATER_RESET_CAUSES


_S3_EFUSE = 0x60007000


class ESP32S3(_LaterChip):
    """An ESP32-S3 (QFN56), revision v0.2, no in-package flash or PSRAM."""

    NAME = "ESP32-S3"
    MCU_NAME = "ESP32S3"
    ROM_HEADER = ("ESP-ROM:esp32s3-20210327", "Build:Mar 27 2021")
    SECURITY_INFO_CHIP_ID = 9

    MAC_REGS = (_S3_EFUSE + 0x44, _S3_EFUSE + 0x48)  # BLOCK1 words 0 and 1
    FIXED_REGS: ClassVar[dict[int, int]] = {
        # BLOCK0: download encryption allowed, SPI_BOOT_CRYPT_CNT 0 and key purposes
        # USER (+0x34), secure boot off (+0x38), quad flash (+0x3C, bit 9 clear).
        **_words(_S3_EFUSE + 0x30, {0: 0, 1: 0, 2: 0, 3: 0}),
        # BLOCK1 word 3: minor revision 2 (bits 18..20), package QFN56 (bits 21..23 = 0),
        # no embedded flash; words 4 and 5: no flash vendor, no PSRAM, major revision 0.
        **_words(_S3_EFUSE + 0x44, {3: 2 << 18, 4: 0, 5: 0}),
        0x60004038: 0x00000000,  # GPIO_STRAP: download boot, VDD_SPI strap 3.3 V
    }

    BOOT_DOWNLOAD = "boot:0x0 (DOWNLOAD(USB/UART0))"
    BOOT_SPI = "boot:0x8 (SPI_FAST_FLASH_BOOT)"
    INVALID_HEADER_RESET = "TG0WDT_SYS_RESET"


_C3_EFUSE = 0x60008800


class ESP32C3(_LaterChip):
    """An ESP32-C3 (QFN32), revision v0.4, no in-package flash."""

    NAME = "ESP32-C3"
    MCU_NAME = "ESP32C3"
    ROM_HEADER = ("ESP-ROM:esp32c3-api1-20210207", "Build:Feb  7 2021")
    SECURITY_INFO_CHIP_ID = 5

    MAC_REGS = (_C3_EFUSE + 0x44, _C3_EFUSE + 0x48)  # BLOCK1 words 0 and 1
    FIXED_REGS: ClassVar[dict[int, int]] = {
        # BLOCK0 as on the S3: no encryption, no secure boot, key purposes USER.
        **_words(_C3_EFUSE + 0x30, {0: 0, 1: 0, 2: 0}),
        # BLOCK1 word 3: minor revision 4 (bits 18..20), package QFN32 (bits 21..23 = 0),
        # no embedded flash; words 4 and 5: no flash vendor, major revision 0.
        **_words(_C3_EFUSE + 0x44, {3: 4 << 18, 4: 0, 5: 0}),
    }

    BOOT_DOWNLOAD = "boot:0x4 (DOWNLOAD(USB/UART0/1))"
    BOOT_SPI = "boot:0xc (SPI_FAST_FLASH_BOOT)"
    INVALID_HEADER_RESET = "RTCWDT_RTC_RESET"


TARGETS: dict[str, type[RomChip]] = {"esp32": ESP32, "esp32s3": ESP32S3, "esp32c3": ESP32C3}
