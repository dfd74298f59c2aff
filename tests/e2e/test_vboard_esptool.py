"""Unmodified esptool against a running virtual board: the ROM download mode end to end.

Most tests use the pseudo-terminal, where the board infers intent (a SLIP SYNC enters the
loader; the port closing after a session boots from flash). Two use RFC 2217, where
esptool's DTR/RTS reset sequences drive EN and IO0 as on a real auto-reset circuit; they
cost seconds each (pyserial's RFC 2217 client waits 50 ms per line change).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import serial
from edgeveil.boards import load_board
from edgeveil.vboard import firmware
from vbtest import VBoard, tool

BOARD = load_board("esp32-generic")


def esptool(port: str, *args: str, check: bool = True, timeout: float = 120):
    return tool("esptool", "--port", port, *args, check=check, timeout=timeout)


def mac_of(vb: VBoard) -> str:
    return ":".join("%02x" % b for b in vb.spec.mac)


def console(port: str, seconds: float) -> bytes:
    """What the board prints on its UART over `seconds` (opening the port resets nothing)."""
    with serial.serial_for_url(port, 115200, timeout=0.1) as p:
        end = time.monotonic() + seconds
        buf = b""
        while time.monotonic() < end:
            buf += p.read(4096)
    return buf


def wait_for(port: str, marker: bytes, timeout: float = 15) -> bytes:
    with serial.serial_for_url(port, 115200, timeout=0.1) as p:
        end = time.monotonic() + timeout
        buf = b""
        while marker not in buf:
            if time.monotonic() > end:
                raise AssertionError("no %r on the console: %r" % (marker, buf[-300:]))
            buf += p.read(4096)
    return buf


def test_detects_the_chip_mac_and_flash(make_vboard) -> None:
    vb = make_vboard()
    out = esptool(vb.port, "read-mac").stdout
    assert "ESP32-D0WD-V3" in out
    assert mac_of(vb) in out.split()
    out = esptool(vb.port, "flash-id").stdout
    assert "Detected flash size: 4MB" in out
    # the board went back to MicroPython afterwards
    assert tool("mpremote", "connect", vb.port, "exec", "print(7*6)").stdout.strip() == "42"


def test_blank_board_loops_then_boots_what_esptool_writes(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard(firmware=False)
    text = console(vb.port, 1.5)
    assert b"invalid header: 0xffffffff" in text
    assert b"boot:0x13 (SPI_FAST_FLASH_BOOT)" in text
    assert b"MicroPython" not in text

    fw = tmp_path / "fw.bin"
    fw.write_bytes(firmware.build_firmware(BOARD))
    out = esptool(vb.port, "write-flash", "0x1000", str(fw)).stdout
    assert "Hash of data verified" in out
    with open(vb.flash, "rb") as f:
        f.seek(0x1000)
        assert f.read(fw.stat().st_size) == fw.read_bytes()
    res = tool("mpremote", "connect", vb.port, "exec", "import os; print(os.listdir('/'))")
    assert "boot.py" in res.stdout  # the app booted and formatted its filesystem

    # Erase the app's first sector: the bootloader finds no app, and the board loops again.
    esptool(vb.port, "erase-region", "0x10000", "0x1000")
    text = console(vb.port, 1.5)
    assert b"MicroPython" not in text and b"rst:" in text


def test_read_flash_and_erase_flash(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    tool(
        "mpremote",
        "connect",
        vb.port,
        "exec",
        "with open('x.bin','wb') as f: f.write(bytes(range(256)) * 64)",
    )
    out = tmp_path / "vfs.bin"
    esptool(vb.port, "read-flash", "0x200000", "0x20000", str(out))
    assert out.read_bytes() == vb.flash.read_bytes()[0x200000:0x220000]
    assert out.read_bytes() != b"\xff" * 0x20000  # littlefs is really there

    esptool(vb.port, "erase-flash")
    assert (
        hashlib.sha256(vb.flash.read_bytes()).digest()
        == hashlib.sha256(b"\xff" * BOARD.flash_size).digest()
    )


def test_write_flash_of_data_lands_in_the_flash_file(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    data = os.urandom(50_000) + b"compressible" * 3000
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    esptool(vb.port, "write-flash", "0x300000", str(f))
    flash = vb.flash.read_bytes()
    assert flash[0x300000 : 0x300000 + len(data)] == data


def test_esptool_as_a_library_reopens_the_port_at_once(make_vboard) -> None:
    import esptool as lib

    vb = make_vboard()
    for _ in range(3):  # closes and reopens within milliseconds each time
        lib.main(["--port", vb.port, "read-mac"])
    assert tool("mpremote", "connect", vb.port, "exec", "print('alive')").stdout.strip() == "alive"


def test_rfc2217_reset_into_the_bootloader_and_back(make_vboard) -> None:
    vb = make_vboard(rfc2217=True)
    assert vb.rfc2217
    out = esptool(vb.rfc2217, "read-mac").stdout
    assert mac_of(vb) in out.split()
    # esptool's hard reset (an RTS pulse) rebooted the chip into the app.
    res = tool("mpremote", "connect", vb.rfc2217, "exec", "print('back')")
    assert res.stdout.strip() == "back"


def test_rfc2217_lines_follow_the_auto_reset_circuit(make_vboard) -> None:
    vb = make_vboard(rfc2217=True)
    assert vb.rfc2217
    with serial.serial_for_url(vb.rfc2217, 115200, timeout=0.1) as p:
        p.dtr, p.rts = False, True  # EN low: held in reset
        time.sleep(0.2)
        p.dtr, p.rts = True, False  # EN released with IO0 low: download mode
        time.sleep(0.3)
        p.dtr = False
        buf = b""
        end = time.monotonic() + 3
        while b"waiting for download" not in buf and time.monotonic() < end:
            buf += p.read(4096)
        assert b"boot:0x3 (DOWNLOAD_BOOT" in buf and b"waiting for download" in buf
        p.rts = True  # EN low, IO0 high: reset into the app
        time.sleep(0.2)
        p.rts = False
        buf = b""
        end = time.monotonic() + 5
        while b">>> " not in buf and time.monotonic() < end:
            buf += p.read(4096)
        assert b"boot:0x13 (SPI_FAST_FLASH_BOOT)" in buf and b"MicroPython" in buf
