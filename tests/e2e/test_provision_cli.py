"""`edgeveil provision` as a user runs it, against virtual boards: the board it records,
the code hash, the failure modes (wrong board, port busy, wrong master key, corrupt
registry, a killed process, one bad board on a jig) and a factory run over a board that
already has keys."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import serial
from edgeveil.boards import load_board
from edgeveil.paths import device_dir
from edgeveil.registry import Registry
from edgeveil.vboard import firmware
from vbtest import BIN, VBoard, edgeveil, nvs_blob, on_board

GENERIC = load_board("esp32-generic")


def _registry(tmp_path: Path) -> Path:
    assert edgeveil(tmp_path, "init").returncode == 0
    return tmp_path / "reg.db"


def _devices(db: Path) -> list[dict]:
    with Registry.open(db) as reg:
        return [r.to_json() for r in reg.list()]


def test_desk_flow_records_the_board_the_device_is_and_its_code(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    dep = edgeveil(tmp_path, "deploy", "--port", vb.port, "--json")
    assert dep.returncode == 0, dep.stderr
    code_hash = json.loads(dep.stdout)["code_hash"]
    res = edgeveil(tmp_path, "provision", "--port", vb.port)  # no --board: the device says
    assert res.returncode == 0, res.stderr
    (dev,) = _devices(db)
    assert dev["board"] == "esp32-virtual" and dev["status"] == "active"
    assert dev["code_hash"] == code_hash
    assert res.stdout.startswith(f"{vb.port}: provisioned {dev['dev_id']} (esp32-virtual)")
    assert code_hash[:16] in res.stdout


def test_a_redeploy_of_a_provisioned_board_records_its_new_code(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    assert edgeveil(tmp_path, "provision", "--port", vb.port).returncode == 0
    tree = tmp_path / "device"
    shutil.copytree(device_dir(), tree)
    (tree / "extra.py").write_text("X = 1\n")
    dep = edgeveil(tmp_path, "deploy", "--port", vb.port, "--src", str(tree), "--json")
    assert dep.returncode == 0, dep.stderr
    report = json.loads(dep.stdout)
    (dev,) = _devices(db)
    assert report["registry"] == f"registry: recorded for device {dev['dev_id']}"
    assert dev["code_hash"] == report["code_hash"]
    # Elsewhere, without a registry file: nothing is tried, the deploy is the same.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = edgeveil(elsewhere, "deploy", "--port", vb.port, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["registry"] is None
    assert _devices(db)[0]["code_hash"] == report["code_hash"]


def test_a_deploy_that_upgrades_an_old_registry_says_so(make_vboard, tmp_path: Path) -> None:
    """Every command that opens a schema-1 registry upgrades it and says so; deploy too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(  # tests/host's independent v1 writer
        "registry_tamper", Path(__file__).parents[1] / "host" / "registry_tamper.py"
    )
    assert spec is not None and spec.loader is not None
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    vb = make_vboard()
    db = _registry(tmp_path)
    assert edgeveil(tmp_path, "provision", "--port", vb.port).returncode == 0
    with Registry.open(db) as reg:
        (dev,) = reg.list()
        secrets = reg.secrets(dev.dev_id)
    master = db.with_suffix(".db.key").read_bytes()
    for old in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
        old.unlink(missing_ok=True)
    rt.make_v1_registry(db, master, [secrets])  # the same device, as edgeveil 1 kept it
    dep = edgeveil(tmp_path, "deploy", "--port", vb.port, "--json")
    assert dep.returncode == 0, dep.stderr
    said = json.loads(dep.stdout)["registry"]
    assert said.startswith(f"registry: recorded for device {dev.dev_id.hex()}")
    assert f"registry {db} upgraded from schema version 1" in said
    with Registry.open(db) as reg:
        assert reg.upgraded_from is None and reg.get(dev.dev_id).code_hash


def test_a_board_file_that_does_not_fit_the_device_is_refused(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    res = edgeveil(tmp_path, "provision", "--port", vb.port, "--board", "esp32c3-generic")
    assert res.returncode == 2
    assert "wrong board" in res.stderr and "esp32c3" in res.stderr and "x64" in res.stderr
    assert _devices(db) == []
    assert nvs_blob(vb, "dev_id") == ""  # nothing reached the board


def test_a_busy_port_is_named_and_nothing_is_recorded(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    with serial.Serial(vb.port, exclusive=True):
        res = edgeveil(tmp_path, "provision", "--port", vb.port)
    assert res.returncode == 2 and "port busy" in res.stderr and vb.port in res.stderr
    assert _devices(db) == []


def test_wrong_master_key_and_corrupt_registry_fail_before_the_board(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    env = dict(os.environ, EDGEVEIL_REGISTRY=str(db), EDGEVEIL_MASTER_KEY="11" * 32)
    res = subprocess.run(
        [str(BIN / "edgeveil"), "provision", "--port", vb.port],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "wrong master key" in res.stderr
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    res = edgeveil(tmp_path, "provision", "--port", vb.port)
    assert res.returncode == 2 and "corrupt" in res.stderr and str(db) in res.stderr
    assert nvs_blob(vb, "dev_id") == ""  # the board was never written


@pytest.mark.parametrize("after", [0.0, 0.005, 0.015, 0.03])
def test_a_killed_provision_leaves_nothing_or_a_pending_entry_resume_settles(
    make_vboard, tmp_path: Path, after: float
) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    env = dict(os.environ, EDGEVEIL_REGISTRY=str(db))
    run = subprocess.Popen(
        [str(BIN / "edgeveil"), "provision", "--port", vb.port],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with sqlite3.connect(db) as conn:  # SIGKILL it once the pending entry is there
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 0:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
    time.sleep(after)
    run.send_signal(signal.SIGKILL)
    run.wait()
    res = edgeveil(tmp_path, "provision", "--port", vb.port, "--resume", "--json")
    assert res.returncode == 0, res.stderr
    devices = _devices(db)
    held = nvs_blob(vb, "dev_id")
    # Never a board holding keys the registry lacks, and nothing left pending:
    assert all(d["status"] == "active" for d in devices)
    if held:
        assert [d["dev_id"] for d in devices] == [held]
    else:
        assert devices == []


def test_one_bad_board_on_a_jig_does_not_stop_the_others(make_vboard, tmp_path: Path) -> None:
    a, b = make_vboard(), make_vboard()
    _registry(tmp_path)
    missing = str(tmp_path / "ttyUSB9")
    res = edgeveil(tmp_path, "provision", "--ports", f"{a.port},{missing},{b.port}")
    assert res.returncode == 2
    assert "1 of 3 boards failed" in res.stderr and missing in res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "provisioned" in ln]
    assert len(lines) == 2 and not any("{" in ln for ln in lines)  # a summary, not a dict
    assert nvs_blob(a, "dev_id") and nvs_blob(b, "dev_id")


def test_factory_refuses_a_board_with_keys_unless_forced(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard(firmware=False)
    db = _registry(tmp_path)
    fw = tmp_path / "fw.bin"
    fw.write_bytes(firmware.build_firmware(GENERIC))
    args = ("provision", "--factory", "--firmware", str(fw), "--port", vb.port, "--json")
    first = edgeveil(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    old = json.loads(first.stdout)["dev_id"]
    again = edgeveil(tmp_path, *args)
    assert again.returncode == 2 and "already provisioned as " + old in again.stderr
    assert [d["dev_id"] for d in _devices(db)] == [old]
    # The board ran: its counter moved and it spent some of its ε budget.
    on_board(vb, "f = open('/veil.eps', 'wb'); f.write(b'spent'); f.close()")
    forced = edgeveil(tmp_path, *args, "--force")
    assert forced.returncode == 0, forced.stderr
    new = json.loads(forced.stdout)["dev_id"]
    status = {d["dev_id"]: d["status"] for d in _devices(db)}
    assert status == {old: "wiped", new: "active"}
    assert nvs_blob(vb, "dev_id") == new
    # New keys, so a new counter; the budget spent stays with the board.
    fresh = bytes(8) + hashlib.sha256(bytes(8)).digest()[:8]
    assert on_board(vb, "print(open('/veil.ctr', 'rb').read().hex())") == fresh.hex()
    assert on_board(vb, "print(open('/veil.eps', 'rb').read())") == "b'spent'"


def test_factory_on_a_busy_port_records_nothing(make_vboard, tmp_path: Path) -> None:
    vb: VBoard = make_vboard(firmware=False)
    db = _registry(tmp_path)
    fw = tmp_path / "fw.bin"
    fw.write_bytes(firmware.build_firmware(GENERIC))
    with serial.Serial(vb.port, exclusive=True):
        res = edgeveil(
            tmp_path, "provision", "--factory", "--firmware", str(fw), "--port", vb.port
        )
    assert res.returncode == 2 and "port busy" in res.stderr
    assert _devices(db) == []
