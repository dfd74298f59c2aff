"""Provisioning against virtual boards: two phases, read-back, and runs cut short."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.demo import DeviceSecrets
from edgeveil.errors import EdgeveilError, LinkError
from edgeveil.link import open_link
from edgeveil.nvs import read_nvs
from edgeveil.policy import compile_policy, default_policy
from edgeveil.provision import (
    ProvisionError,
    provision,
    read_device,
    resume,
    resume_board,
    write_device,
)
from edgeveil.registry import Registry, init_registry
from vbtest import VBoard

BOARD = load_board("esp32-virtual")
NVS = next(p for p in BOARD.partitions if p.name == "nvs")


def _registry(tmp_path: Path) -> Path:
    return init_registry(tmp_path / "reg.db")


def _nvs_on_flash(vb: VBoard) -> dict:
    """The board's NVS as the host parser reads it from the flash file (board stopped)."""
    image = vb.flash.read_bytes()[NVS.offset : NVS.offset + NVS.size]
    return read_nvs(image, strict=True)


def _blob(secrets: DeviceSecrets) -> bytes:
    return compile_policy(default_policy(), secrets.dev_id, secrets.policy_key)


def _counter(n: int) -> bytes:
    """veil.store's record of message counter n: 8 big-endian bytes, sha256 of them[:8]."""
    payload = n.to_bytes(8, "big")
    return payload + hashlib.sha256(payload).digest()[:8]


class _Cut:
    """A link on which the run is cut off at the NVS write: `before` it is sent (the board
    lost), or `after` (the host process dies)."""

    def __init__(self, link, before=None, after=None) -> None:
        self.link, self.before, self.after = link, before, after

    def exec(self, code: str, timeout: float = 10.0) -> str:
        if "set_blob" in code and self.before:
            self.before()
        out = self.link.exec(code, timeout)
        if "set_blob" in code and self.after:
            self.after()
        return out

    def eval(self, expr: str, secret: bool = False) -> object:
        return self.link.eval(expr, secret)


def _die() -> None:
    raise KeyboardInterrupt


def test_provision_writes_nvs_reads_back_and_activates(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    with Registry.open(db) as reg, open_link(vb.port) as link:
        report = provision(link, BOARD, reg, default_policy(), vb.port)
        rec = reg.get(report.dev_id)
        secrets = reg.secrets(report.dev_id)
        assert rec.status == "active" and rec.board == BOARD.name
        # The message counter record the device needs, at counter 0.
        assert report.counter == "created" and link.read_file("/veil.ctr") == _counter(0)
        link.write_file("/veil.ctr", _counter(96))  # as after the device sent messages
        with pytest.raises(ProvisionError, match="already provisioned"):
            provision(link, BOARD, reg, default_policy(), vb.port)
        again = provision(link, BOARD, reg, default_policy(), vb.port, force=True)
        assert reg.get(report.dev_id).status == "wiped"
        assert reg.get(again.dev_id).status == "active"
        # A counter is never reset (a reset would reuse nonces).
        assert again.counter == "kept" and link.read_file("/veil.ctr") == _counter(96)
        # back to the first keys for the checks below
        write_device(link, secrets.nvs_values(_blob(secrets)))
    vb.stop()
    veil = _nvs_on_flash(vb)["veil"]  # an independent reader of ESP-IDF's NVS format
    assert veil["dev_id"] == secrets.dev_id and veil["cose_key"] == secrets.cose_key
    assert veil["base_iv"] == secrets.base_iv and veil["pseudo_key"] == secrets.pseudo_key
    assert veil["policy"] == _blob(secrets)
    assert report.policy_hash == rec.policy_hash


def test_resume_rolls_back_what_never_reached_the_device(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    secrets = DeviceSecrets.generate()
    with Registry.open(_registry(tmp_path)) as reg, open_link(vb.port) as link:
        reg.add_pending(secrets.dev_id, BOARD.name, secrets, "h", vb.port)  # then "killed"
        assert resume(link, reg, secrets.dev_id, _blob, vb.port) == "rolled back"
        assert [r for r in reg.list() if r.dev_id == secrets.dev_id] == []
        assert read_device(link)["dev_id"] is None


def test_resume_completes_a_partial_write(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()
    secrets = DeviceSecrets.generate()
    with Registry.open(_registry(tmp_path)) as reg, open_link(vb.port) as link:
        policy_hash = hashlib.sha256(_blob(secrets)).hexdigest()
        reg.add_pending(secrets.dev_id, BOARD.name, secrets, policy_hash, vb.port)
        # killed after the policy and the COSE key reached NVS, before the rest
        link.exec(
            "import esp32\nn = esp32.NVS('veil')\nn.set_blob('policy', %r)\n"
            "n.set_blob('cose_key', %r)\nn.commit()" % (_blob(secrets), secrets.cose_key)
        )
        # Resumed with another policy: refused, nothing written, the entry stays pending.
        other = default_policy()
        other["streams"] = dict(list(other["streams"].items())[:1])

        def other_blob(s: DeviceSecrets) -> bytes:
            return compile_policy(other, s.dev_id, s.policy_key)

        with pytest.raises(ProvisionError, match="same --policy"):
            resume(link, reg, secrets.dev_id, other_blob, vb.port)
        assert reg.get(secrets.dev_id).status == "pending"
        assert read_device(link)["dev_id"] is None
        assert resume(link, reg, secrets.dev_id, _blob, vb.port) == "completed"
        assert reg.get(secrets.dev_id).status == "active"
        held = read_device(link)
    assert held["dev_id"] == secrets.dev_id and held["policy_key"] == secrets.policy_key


def test_board_lost_mid_write_leaves_a_pending_entry_that_resume_settles(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)

    with Registry.open(db) as reg:
        with open_link(vb.port) as link, pytest.raises(EdgeveilError):
            provision(_Cut(link, before=vb.kill), BOARD, reg, default_policy(), vb.port)
        (pending,) = reg.pending()
        vb.restart()
        with open_link(vb.port) as link:
            outcome = resume(link, reg, pending.dev_id, _blob, vb.port)
            held = read_device(link)["dev_id"]
        # Never a device holding keys the registry lacks:
        if outcome == "completed":
            assert held == pending.dev_id and reg.get(pending.dev_id).status == "active"
        else:
            assert held is None and reg.pending() == []


def test_resume_settles_only_the_board_that_was_provisioned_whatever_its_port(
    make_vboard, tmp_path: Path
) -> None:
    """A jig's hub renumbered between the cut-off run and the resume: the entry recorded on
    port P is for board A, and board B now answers on P. B must not roll A's entry back."""
    a, b = make_vboard(), make_vboard()
    db = _registry(tmp_path)

    with Registry.open(db) as reg:
        with open_link(a.port) as link, pytest.raises(KeyboardInterrupt):
            # board A, provisioned when it was on what is now B's port
            provision(_Cut(link, after=_die), BOARD, reg, default_policy(), b.port)
        (pending,) = reg.pending()
        assert pending.port == b.port
        with open_link(b.port) as link:
            assert resume_board(link, reg, _blob, b.port) == {}
        assert reg.get(pending.dev_id).status == "pending"  # not rolled back by board B
        with open_link(a.port) as link:
            assert resume_board(link, reg, _blob, a.port) == {pending.dev_id.hex(): "completed"}
            assert read_device(link)["dev_id"] == pending.dev_id
        assert reg.get(pending.dev_id).status == "active"


def test_a_forced_desk_run_cut_off_is_completed_and_the_old_device_wiped(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    db = _registry(tmp_path)
    with Registry.open(db) as reg:
        with open_link(vb.port) as link:
            old = provision(link, BOARD, reg, default_policy(), vb.port).dev_id
        with open_link(vb.port) as link, pytest.raises(KeyboardInterrupt):
            provision(_Cut(link, after=_die), BOARD, reg, default_policy(), vb.port, force=True)
        (pending,) = reg.pending()
        assert reg.get(old).status == "active"  # the cut run never said otherwise
        with open_link(vb.port) as link:
            done = resume_board(link, reg, _blob, vb.port)
        assert done == {pending.dev_id.hex(): "completed", old: "wiped"}
        assert reg.get(old).status == "wiped" and reg.get(pending.dev_id).status == "active"


def test_write_device_then_confirm_detects_a_changed_value(make_vboard) -> None:
    vb = make_vboard()
    secrets = DeviceSecrets.generate()
    values = secrets.nvs_values(_blob(secrets))
    with open_link(vb.port) as link:
        write_device(link, values)
        assert read_device(link) == values
        link.exec("import esp32\nn = esp32.NVS('veil')\nn.set_blob('cose_key', b'x' * 16)")
        assert read_device(link)["cose_key"] == b"x" * 16


def test_cli_provisions_two_boards_and_resume_finds_nothing(make_vboard, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    a, b = make_vboard(), make_vboard()
    exe = str(Path(sys.executable).parent / "edgeveil")
    env = dict(os.environ, EDGEVEIL_REGISTRY=str(tmp_path / "reg.db"))
    run = lambda *args: subprocess.run(  # noqa: E731
        [exe, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert run("init").returncode == 0
    res = run("provision", "--ports", f"{a.port},{b.port}", "--json")
    assert res.returncode == 0, res.stderr
    listed = json.loads(run("registry", "list", "--json").stdout)
    assert sorted(d["status"] for d in listed) == ["active", "active"]
    out = run("provision", "--port", a.port, "--resume")
    assert out.returncode == 0 and "nothing pending" in out.stdout
    again = run("provision", "--port", a.port)
    assert again.returncode == 2 and "already provisioned" in again.stderr
    for secret_hex in (d.get("cose_key") for d in listed):
        assert secret_hex is None  # registry list never shows keys


def test_an_unreadable_answer_that_may_hold_keys_is_not_quoted(make_vboard) -> None:
    vb = make_vboard()
    with open_link(vb.port) as link:
        link.exec("class K:\n    def __repr__(self):\n        return '<cose_key c0ffee>'")
        with pytest.raises(LinkError) as shown:
            link.eval("K()")
        assert "c0ffee" in str(shown.value)  # an ordinary answer is quoted, to debug it
        with pytest.raises(LinkError) as hidden:
            link.eval("K()", secret=True)
        assert "c0ffee" not in str(hidden.value) and "may hold keys" in str(hidden.value)
