"""The virtual ESP32-S3 and ESP32-C3 (boards esp32s3-virtual, esp32c3-virtual) end to end.

Their ROM must answer the unmodified esptool 5.6 as the real chips do: detected through
GET_SECURITY_INFO's chip id, the MAC from their own eFuse words, the firmware written at
0x0 (where their ROM reads the bootloader), not at the ESP32's 0x1000. Each test runs
esptool or edgeveil as a user would, and checks the flash file's bytes directly.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import serial
from edgeveil.boards import Board, load_board
from edgeveil.registry import Registry
from edgeveil.vboard import firmware
from vbtest import VBoard, edgeveil, nvs_blob, on_board, tool


class Chip(NamedTuple):
    """What esptool and the console must show for a board's chip."""

    name: str  # esptool's name for it
    description: str  # esptool's "Chip type"
    flash: str  # the flash size esptool detects through RDID
    chip_id: int  # GET_SECURITY_INFO's, the image header's
    rom: bytes  # the ROM's header lines after every reset
    spi_boot: bytes  # its boot line's mode when it boots from flash
    loop_reset: bytes  # the reset that restarts its invalid-header loop on a blank flash


CHIPS = {
    "esp32s3-virtual": Chip(
        "ESP32-S3", "ESP32-S3 (QFN56) (revision v0.2)", "8MB", 9,
        b"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n",
        b"boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n", b"rst:0x7 (TG0WDT_SYS_RST),",
    ),
    "esp32c3-virtual": Chip(
        "ESP32-C3", "ESP32-C3 (QFN32) (revision v0.4)", "4MB", 5,
        b"ESP-ROM:esp32c3-api1-20210207\r\nBuild:Feb  7 2021\r\n",
        b"boot:0xc (SPI_FAST_FLASH_BOOT)\r\n", b"rst:0x10 (RTCWDT_RTC_RST),",
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(CHIPS))
def board(request: pytest.FixtureRequest) -> Board:
    return load_board(request.param)


def esptool(port: str, *args: str, check: bool = True):
    return tool("esptool", "--port", port, *args, check=check, timeout=120)


def mac_of(vb: VBoard) -> str:
    return ":".join("%02x" % b for b in vb.spec.mac)


def fw_file(tmp_path: Path, board: Board) -> Path:
    path = tmp_path / ("fw-%s.bin" % board.name)
    path.write_bytes(firmware.build_firmware(board))
    return path


def booted(vb: VBoard, timeout: float = 15) -> None:
    """Wait for the REPL prompt after flashing (Enter keys, never a Ctrl-C, while the VM
    starts: see tests/e2e/test_flash.py)."""
    with serial.Serial(vb.port, 115200, timeout=0.1) as p:
        end, buf = time.monotonic() + timeout, b""
        while b">>> " not in buf:
            assert time.monotonic() < end, "no REPL prompt: %r" % buf[-300:]
            p.write(b"\r\n")
            buf += p.read(4096)


def console(port: str, seconds: float) -> bytes:
    """What the board prints over `seconds` (opening a pty resets nothing)."""
    with serial.Serial(port, 115200, timeout=0.1) as p:
        end, buf = time.monotonic() + seconds, b""
        while time.monotonic() < end:
            buf += p.read(4096)
    return buf


def read_until(port: serial.Serial, marker: bytes, timeout: float = 10) -> bytes:
    end, buf = time.monotonic() + timeout, b""
    while marker not in buf:
        assert time.monotonic() < end, "no %r: %r" % (marker, buf[-300:])
        buf += port.read(4096)
    return buf


def digest(vb: VBoard) -> str:
    return hashlib.sha256(vb.flash.read_bytes()).hexdigest()


def test_esptool_detects_the_chip_and_writes_the_firmware_at_0x0(
    make_vboard, board: Board, tmp_path: Path
) -> None:
    chip = CHIPS[board.name]
    vb = make_vboard(firmware=False, board=board.name)
    text = console(vb.port, 1.5)  # blank: the chip's ROM loops on the empty flash
    loop = chip.rom + chip.loop_reset + chip.spi_boot + b"invalid header: 0xffffffff\r\n"
    assert loop in text
    out = esptool(vb.port, "chip-id").stdout
    assert f"Detecting chip type... {chip.name}" in out
    assert f"Chip type:          {chip.description}" in out
    assert out.count(f"MAC:                {mac_of(vb)}") == 2  # from the ROM, then the stub
    out = esptool(vb.port, "read-mac").stdout
    assert mac_of(vb) in out.split()
    out = esptool(vb.port, "flash-id").stdout
    assert "Manufacturer: ef" in out and f"Detected flash size: {chip.flash}" in out
    out = esptool(vb.port, "get-security-info").stdout
    assert f"Chip ID: {chip.chip_id}" in out and "Secure Boot: Disabled" in out

    fw = fw_file(tmp_path, board)
    data = fw.read_bytes()
    out = esptool(vb.port, "write-flash", "0x0", str(fw)).stdout
    assert "Hash of data verified" in out
    flash = vb.flash.read_bytes()
    assert flash[: len(data)] == data  # at 0x0, not at the ESP32's 0x1000
    # the bootloader image header at 0x0: magic, and the chip id of the extended header
    assert flash[0] == 0xE9 and struct.unpack_from("<H", flash, 12)[0] == chip.chip_id
    assert flash[len(data) : len(data) + 0x1000] == b"\xff" * 0x1000

    out = esptool(vb.port, "verify-flash", "0x0", str(fw)).stdout
    assert "Verification successful" in out
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[:0x9000] + bytes([data[0x9000] ^ 1]) + data[0x9001:])
    res = esptool(vb.port, "verify-flash", "0x0", str(bad), check=False)
    assert res.returncode != 0 and "Verification failed" in res.stdout + res.stderr

    booted(vb)  # the port closing after esptool's session reset the chip: it boots
    assert on_board(vb, "print(6 * 7)") == "42"
    with serial.Serial(vb.port, 115200, timeout=0.2) as p:  # machine.reset(), watched
        p.write(b"\r\x03\r\x01")
        read_until(p, b"raw REPL; CTRL-B to exit\r\n>")
        p.write(b"import machine; machine.reset()\x04")
        text = read_until(p, b"MicroPython")
    # the chip's ROM header, then a software reset in its words, then a boot from flash
    assert chip.rom + b"rst:0xc (RTC_SW_CPU_RST)," + chip.spi_boot in text


def test_edgeveil_flash_deploy_and_provision(make_vboard, board: Board, tmp_path: Path) -> None:
    description = CHIPS[board.name].description
    vb = make_vboard(firmware=False, board=board.name)
    fw = fw_file(tmp_path, board)
    res = edgeveil(
        tmp_path, "flash", "--board", board.name, "--port", vb.port, "--firmware", str(fw)
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{vb.port}: {description} {mac_of(vb)}: ")
    assert "micropython v1.29.0-edgeveil-virtual at 0x0" in res.stdout
    data = fw.read_bytes()
    assert vb.flash.read_bytes()[: len(data)] == data
    booted(vb)
    assert tool("mpremote", "connect", vb.port, "exec", "print(1)").stdout.strip() == "1"

    assert edgeveil(tmp_path, "init").returncode == 0
    dep = edgeveil(tmp_path, "deploy", "--port", vb.port, "--board", board.name, "--json")
    assert dep.returncode == 0, dep.stderr
    code_hash = json.loads(dep.stdout)["code_hash"]
    assert on_board(vb, "print(open('/app/current').read())") in ("a", "b")
    res = edgeveil(tmp_path, "provision", "--port", vb.port, "--board", board.name)
    assert res.returncode == 0, res.stderr
    with Registry.open(tmp_path / "reg.db") as reg:
        (dev,) = reg.list()
        secrets = reg.secrets(dev.dev_id)
    assert dev.board == board.name and dev.status == "active" and dev.code_hash == code_hash
    assert nvs_blob(vb, "dev_id") == secrets.dev_id.hex()  # the board holds the keys


def test_factory_provisions_a_blank_c3(make_vboard, tmp_path: Path) -> None:
    c3 = load_board("esp32c3-virtual")
    vb = make_vboard(firmware=False, board=c3.name)
    fw = fw_file(tmp_path, c3)
    assert edgeveil(tmp_path, "init").returncode == 0
    res = edgeveil(
        tmp_path, "provision", "--factory", "--board", c3.name, "--firmware", str(fw),
        "--port", vb.port, "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "active"
    offsets = {r["offset"] for r in report["regions"]}
    assert {0x0, 0x9000, 0x200000} <= offsets  # firmware at 0x0, NVS, the vfs partition
    data = fw.read_bytes()
    assert vb.flash.read_bytes()[:0x8000] == data[:0x8000]  # the bootloader, at 0x0
    with Registry.open(tmp_path / "reg.db") as reg:
        rec = reg.get(report["dev_id"])
        secrets = reg.secrets(report["dev_id"])
    assert rec.board == c3.name and rec.status == "active"
    assert nvs_blob(vb, "cose_key") == secrets.cose_key.hex()
    assert on_board(vb, "import veil\nprint(veil.__file__)").endswith("/veil/__init__.mpy")


def test_wrong_chip_is_refused_both_ways(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard(board="esp32s3-virtual")
    on_board(vb, "pass")  # let the board format its filesystem before taking the digest
    before = digest(vb)
    esp32_fw = fw_file(tmp_path, load_board("esp32-virtual"))

    # An ESP32 image for the S3 board file: refused before the port is opened.
    res = edgeveil(
        tmp_path, "flash", "--board", "esp32s3-virtual", "--port", vb.port,
        "--firmware", str(esp32_fw), "--erase",
    )  # fmt: skip
    assert res.returncode == 2
    assert "image is for esp32 (chip id 0), board is esp32s3" in res.stderr
    # esptool itself reads the chip id and revision and refuses it at the bootloader offset.
    res = esptool(vb.port, "write-flash", "0x0", str(esp32_fw), check=False)
    assert res.returncode != 0 and "is not an ESP32-S3 image" in res.stdout + res.stderr
    # The ESP32 board file against the S3 that answers: wrong chip, nothing written.
    res = edgeveil(
        tmp_path, "flash", "--board", "esp32-virtual", "--port", vb.port,
        "--firmware", str(esp32_fw), "--erase",
    )  # fmt: skip
    assert res.returncode == 2
    assert (
        f"{vb.port}: wrong chip: an ESP32-S3 answered, board esp32-virtual is esp32; "
        "nothing was written" in res.stderr
    )
    assert digest(vb) == before
    booted(vb)
    assert on_board(vb, "print('still here')") == "still here"
