"""A real ESP32 on EDGEVEIL_PORT (skipped otherwise): the same link and checks as on the
virtual board. Run: EDGEVEIL_PORT=/dev/ttyUSB0 .venv/bin/pytest tests/e2e/test_hardware.py
"""

from __future__ import annotations

import os

import pytest
from edgeveil.link import open_link

pytestmark = pytest.mark.hardware


def test_a_real_board_answers_as_an_esp32_micropython() -> None:
    with open_link(os.environ["EDGEVEIL_PORT"]) as link:
        info = link.device_info()
        assert info["arch"] == "xtensawin", info
        assert link.eval("6 * 7") == 42


def test_a_real_board_has_the_nvs_and_vfs_partitions() -> None:
    with open_link(os.environ["EDGEVEIL_PORT"]) as link:
        labels = link.eval("[p.info()[4] for p in __import__('esp32').Partition.find(1)]")
    assert "nvs" in labels and "vfs" in labels
