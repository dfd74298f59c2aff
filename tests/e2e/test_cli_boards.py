"""The `edgeveil` command line against virtual boards, as a user runs it: `flash --erase`
names the registry's devices whose keys it removed, `provision --factory --out` into a
path that cannot be a directory is a clear exit 2 on one port and on a jig, and `vboard
stop` takes `--name` as `vboard start` does."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from edgeveil.boards import load_board
from edgeveil.demo import DeviceSecrets
from edgeveil.registry import Registry, init_registry
from edgeveil.registry_keys import default_key_path
from edgeveil.vboard import firmware
from vbtest import BIN, edgeveil

GENERIC = load_board("esp32-generic")


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEVEIL_")}
    return subprocess.run(
        [str(BIN / "edgeveil"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **env},
        timeout=300,
    )


def _add(db: Path, mac: bytes, status: str) -> str:
    s = DeviceSecrets.generate()
    with Registry.open(db) as reg:
        reg.add_pending(s.dev_id, "esp32-generic", s, "ab" * 32, "/dev/pts/9", mac=mac)
        if status == "active":
            reg.activate(s.dev_id)  # (which wipes the chip's other devices)
        if status == "revoked":  # straight from pending: the chip's device stays active
            reg.revoke(s.dev_id)
    return s.dev_id.hex()


def test_flash_erase_warns_about_the_registrys_devices_on_that_chip(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    fw = tmp_path / "fw.bin"
    fw.write_bytes(firmware.build_firmware(GENERIC))
    db = tmp_path / "reg.db"
    assert edgeveil(tmp_path, "init").returncode == 0
    res = edgeveil(tmp_path, "provision", "--port", vb.port, "--board", "esp32-virtual")
    assert res.returncode == 0, res.stderr
    with Registry.open(db) as reg:
        (provisioned,) = [r.dev_id.hex() for r in reg.list()]
    pending = _add(db, vb.spec.mac, "pending")
    revoked = _add(db, vb.spec.mac, "revoked")
    elsewhere = _add(db, bytes.fromhex("240ac4999999"), "active")
    flash = ("flash", "--board", "esp32-generic", "--firmware", str(fw))

    res = edgeveil(tmp_path, *flash, "--port", vb.port, "--erase")
    assert res.returncode == 0, res.stderr
    (warning,) = [line for line in res.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"edgeveil: warning: {vb.port}: --erase removed the keys of ")
    assert f"active device {provisioned} " in warning and "edgeveil registry revoke" in warning
    for other in (pending, revoked, elsewhere):
        assert other not in res.stderr
    assert "chip erased first" in res.stdout  # the flash itself reported as before
    assert "erasing the whole flash first" in res.stderr  # said before the silent erase

    res = edgeveil(tmp_path, *flash, "--port", vb.port)  # no --erase: the keys stay
    assert res.returncode == 0 and "warning" not in res.stderr and "erasing" not in res.stderr

    # The jig form warns too, and the JSON on stdout stays one object.
    res = edgeveil(tmp_path, *flash, "--ports", vb.port, "--erase", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True
    assert f"edgeveil: warning: {vb.port}: --erase removed the keys of" in res.stderr

    # Without the master key the MAC cannot be looked up: no warning, and no failure.
    default_key_path(db).rename(tmp_path / "elsewhere.key")
    res = edgeveil(tmp_path, *flash, "--port", vb.port, "--erase")
    assert (
        res.returncode == 0 and [ln for ln in res.stderr.splitlines() if "erasing" not in ln] == []
    )
    # With no registry at all, neither.
    res = _run(*flash, "--port", vb.port, "--erase", cwd=tmp_path, env={})
    assert (
        res.returncode == 0 and [ln for ln in res.stderr.splitlines() if "erasing" not in ln] == []
    )


def test_factory_out_that_cannot_be_a_directory_is_exit_2(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard(firmware=False)
    fw = tmp_path / "fw.bin"
    fw.write_bytes(firmware.build_firmware(GENERIC))
    db = init_registry(tmp_path / "reg.db")
    (tmp_path / "afile").write_text("a file, not a directory\n")
    out = tmp_path / "afile" / "sub"
    args = ("provision", "--factory", "--firmware", str(fw), "--out", str(out), "--json")
    env = {"EDGEVEIL_REGISTRY": str(db)}

    def named(message: str) -> bool:  # made before the board is touched
        return re.fullmatch(f"cannot write {out}: Not a directory", message) is not None

    res = _run(*args, "--port", vb.port, cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert res.stderr.startswith("edgeveil: ") and named(res.stderr[10:].rstrip("\n"))
    failed = json.loads(res.stdout)
    assert failed["ok"] is False and failed["exit_code"] == 2 and failed["port"] == vb.port
    assert named(failed["message"])

    res = _run(*args, "--ports", vb.port, cwd=tmp_path, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (board,) = json.loads(res.stdout)["boards"]
    assert board["ok"] is False and named(board["message"])
    with Registry.open(db) as reg:
        assert reg.list() == []  # rolled back both times: nothing reached the board


def test_vboard_stop_takes_name_as_start_does(tmp_path: Path) -> None:
    env = {"EDGEVEIL_STATE_DIR": str(tmp_path / "state")}
    for name in ("n1", "n2"):
        res = _run(
            "vboard", "start", "--flash", f"{name}.img", "--firmware", "--detach",
            "--no-rfc2217", "--name", name, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr

    def running() -> list[str]:
        status = _run("vboard", "status", "--json", cwd=tmp_path, env=env)
        return [b["name"] for b in json.loads(status.stdout)]

    try:
        res = _run("vboard", "stop", "--name", "n1", cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("stopped n1 (") and running() == ["n2"]
        res = _run("vboard", "stop", "n2", "--name", "n2", cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("stopped n2 (") == 1 and running() == []
    finally:
        _run("vboard", "stop", "--all", cwd=tmp_path, env=env)
