"""The virtual board's ROM loader (ESP32, -S3, -C3) and flash model, checked with the real
esptool CLI.

Most tests run the unmodified ``esptool`` 5.6.0 as a subprocess against a `RomLoader`
served on a pty (`rom_pty.RomPtyHarness`) and then read the flash file's bytes directly.
A few feed bytes to the loader to reach error paths esptool never takes; their requests
and checks use esptool's own checksum and boot-log regex, not the loader's.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE, STDOUT

import pytest
from edgeveil.errors import VBoardError
from edgeveil.vboard.flashfile import FlashFile
from edgeveil.vboard.rom import RomLoader, invalid_header_lines, rom_banner
from esptool.loader import ESPLoader
from rom_pty import RomPtyHarness

ESPTOOL = Path(sys.executable).with_name("esptool")
SIZE = 4 * 1024 * 1024
MAC = bytes.fromhex("30aea4c0ff1e")
MAC_TEXT = ":".join(f"{b:02x}" for b in MAC)
BOOT_LOG = re.compile(rb"boot:(0x[0-9a-fA-F]+)(.*waiting for download)?", re.DOTALL)  # esptool


@dataclass
class Board:
    port: str
    path: Path
    loader: RomLoader
    harness: RomPtyHarness
    tmp: Path

    def bytes(self) -> bytes:
        return self.path.read_bytes()

    def fill_random(self) -> bytes:
        """Give the whole flash random (non-erased) contents; return them."""
        data = os.urandom(SIZE)
        with open(self.path, "r+b") as f:
            f.write(data)
        return data

    def esptool(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(ESPTOOL), "--port", self.port, "--before", "no-reset", *args]
        t0 = time.monotonic()
        run = subprocess.run(cmd, stdout=PIPE, stderr=STDOUT, text=True, timeout=60)
        print(f"esptool {' '.join(args)}: {time.monotonic() - t0:.2f} s")
        if ok:
            assert run.returncode == 0, run.stdout
        return run


def _serve(tmp_path: Path, chip: str, size: int) -> Iterator[Board]:
    path = tmp_path / "flash.bin"
    FlashFile.create_blank(path, size)
    with FlashFile(path, size) as flash:
        loader = RomLoader(flash, MAC, chip=chip)
        with RomPtyHarness(loader) as harness:
            yield Board(harness.port, path, loader, harness, tmp_path)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    yield from _serve(tmp_path, "esp32", SIZE)


# The later chips: esptool's name, the description it prints, the flash, the chip id.
LATER = {
    "esp32s3": ("ESP32-S3", "ESP32-S3 (QFN56) (revision v0.2)", 8, 9),
    "esp32c3": ("ESP32-C3", "ESP32-C3 (QFN32) (revision v0.4)", 4, 5),
}


@pytest.fixture(params=sorted(LATER))
def later(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Board]:
    yield from _serve(tmp_path, request.param, LATER[request.param][2] << 20)


def _file(board: Board, name: str, data: bytes) -> str:
    p = board.tmp / name
    p.write_bytes(data)
    return str(p)


# -- esptool against the loader --------------------------------------------------------


def test_read_mac_chip_id_and_detection(board: Board) -> None:
    # Default --before: esptool cannot reset a pty, warns, and syncs anyway.
    run = board.esptool("--before", "default-reset", "--chip", "auto", "read-mac")
    assert "ESP32-D0WD-V3 (revision v3.1)" in run.stdout
    assert "Crystal frequency:  40MHz" in run.stdout
    assert run.stdout.count(f"MAC:                {MAC_TEXT}") == 2  # ROM, then stub
    run = board.esptool("--chip", "esp32", "--no-stub", "chip-id")
    assert "has no chip ID" in run.stdout and MAC_TEXT in run.stdout


def test_flash_id_reports_the_configured_jedec_id(board: Board) -> None:
    run = board.esptool("flash-id")
    assert "Manufacturer: ef" in run.stdout and "Device: 4016" in run.stdout
    assert "Detected flash size: 4MB" in run.stdout
    board.loader.jedec_id = 0x1840C8  # a 16 MiB GigaDevice part
    run = board.esptool("flash-id")
    assert "Manufacturer: c8" in run.stdout and "Detected flash size: 16MB" in run.stdout


def test_write_flash_compressed_lands_in_the_flash_file(board: Board) -> None:
    before = board.fill_random()
    image = os.urandom(35000).hex().encode() + b"!"  # 70001 B, compressible
    run = board.esptool("write-flash", "0x10000", _file(board, "app.bin", image))
    assert "Hash of data verified" in run.stdout and "compressed" in run.stdout
    after = board.bytes()
    end = 0x10000 + len(image)
    assert after[0x10000:end] == image
    assert after[end:0x22000] == b"\xff" * (0x22000 - end)  # padding + rest of last sector
    assert after[:0x10000] == before[:0x10000] and after[0x22000:] == before[0x22000:]


def test_write_flash_uncompressed(board: Board) -> None:
    image = os.urandom(20000)
    run = board.esptool("write-flash", "--no-compress", "0x8000", _file(board, "p.bin", image))
    assert "Hash of data verified" in run.stdout
    after = board.bytes()
    assert after[0x8000 : 0x8000 + len(image)] == image
    assert after[0x8000 + len(image) :] == b"\xff" * (SIZE - 0x8000 - len(image))


def test_no_stub_write_read_and_compressed_write(board: Board) -> None:
    image = os.urandom(6000)
    run = board.esptool("--no-stub", "write-flash", "0x9000", _file(board, "nvs.bin", image))
    assert "Hash of data verified" in run.stdout
    assert board.bytes()[0x9000 : 0x9000 + len(image)] == image
    out = board.tmp / "back.bin"
    board.esptool("--no-stub", "read-flash", "0x9000", str(len(image)), str(out))
    assert out.read_bytes() == image
    text = os.urandom(3000).hex().encode()
    run = board.esptool("--no-stub", "write-flash", "-z", "0x20000", _file(board, "t.bin", text))
    assert "Hash of data verified" in run.stdout
    assert board.bytes()[0x20000 : 0x20000 + len(text)] == text


def test_read_flash_matches_the_file(board: Board) -> None:
    contents = board.fill_random()
    out = board.tmp / "dump.bin"
    board.esptool("read-flash", "0x1000", "0x12345", str(out))  # last packet is short
    assert out.read_bytes() == contents[0x1000 : 0x1000 + 0x12345]


def test_erase_region(board: Board) -> None:
    before = board.fill_random()
    board.esptool("erase-region", "0x20000", "0x3000")
    after = board.bytes()
    assert after[0x20000:0x23000] == b"\xff" * 0x3000
    assert after[:0x20000] == before[:0x20000] and after[0x23000:] == before[0x23000:]


def test_erase_flash(board: Board) -> None:
    board.fill_random()
    board.esptool("erase-flash")
    assert board.bytes() == b"\xff" * SIZE


def test_encrypted_write_is_refused_and_flash_unchanged(board: Board) -> None:
    before = board.fill_random()
    image = _file(board, "enc.bin", os.urandom(8192))
    # esptool itself refuses: the eFuses say no flash-encryption key is programmed.
    run = board.esptool("write-flash", "--encrypt", "0x10000", image, ok=False)
    assert run.returncode != 0
    # Told to ignore the eFuses, esptool asks the stub; the board refuses.
    args = ("write-flash", "--encrypt", "--ignore-flash-enc-efuse", "0x10000", image)
    run = board.esptool(*args, ok=False)
    assert run.returncode != 0 and "Invalid command" in run.stdout
    assert board.bytes() == before


def test_sessions_that_the_board_never_saw_close(board: Board) -> None:
    # Holding the slave open hides esptool's close from the harness (no POLLHUP), as when
    # esptool closes and reopens the port within milliseconds.
    keep = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        board.esptool("--after", "no-reset-stub", "read-mac")
        with board.harness.lock:
            assert board.loader.stub_active
        run = board.esptool("--after", "no-reset", "flash-id")  # SYNC to a running stub
        assert "Uploading stub flasher" in run.stdout
        with board.harness.lock:
            assert not board.loader.stub_active and board.loader.stay_in_loader
        board.esptool("--no-stub", "run")
        with board.harness.lock:
            assert board.loader.run_user_code
    finally:
        os.close(keep)


def test_later_chips_are_detected_by_their_security_info(later: Board) -> None:
    name, description, _mib, chip_id = LATER[later.loader.chip]
    run = later.esptool("--chip", "auto", "read-mac")
    assert f"Detecting chip type... {name}" in run.stdout
    assert f"Chip type:          {description}" in run.stdout
    assert "Crystal frequency:  40MHz" in run.stdout
    assert run.stdout.count(f"MAC:                {MAC_TEXT}") == 2  # ROM, then stub
    run = later.esptool("--chip", "esp32", "read-mac", ok=False)  # no magic word to match
    assert run.returncode != 0 and f"This chip is {name}, not ESP32" in run.stdout
    run = later.esptool("get-security-info")
    assert f"Chip ID: {chip_id}" in run.stdout and "Flash Encryption: Disabled" in run.stdout
    run = later.esptool("--no-stub", "get-security-info")  # the ROM answers it too
    assert f"Chip ID: {chip_id}" in run.stdout


def test_later_chips_flash_id_and_sfdp_addressing(later: Board) -> None:
    mib = LATER[later.loader.chip][2]
    run = later.esptool("flash-id")
    assert f"Detected flash size: {mib}MB" in run.stdout and "Manufacturer: ef" in run.stdout
    # Their SPI0 takes the address right-aligned (the ESP32's left-aligned): reading the
    # SFDP header at 4 must not read it at 0. JESD216: minor 6, major 1, 1 header, 0xff.
    run = later.esptool("--no-stub", "read-flash-sfdp", "4", "4")
    assert "SFDP[4..7]: 0x06 0x01 0x00 0xff" in run.stdout
    run = later.esptool("read-flash-sfdp", "0", "4")
    assert "SFDP[0..3]: 0x53 0x46 0x44 0x50" in run.stdout  # "SFDP"


def test_later_chips_write_at_0x0_with_and_without_the_stub(later: Board) -> None:
    image = os.urandom(30000).hex().encode()  # compressible
    run = later.esptool("write-flash", "0x0", _file(later, "fw.bin", image))
    assert "Hash of data verified" in run.stdout
    assert later.bytes()[: len(image)] == image
    run = later.esptool("verify-flash", "0x0", _file(later, "fw.bin", image))
    assert "Verification successful" in run.stdout
    # The ROM dialect: FLASH_BEGIN carries the encryption word on these ROMs (20 bytes).
    raw = os.urandom(5000)
    run = later.esptool("--no-stub", "write-flash", "0x9000", _file(later, "nvs.bin", raw))
    assert "Hash of data verified" in run.stdout
    assert later.bytes()[0x9000 : 0x9000 + len(raw)] == raw
    out = later.tmp / "back.bin"
    later.esptool("--no-stub", "read-flash", "0x0", "200", str(out))
    assert out.read_bytes() == image[:200]


# -- bytes fed straight to the loader --------------------------------------------------


def _frames(data: bytes) -> list[bytes]:
    """SLIP-decode the loader's output (independently of edgeveil.vboard.slip)."""
    out = []
    for raw in data.split(b"\xc0"):
        if raw:
            out.append(raw.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb"))
    return out


def _request(op: int, payload: bytes, chk: int = 0) -> bytes:
    pkt = struct.pack("<BBHI", 0, op, len(payload), chk) + payload
    return b"\xc0" + pkt.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def _status(reply: bytes, op: int, data_len: int = 0) -> bytes:
    direction, rop = struct.unpack_from("<BB", reply)
    assert (direction, rop) == (1, op)
    return reply[8 + data_len : 8 + data_len + 2]


def _block(op: int, seq: int, data: bytes, chk: int | None = None) -> bytes:
    payload = struct.pack("<IIII", len(data), seq, 0, 0) + data
    return _request(op, payload, ESPLoader.checksum(data) if chk is None else chk)


SYNC = _request(0x08, b"\x07\x07\x12\x20" + b"\x55" * 32)


@pytest.fixture
def loader(tmp_path: Path) -> Iterator[RomLoader]:
    FlashFile.create_blank(tmp_path / "f.bin", SIZE)
    with FlashFile(tmp_path / "f.bin", SIZE) as flash:
        yield RomLoader(flash, MAC)


def _to_stub(loader: RomLoader) -> None:
    loader.feed(SYNC + _request(0x05, struct.pack("<IIII", 4, 1, 0x1800, 0x40080000)))
    loader.feed(_block(0x07, 0, b"\x01\x02\x03\x04"))
    out = _frames(loader.feed(_request(0x06, struct.pack("<II", 0, 0x40080004))))
    assert out[-1] == b"OHAI" and loader.stub_active


def test_sync_split_across_feeds_gets_eight_rom_replies(loader: RomLoader) -> None:
    out = b"".join(loader.feed(SYNC[i : i + 1]) for i in range(len(SYNC)))
    replies = _frames(out)
    assert len(replies) == 8 and loader.session_active
    for r in replies:
        assert _status(r, 0x08) == b"\0\0" and struct.unpack_from("<I", r, 4)[0] != 0


def test_bad_checksum_is_an_error_in_both_dialects(loader: RomLoader) -> None:
    loader.feed(SYNC + _request(0x02, struct.pack("<IIII", 0x400, 1, 0x400, 0x10000)))
    data = os.urandom(0x400)
    [reply] = _frames(loader.feed(_block(0x03, 0, data, ESPLoader.checksum(data) ^ 1)))
    assert _status(reply, 0x03) == b"\x01\x07"  # ROM: failed, checksum error
    _to_stub(loader)
    loader.feed(_request(0x02, struct.pack("<IIIII", 0x4000, 1, 0x4000, 0x10000, 0)))
    data = os.urandom(0x4000)
    [reply] = _frames(loader.feed(_block(0x03, 0, data, ESPLoader.checksum(data) ^ 1)))
    assert _status(reply, 0x03) == b"\xc1\x00"  # stub: bad data checksum
    assert loader.flash.read(0x10000, 0x4000) == b"\xff" * 0x4000


def test_bad_slip_unknown_ops_and_sequence_errors(loader: RomLoader) -> None:
    loader.feed(SYNC)
    bad_escape = b"\xc0\x00\x0a\x04\x00\x00\x00\x00\x00\xdb\x01\x00\x00\x00\xc0"
    [reply] = _frames(loader.feed(bad_escape))
    assert _status(reply, 0x0A)[0] != 0
    for op in (0x14, 0x77, 0xD0):  # GET_SECURITY_INFO, unknown, stub-only ERASE_FLASH
        [reply] = _frames(loader.feed(_request(op, b"")))
        assert _status(reply, op) == b"\x01\x05"
    loader.feed(_request(0x02, struct.pack("<IIII", 0x800, 2, 0x400, 0x10000)))
    [reply] = _frames(loader.feed(_block(0x03, 1, b"\x00" * 0x400)))  # seq 0 expected
    assert _status(reply, 0x03)[0] == 1
    _to_stub(loader)
    [reply] = _frames(loader.feed(_request(0x0E, struct.pack("<II", 0, 64))))  # ROM only
    assert _status(reply, 0x0E) == b"\xc3\x00"


def test_read_flash_streams_one_packet_per_ack(loader: RomLoader) -> None:
    contents = os.urandom(0x2800)
    loader.flash.program(0x3000, contents)
    _to_stub(loader)
    out = _frames(loader.feed(_request(0xD2, struct.pack("<IIII", 0x3000, 0x2800, 0x1000, 64))))
    assert len(out) == 2 and _status(out[0], 0xD2) == b"\0\0" and out[1] == contents[:0x1000]
    assert _frames(loader.feed(b"\xc0" + struct.pack("<I", 0x1000) + b"\xc0")) == [
        contents[0x1000:0x2000]
    ]
    [last] = _frames(loader.feed(b"\xc0" + struct.pack("<I", 0x2000) + b"\xc0"))
    assert last == contents[0x2000:]
    [digest] = _frames(loader.feed(b"\xc0" + struct.pack("<I", 0x2800) + b"\xc0"))
    assert digest == hashlib.md5(contents).digest()


def test_after_run_user_code_input_is_ignored_until_reset(loader: RomLoader) -> None:
    loader.feed(SYNC + _request(0x02, struct.pack("<IIII", 0, 0, 0x400, 0)))
    [reply] = _frames(loader.feed(_request(0x04, struct.pack("<I", 1))))
    assert _status(reply, 0x04) == b"\0\0" and loader.run_user_code
    assert loader.feed(SYNC) == b""
    loader.reset()
    assert not loader.run_user_code and len(_frames(loader.feed(SYNC))) == 8


def test_security_info_answers_the_chip_id(tmp_path: Path) -> None:
    FlashFile.create_blank(tmp_path / "f.bin", SIZE)
    with FlashFile(tmp_path / "f.bin", SIZE) as flash:
        for chip, chip_id in (("esp32s3", 9), ("esp32c3", 5)):
            loader = RomLoader(flash, MAC, chip=chip)
            frames = _frames(loader.feed(SYNC + _request(0x14, b"")))
            assert len(frames) == 9  # 8 SYNC replies, then this one
            reply = frames[8]
            assert _status(reply, 0x14, 20) == b"\0\0"
            # flags, flash_crypt_cnt, 7 key purposes, chip id, API version; 4 status bytes
            flags, crypt, *purposes, got_id, _api = struct.unpack_from("<IB7BII", reply, 8)
            assert (flags, crypt, purposes, got_id) == (0, 0, [0] * 7, chip_id)
            assert reply[8 + 20 :] == b"\0\0\0\0"


def test_unknown_chip_and_bad_mac_are_refused(loader: RomLoader) -> None:
    with pytest.raises(VBoardError, match="chip"):
        RomLoader(loader.flash, MAC, chip="esp8266")
    with pytest.raises(VBoardError, match="6 bytes"):
        RomLoader(loader.flash, MAC[:5])


# -- flash model and console text ------------------------------------------------------


def test_flash_file_nor_semantics_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    FlashFile.create_blank(path, 0x4000)
    with FlashFile(path, 0x4000) as flash:
        flash.program(0x100, b"\xf0\x0f\xaa")
        flash.program(0x100, b"\x3c\x3c\xff")  # can only clear bits
        assert path.read_bytes()[0x100:0x103] == b"\x30\x0c\xaa"
        assert flash.md5(0, 0x4000) == hashlib.md5(path.read_bytes()).digest()
        flash.erase(0, 0x1000)
        assert flash.read(0x100, 3) == b"\xff\xff\xff"
        with pytest.raises(VBoardError, match="aligned"):
            flash.erase(0x800, 0x1000)
        with pytest.raises(VBoardError, match="outside"):
            flash.read(0x3FFF, 2)
        with pytest.raises(VBoardError, match="outside"):
            flash.program(0x4000, b"\x00")
    with pytest.raises(VBoardError, match="expected"):
        FlashFile(path, SIZE)


def test_rom_console_text_matches_esptools_boot_log_regex() -> None:
    text = rom_banner(download=True)
    lines = text.split(b"\r\n")
    assert lines[0].startswith(b"ets ") and lines[1] == b"" and lines[-1] == b""
    m = BOOT_LOG.search(text)
    assert m and m.group(1) == b"0x3" and m.group(2) is not None
    text = rom_banner(download=False, reset_cause="RTCWDT_RTC_RESET")
    m = BOOT_LOG.search(text)
    assert m and m.group(1) == b"0x13" and m.group(2) is None and b"rst:0x10 (" in text
    assert b"\n" not in text.replace(b"\r\n", b"")
    with pytest.raises(VBoardError):
        rom_banner(download=False, reset_cause="NO_SUCH_RESET")
    lines = invalid_header_lines(0xFFFFFFFF).split(b"\r\n")
    assert lines[-1] == b"" and set(lines[:-1]) == {b"invalid header: 0xffffffff"}
    assert len(lines) > 3


@pytest.mark.parametrize(
    ("chip", "rom", "cause"),
    [
        ("esp32s3", b"ESP-ROM:esp32s3-", b"rst:0xc (RTC_SW_CPU_RST),"),
        ("esp32c3", b"ESP-ROM:esp32c3-", b"rst:0xc (RTC_SW_CPU_RST),"),
    ],
)
def test_later_roms_console_text(chip: str, rom: bytes, cause: bytes) -> None:
    text = rom_banner(download=True, chip=chip)
    assert text.startswith(rom) and b"\nBuild:" in text and b"rst:0x1 (POWERON)," in text
    m = BOOT_LOG.search(text)
    assert m and m.group(2) is not None  # esptool sees download mode
    text = rom_banner(download=False, reset_cause="SW_CPU_RESET", chip=chip)
    m = BOOT_LOG.search(text)
    assert m and m.group(2) is None and cause in text
    assert b"\n\r\n" not in text  # no blank line after the header, unlike the ESP32's
    assert invalid_header_lines(0x12345678, chip=chip).startswith(
        b"invalid header: 0x12345678\r\n"
    )
