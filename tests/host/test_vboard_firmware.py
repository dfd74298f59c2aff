"""The virtual board's labelled firmware and its boot decision (edgeveil.vboard.firmware).

esptool is the oracle for the images and for the combined layout (`esptool merge-bin` of
the three pieces must give the same file); the boot decision is checked on flash contents
built here, including ones esptool made and corruptions of each part.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from edgeveil.boards import Board, load_board
from edgeveil.esp_image import AppDesc, build_image, check_firmware, parse_image
from edgeveil.partitions import table_for_board
from edgeveil.vboard import firmware
from edgeveil.vm import run_code
from esptool.bin_image import LoadFirmwareImage

BOARD = load_board("esp32-generic")


def esptool(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "esptool", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def flash_with(pieces: dict[int, bytes], board: Board = BOARD) -> bytearray:
    flash = bytearray(b"\xff" * board.flash_size)
    for offset, data in pieces.items():
        flash[offset : offset + len(data)] = data
    return flash


def boot(flash: bytes | bytearray, board: Board = BOARD) -> firmware.BootDecision:
    return firmware.boot_check(lambda off, n: bytes(flash[off : off + n]), board)


def test_firmware_is_what_esptool_merge_bin_makes(tmp_path: Path) -> None:
    pieces = {
        0x1000: firmware.build_bootloader("esp32"),
        0x8000: table_for_board(BOARD),
        0x10000: firmware.build_app("esp32"),
    }
    args = ["--chip", "esp32", "merge-bin", "-o", str(tmp_path / "m.bin"), "-t", "0x1000"]
    for addr, data in pieces.items():
        (tmp_path / f"{addr:x}.bin").write_bytes(data)
        args += [hex(addr), str(tmp_path / f"{addr:x}.bin")]
    esptool(*args)
    assert firmware.build_firmware(BOARD) == (tmp_path / "m.bin").read_bytes()
    out = firmware.write_firmware_file(BOARD, tmp_path / "fw.bin")
    assert out.read_bytes() == firmware.build_firmware(BOARD)


def test_images_are_valid_for_esptool_and_clearly_labelled(tmp_path: Path) -> None:
    for chip in ("esp32", "esp32s3", "esp32c3"):
        boot_img, app_img = firmware.build_bootloader(chip), firmware.build_app(chip)
        for data in (boot_img, app_img):
            theirs = LoadFirmwareImage(chip, data)
            assert theirs.checksum == theirs.calculate_checksum()
            assert theirs.stored_digest == theirs.calc_digest
        assert "runs only on the edgeveil virtual board" in boot_img.decode("latin-1")
        assert "runs only on the edgeveil" in app_img.decode("latin-1")
    (tmp_path / "app.bin").write_bytes(firmware.build_app("esp32"))
    out = esptool("image-info", str(tmp_path / "app.bin"))
    assert "Project name: micropython" in out
    assert f"App version: {firmware.VERSION}" in out
    (tmp_path / "boot.bin").write_bytes(firmware.build_bootloader("esp32"))
    out = esptool("image-info", str(tmp_path / "boot.bin"))
    assert "Bootloader Information" in out and "edgeveil" in out


def test_version_pins_the_vms_micropython() -> None:
    result = run_code(
        "import sys; print('v%d.%d.%d' % sys.implementation.version[:3])", 65536, path=[]
    )
    assert firmware.VERSION.startswith(result.stdout.decode().strip() + "-edgeveil")


def test_firmware_passes_check_firmware() -> None:
    info = check_firmware(firmware.build_firmware(BOARD), "esp32")
    assert info.kind == "combined" and info.write_offset(BOARD) == 0x1000
    assert info.app_desc.project_name == "micropython"
    assert firmware.is_virtual_app(info.app)


def test_boot_with_the_virtual_firmware() -> None:
    d = boot(flash_with({0x1000: firmware.build_firmware(BOARD)}))
    assert d.ok and d.virtual_micropython and d.kind == "ok"
    assert d.app_desc is not None and d.app_desc.version == firmware.VERSION
    assert d.app_partition is not None and d.app_partition.offset == 0x10000
    lines = d.console.decode().split("\r\n")
    assert lines[0] == "configsip: 0, SPIWP:0xee"
    assert "mode:DIO, clock div:2" in lines
    assert lines[-2] == "entry 0x40080400" and lines[-1] == ""
    assert d.reboot_cause is None


def test_blank_flash_prints_the_rom_invalid_header_loop() -> None:
    d = boot(flash_with({}))
    assert d.kind == "invalid_header" and not d.ok
    assert d.console == b"invalid header: 0xffffffff\r\n" * 7
    assert d.reboot_cause == "RTCWDT_RTC_RESET"
    garbage = boot(flash_with({0x1000: bytes.fromhex("1617 7ef3")}))
    assert garbage.message == "invalid header: 0xf37e1716"  # the word, little-endian


def test_erased_app_partition_is_not_bootable() -> None:
    fw = firmware.build_firmware(BOARD)
    flash = flash_with({0x1000: fw})
    flash[0x10000:0x20000] = b"\xff" * 0x10000  # esptool erase-region 0x10000 0x10000
    d = boot(flash)
    assert d.kind == "no_app" and not d.virtual_micropython
    text = d.console.decode()
    assert "image at 0x10000 has invalid magic byte (nothing flashed here?)" in text
    assert "Factory app partition is not bootable" in text
    assert d.reboot_cause == "SW_RESET"


@pytest.mark.parametrize(
    ("where", "kind", "text"),
    [
        (0x1000 + 0x20, "bootloader", "csum err:"),  # bootloader segment data
        (0x8000 + 0x28, "partition_table", "MD5 mismatch"),
        (0x10000 + 0x40, "no_app", "Checksum failed"),
        (0x10000 + 0x216, "no_app", "Checksum failed"),  # the IRAM segment
        (0x10000 + 0x210, "no_app", "Image hash failed"),  # padding: only the digest
    ],
)
def test_corruption_is_caught_where_it_is(where: int, kind: str, text: str) -> None:
    flash = flash_with({0x1000: firmware.build_firmware(BOARD)})
    flash[where] ^= 0x01
    d = boot(flash)
    assert d.kind == kind and text in d.console.decode(), d.console


def test_app_digest_corruption() -> None:
    flash = flash_with({0x1000: firmware.build_firmware(BOARD)})
    end = 0x10000 + parse_image(bytes(flash[0x10000:])).length
    flash[end - 1] ^= 0x01
    d = boot(flash)
    assert d.kind == "no_app" and "Image hash failed" in d.console.decode()


def test_app_for_another_chip() -> None:
    flash = flash_with(
        {0x1000: firmware.build_firmware(BOARD), 0x10000: firmware.build_app("esp32s3")}
    )
    d = boot(flash)
    assert d.kind == "no_app" and "mismatch chip ID, expected 0, found 9" in d.console.decode()


def test_a_real_app_boots_but_is_not_the_virtual_micropython() -> None:
    real = build_image(
        "esp32",
        [(0x3F400020, b"rodata"), (0x40080000, b"\x00" * 8)],
        entry=0x40080000,
        app_desc=AppDesc(project_name="micropython", version="v1.24.1", idf_ver="v5.2.2"),
    )
    d = boot(flash_with({0x1000: firmware.build_firmware(BOARD), 0x10000: real}))
    assert d.ok and not d.virtual_micropython
    assert "cannot run the app 'micropython' v1.24.1" in d.console.decode()


def test_misplaced_flash_segment_is_refused() -> None:
    # The DROM segment says 0x3f400040 but sits at flash 0x10020: the MMU cannot map it.
    app = bytearray(firmware.build_app("esp32"))
    app[24:28] = (0x3F400040).to_bytes(4, "little")  # segment 0's load address
    app[-32:] = hashlib.sha256(app[:-32]).digest()  # the header is under the digest
    d = boot(flash_with({0x1000: firmware.build_firmware(BOARD), 0x10000: bytes(app)}))
    assert d.kind == "no_app"
    assert "Segment load address 0x3f400040, doesn't match data 0x00010020" in d.console.decode()


# The later chips' virtual boards: esptool's name for the chip, the header's flash size,
# and the reset that ends each round of the ROM's invalid-header loop.
LATER = {
    "esp32s3-virtual": ("ESP32-S3", "8MB", "TG0WDT_SYS_RESET"),
    "esp32c3-virtual": ("ESP32-C3", "4MB", "RTCWDT_RTC_RESET"),
}


@pytest.mark.parametrize("name", sorted(LATER))
def test_later_chip_firmware_goes_at_0x0_and_says_so(name: str, tmp_path: Path) -> None:
    board = load_board(name)
    chip_name, size, _ = LATER[name]
    fw = firmware.build_firmware(board)
    pieces = {
        0x0: firmware.build_bootloader(board.chip, board.flash_size),
        0x8000: table_for_board(board),
        0x10000: firmware.build_app(board.chip, board.flash_size),
    }
    args = ["--chip", board.chip, "merge-bin", "-o", str(tmp_path / "m.bin"), "-t", "0x0"]
    for addr, data in pieces.items():
        (tmp_path / f"{addr:x}.bin").write_bytes(data)
        args += [hex(addr), str(tmp_path / f"{addr:x}.bin")]
    esptool(*args)
    assert fw == (tmp_path / "m.bin").read_bytes()
    out = esptool("image-info", str(tmp_path / "0.bin"))
    assert f"Detected image type: {chip_name}" in out and f"Flash size: {size}" in out
    info = check_firmware(fw, board.chip)
    assert info.kind == "combined" and info.write_offset(board) == 0x0


@pytest.mark.parametrize("name", sorted(LATER))
def test_later_chip_boots_from_0x0_with_its_roms_lines(name: str) -> None:
    board = load_board(name)
    d = boot(flash_with({0x0: firmware.build_firmware(board)}, board), board)
    assert d.ok and d.virtual_micropython and d.app_partition is not None
    lines = d.console.decode().split("\r\n")
    assert lines[0] == "SPIWP:0xee" and lines[1] == "mode:DIO, clock div:2"
    theirs = LoadFirmwareImage(board.chip, firmware.build_bootloader(board.chip))
    assert lines[2:-2] == [f"load:{s.addr:#010x},len:{len(s.data):#x}" for s in theirs.segments]
    assert lines[-2] == f"entry {theirs.entrypoint:#010x}"


@pytest.mark.parametrize("name", sorted(LATER))
def test_later_chip_with_firmware_at_the_esp32_offset_loops(name: str) -> None:
    board = load_board(name)
    d = boot(flash_with({0x1000: firmware.build_firmware(board)}, board), board)
    assert d.kind == "invalid_header" and not d.ok
    assert d.console.startswith(b"invalid header: 0xffffffff\r\n")
    assert d.reboot_cause == LATER[name][2]


def test_vbsys_names_the_chip_as_firmware_does() -> None:
    # vmlib/vbsys.py: sys.implementation._machine as a board's firmware words it (provision
    # reads the chip from it); everything else stays the VM's own.
    code = (
        "import sys\nreal = sys\nimport vbsys\n"
        "vbsys.install('edgeveil esp32s3-virtual with ESP32S3')\n"
        "import sys\n"
        "i = sys.implementation\n"
        "print(i._machine)\n"
        "print(i._mpy == real.implementation._mpy, i.version == real.implementation.version)\n"
        "print(sys is not real, sys.modules is real.modules, sys.path is real.path)\n"
        "print(sys.stdout is real.stdout, sys.platform)\n"
    )
    vmlib = Path(firmware.__file__).parent / "vmlib"
    result = run_code(code, 65536, path=[vmlib])
    assert result.ok, result.stderr
    assert result.stdout.decode().split("\n") == [
        "edgeveil esp32s3-virtual with ESP32S3",
        "True True",
        "True True True",
        "True linux",
        "",
    ]
