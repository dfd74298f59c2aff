"""A real board on EDGEVEIL_PORT (skipped otherwise): the desk flow as on the virtual board.

    EDGEVEIL_PORT=/dev/ttyUSB0 .venv/bin/pytest tests/e2e/test_hardware.py
    EDGEVEIL_PORT=/dev/ttyUSB0 EDGEVEIL_BOARD=esp32s3-generic \\
        EDGEVEIL_FIRMWARE=ESP32_GENERIC_S3.bin .venv/bin/pytest tests/e2e/test_hardware.py

EDGEVEIL_BOARD names the board file (default esp32-generic). The board's firmware is only
rewritten when EDGEVEIL_FIRMWARE gives a MicroPython image (its NVS and filesystem are
kept: no --erase); deploy and provision (with --force: the board's keys are replaced,
into a registry made for the test) always run. The same tests pass against a virtual
board (`edgeveil vboard start --detach`, EDGEVEIL_BOARD=esp32-virtual).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.link import open_link
from edgeveil.provision import read_device
from edgeveil.registry import Registry
from vbtest import edgeveil

pytestmark = pytest.mark.hardware

PORT = os.environ.get("EDGEVEIL_PORT", "")
BOARD = os.environ.get("EDGEVEIL_BOARD", "esp32-generic")


def test_the_board_answers_as_its_board_file_says() -> None:
    board = load_board(BOARD)
    with open_link(PORT) as link:
        info = link.device_info()
        assert info["arch"] == board.mpy_arch, info
        assert link.eval("6 * 7") == 42
        labels = link.eval("[p.info()[4] for p in __import__('esp32').Partition.find(1)]")
    assert "nvs" in labels and "vfs" in labels


def test_flash_writes_and_verifies_the_firmware_given() -> None:
    firmware = os.environ.get("EDGEVEIL_FIRMWARE")
    if not firmware:
        pytest.skip("set EDGEVEIL_FIRMWARE=<MicroPython .bin> to reflash the board")
    res = edgeveil(
        Path("."), "flash", "--board", BOARD, "--port", PORT, "--firmware", firmware, "--json"
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] is True and report["offset"] == load_board(BOARD).firmware_offset
    with open_link(PORT) as link:  # it boots MicroPython again
        assert link.eval("6 * 7") == 42


def test_deploy_then_provision_records_the_board_its_keys_and_code(tmp_path: Path) -> None:
    assert edgeveil(tmp_path, "init").returncode == 0
    dep = edgeveil(tmp_path, "deploy", "--port", PORT, "--board", BOARD, "--json")
    assert dep.returncode == 0, dep.stderr
    code_hash = json.loads(dep.stdout)["code_hash"]
    res = edgeveil(tmp_path, "provision", "--port", PORT, "--board", BOARD, "--force", "--json")
    assert res.returncode == 0, res.stderr
    dev_id = json.loads(res.stdout)["dev_id"]
    with Registry.open(tmp_path / "reg.db") as reg:
        rec = reg.get(dev_id)
        secrets = reg.secrets(dev_id)
    assert (rec.status, rec.board, rec.code_hash) == ("active", BOARD, code_hash)
    with open_link(PORT) as link:
        held = read_device(link)
    assert held["dev_id"] == secrets.dev_id and held["cose_key"] == secrets.cose_key
