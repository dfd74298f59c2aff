"""Chip constants for the virtual board's ROM loader: one class of constants per chip.

The register values make esptool 5.6.0 see an ESP32-D0WD-V3 (revision v3.1) with a 40 MHz
crystal, no secure boot and no flash encryption (notes/esptool-rom-protocol.md §3, §5, §8).
`TARGETS` maps the board file's ``chip`` name to its class; code looks values up there
instead of testing the chip name.
"""

from __future__ import annotations

from typing import ClassVar


class ESP32:
    """The original ESP32 (v3 ROM)."""

    NAME = "ESP32"
    ROM_DATE = "ets Jul 29 2019 12:21:46"  # v3 ROM; v1 silicon prints "ets Jun  8 2016 00:22:57"
    SYNC_VALUE = 0x20120707  # any non-zero SYNC value means "ROM", zero means "stub"

    CHIP_MAGIC_REG = 0x40001000
    CHIP_MAGIC = 0x00F01D83
    EFUSE_RD_BASE = 0x3FF5A000  # eFuse BLK0 read word n is at base + 4n
    EFUSE_WORDS: ClassVar[dict[int, int]] = {
        0: 0x00000000,  # flash_crypt_cnt 0 (no encryption), nothing read-disabled
        3: 0x0000A200,  # pkg D0WD, 240 MHz rating, rev bit0 set
        4: 0x00001436,  # CK8M calibration 0x36, ADC vref trimmed
        5: 0x01100000,  # rev bit1 set, minor revision 1, default SPI pads
        6: 0x00000000,  # coding scheme None, no secure boot, DL encryption allowed
    }
    # Other fixed registers: APB_CTL_DATE (rev bit2), UART_CLKDIV (347 at 115200 baud
    # = 40 MHz), RTCCALICFG1 (ROM crystal calibration: 1896 * 15625 * 0x36 / 40 ~ 40 MHz),
    # GPIO_STRAP (0x03 = download boot, bit5 low = 3.3 V flash), RTC_CNTL_SDIO_CONF (no force).
    FIXED_REGS: ClassVar[dict[int, int]] = {
        0x3FF6607C: 0x80000000,
        0x3FF40014: 0x0000015B,
        0x3FF5F06C: 1896 << 7,
        0x3FF44038: 0x00000003,
        0x3FF48074: 0x00000000,
    }

    # SPI0 controller (flash), used by esptool's "user command" engine.
    SPI_BASE = 0x3FF42000
    SPI_CMD = 0x00
    SPI_ADDR = 0x04
    SPI_USR = 0x1C
    SPI_USR1 = 0x20
    SPI_USR2 = 0x24
    SPI_MISO_DLEN = 0x2C
    SPI_W0 = 0x80
    SPI_CMD_USR = 1 << 18

    BOOT_DOWNLOAD = "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
    BOOT_SPI = "boot:0x13 (SPI_FAST_FLASH_BOOT)"
    INVALID_HEADER_LINES = 7  # printed before the RTC watchdog resets the chip
    RESET_CAUSES: ClassVar[dict[str, int]] = {  # ESP32 ROM rtc.h RESET_REASON
        "POWERON_RESET": 0x1,
        "SW_RESET": 0x3,
        "OWDT_RESET": 0x4,
        "DEEPSLEEP_RESET": 0x5,
        "SDIO_RESET": 0x6,
        "TG0WDT_SYS_RESET": 0x7,
        "TG1WDT_SYS_RESET": 0x8,
        "RTCWDT_SYS_RESET": 0x9,
        "INTRUSION_RESET": 0xA,
        "TGWDT_CPU_RESET": 0xB,
        "SW_CPU_RESET": 0xC,
        "RTCWDT_CPU_RESET": 0xD,
        "EXT_CPU_RESET": 0xE,
        "RTCWDT_BROWN_OUT_RESET": 0xF,
        "RTCWDT_RTC_RESET": 0x10,
    }

    @classmethod
    def registers(cls, mac: bytes) -> dict[int, int]:
        """The read-only registers, with the base MAC in eFuse words 1 and 2.

        Word 2 holds MAC[0..1] in bits 15..0 (the CRC byte above it is left 0; esptool
        ignores it), word 1 holds MAC[2..5] most significant byte first.
        """
        words = dict(cls.EFUSE_WORDS)
        words[1] = int.from_bytes(mac[2:6], "big")
        words[2] = int.from_bytes(mac[0:2], "big")
        regs = {cls.EFUSE_RD_BASE + 4 * n: v for n, v in words.items()}
        regs[cls.CHIP_MAGIC_REG] = cls.CHIP_MAGIC
        regs.update(cls.FIXED_REGS)
        return regs


TARGETS: dict[str, type[ESP32]] = {"esp32": ESP32}
