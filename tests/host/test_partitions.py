"""The binary partition table (edgeveil.partitions).

No partition-table parser ships with esptool or esp-idf-nvs-partition-gen, and ESP-IDF's
gen_esp32part.py is not installed, so the oracle is the format itself: the expected bytes
below were written by hand from ESP-IDF's "Partition Tables" documentation (32-byte entries
`AA 50 type subtype offset size label[16] flags`, little-endian; an `EB EB` + 14 x FF + MD5
entry; 0xFF to 0xC00), and the MD5 comes from hashlib.
"""

from __future__ import annotations

import hashlib

import pytest
from edgeveil.boards import load_board, parse_board
from edgeveil.errors import ImageError
from edgeveil.partitions import (
    Partition,
    boot_app_partition,
    decode_table,
    encode_table,
    find_partition,
    table_for_board,
)

# MicroPython's ESP32_GENERIC layout (partitions-4MiB.csv), which boards/esp32-generic.toml
# follows: nvs data/nvs 0x9000+0x6000, phy_init data/phy 0xf000+0x1000, factory
# app/factory 0x10000+0x1f0000, vfs data/fat 0x200000+0x200000.
ENTRIES = bytes.fromhex(
    "aa50 01 02 00900000 00600000 6e7673000000000000000000 00000000 00000000"
    "aa50 01 01 00f00000 00100000 7068795f696e697400000000 00000000 00000000"
    "aa50 00 00 00000100 00001f00 666163746f72790000000000 00000000 00000000"
    "aa50 01 81 00002000 00002000 766673000000000000000000 00000000 00000000"
)
MD5_ENTRY = b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(ENTRIES).digest()
TABLE = ENTRIES + MD5_ENTRY + b"\xff" * (0xC00 - len(ENTRIES) - 32)


def test_board_table_matches_hand_written_bytes() -> None:
    assert len(ENTRIES) == 4 * 32
    assert table_for_board(load_board("esp32-generic")) == TABLE


def test_decode_hand_written_table() -> None:
    assert decode_table(TABLE) == [
        Partition("nvs", "data", "nvs", 0x9000, 0x6000),
        Partition("phy_init", "data", "phy", 0xF000, 0x1000),
        Partition("factory", "app", "factory", 0x10000, 0x1F0000),
        Partition("vfs", "data", "fat", 0x200000, 0x200000),
    ]
    # Reading the whole 4 KiB sector (as the bootloader may) changes nothing.
    assert decode_table(TABLE + b"\xff" * 0x400) == decode_table(TABLE)


def test_round_trip_of_every_kind_of_entry() -> None:
    parts = [
        Partition("nvs", "data", "nvs", 0x9000, 0x4000),
        Partition("otadata", "data", "ota", 0xD000, 0x2000),
        Partition("phy_init", "data", "phy", 0xF000, 0x1000, readonly=True),
        Partition("ota_0", "app", "ota_0", 0x10000, 0x100000, encrypted=True),
        Partition("ota_15", "app", "ota_15", 0x110000, 0x100000),
        Partition("sixteen_chars_ab", "data", "littlefs", 0x210000, 0x1000),
        Partition("custom", "0x40", "0x07", 0x211000, 0x1000),
        Partition("keys", "data", "nvs_keys", 0x212000, 0x1000, encrypted=True),
    ]
    data = encode_table(parts)
    assert decode_table(data) == parts
    assert data[5 * 32 + 12 : 5 * 32 + 28] == b"sixteen_chars_ab"  # no NUL when 16 bytes
    assert data[2 * 32 + 28 : 2 * 32 + 32] == b"\x02\x00\x00\x00"  # readonly is bit 1
    assert data[3 * 32 + 2 : 3 * 32 + 4] == b"\x00\x10"  # app, ota_0 = 0x10
    assert data[7 * 32 + 28] == 1  # encrypted is bit 0


def test_boot_app_is_factory_else_lowest_ota() -> None:
    ota = [
        Partition("b", "app", "ota_1", 0x110000, 0x100000),
        Partition("a", "app", "ota_0", 0x10000, 0x100000),
    ]
    assert boot_app_partition(ota) == ota[1]
    with_factory = [*ota, Partition("f", "app", "factory", 0x210000, 0x10000)]
    assert boot_app_partition(with_factory) == with_factory[2]
    assert boot_app_partition([Partition("nvs", "data", "nvs", 0x9000, 0x6000)]) is None
    assert find_partition(decode_table(TABLE), "vfs").offset == 0x200000
    with pytest.raises(ImageError, match="no partition named 'x'"):
        find_partition(ota, "x")


def test_bad_magic_names_the_entry() -> None:
    data = bytearray(TABLE)
    data[2 * 32] = 0xAB
    with pytest.raises(ImageError, match=r"entry 2 .*bad magic ab 50"):
        decode_table(bytes(data))


def test_md5_mismatch_is_rejected() -> None:
    data = bytearray(TABLE)
    data[32 + 8] ^= 0x10  # phy_init's size; its magic is still right
    with pytest.raises(ImageError, match=r"entry 4 .*MD5 mismatch"):
        decode_table(bytes(data))


def test_table_without_md5_or_end_is_rejected() -> None:
    no_md5 = ENTRIES + b"\xff" * (0xC00 - len(ENTRIES))
    with pytest.raises(ImageError, match="without an MD5 entry"):
        decode_table(no_md5)
    with pytest.raises(ImageError, match="no end marker"):
        decode_table(ENTRIES + MD5_ENTRY)
    with pytest.raises(ImageError, match="entry 0 .*without an MD5"):
        decode_table(b"\xff" * 0xC00)  # an erased sector


def test_overlap_in_a_table_names_both_entries() -> None:
    entries = bytearray(ENTRIES)
    entries[3 * 32 + 4 : 3 * 32 + 8] = (0x1F0000).to_bytes(4, "little")  # vfs into factory
    entries[3 * 32 + 8 : 3 * 32 + 12] = (0x1000).to_bytes(4, "little")
    data = bytes(entries) + b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(entries).digest()
    with pytest.raises(ImageError, match=r"entry 3 \('vfs'\) at 0x1f0000 overlaps entry 2"):
        decode_table(data + b"\xff" * 64)


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (Partition("app", "app", "factory", 0x18000, 0x10000), "not aligned to 0x10000"),
        (Partition("d", "data", "nvs", 0x9800, 0x1000), "not aligned to 0x1000"),
        (Partition("low", "data", "nvs", 0x8000, 0x1000), "below the end of the partition"),
        (Partition("x" * 17, "data", "nvs", 0x300000, 0x1000), "1-16 bytes"),
        (Partition("t", "data", "nope", 0x300000, 0x1000), "unknown partition data subtype"),
        (Partition("t", "blob", "nvs", 0x300000, 0x1000), "unknown partition type"),
        (Partition("nvs", "data", "nvs", 0x300000, 0x1000), "duplicate name"),
    ],
)
def test_encode_refuses_bad_layouts(part: Partition, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        encode_table([*decode_table(TABLE)[:1], part])


def test_board_without_partitions() -> None:
    board = parse_board(
        {
            "name": "bare",
            "chip": "esp32",
            "flash_size": 0x400000,
            "firmware_offset": 0x1000,
            "mpy_arch": "xtensawin",
            "heap_bytes": 1,
            "sources": [],
            "transports": [],
        },
        "test",
    )
    with pytest.raises(ImageError, match="defines no partitions"):
        table_for_board(board)
