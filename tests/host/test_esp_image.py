"""ESP32-family images (edgeveil.esp_image) against esptool 5.6, the independent oracle.

Both directions: esptool's own parser (`LoadFirmwareImage`, `esptool image-info`) accepts
what `build_image` makes and reads the same fields; `parse_image` reads images esptool's
own writer made. Then the rejections esptool would not make for us: truncated, bad
checksum, bad SHA-256, wrong chip.
"""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.errors import ImageError
from edgeveil.esp_image import AppDesc, build_image, check_firmware, parse_image
from edgeveil.partitions import table_for_board
from esptool.bin_image import (
    ELFSection,
    ESP32C3FirmwareImage,
    ESP32FirmwareImage,
    ESP32S3FirmwareImage,
    LoadFirmwareImage,
)

# Per chip: (esptool image class, chip id from the ESP-IDF docs, a DROM address at image
# offset 0x20 of a 64 KiB page, an IRAM address, a DRAM address).
CHIPS = {
    "esp32": (ESP32FirmwareImage, 0, 0x3F400020, 0x40080000, 0x3FFB0000),
    "esp32s3": (ESP32S3FirmwareImage, 9, 0x3C000020, 0x40374000, 0x3FC90000),
    "esp32c3": (ESP32C3FirmwareImage, 5, 0x3C000020, 0x40380000, 0x3FC90000),
}
DESC = AppDesc(
    project_name="micropython",
    version="v1.24.1",
    idf_ver="v5.2.2",
    date="Dec  1 2024",
    time="12:34:56",
    secure_version=3,
    app_elf_sha256=hashlib.sha256(b"elf").digest(),
)


def esptool(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "esptool", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def raw_app_desc(project: bytes, version: bytes) -> bytes:
    """esp_app_desc_t written field by field from the ESP-IDF docs (not from edgeveil)."""
    return (
        struct.pack("<II", 0xABCD5432, 0)
        + bytes(8)
        + version.ljust(32, b"\0")
        + project.ljust(32, b"\0")
        + b"01:02:03".ljust(16, b"\0")
        + b"Jan  2 2025".ljust(16, b"\0")
        + b"v5.4".ljust(32, b"\0")
        + bytes(32)
        + bytes(4 + 1 + 3 + 72)
    )


def sample_app(chip: str, size: int = 1000) -> bytes:
    _, _, drom, iram, dram = CHIPS[chip]
    body = bytes(range(256)) * (size // 256 + 1)
    return build_image(
        chip,
        [(drom, b"rodata" * 10), (iram, body[:size]), (dram, b"\x01\x02\x03")],
        entry=iram + 0x100,
        app_desc=DESC,
    )


@pytest.mark.parametrize("chip", CHIPS)
def test_esptool_parses_what_we_build(chip: str) -> None:
    cls, chip_id, drom, iram, dram = CHIPS[chip]
    data = sample_app(chip)
    image = LoadFirmwareImage(chip, data)
    assert isinstance(image, cls)
    assert image.chip_id == chip_id
    assert image.entrypoint == iram + 0x100
    assert [s.addr for s in image.segments] == [drom, iram, dram]
    assert image.segments[1].data == (bytes(range(256)) * 4)[:1000]
    assert image.segments[2].data == b"\x01\x02\x03\x00"  # padded to 4 bytes
    assert image.checksum == image.calculate_checksum()
    assert image.append_digest and image.stored_digest == image.calc_digest
    assert image.data_length + 32 == len(data)
    assert image.flash_mode == 2 and image.flash_size_freq == 0x20  # DIO, 4MB, 40m


@pytest.mark.parametrize("chip", CHIPS)
def test_image_info_agrees_on_fields(chip: str, tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(sample_app(chip))
    out = esptool("image-info", str(path))
    ours = parse_image(path.read_bytes())
    assert f"Chip ID: {ours.chip_id} " in out
    assert f"Entry point: {ours.entry:#8x}" in out
    assert f"Segments: {len(ours.segments)}" in out
    assert re.search(rf"Checksum: {ours.checksum:#04x} \(valid\)", out)
    assert f"Validation hash: {hashlib.sha256(path.read_bytes()[:-32]).hexdigest()} (valid)" in out
    assert "Project name: micropython" in out and "App version: v1.24.1" in out
    assert "Compile time: Dec  1 2024 12:34:56" in out and "ESP-IDF: v5.2.2" in out
    assert f"ELF file SHA256: {hashlib.sha256(b'elf').hexdigest()}" in out
    assert "Secure version: 3" in out
    for seg in ours.segments:  # esptool's "File offs" is the 8-byte segment header's
        assert f"{len(seg.data):#07x}  {seg.addr:#010x}  {seg.file_offset - 8:#010x}" in out


@pytest.mark.parametrize("chip", CHIPS)
def test_we_parse_what_esptool_builds(chip: str) -> None:
    cls, chip_id, drom, iram, dram = CHIPS[chip]
    made = cls()
    made.entrypoint = iram + 4
    made.segments = [
        ELFSection(b".flash.appdesc", drom, raw_app_desc(b"myproj", b"1.2.3") + b"\xaa" * 40, 0),
        ELFSection(b".iram0.text", iram, bytes(range(200)), 0),
        ELFSection(b".dram0.data", dram, b"\x55" * 64, 0),
    ]
    data = made.save(None)
    ours = parse_image(data, chip)
    assert ours.chip == chip and ours.chip_id == chip_id
    assert ours.entry == iram + 4
    reread = LoadFirmwareImage(chip, data)
    assert [(s.addr, s.data) for s in ours.segments] == [(s.addr, s.data) for s in reread.segments]
    assert ours.checksum_ok and ours.sha256_ok and ours.length == len(data)
    assert ours.app_desc is not None
    assert (ours.app_desc.project_name, ours.app_desc.version) == ("myproj", "1.2.3")
    assert (ours.app_desc.date, ours.app_desc.time, ours.app_desc.idf_ver) == (
        "Jan  2 2025",
        "01:02:03",
        "v5.4",
    )


def test_esptool_image_without_digest() -> None:
    made = ESP32FirmwareImage(append_digest=False)
    made.entrypoint = 0x40080000
    made.segments = [ELFSection(b".iram0.text", 0x40080000, b"\x01" * 16, 0)]
    ours = parse_image(made.save(None))
    assert not ours.hash_appended and ours.sha256 is None and ours.sha256_ok is None
    assert ours.checksum_ok and ours.app_desc is None


def test_not_an_image() -> None:
    with pytest.raises(ImageError, match=r"not an ESP image: first byte 0xff \(expected 0xe9\)"):
        parse_image(b"\xff" * 64)
    with pytest.raises(ImageError, match="empty"):
        parse_image(b"")


def test_truncated_anywhere_is_rejected() -> None:
    data = sample_app("esp32")
    for cut in (1, 8, 23, 24, 30, 0x100, len(data) - 33, len(data) - 32, len(data) - 1):
        with pytest.raises(ImageError, match="truncated"):
            parse_image(data[:cut])
    parse_image(data + b"\xff" * 100)  # trailing bytes (the rest of a partition) are fine


def test_bad_checksum_is_rejected_and_reported_like_esptool(tmp_path: Path) -> None:
    data = bytearray(sample_app("esp32", 64))
    digest_at = len(data) - 32
    data[digest_at - 1] ^= 0x5A  # the checksum byte, and so the digest too
    with pytest.raises(ImageError, match="checksum mismatch"):
        parse_image(bytes(data))
    ours = parse_image(bytes(data), verify=False)
    theirs = LoadFirmwareImage("esp32", bytes(data))
    assert ours.checksum_ok is False and theirs.checksum != theirs.calculate_checksum()
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    assert "invalid - calculated" in esptool("image-info", str(path))


def test_bad_sha256_is_rejected() -> None:
    data = bytearray(sample_app("esp32s3"))
    data[-1] ^= 1
    with pytest.raises(ImageError, match="SHA-256 mismatch"):
        parse_image(bytes(data))
    ours = parse_image(bytes(data), verify=False)
    theirs = LoadFirmwareImage("esp32s3", bytes(data))
    assert ours.checksum_ok and ours.sha256_ok is False
    assert theirs.stored_digest != theirs.calc_digest


def test_segment_data_change_is_caught_by_checksum_and_digest() -> None:
    data = bytearray(sample_app("esp32c3"))
    data[0x120] ^= 0x01
    ours = parse_image(bytes(data), verify=False)
    assert not ours.checksum_ok and ours.sha256_ok is False


def test_wrong_chip_is_named() -> None:
    with pytest.raises(ImageError, match=r"^image is for esp32s3 \(chip id 9\), board is esp32$"):
        parse_image(sample_app("esp32s3"), "esp32")
    unknown = bytearray(sample_app("esp32"))
    unknown[12] = 77
    with pytest.raises(ImageError, match="unknown chip id 77"):
        parse_image(bytes(unknown))


def test_build_refuses_misplaced_flash_segment() -> None:
    with pytest.raises(ImageError, match="flash-mapped"):
        build_image("esp32", [(0x3F400000, b"x" * 4)], entry=0x40080000)


def _merge(tmp_path: Path, chip: str, offset: int, pieces: dict[int, bytes]) -> bytes:
    args = ["--chip", chip, "merge-bin", "-o", str(tmp_path / "merged.bin"), "-t", hex(offset)]
    for addr, data in pieces.items():
        path = tmp_path / f"{addr:x}.bin"
        path.write_bytes(data)
        args += [hex(addr), str(path)]
    esptool(*args)
    return (tmp_path / "merged.bin").read_bytes()


def _bootloader(chip: str) -> bytes:
    _, _, _, iram, dram = CHIPS[chip]
    return build_image(chip, [(dram, b"boot" * 20), (iram, b"\x00" * 8)], entry=iram)


def test_combined_file_merged_by_esptool(tmp_path: Path) -> None:
    board = load_board("esp32-generic")
    app = sample_app("esp32")
    merged = _merge(
        tmp_path,
        "esp32",
        0x1000,
        {0x1000: _bootloader("esp32"), 0x8000: table_for_board(board), 0x10000: app},
    )
    info = check_firmware(merged, "esp32")
    assert info.kind == "combined" and info.chip == "esp32"
    assert info.app_desc == DESC
    assert info.app_partition is not None and info.app_partition.offset == 0x10000
    assert info.bootloader is not None and info.bootloader.app_desc is None
    assert info.write_offset(board) == 0x1000
    assert [p.name for p in info.partitions] == ["nvs", "phy_init", "factory", "vfs"]
    pieces = info.regions(board)
    assert [(at, len(data)) for at, data in pieces] == [
        (0x1000, len(_bootloader("esp32"))),
        (0x8000, 0xC00),
        (0x10000, len(app)),
    ]
    assert pieces[0][1] == _bootloader("esp32") and pieces[2][1] == app
    # esptool merges the pieces back into the same file.
    assert _merge(tmp_path, "esp32", 0x1000, dict(pieces)) == merged


def test_bare_app_goes_to_the_factory_partition() -> None:
    board = load_board("esp32-generic")
    info = check_firmware(sample_app("esp32"), "esp32")
    assert info.kind == "app" and info.bootloader is None
    assert info.write_offset(board) == 0x10000
    assert info.regions(board) == [(0x10000, sample_app("esp32"))]


def test_combined_file_failures(tmp_path: Path) -> None:
    board = load_board("esp32-generic")
    pieces = {0x1000: _bootloader("esp32"), 0x8000: table_for_board(board)}
    good = _merge(tmp_path, "esp32", 0x1000, {**pieces, 0x10000: sample_app("esp32")})

    with pytest.raises(ImageError, match="before the app partition 'factory'"):
        check_firmware(good[:0xF000], "esp32")
    bad_table = bytearray(good)
    bad_table[0x7000 + 40] ^= 1  # inside entry 1: the MD5 no longer matches
    with pytest.raises(ImageError, match="^partition table: .*MD5"):
        check_firmware(bytes(bad_table), "esp32")
    bad_app = bytearray(good)
    bad_app[0xF000 + 0x40] ^= 1
    with pytest.raises(ImageError, match=r"^app at 0x10000: checksum mismatch"):
        check_firmware(bytes(bad_app), "esp32")
    with pytest.raises(ImageError, match="neither an app nor a combined"):
        check_firmware(_bootloader("esp32"), "esp32")
    no_desc = build_image("esp32", [(0x40080000, b"\x00" * 8)], entry=0x40080000)
    with pytest.raises(ImageError, match="no app descriptor"):
        check_firmware(good[:0xF000] + no_desc, "esp32")


def test_wrong_chip_firmware_is_refused_before_anything_else(tmp_path: Path) -> None:
    board = load_board("esp32-generic")
    s3 = _merge(
        tmp_path,
        "esp32s3",
        0x0,
        {
            0x0: _bootloader("esp32s3"),
            0x8000: table_for_board(board),
            0x10000: sample_app("esp32s3"),
        },
    )
    with pytest.raises(ImageError, match=r"image is for esp32s3 \(chip id 9\), board is esp32"):
        check_firmware(s3, "esp32")
    info = check_firmware(s3, "esp32s3")
    assert info.kind == "combined" and info.app_desc == DESC
    with pytest.raises(ImageError, match="board esp32-generic is esp32"):
        info.write_offset(board)
