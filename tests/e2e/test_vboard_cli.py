"""`edgeveil vboard start|status|stop|firmware` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgeveil.esp_image import check_firmware
from vbtest import tool

EDGEVEIL = str(Path(sys.executable).parent / "edgeveil")


def ev(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGEVEIL_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run(
        [EDGEVEIL, "vboard", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )


def test_start_status_stop(tmp_path: Path) -> None:
    res = ev(
        tmp_path,
        "start",
        "--flash",
        "b.img",
        "--firmware",
        "--detach",
        "--json",
        "--no-rfc2217",
        "--name",
        "cli1",
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    try:
        assert info["name"] == "cli1" and info["rfc2217"] is None
        assert info["flash"] == str(tmp_path / "b.img")  # absolute, wherever it was started
        assert (
            tool("mpremote", "connect", info["port"], "exec", "print(1+1)").stdout.strip() == "2"
        )
        status = json.loads(ev(tmp_path, "status", "--json").stdout)
        assert [b["name"] for b in status] == ["cli1"]
        again = ev(tmp_path, "start", "--flash", "c.img", "--detach", "--name", "cli1")
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        stop = ev(tmp_path, "stop", "cli1")
    assert stop.returncode == 0 and "stopped cli1" in stop.stdout
    assert json.loads(ev(tmp_path, "status", "--json").stdout) == []
    gone = ev(tmp_path, "stop", "cli1")
    assert gone.returncode == 2 and "no virtual board named 'cli1'" in gone.stderr


def test_each_board_file_is_a_chip_of_its_own(tmp_path: Path) -> None:
    """Without --mac, boards on different flash files have different MACs (provision's
    resume and the registry tell chips apart by MAC), and a board keeps its MAC when it is
    started again; --mac still sets one."""

    def start(flash: str, name: str, *extra: str) -> str:
        res = ev(tmp_path, "start", "--flash", flash, "--firmware", "--detach", "--json",
                 "--no-rfc2217", "--name", name, *extra)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["port"]

    def mac(port: str) -> str:
        code = "import machine\nprint(machine.unique_id().hex())"
        return tool("mpremote", "connect", port, "exec", code).stdout.strip()

    try:
        one, two = mac(start("one.img", "one")), mac(start("two.img", "two"))
        assert one != two and one[:6] == two[:6] == "240ac4"  # Espressif's OUI
        ev(tmp_path, "stop", "one")
        assert mac(start("one.img", "one")) == one
        assert mac(start("three.img", "three", "--mac", "240ac4000042")) == "240ac4000042"
    finally:
        for name in ("one", "two", "three"):
            ev(tmp_path, "stop", name)


def test_bad_input_is_named(tmp_path: Path) -> None:
    res = ev(tmp_path, "start", "--flash", "b.img", "--mac", "12:34", "--detach")
    assert res.returncode == 2 and "--mac" in res.stderr
    assert not (tmp_path / "b.img").exists()  # refused before anything was made
    res = ev(tmp_path, "start", "--flash", "b.img", "--board", "no-such-board", "--detach")
    assert res.returncode == 2 and "no-such-board" in res.stderr


def test_firmware_file_is_a_valid_esp32_image(tmp_path: Path) -> None:
    res = ev(tmp_path, "firmware", "-o", "fw.bin")
    assert res.returncode == 0 and "0x1000" in res.stdout
    info = check_firmware((tmp_path / "fw.bin").read_bytes(), "esp32")
    assert info.kind == "combined"
