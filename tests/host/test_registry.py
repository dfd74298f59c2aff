"""The device registry (edgeveil.registry) and `edgeveil init|registry ...`.

Proves: secrets round-trip but never sit in the database, its WAL or its shared memory in
clear; a wrong master key, a too-open key file and a corrupted or foreign database each
fail with a message saying so, before any secret is touched; eight processes writing at
once lose nothing and leave an intact database, as does a writer killed mid-way; the
counter only rises; a COSE_Key export opens, in pycose, a message the device code made.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
import registry_tamper
from edgeveil import cose as host_cose
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.errors import RegistryError
from edgeveil.frames import split_stream
from edgeveil.policy import compile_policy, default_policy
from edgeveil.registry import Registry, init_registry
from edgeveil.registry_export import export_cose_keys, export_json
from edgeveil.registry_keys import default_key_path
from edgeveil.registry_rows import SECRET_FIELDS
from edgeveil.replaygen import demo_recording
from edgeveil.senml import decode_pack
from pycose.headers import IV, KID, PartialIV
from pycose.keys import CoseKey
from pycose.messages import Enc0Message

EDGEVEIL = str(Path(sys.executable).parent / "edgeveil")
MAC = bytes.fromhex("240ac4123456")
POLICY_HASH = "ab" * 32


pytestmark = pytest.mark.usefixtures("clean_env")  # and `db`: tests/host/conftest.py


_macs = itertools.count(1)


def _add(reg: Registry, n: int, activate: bool = True) -> list[DeviceSecrets]:
    out = []
    for i in range(n):
        s = DeviceSecrets.generate()
        mac = MAC[:3] + next(_macs).to_bytes(3, "big")  # a chip each: see test_activate_*
        reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, f"/dev/pts/{i}", mac=mac)
        if activate:
            reg.activate(s.dev_id)
        out.append(s)
    return out


def _needles(s: DeviceSecrets) -> list[bytes]:
    """Every secret of a device as raw bytes and as hex text in both cases."""
    raw = [getattr(s, name) for name, _ in SECRET_FIELDS]
    return [n for v in raw for n in (v, v.hex().encode(), v.hex().upper().encode())]


# --- library ---------------------------------------------------------------------------


def test_init_creates_owner_only_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    db = init_registry(tmp_path / "fleet.db")
    key = default_key_path(db)
    assert key == tmp_path / "fleet.db.key"
    assert (os.stat(key).st_mode & 0o777, os.stat(db).st_mode & 0o777) == (0o600, 0o600)
    assert len(key.read_bytes()) == 32
    before = key.read_bytes()
    with pytest.raises(RegistryError, match="exists; refusing to overwrite"):
        init_registry(db)
    # An existing key file is never overwritten, and no database is left behind.
    with pytest.raises(RegistryError, match="master key file .* exists"):
        init_registry(tmp_path / "other.db", key_path=key)
    assert key.read_bytes() == before and not (tmp_path / "other.db").exists()


def test_init_with_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    master = os.urandom(32)
    monkeypatch.setenv("EDGEVEIL_MASTER_KEY", master.hex())
    db = init_registry(tmp_path / "env.db")
    assert not default_key_path(db).exists()  # the key is written nowhere
    with Registry.open(db) as reg:
        s = _add(reg, 1)[0]
    monkeypatch.delenv("EDGEVEIL_MASTER_KEY")
    with Registry.open(db, master) as reg:
        assert reg.secrets(s.dev_id) == s
    with pytest.raises(RegistryError, match="choose one"):
        monkeypatch.setenv("EDGEVEIL_MASTER_KEY", master.hex())
        init_registry(tmp_path / "both.db", key_path=tmp_path / "both.key")
    monkeypatch.setenv("EDGEVEIL_MASTER_KEY", "00" * 31)
    with pytest.raises(RegistryError, match="64 hex digits"):
        init_registry(tmp_path / "short.db")


def test_round_trip(db: Path) -> None:
    s = DeviceSecrets.generate()
    with Registry.open(db) as reg:
        reg.add_pending(s.dev_id, "esp32s3-generic", s, POLICY_HASH, "/dev/ttyUSB0", mac=MAC)
        rec = reg.get(s.dev_id)
        assert (rec.dev_id, rec.board, rec.status, rec.port) == (
            s.dev_id,
            "esp32s3-generic",
            "pending",
            "/dev/ttyUSB0",
        )
        assert rec.policy_hash == POLICY_HASH and rec.code_hash is None
        assert rec.last_counter is None and rec.mac_hash and MAC.hex() not in rec.mac_hash
        assert [r.dev_id for r in reg.pending()] == [s.dev_id]
        assert reg.find_mac(MAC) == [rec] and reg.find_mac(b"\x00" * 6) == []
        with pytest.raises(RegistryError, match="already registered"):
            reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, None)
        reg.activate(s.dev_id)
        reg.set_code_hash(s.dev_id.hex(), "c0de" * 16)  # hex ids are accepted too
        with pytest.raises(RegistryError, match="cannot delete .* it is active"):
            reg.delete_pending(s.dev_id)
        with pytest.raises(RegistryError, match="cannot make active .* it is active"):
            reg.activate(s.dev_id)
        other = _add(reg, 1, activate=False)[0]
        reg.delete_pending(other.dev_id)  # a rollback forgets the pending device
        with pytest.raises(RegistryError, match="unknown device"):
            reg.get(other.dev_id)
    with Registry.open(db) as reg:  # what was committed is there after reopening
        assert reg.secrets(s.dev_id) == s
        rec = reg.get(s.dev_id)
        assert (rec.status, rec.code_hash) == ("active", "c0de" * 16)
        assert reg.list() == [rec] and reg.list("active") == [rec] and reg.pending() == []
        with pytest.raises(RegistryError, match="unknown status"):
            reg.list("lost")
        with pytest.raises(RegistryError, match="8 bytes"):
            reg.get("abc")


def test_malformed_secrets_are_refused(db: Path) -> None:
    s = DeviceSecrets.generate()
    with Registry.open(db) as reg:
        with pytest.raises(RegistryError, match="base_iv must be 13 bytes"):
            reg.add_pending(s.dev_id, "b", replace(s, base_iv=b"\x01" * 12), POLICY_HASH, None)
        with pytest.raises(RegistryError, match="does not match"):
            reg.add_pending(os.urandom(8), "b", s, POLICY_HASH, None)
        assert reg.list() == []


def test_secrets_are_never_in_the_files_in_clear(db: Path) -> None:
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    with Registry.open(db) as reg:
        devices = _add(reg, 20)
        assert os.path.getsize(files[1]) > 0  # the rows are in the WAL now: grep it too
        assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3
        for round_ in ("open", "closed"):
            blob = b"".join(f.read_bytes() for f in files if f.exists())
            for s in devices:
                assert s.dev_id.hex().encode() in blob  # the grep sees the rows...
                leaked = [n for n in _needles(s) if n in blob]
                assert not leaked, f"{len(leaked)} secrets in clear ({round_})"  # ...no secret
            assert MAC not in blob and MAC.hex().encode() not in blob
            if round_ == "open":
                reg.close()


def test_wrapped_secret_is_bound_to_its_device_and_field(db: Path) -> None:
    with Registry.open(db) as reg:
        a, b = _add(reg, 2)
    conn = sqlite3.connect(db)
    with conn:  # move a's wrapped key into b's row, and a's base_iv into a's cose_key
        (wrapped,) = conn.execute(
            "SELECT cose_key FROM devices WHERE dev_id = ?", (a.dev_id.hex(),)
        ).fetchone()
        conn.execute("UPDATE devices SET cose_key = ? WHERE dev_id = ?", (wrapped, b.dev_id.hex()))
        conn.execute("UPDATE devices SET cose_key = base_iv WHERE dev_id = ?", (a.dev_id.hex(),))
    conn.close()
    # Beneath the row tags (which now refuse both rows, test_registry_tags.py), the AAD
    # binds each wrapped value on its own: re-tag the rows as only the key holder could.
    master = default_key_path(db).read_bytes()
    for s in (a, b):
        registry_tamper.retag(db, master, s.dev_id.hex())
    with Registry.open(db) as reg:
        for s in (a, b):
            with pytest.raises(RegistryError, match="cose_key of device .* does not unwrap"):
                reg.secrets(s.dev_id)


def test_wrong_master_key_fails_before_anything(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Registry.open(db) as reg:
        _add(reg, 3)
    unwrapped: list[str] = []
    from edgeveil import registry_keys

    real_open = registry_keys.WrapKeys.open

    def spy(self: Any, dev_id: bytes, field: str, sealed: bytes) -> bytes:
        unwrapped.append(field)
        return real_open(self, dev_id, field, sealed)

    monkeypatch.setattr(registry_keys.WrapKeys, "open", spy)
    wrong = os.urandom(32)
    with pytest.raises(RegistryError, match=f"wrong master key for registry {db}"):
        Registry.open(db, wrong)
    monkeypatch.setenv("EDGEVEIL_MASTER_KEY", wrong.hex())  # the environment beats <db>.key
    with pytest.raises(RegistryError, match="wrong master key .*EDGEVEIL_MASTER_KEY"):
        Registry.open(db)
    assert unwrapped == []  # refused at open: no secret was even tried


def test_key_file_others_can_read_is_refused(db: Path) -> None:
    key = default_key_path(db)
    for mode in (0o644, 0o640, 0o604, 0o660):
        key.chmod(mode)
        with pytest.raises(RegistryError, match=rf"accessible by others \(mode 0{mode:o}\)"):
            Registry.open(db)
    key.chmod(0o600)
    with Registry.open(db) as reg:
        assert reg.has_key


def test_without_a_key_metadata_only(db: Path) -> None:
    with Registry.open(db) as reg:
        s = _add(reg, 1)[0]
    default_key_path(db).rename(db.parent / "elsewhere.key")
    with Registry.open(db) as reg:
        assert not reg.has_key and reg.get(s.dev_id).status == "active"
        with pytest.raises(RegistryError, match="no master key for registry"):
            reg.secrets(s.dev_id)
    with Registry.open(db, key_path=db.parent / "elsewhere.key") as reg:
        assert reg.secrets(s.dev_id) == s


def _truncate_half(p: Path) -> None:
    os.truncate(p, p.stat().st_size // 2)


def _zero_header(p: Path) -> None:
    with open(p, "r+b") as f:
        f.write(bytes(100))


def _scribble_pages(p: Path) -> None:
    with open(p, "r+b") as f:  # garbage over the b-tree pages after the first
        f.seek(4096)
        f.write(os.urandom(p.stat().st_size - 4096))


def _foreign_sqlite(p: Path) -> None:
    p.unlink()
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.close()


def _drop_schema_version(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: os.truncate(p, 0), "no SQLite header"),
        (_truncate_half, "corrupt"),
        (_zero_header, "no SQLite header"),
        (_scribble_pages, "corrupt"),
        (lambda p: p.write_text("dev_id,cose_key\n"), "no SQLite header"),
        (_foreign_sqlite, "not an edgeveil registry"),
        (_drop_schema_version, "schema version 99"),
        (lambda p: p.unlink(), "no registry at .*`edgeveil init --registry"),
    ],
    ids=["empty", "truncated", "header", "pages", "text", "foreign", "version", "missing"],
)
def test_damaged_registry_fails_clearly(db: Path, damage: Any, message: str) -> None:
    with Registry.open(db) as reg:
        _add(reg, 200)  # a few dozen pages, so truncation and scribbling hit data
    damage(db)
    with pytest.raises(RegistryError, match=message):
        with Registry.open(db) as reg:
            reg.list()
            for r in reg.list():
                reg.secrets(r.dev_id)


def test_counter_only_increases(db: Path) -> None:
    with Registry.open(db) as reg:
        s = _add(reg, 1)[0]
        assert [reg.update_counter(s.dev_id, n) for n in (0, 5, 5, 3, 6, 40)] == [
            True,
            True,
            False,
            False,
            True,
            True,
        ]
        assert reg.get(s.dev_id).last_counter == 40
        for bad in (-1, 1.5, True):
            with pytest.raises(RegistryError, match="non-negative int"):
                reg.update_counter(s.dev_id, bad)  # type: ignore[arg-type]
        with pytest.raises(RegistryError, match="unknown device"):
            reg.update_counter(os.urandom(8), 1)
        assert reg.get(s.dev_id).last_counter == 40


def test_revoke(db: Path) -> None:
    with Registry.open(db) as reg:
        a, b = _add(reg, 2)
        pending = _add(reg, 1, activate=False)[0]
        reg.revoke(a.dev_id)
        reg.revoke(a.dev_id)  # idempotent
        reg.revoke(pending.dev_id)
        assert [r.status for r in reg.list()] == ["revoked", "active", "revoked"]
        with pytest.raises(RegistryError, match="cannot make active .* it is revoked"):
            reg.activate(a.dev_id)
        with pytest.raises(RegistryError, match="cannot delete .* it is revoked"):
            reg.delete_pending(pending.dev_id)
        keys = cbor2.loads(export_cose_keys(reg, include_secrets=True))
        assert [k[2] for k in keys] == [b.dev_id]  # revoked keys are not exported
        with pytest.raises(RegistryError, match="is revoked; only active keys export"):
            export_cose_keys(reg, [a.dev_id], include_secrets=True)


def test_activate_wipes_the_chips_earlier_devices_only(db: Path) -> None:
    """A chip holds one device's keys: a device made active on it retires the others
    recorded with its MAC (active or revoked become wiped), and nothing else."""
    other_chip = bytes.fromhex("240ac4aaaaaa")
    made: dict[str, bytes] = {}
    with Registry.open(db) as reg:

        def add(name: str, mac: bytes | None) -> bytes:
            s = DeviceSecrets.generate()
            reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, "/dev/ttyUSB0", mac=mac)
            made[name] = s.dev_id
            return s.dev_id

        assert reg.activate(add("first", MAC)) == []  # nothing earlier on that chip
        reg.revoke(add("revoked", MAC))  # (pending -> revoked: never active)
        add("pending", MAC)
        assert reg.activate(add("elsewhere", other_chip)) == []
        assert reg.activate(add("no mac", None)) == []  # an entry from before MACs
        wiped = reg.activate(add("new", MAC))
        assert wiped == sorted([made["first"].hex(), made["revoked"].hex()])
        status = {name: reg.get(did).status for name, did in made.items()}
    assert status == {
        "first": "wiped",
        "revoked": "wiped",
        "pending": "pending",  # settled by --resume, never by another device
        "elsewhere": "active",
        "no mac": "active",
        "new": "active",
    }
    with Registry.open(db) as reg:  # the transaction left every row's tag right
        assert len(reg.list()) == 6


# --- many writers -------------------------------------------------------------------------

PER_WORKER = 25


def _writer(db: str, key: bytes, shared: bytes, seed: int) -> list[tuple[str, bytes, bytes]]:
    """One jig process: adds and activates devices, bumps a shared device's counter."""
    out = []
    with Registry.open(db, key, timeout=60) as reg:
        for i in range(PER_WORKER):
            s = DeviceSecrets.generate()
            reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, f"/dev/jig{seed}.{i}")
            reg.activate(s.dev_id)
            reg.update_counter(shared, seed * 1000 + i)
            out.append((s.dev_id.hex(), s.cose_key, s.pseudo_key))
    return out


def test_eight_processes_write_at_once(db: Path) -> None:
    key = default_key_path(db).read_bytes()
    with Registry.open(db) as reg:
        shared = _add(reg, 1)[0].dev_id
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.starmap(_writer, [(str(db), key, shared, w) for w in range(8)])
    written = [row for rows in results for row in rows]
    assert len(written) == 8 * PER_WORKER
    with Registry.open(db) as reg:
        recs = reg.list("active")
        assert len(recs) == 8 * PER_WORKER + 1
        for dev_id, cose_key, pseudo_key in written:
            s = reg.secrets(dev_id)
            assert (s.cose_key, s.pseudo_key) == (cose_key, pseudo_key)
        assert reg.get(shared).last_counter == 7 * 1000 + PER_WORKER - 1  # the maximum won
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def _write_forever(db: str, key: bytes) -> None:
    with Registry.open(db, key) as reg:
        while True:
            s = DeviceSecrets.generate()
            reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, None)


def test_writer_killed_mid_way_leaves_an_intact_registry(db: Path) -> None:
    key = default_key_path(db).read_bytes()
    proc = multiprocessing.get_context("spawn").Process(target=_write_forever, args=(str(db), key))
    proc.start()
    deadline = time.monotonic() + 30
    with Registry.open(db) as reg:
        while len(reg.list()) < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)  # a power cut in the middle of a write
    proc.join()
    with Registry.open(db) as reg:
        recs = reg.list()
        assert len(recs) >= 50
        for r in recs:  # every row that exists is whole
            assert len(reg.secrets(r.dev_id).cose_key) == 16
        _add(reg, 1)  # and it takes writes again
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


# --- export -----------------------------------------------------------------------------


def test_exported_cose_key_opens_device_messages_in_pycose(db: Path, tmp_path: Path) -> None:
    s = DeviceSecrets.generate()  # never a Base IV starting 0x00 (library-pitfalls.md)
    with Registry.open(db) as reg:
        reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, None)
        reg.activate(s.dev_id)
        _add(reg, 2)
        exported = export_cose_keys(reg, include_secrets=True)
        with pytest.raises(RegistryError, match="include_secrets"):
            export_cose_keys(reg)
    keys = cbor2.loads(exported)
    assert isinstance(keys, list) and len(keys) == 3
    mine = next(k for k in keys if k[2] == s.dev_id)
    # RFC 9052 §7: kty Symmetric, kid, alg AES-CCM-16-64-128, key_ops decrypt, Base IV, k.
    assert mine == {1: 4, 2: s.dev_id, 3: 10, 4: [4], 5: s.base_iv, -1: s.cose_key}
    assert s.pseudo_key not in exported and s.policy_key not in exported
    cose_key = CoseKey.from_dict(mine)

    # The real device code, reading its secrets from NVS, makes the messages.
    blob = compile_policy(default_policy(), s.dev_id, s.policy_key)
    work = tmp_path / "vm"
    work.mkdir()
    console = run_device(s, blob, demo_recording(), 1 << 20, work)
    frames = [item.data for item in split_stream(console) if item.kind == "frame"]
    assert len(frames) >= 5
    for frame in frames:
        msg: Any = Enc0Message.decode(frame)
        assert msg.uhdr[KID] == cose_key.kid
        msg.key = cose_key  # pycose's own route: Base IV from the key, Partial IV from msg
        plaintext = msg.decrypt()
        assert decode_pack(plaintext).records
        assert plaintext == host_cose.decrypt0(s.cose_key, s.base_iv, frame).plaintext


def test_exported_base_iv_with_leading_zero_opens_with_the_iv_workaround(db: Path) -> None:
    s = replace(DeviceSecrets.generate(), base_iv=b"\x00" + os.urandom(12))
    with Registry.open(db) as reg:
        reg.add_pending(s.dev_id, "esp32-generic", s, POLICY_HASH, None)
        reg.activate(s.dev_id)
        (exported,) = cbor2.loads(export_cose_keys(reg, [s.dev_id], include_secrets=True))
    assert exported[5] == s.base_iv  # the export keeps the 13 bytes as they are
    key = CoseKey.from_dict(exported)
    frame = host_cose.encrypt0(s.cose_key, s.base_iv, s.dev_id, 300, b"report")
    msg: Any = Enc0Message.decode(frame)
    # pycose 1.1.0 would derive a 12-byte nonce here; give it the 13-byte one (label 5).
    nonce = host_cose.nonce_for(exported[5], msg.uhdr[PartialIV])
    msg.uhdr_update({IV: nonce})
    msg.key = key
    assert msg.decrypt() == b"report"


def test_json_export(db: Path) -> None:
    with Registry.open(db) as reg:
        a, b = _add(reg, 2)
        c = _add(reg, 1, activate=False)[0]
        public = json.loads(export_json(reg))
        secret = json.loads(export_json(reg, include_secrets=True))
        one = json.loads(export_json(reg, [b.dev_id.hex()]))
    assert public["format"] == "edgeveil-registry-export"
    assert [d["dev_id"] for d in public["devices"]] == [x.dev_id.hex() for x in (a, b, c)]
    assert not {"cose_key", "base_iv", "port", "mac_hash"} & public["devices"][0].keys()
    assert [d["dev_id"] for d in one["devices"]] == [b.dev_id.hex()]
    assert [d["dev_id"] for d in secret["devices"]] == [a.dev_id.hex(), b.dev_id.hex()]
    assert secret["devices"][0]["cose_key"] == a.cose_key.hex()
    assert secret["devices"][0]["base_iv"] == a.base_iv.hex()
    text = json.dumps(secret)
    for s in (a, b):  # the pseudonym and policy keys never leave the registry
        assert s.pseudo_key.hex() not in text and s.policy_key.hex() not in text


# --- CLI --------------------------------------------------------------------------------


def ev(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGEVEIL_")}
    return subprocess.run(
        [EDGEVEIL, *args], capture_output=True, cwd=cwd, env={**full, **(env or {})}, timeout=60
    )


def test_cli_init_list_show_revoke(tmp_path: Path) -> None:
    res = ev(tmp_path, "init")
    assert res.returncode == 0, res.stderr
    assert b"created registry edgeveil-registry.db" in res.stdout
    assert oct((tmp_path / "edgeveil-registry.db.key").stat().st_mode & 0o777) == "0o600"
    again = ev(tmp_path, "init")
    assert again.returncode == 2 and b"refusing to overwrite" in again.stderr
    with Registry.open(tmp_path / "edgeveil-registry.db") as reg:
        devices = _add(reg, 3)
    ids = [s.dev_id.hex() for s in devices]
    outputs = []

    res = ev(tmp_path, "registry", "list", "--json")
    assert res.returncode == 0, res.stderr
    assert [d["dev_id"] for d in json.loads(res.stdout)] == ids
    outputs.append(res)
    res = ev(tmp_path, "registry", "list")
    assert res.returncode == 0 and all(i.encode() in res.stdout for i in ids)
    outputs.append(res)
    res = ev(tmp_path, "registry", "revoke", ids[1])
    assert res.returncode == 0 and res.stdout == f"revoked {ids[1]} (was active)\n".encode()
    outputs.append(res)
    res = ev(tmp_path, "registry", "list", "--status", "revoked", "--json")
    assert [d["dev_id"] for d in json.loads(res.stdout)] == [ids[1]]
    outputs.append(res)
    res = ev(tmp_path, "registry", "show", ids[0], "--json")
    shown = json.loads(res.stdout)
    assert shown["dev_id"] == ids[0] and shown["status"] == "active"
    outputs.append(res)
    res = ev(tmp_path, "registry", "show", ids[0])
    assert res.returncode == 0 and b"status:       active" in res.stdout
    outputs.append(res)
    res = ev(tmp_path, "registry", "export", "--format", "json")
    assert [d["dev_id"] for d in json.loads(res.stdout)["devices"]] == ids
    outputs.append(res)
    res = ev(tmp_path, "registry", "show", "00" * 8)
    assert res.returncode == 2 and b"unknown device 0000000000000000" in res.stderr
    outputs.append(res)

    for out in outputs:  # nothing but an explicit export ever prints a secret
        for s in devices:
            assert not [n for n in _needles(s) if n in out.stdout + out.stderr]


def test_cli_registry_path_key_file_and_environment(tmp_path: Path) -> None:
    db, key = tmp_path / "a" / "fleet.db", tmp_path / "secure" / "fleet.key"
    db.parent.mkdir()
    key.parent.mkdir()
    assert ev(tmp_path, "init", "--registry", str(db), "--key-file", str(key)).returncode == 0
    with Registry.open(db, key_path=key) as reg:
        s = _add(reg, 1)[0]
    # Group option, command option, and environment all name the same registry.
    for args, env in (
        (["registry", "--registry", str(db), "list", "--json"], None),
        (["registry", "list", "--registry", str(db), "--json"], None),
        (["registry", "list", "--json"], {"EDGEVEIL_REGISTRY": str(db)}),
    ):
        res = ev(tmp_path, *args, env=env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)[0]["dev_id"] == s.dev_id.hex()
    out = tmp_path / "keys.cbor"
    args = ["registry", "--registry", str(db), "export", "--format", "cose-key"]
    res = ev(tmp_path, *args, "--include-secrets", "-o", str(out))
    assert res.returncode == 2 and b"no master key for registry" in res.stderr  # key not beside
    res = ev(tmp_path, *args, "--include-secrets", "-o", str(out), "--key-file", str(key))
    assert res.returncode == 0, res.stderr
    assert cbor2.loads(out.read_bytes())[0][-1] == s.cose_key
    env = {"EDGEVEIL_MASTER_KEY": os.urandom(32).hex()}
    res = ev(tmp_path, *args, "--include-secrets", "-o", str(tmp_path / "k2"), env=env)
    assert res.returncode == 2 and b"wrong master key for registry" in res.stderr
    assert not (tmp_path / "k2").exists()


def test_cli_export_rules(tmp_path: Path) -> None:
    db = init_registry(tmp_path / "edgeveil-registry.db")
    with Registry.open(db) as reg:
        s = _add(reg, 1)[0]
    res = ev(tmp_path, "registry", "export", "--format", "cose-key")
    assert res.returncode == 2 and b"add --include-secrets" in res.stderr
    res = ev(tmp_path, "registry", "export", "--format", "cose-key", "--include-secrets")
    assert res.returncode == 0  # to a pipe: allowed (a backend's import reads it)
    assert cbor2.loads(res.stdout)[0][-1] == s.cose_key
    out = tmp_path / "keys.cbor"
    args = ("registry", "export", "--format", "cose-key", "--include-secrets", "-o", str(out))
    res = ev(tmp_path, *args)
    assert (
        res.returncode == 0 and res.stdout == b"" and s.cose_key.hex().encode() not in res.stderr
    )
    assert out.stat().st_mode & 0o777 == 0o600
    res = ev(tmp_path, *args)
    assert res.returncode == 2 and b"exists; refusing to overwrite" in res.stderr
    res = ev(tmp_path, "registry", "export", "--format", "json", "--include-secrets")
    assert json.loads(res.stdout)["devices"][0]["cose_key"] == s.cose_key.hex()
    res = ev(tmp_path, "registry", "--help")
    assert res.returncode == 0 and b"Examples:" in res.stdout


@pytest.mark.parametrize("fmt", ["cose-key", "json"])
def test_cli_refuses_to_print_keys_on_a_terminal(tmp_path: Path, fmt: str) -> None:
    db = init_registry(tmp_path / "edgeveil-registry.db")
    with Registry.open(db) as reg:
        s = _add(reg, 1)[0]
    master, slave = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEVEIL_")}
        proc = subprocess.run(
            [EDGEVEIL, "registry", "export", "--format", fmt, "--include-secrets"],
            stdout=slave,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        os.set_blocking(master, False)
        try:
            shown = os.read(master, 65536)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 2 and b"refusing to write keys to a terminal" in proc.stderr
    assert s.cose_key not in shown and s.cose_key.hex().encode() not in shown


def test_cli_refuses_too_open_key_file_and_corrupt_registry(tmp_path: Path) -> None:
    db = init_registry(tmp_path / "edgeveil-registry.db")
    default_key_path(db).chmod(0o644)
    res = ev(tmp_path, "registry", "list")
    assert res.returncode == 2
    assert b"accessible by others (mode 0644)" in res.stderr and b"chmod 600" in res.stderr
    default_key_path(db).chmod(0o600)
    _zero_header(db)
    res = ev(tmp_path, "registry", "list")
    assert res.returncode == 2 and b"corrupt or not a registry" in res.stderr
    assert b"Traceback" not in res.stderr
