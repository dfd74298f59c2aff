"""`edgeveil provision --factory` against blank virtual boards: firmware, keys and code in
one esptool pass, and refusals that leave no device the registry cannot account for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.errors import FlashError, ImageError
from edgeveil.factory import provision_factory
from edgeveil.nvs import read_nvs
from edgeveil.partitions import find_partition
from edgeveil.policy import default_policy
from edgeveil.registry import Registry, init_registry
from edgeveil.vboard import firmware
from vbtest import edgeveil, nvs_blob, on_board

BOARD = load_board("esp32-generic")
S3 = load_board("esp32s3-generic")
NVS = find_partition(BOARD.partitions, "nvs")


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(firmware.build_firmware(BOARD))
    return path


def test_factory_provisions_a_blank_board_in_one_pass(
    make_vboard, fw: Path, tmp_path: Path
) -> None:
    vb = make_vboard(firmware=False)
    assert edgeveil(tmp_path, "init").returncode == 0
    out_dir = tmp_path / "images"
    res = edgeveil(
        tmp_path, "provision", "--factory", "--firmware", str(fw), "--port", vb.port,
        "--out", str(out_dir), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    dev_id = report["dev_id"]
    assert report["status"] == "active"
    assert {r["offset"] for r in report["regions"]} >= {NVS.offset, 0x200000}

    with Registry.open(tmp_path / "reg.db") as reg:
        rec = reg.get(dev_id)
        secrets = reg.secrets(dev_id)
    assert rec.status == "active" and rec.code_hash == report["code_hash"]
    assert rec.board == BOARD.name

    # The board boots MicroPython, its NVS holds the registry's keys, the code imports.
    assert nvs_blob(vb, "dev_id") == secrets.dev_id.hex()
    assert nvs_blob(vb, "cose_key") == secrets.cose_key.hex()
    where = on_board(vb, "import veil\nprint(veil.__file__)")
    assert where == "/app/a/veil/__init__.mpy"
    assert on_board(vb, "print(open('/app/current').read())") == "a"
    # The message counter record (veil.store format: counter 0, sha256 of it[:8]).
    counter = bytes(8) + hashlib.sha256(bytes(8)).digest()[:8]
    assert on_board(vb, "print(open('/veil.ctr', 'rb').read().hex())") == counter.hex()

    # The images kept for a line that flashes elsewhere: owner-only, and the same keys.
    kept = out_dir / dev_id
    nvs_image = (kept / "nvs.bin").read_bytes()
    assert (kept / "nvs.bin").stat().st_mode & 0o077 == 0
    assert read_nvs(nvs_image, strict=True)["veil"]["cose_key"] == secrets.cose_key
    assert len((kept / "vfs.bin").read_bytes()) == 0x200000
    assert f"{NVS.offset:#x} nvs.bin" in (kept / "flash_args").read_text()


def test_wrong_chip_firmware_is_refused_and_records_nothing(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard(firmware=False)
    db = init_registry(tmp_path / "reg.db")
    before = vb.flash.read_bytes()
    s3_fw = tmp_path / "s3.bin"
    s3_fw.write_bytes(firmware.build_firmware(S3))
    with Registry.open(db) as reg:
        # an S3 image for an ESP32 board file: refused before any secret exists
        with pytest.raises(ImageError, match="esp32s3"):
            provision_factory(vb.port, BOARD, reg, default_policy(), s3_fw)
        # a valid S3 image for the S3 board file, but an ESP32 answers: nothing written
        with pytest.raises(FlashError, match="wrong chip"):
            provision_factory(vb.port, S3, reg, default_policy(), s3_fw, out_dir=tmp_path / "o")
        assert reg.list() == []
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.bin"))
    vb.stop()
    assert vb.flash.read_bytes() == before

    res = edgeveil(tmp_path, "provision", "--factory", "--firmware", str(s3_fw), "--port", vb.port)
    assert res.returncode == 2 and "esp32s3" in res.stderr
