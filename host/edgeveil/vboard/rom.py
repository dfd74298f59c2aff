"""The ESP32-family ROM download-mode loader that esptool talks to, sans-I/O.

Bytes from the serial line go into `RomLoader.feed`; the bytes it returns go back on the
line. Partial SLIP frames are kept between calls. The loader answers as the chip's ROM
until esptool uploads its flasher stub (MEM_BEGIN/DATA/END with an entry point); the stub
is never executed: the loader greets with ``OHAI`` and switches to the stub's dialect
(2 status bytes, raw MD5, ERASE_FLASH / ERASE_REGION / streamed READ_FLASH). Facts and
byte layouts: notes/esptool-rom-protocol.md §1-§6, §9. What differs between chips (the
registers esptool reads, GET_SECURITY_INFO, the SPI0 layout, the console text) comes from
the chip's class in `esp32regs.TARGETS`.

    loader = RomLoader(flash, mac=bytes.fromhex("240ac4dead01"), chip="esp32s3")
    port.write(loader.feed(port.read()))   # the board process owns the I/O

`rom_banner` and `invalid_header_lines` give the ROM's console text (§8).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from edgeveil.errors import VBoardError
from edgeveil.vboard.esp32regs import TARGETS, RomChip
from edgeveil.vboard.flashfile import SECTOR_SIZE, FlashFile
from edgeveil.vboard.slip import SlipDecoder, checksum, slip_encode

# Request opcodes (notes §2).
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG, SPI_SET_PARAMS = 0x08, 0x09, 0x0A, 0x0B
SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
GET_SECURITY_INFO = 0x14  # S3/C3 answer it (chip id); the ESP32 ROM says "invalid"
ERASE_FLASH, ERASE_REGION, READ_FLASH = 0xD0, 0xD1, 0xD2  # stub only

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
_SYNC_REPLIES = 8  # esptool reads the reply to its SYNC and 7 more
READ_SLOW_BLOCK = 64  # READ_FLASH_SLOW always answers 64 bytes

# Why a request failed -> (ROM error code, sent as 01 <code> 00 00; stub code, sent as
# <code> 00). esptool decodes these as 0x01xx / 0xCx00 (notes §1).
_FAILURES: dict[str, tuple[int, int]] = {
    "invalid": (0x05, 0xC3),  # unknown opcode, or not in this dialect
    "malformed": (0x05, 0xC0),  # bad SLIP, short header, wrong payload length
    "refused": (0x05, 0xC3),  # a request this board does not model (encrypted write)
    "checksum": (0x07, 0xC1),
    "block_size": (0x05, 0xC2),
    "sequence": (0x05, 0xC0),
    "not_begun": (0x05, 0xC6),  # DATA/END without BEGIN
    "range": (0x06, 0xC0),  # outside the flash, or an unaligned erase
    "inflate": (0x0B, 0xC7),
    "not_enough": (0x0B, 0xC8),
    "too_much": (0x0B, 0xC9),
    "read_len": (0x0A, 0xC0),
    "flash": (0x08, 0xC4),  # the flash model raised
}

# SPI NOR commands answered by the flash chip model.
_RDID, _RDSFDP, _READ = 0x9F, 0x5A, 0x03
_RDSR = (0x05, 0x35, 0x15)
# JESD216 SFDP header + one parameter header; esptool checks "SFDP" at 0 and reads the
# byte at 0x10 for an XMC vendor id (0x20). Unlisted addresses read 0xFF.
_SFDP = b"SFDP\x06\x01\x00\xff" + b"\x00\x06\x01\x10\x30\x00\x00\xff"
_USR_ADDR, _USR_MISO = 1 << 30, 1 << 28


class _Refused(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class _Transfer:
    """One BEGIN..END download: to flash (plain or deflated) or to RAM."""

    op: int
    offset: int
    size: int  # bytes the transfer may write (the erased range for flash)
    blocks: int
    block_size: int
    seq: int = 0  # next expected sequence number
    done: int = 0  # bytes written (deflate) or received (RAM)
    inflater: zlib._Decompress | None = None


@dataclass
class _ReadStream:
    """A stub READ_FLASH in progress: one packet per acknowledgement, then the MD5."""

    offset: int
    length: int
    packet: int
    sent: int = 0


def _words(payload: bytes, *lengths: int) -> tuple[int, ...]:
    if len(payload) not in lengths:
        raise _Refused("malformed")
    return struct.unpack(f"<{len(payload) // 4}I", payload)


def _target(chip: str) -> type[RomChip]:
    try:
        return TARGETS[chip]
    except KeyError:
        raise VBoardError(f"no ROM loader model for chip {chip!r}") from None


class RomLoader:
    """The ROM download mode and the flasher stub's dialect, over a `FlashFile`.

    Args:
        flash: the board's flash (owned by the caller; the loader never closes it).
        mac: the 6-byte base MAC burnt into eFuse words 1 and 2.
        chip: a key of `esp32regs.TARGETS`.
        jedec_id: the flash RDID answer, manufacturer in the low byte; by default a
            Winbond W25Q part of the flash's size (0x1640EF for 4 MiB).

    Attributes:
        chip: the `esp32regs.TARGETS` key it answers as.
        stub_active: the stub dialect is in use (after MEM_END with an entry point).
        session_active: a request (normally esptool's SYNC) succeeded since `reset`.
        run_user_code: esptool told the ROM to leave the loader (FLASH_END: 1 = run the
            app, 0 = reboot, which without IO0 held low also boots the app). Input is then
            ignored until `reset`.
        stay_in_loader: the stub was told to reboot into the ROM loader (FLASH_END 0, sent
            by ``--after no-reset``); the chip stays in download mode.
    """

    def __init__(
        self, flash: FlashFile, mac: bytes, chip: str = "esp32", jedec_id: int | None = None
    ) -> None:
        if len(mac) != 6:
            raise VBoardError(f"a MAC address has 6 bytes, not {len(mac)}")
        self._chip = _target(chip)
        self.chip = chip
        self.flash = flash
        self.mac = bytes(mac)
        capacity = max(flash.size.bit_length() - 1, 0)
        self.jedec_id = jedec_id if jedec_id is not None else capacity << 16 | 0x40EF
        self._slip = SlipDecoder()
        self._fixed = self._chip.registers(self.mac)
        self.reset()

    def reset(self) -> None:
        """Power-on state: ROM personality, no session, partial input forgotten."""
        self._slip.reset()
        self._enter_rom()
        self.session_active = False
        self.run_user_code = False
        self.stay_in_loader = False

    def _enter_rom(self) -> None:
        self.stub_active = False
        self._regs: dict[int, int] = {}
        self._xfer: _Transfer | None = None
        self._mem: _Transfer | None = None
        self._stream: _ReadStream | None = None

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the serial line; return the bytes to send back."""
        out = bytearray()
        for packet, ok in self._slip.feed(data):
            if self.run_user_code:
                break  # the ROM has left the loader; the board boots the app
            for reply in self._handle(packet, ok):
                out += slip_encode(reply)
        return bytes(out)

    # -- dispatch --------------------------------------------------------------------

    def _handle(self, pkt: bytes, ok: bool) -> list[bytes]:
        if self._stream is not None and ok and len(pkt) == 4:
            return self._on_read_ack(struct.unpack("<I", pkt)[0])
        if len(pkt) < 2 or pkt[0] != 0:
            return []  # not a request: noise or a stray acknowledgement
        op = pkt[1]
        self._stream = None
        if op == SYNC and self.stub_active:
            # A new esptool session that the board did not see start (the port was closed
            # and reopened within milliseconds): answer as the freshly reset ROM.
            self._enter_rom()
            self.stay_in_loader = False
        stub = self.stub_active
        self._after: list[bytes] = []
        value, data, kind = 0, b"", None
        try:
            if not ok or len(pkt) < 8:
                raise _Refused("malformed")
            size, chk = struct.unpack_from("<HI", pkt, 2)
            if size != len(pkt) - 8:
                raise _Refused("malformed")
            handler = (_STUB_OPS if stub else _ROM_OPS).get(op)
            if handler is None:
                raise _Refused("invalid")
            value, data = handler(self, op, pkt[8:], chk)
        except _Refused as exc:
            kind = exc.kind
        except VBoardError:  # the flash file itself failed (e.g. truncated behind our back)
            kind = "flash"
        if kind is None:
            status = b"\0\0" if stub else b"\0\0\0\0"
            self.session_active = True
        else:
            rom_code, stub_code = _FAILURES[kind]
            status = bytes((stub_code, 0)) if stub else bytes((1, rom_code, 0, 0))
            value, data, self._after = 0, b"", []
        body = data + status
        reply = struct.pack("<BBHI", 1, op, len(body), value) + body
        count = _SYNC_REPLIES if op == SYNC and kind is None else 1
        return [reply] * count + self._after

    # -- registers and the SPI flash user-command engine -----------------------------

    def _read_reg(self, addr: int) -> int:
        return self._fixed.get(addr, self._regs.get(addr, 0))

    def _op_read_reg(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        (addr,) = _words(p, 4)
        return self._read_reg(addr), b""

    def _op_write_reg(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        if not p or len(p) % 16:
            raise _Refused("malformed")
        cmd_reg = self._chip.SPI_BASE + self._chip.SPI_CMD
        for addr, value, mask, _delay_us in struct.iter_unpack("<IIII", p):
            if addr in self._fixed:
                continue  # eFuse and ID registers are read-only
            self._regs[addr] = (self._regs.get(addr, 0) & ~mask) | (value & mask)
            if addr == cmd_reg and self._regs[addr] & self._chip.SPI_CMD_USR:
                self._spi_user_command()
        return 0, b""

    def _spi_user_command(self) -> None:
        """Run the command set up in SPI0 USR/USR1/USR2/ADDR; the answer goes to W0.. ."""
        c, reg = self._chip, self._read_reg
        usr = reg(c.SPI_BASE + c.SPI_USR)
        opcode = reg(c.SPI_BASE + c.SPI_USR2) & 0xFF
        addr = None
        if usr & _USR_ADDR:
            addr = reg(c.SPI_BASE + c.SPI_ADDR)
            if c.SPI_ADDR_MSB:  # the ESP32 sends the register's top bits
                addr >>= 32 - min((reg(c.SPI_BASE + c.SPI_USR1) >> 26) + 1, 32)
        if usr & _USR_MISO:
            bits = (reg(c.SPI_BASE + c.SPI_MISO_DLEN) & 0x1FF) + 1
            value = int.from_bytes(self._spi_answer(opcode, addr, (bits + 7) // 8), "little")
            value &= (1 << bits) - 1
            for i in range((bits + 31) // 32):
                self._regs[c.SPI_BASE + c.SPI_W0 + 4 * i] = value >> (32 * i) & 0xFFFFFFFF
        self._regs[c.SPI_BASE + c.SPI_CMD] &= ~c.SPI_CMD_USR  # done at once

    def _spi_answer(self, opcode: int, addr: int | None, n: int) -> bytes:
        answer = b""
        if opcode == _RDID:
            answer = self.jedec_id.to_bytes(3, "little")
        elif opcode == _RDSFDP and addr is not None:
            answer = _SFDP[addr : addr + n]
        elif opcode in _RDSR:
            answer = bytes(n)  # not busy, no protection
        elif opcode == _READ and addr is not None and addr + n <= self.flash.size:
            answer = self.flash.read(addr, n)
        return (answer + b"\xff" * n)[:n]  # MISO idles high

    # -- session, RAM download, plain commands ---------------------------------------

    def _op_sync(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        if p != SYNC_PAYLOAD:
            raise _Refused("malformed")
        return self._chip.SYNC_VALUE, b""

    def _op_security_info(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        _words(p, 0)
        info = self._chip.security_info()
        if info is None:
            raise _Refused("invalid")  # the ESP32 ROM does not know the command
        return 0, info

    def _op_ok(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        return 0, b""  # SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE: nothing to model

    def _op_mem_begin(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        size, blocks, block_size, addr = _words(p, 16)
        self._mem = _Transfer(MEM_BEGIN, addr, size, blocks, block_size)
        return 0, b""

    def _op_mem_data(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        x = self._mem
        data = self._block(x, p, chk)
        if x is not None and data is not None:
            if x.done + len(data) > x.size:
                raise _Refused("too_much")
            x.done += len(data)  # RAM contents are not kept: the stub is never run
            x.seq += 1
        return 0, b""

    def _op_mem_end(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        _no_entry, entry = _words(p, 8)
        self._mem = None
        if entry:  # esptool started its flasher stub: greet in the stub's dialect
            self._after.append(b"OHAI")
            self.stub_active = True
        return 0, b""

    # -- flash download --------------------------------------------------------------

    def _check_range(self, off: int, n: int) -> None:
        if off < 0 or n < 0 or off + n > self.flash.size:
            raise _Refused("range")

    def _op_begin(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        """FLASH_BEGIN and FLASH_DEFL_BEGIN: erase the target sectors, expect blocks."""
        size, blocks, block_size, offset, *encrypted = _words(p, 16, 20)
        if encrypted and encrypted[0]:
            # The flash-encryption engine (eFuse key) is not modelled: refuse rather
            # than write plaintext where ciphertext was asked for.
            raise _Refused("refused")
        if not 0 < block_size <= 0x10000:
            raise _Refused("block_size")
        self._check_range(offset, size)
        start = offset - offset % SECTOR_SIZE
        stop = -(-(offset + size) // SECTOR_SIZE) * SECTOR_SIZE
        self._xfer = None
        self.flash.erase(start, stop - start)  # the ROM erases up front; so do we
        inflater = zlib.decompressobj() if op == FLASH_DEFL_BEGIN else None
        self._xfer = _Transfer(op, offset, size, blocks, block_size, inflater=inflater)
        return 0, b""

    def _block(self, x: _Transfer | None, p: bytes, chk: int) -> bytes | None:
        """Check a DATA request; return its data, or None for a retried, applied block."""
        if x is None:
            raise _Refused("not_begun")
        if len(p) < 16:
            raise _Refused("malformed")
        n, seq = struct.unpack_from("<II", p)
        data = p[16:]
        if n != len(data):
            raise _Refused("malformed")
        if n > x.block_size:
            raise _Refused("block_size")
        if checksum(data) != chk:
            raise _Refused("checksum")
        if seq + 1 == x.seq:
            return None  # esptool retried a block whose reply it missed
        if seq != x.seq:
            raise _Refused("sequence")
        if seq >= x.blocks:
            raise _Refused("too_much")
        return data

    def _program(self, off: int, data: bytes) -> None:
        self._check_range(off, len(data))
        self.flash.program(off, data)

    def _op_flash_data(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        x = self._xfer if self._xfer and self._xfer.op == FLASH_BEGIN else None
        data = self._block(x, p, chk)
        if x is not None and data is not None:
            self._program(x.offset + x.seq * x.block_size, data)
            x.seq += 1
        return 0, b""

    def _op_defl_data(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        x = self._xfer if self._xfer and self._xfer.op == FLASH_DEFL_BEGIN else None
        data = self._block(x, p, chk)
        if x is None or x.inflater is None or data is None:
            return 0, b""
        room = x.size - x.done
        try:
            out = x.inflater.decompress(data, room + 1)
        except zlib.error:
            self._xfer = None
            raise _Refused("inflate") from None
        if len(out) > room:
            self._xfer = None
            raise _Refused("too_much")
        self._program(x.offset + x.done, out)
        x.done += len(out)
        x.seq += 1
        return 0, b""

    def _op_flash_end(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        (stay,) = _words(p, 4)  # esptool sends int(not reboot)
        x, self._xfer = self._xfer, None
        if not self.stub_active:
            self.run_user_code = True  # 1: jump to the app; 0: reboot, booting the app
            return 0, b""
        if x is None:
            raise _Refused("not_begun")
        if x.inflater is not None and not x.inflater.eof and x.blocks:
            raise _Refused("not_enough")
        if not stay:  # the stub reboots into the ROM loader (--after no-reset)
            self._enter_rom()
            self.stay_in_loader = True
        return 0, b""

    # -- reading and erasing ---------------------------------------------------------

    def _op_md5(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        addr, size, _, _ = _words(p, 16)
        self._check_range(addr, size)
        digest = self.flash.md5(addr, size)
        return 0, digest if self.stub_active else digest.hex().encode()

    def _op_read_slow(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        off, n = _words(p, 8)
        if n > READ_SLOW_BLOCK:
            raise _Refused("read_len")
        self._check_range(off, n)
        return 0, self.flash.read(off, n).ljust(READ_SLOW_BLOCK, b"\xff")

    def _op_erase_flash(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        _words(p, 0)
        self.flash.erase_all()
        return 0, b""

    def _op_erase_region(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        off, size = _words(p, 8)
        if off % SECTOR_SIZE or size % SECTOR_SIZE:
            raise _Refused("range")
        self._check_range(off, size)
        self.flash.erase(off, size)
        return 0, b""

    def _op_read_flash(self, op: int, p: bytes, chk: int) -> tuple[int, bytes]:
        off, length, packet, _max_unacked = _words(p, 16)
        self._check_range(off, length)
        if not packet:
            raise _Refused("malformed")
        self._stream = _ReadStream(off, length, packet)
        self._after = self._read_next()  # one packet in flight; the rest on each ack
        return 0, b""

    def _read_next(self) -> list[bytes]:
        s = self._stream
        if s is None:
            return []
        if s.sent >= s.length:
            self._stream = None
            return [self.flash.md5(s.offset, s.length)]
        n = min(s.packet, s.length - s.sent)
        data = self.flash.read(s.offset + s.sent, n)
        s.sent += n
        return [data]

    def _on_read_ack(self, total: int) -> list[bytes]:
        if self._stream is None or total != self._stream.sent:
            self._stream = None  # esptool lost count: stop; it reports the failure
            return []
        return self._read_next()


_Handler = Callable[[RomLoader, int, bytes, int], tuple[int, bytes]]

_ROM_OPS: dict[int, _Handler] = {
    SYNC: RomLoader._op_sync,
    READ_REG: RomLoader._op_read_reg,
    WRITE_REG: RomLoader._op_write_reg,
    MEM_BEGIN: RomLoader._op_mem_begin,
    MEM_DATA: RomLoader._op_mem_data,
    MEM_END: RomLoader._op_mem_end,
    SPI_ATTACH: RomLoader._op_ok,
    SPI_SET_PARAMS: RomLoader._op_ok,
    CHANGE_BAUDRATE: RomLoader._op_ok,
    FLASH_BEGIN: RomLoader._op_begin,
    FLASH_DATA: RomLoader._op_flash_data,
    FLASH_END: RomLoader._op_flash_end,
    FLASH_DEFL_BEGIN: RomLoader._op_begin,
    FLASH_DEFL_DATA: RomLoader._op_defl_data,
    FLASH_DEFL_END: RomLoader._op_flash_end,
    SPI_FLASH_MD5: RomLoader._op_md5,
    READ_FLASH_SLOW: RomLoader._op_read_slow,
    GET_SECURITY_INFO: RomLoader._op_security_info,  # "invalid" on the ESP32
}
_ROM_ONLY = (MEM_BEGIN, MEM_DATA, MEM_END, READ_FLASH_SLOW)
_STUB_OPS: dict[int, _Handler] = {
    **{op: h for op, h in _ROM_OPS.items() if op not in _ROM_ONLY},
    ERASE_FLASH: RomLoader._op_erase_flash,
    ERASE_REGION: RomLoader._op_erase_region,
    READ_FLASH: RomLoader._op_read_flash,
}


def rom_banner(download: bool, reset_cause: str = "POWERON_RESET", chip: str = "esp32") -> bytes:
    """The ROM's boot text: its header lines, then the rst/boot line (notes §8).

    Args:
        download: IO0 was low at reset: download boot, adding ``waiting for download``.
        reset_cause: a reset reason by the ESP32 ROM's name, e.g. ``POWERON_RESET`` or
            ``RTCWDT_RTC_RESET``; printed as the chip's ROM prints it.
        chip: a key of `esp32regs.TARGETS`.

    Raises:
        VBoardError: unknown reset cause or chip.
    """
    c = _target(chip)
    cause = c.RESET_CAUSES.get(reset_cause)
    if cause is None:
        raise VBoardError(f"unknown reset cause {reset_cause!r} for {c.NAME}")
    code, name = cause
    boot = c.BOOT_DOWNLOAD if download else c.BOOT_SPI
    lines = [*c.ROM_HEADER, f"rst:{code:#x} ({name}),{boot}"]
    if download:
        lines.append("waiting for download")
    return "".join(line + "\r\n" for line in lines).encode()


def invalid_header_lines(first_word: int, chip: str = "esp32") -> bytes:
    """What the ROM prints when flash holds no valid image, before its watchdog resets.

    Args:
        first_word: the little-endian word at the bootloader offset (0xffffffff if blank).
        chip: a key of `esp32regs.TARGETS`.
    """
    line = f"invalid header: 0x{first_word & 0xFFFFFFFF:08x}\r\n"
    return (line * _target(chip).INVALID_HEADER_LINES).encode()
