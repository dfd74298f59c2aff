"""The registry's metadata is authenticated under the master key (schema 2).

Proves: each row's tag is the HMAC docs/registry.md describes (computed here without
edgeveil); changing any column with plain sqlite3 (status, counter, hashes, board, port,
MAC hash, timestamps), swapping two rows' sealed secrets or two rows' tags makes every read
and write of that device fail naming it, while the other rows still read; a row deleted or
re-inserted outside edgeveil fails the open; without the key reads are marked
unauthenticated and writes are refused; a schema-1 registry is upgraded only with its key,
and a schema-2 one made to look like schema 1 is refused.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import registry_tamper as rt
from edgeveil.demo import DeviceSecrets
from edgeveil.errors import RegistryError
from edgeveil.registry import Registry, init_registry
from edgeveil.registry_export import export_cose_keys, export_json
from edgeveil.registry_keys import default_key_path

EDGEVEIL = str(Path(sys.executable).parent / "edgeveil")
MAC = bytes.fromhex("240ac4123456")
OTHER_MAC = bytes.fromhex("240ac4abcdef")


pytestmark = pytest.mark.usefixtures("clean_env")  # and `db`: tests/host/conftest.py


_macs = itertools.count(1)
MACS: dict[bytes, bytes] = {}  # dev_id -> the MAC _add gave it


def _add(reg: Registry, n: int) -> list[DeviceSecrets]:
    out = []
    for i in range(n):
        s = DeviceSecrets.generate()
        mac = MACS[s.dev_id] = MAC[:3] + next(_macs).to_bytes(3, "big")  # a chip each
        reg.add_pending(s.dev_id, "esp32-generic", s, "ab" * 32, f"/dev/pts/{i}", mac=mac)
        reg.activate(s.dev_id)
        out.append(s)
    return out


def _altered(db: Path, dev_id: str) -> str:
    return re.escape(
        f"device {dev_id}: its row in registry {db} was altered outside edgeveil "
        "(the row tag does not verify)"
    )


def _set_altered(db: Path) -> str:
    return re.escape(f"registry {db}: the set of devices was altered outside edgeveil")


def test_row_and_devices_tags_are_the_documented_hmacs(db: Path) -> None:
    master = default_key_path(db).read_bytes()
    with Registry.open(db) as reg:
        a, b = _add(reg, 2)
        reg.set_code_hash(a.dev_id, "c0de" * 16)
        assert reg.update_counter(a.dev_id, 41)
    rid = rt.registry_id(db)
    stored = rt.row(db, a.dev_id.hex())
    assert (stored["status"], stored["last_counter"], stored["code_hash"]) == (
        "active",
        41,
        "c0de" * 16,
    )
    assert stored["row_tag"] == rt.row_tag(master, rid, [stored[c] for c in rt.COLUMNS])
    other = rt.row(db, b.dev_id.hex())
    assert other["row_tag"] == rt.row_tag(master, rid, [other[c] for c in rt.COLUMNS])
    (tag,) = rt.sql(db, "SELECT value FROM meta WHERE name = 'devices_tag'")[0]
    assert tag == rt.devices_tag(master, rid, [a.dev_id.hex(), b.dev_id.hex()])
    assert rt.sql(db, "SELECT version FROM schema_version") == [(2,)]
    assert rt.sql(db, "SELECT value FROM meta WHERE name = 'key_check'") == [
        (rt.subkey(master, rid, "key check, schema 2"),)
    ]


def _swap(db: Path, a: str, b: str, column: str) -> None:
    va, vb = (rt.row(db, d)[column] for d in (a, b))
    rt.sql(db, f"UPDATE devices SET {column} = ? WHERE dev_id = ?", (vb, a))
    rt.sql(db, f"UPDATE devices SET {column} = ? WHERE dev_id = ?", (va, b))


def _set(column: str, value: Any) -> Callable[[Path, str, str], None]:
    def change(db: Path, victim: str, _other: str) -> None:
        rt.sql(db, f"UPDATE devices SET {column} = ? WHERE dev_id = ?", (value, victim))

    return change


def _mac_of_another_board(db: Path, victim: str, _other: str) -> None:
    """Point the device at another board, with the keyed hash that board's MAC has."""
    h = rt.mac_hash(default_key_path(db).read_bytes(), rt.registry_id(db), OTHER_MAC)
    rt.sql(db, "UPDATE devices SET mac_hash = ? WHERE dev_id = ?", (h, victim))


TAMPER = {
    "revoked-to-active": _set("status", "active"),
    "counter-lowered": _set("last_counter", 3),
    "policy-hash": _set("policy_hash", "cd" * 32),
    "code-hash": _set("code_hash", "bad" * 4),
    "board": _set("board", "esp32c3-generic"),
    "port": _set("port", "/dev/ttyUSB9"),
    "mac-hash": _mac_of_another_board,
    "updated-at": _set("updated_at", "2020-01-01T00:00:00.000000Z"),
    "swap-sealed-secrets": lambda db, a, b: [_swap(db, a, b, c) for c in rt.SECRETS],
    "swap-tags": lambda db, a, b: _swap(db, a, b, "row_tag"),
}


@pytest.mark.parametrize("how", TAMPER)
def test_tampered_row_is_refused_by_name(db: Path, how: str) -> None:
    with Registry.open(db) as reg:
        victim, other, clean = _add(reg, 3)
        assert reg.update_counter(victim.dev_id, 40)
        reg.revoke(victim.dev_id)
    v, o = victim.dev_id.hex(), other.dev_id.hex()
    TAMPER[how](db, v, o)
    assert rt.row(db, v) != rt.row(db, o)  # (the tampering did happen)
    with Registry.open(db) as reg:
        altered = _altered(db, v)
        for read in (reg.get, reg.secrets):
            with pytest.raises(RegistryError, match=altered):
                read(victim.dev_id)
        with pytest.raises(RegistryError, match=altered):  # the first one listed
            reg.list()
        with pytest.raises(RegistryError, match=altered):
            reg.find_mac(OTHER_MAC if how == "mac-hash" else MACS[victim.dev_id])
        for export in (export_json, export_cose_keys):
            with pytest.raises(RegistryError, match=altered):
                export(reg, [v], include_secrets=True)
        for write in (  # a write never re-tags (and so launders) an altered row
            lambda: reg.revoke(v),
            lambda: reg.update_counter(v, 1),
            lambda: reg.update_counter(v, 99),
            lambda: reg.set_code_hash(v, "00"),
            lambda: reg.mark_wiped(v),
        ):
            with pytest.raises(RegistryError, match=altered):
                write()
        with pytest.raises(RegistryError, match=altered):
            reg.get(victim.dev_id)  # still refused after the writes were tried
        assert reg.get(clean.dev_id).status == "active"  # an untouched row still reads
        assert reg.secrets(clean.dev_id) == clean
        if how.startswith("swap"):  # both rows of a swap are refused
            with pytest.raises(RegistryError, match=_altered(db, o)):
                reg.get(other.dev_id)
        else:
            assert reg.secrets(other.dev_id) == other


def test_deleted_or_reinserted_row_fails_the_open(db: Path) -> None:
    with Registry.open(db) as reg:
        a, b = _add(reg, 2)
        gone = DeviceSecrets.generate()
        reg.add_pending(gone.dev_id, "esp32-generic", gone, "ab" * 32, None)
    old = rt.row(db, gone.dev_id.hex())  # a copy of the pending row, validly tagged
    with Registry.open(db) as reg:
        reg.delete_pending(gone.dev_id)  # a rollback: the devices tag follows
        assert [r.dev_id for r in reg.list()] == [a.dev_id, b.dev_id]
    cols = ", ".join(old)
    rt.sql(
        db, f"INSERT INTO devices ({cols}) VALUES ({', '.join('?' * len(old))})", [*old.values()]
    )
    with pytest.raises(RegistryError, match=_set_altered(db)):
        Registry.open(db)  # the old row's own tag verifies; the set does not
    rt.sql(db, "DELETE FROM devices WHERE dev_id = ?", (gone.dev_id.hex(),))
    with Registry.open(db) as reg:  # back as edgeveil left it
        assert len(reg.list()) == 2
    rt.sql(db, "DELETE FROM devices WHERE dev_id = ?", (a.dev_id.hex(),))
    with pytest.raises(RegistryError, match=_set_altered(db) + r" \(a device row deleted"):
        Registry.open(db)
    default_key_path(db).rename(db.parent / "away.key")
    with Registry.open(db) as reg:  # without the key it still reads, marked as such
        (rec,) = reg.list()
        assert rec.dev_id == b.dev_id and rec.to_json()["authenticated"] is False


def test_without_the_key_reads_are_unauthenticated_and_writes_refused(db: Path) -> None:
    with Registry.open(db) as reg:
        s, t = _add(reg, 2)
        assert reg.get(s.dev_id).authenticated and reg.get(s.dev_id).to_json()["authenticated"]
    rt.sql(db, "UPDATE devices SET status = 'revoked' WHERE dev_id = ?", (t.dev_id.hex(),))
    default_key_path(db).rename(db.parent / "away.key")
    with Registry.open(db) as reg:
        rec = reg.get(s.dev_id)
        assert rec.status == "active" and rec.authenticated is False
        assert reg.get(t.dev_id).status == "revoked"  # unverified: nothing can tell
        assert [r.to_json(public=True)["authenticated"] for r in reg.list()] == [False, False]
        assert [d["authenticated"] for d in json.loads(export_json(reg))["devices"]] == [
            False,
            False,
        ]
        for write in (
            lambda: reg.revoke(s.dev_id),
            lambda: reg.update_counter(s.dev_id, 5),
            lambda: reg.set_code_hash(s.dev_id, "c0de"),
            lambda: reg.mark_wiped(s.dev_id),
            lambda: reg.delete_pending(s.dev_id),
            lambda: reg.add_pending(t.dev_id, "b", t, "ab" * 32, None),
        ):
            with pytest.raises(RegistryError, match=f"no master key for registry {db}"):
                write()
    with Registry.open(db, key_path=db.parent / "away.key") as reg:
        assert reg.get(s.dev_id) == replace(rec, authenticated=True)
        with pytest.raises(RegistryError, match=_altered(db, t.dev_id.hex())):
            reg.get(t.dev_id)


def test_update_counter_holds_the_write_lock_from_read_to_write(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.open(db) as reg:
        (s,) = _add(reg, 1)
    first, second = Registry.open(db), Registry.open(db, timeout=0.1)
    real_put = Registry._put

    def put(self: Registry, conn: Any, row: Any, *, insert: bool = False) -> None:
        if self is first:  # between its read and its write, no one else may write
            with pytest.raises(RegistryError, match=f"registry {db} is busy"):
                second.update_counter(s.dev_id, 100)
        real_put(self, conn, row, insert=insert)

    monkeypatch.setattr(Registry, "_put", put)
    try:
        assert first.update_counter(s.dev_id, 50)
        assert second.update_counter(s.dev_id, 100) and not first.update_counter(s.dev_id, 60)
        assert first.get(s.dev_id).last_counter == 100
    finally:
        first.close()
        second.close()


def test_wrong_master_key_fails_before_any_tag_or_unwrap(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.open(db) as reg:
        _add(reg, 3)
    from edgeveil import registry_keys

    calls: list[str] = []
    for name in ("open", "row_tag", "devices_tag"):
        real = getattr(registry_keys.WrapKeys, name)

        def spy(self: Any, *args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(self, *args)

        monkeypatch.setattr(registry_keys.WrapKeys, name, spy)
    with pytest.raises(RegistryError, match=f"wrong master key for registry {db}"):
        Registry.open(db, os.urandom(32))
    assert calls == []
    with Registry.open(db) as reg:  # the spies do see the right key's work
        reg.list()
    assert "devices_tag" in calls and "row_tag" in calls


def _v1(tmp_path: Path, n: int = 2) -> tuple[Path, bytes, list[DeviceSecrets]]:
    db, master = tmp_path / "old.db", os.urandom(32)
    devices = [DeviceSecrets.generate() for _ in range(n)]
    rt.make_v1_registry(db, master, devices)
    return db, master, devices


def test_schema_1_is_upgraded_once_with_its_key(tmp_path: Path) -> None:
    db, master, devices = _v1(tmp_path)
    with pytest.raises(RegistryError, match="schema version 1: its master key is needed"):
        Registry.open(db)
    with pytest.raises(RegistryError, match="wrong master key"):
        Registry.open(db, os.urandom(32))
    assert rt.sql(db, "SELECT version FROM schema_version") == [(1,)]  # untouched
    with Registry.open(db, master) as reg:
        assert reg.upgraded_from == 1
        assert [r.dev_id for r in reg.list()] == [s.dev_id for s in devices]
        for i, s in enumerate(devices):
            assert reg.secrets(s.dev_id) == s
            rec = reg.get(s.dev_id)
            assert (rec.status, rec.last_counter, rec.port) == ("active", 7 + i, f"/dev/ttyUSB{i}")
        assert reg.update_counter(devices[0].dev_id, 8)  # writable as schema 2
    rid = rt.registry_id(db)
    assert rt.sql(db, "SELECT version FROM schema_version") == [(2,)]
    assert rt.sql(db, "SELECT value FROM meta WHERE name = 'key_check'") == [
        (rt.subkey(master, rid, "key check, schema 2"),)
    ]
    stored = rt.row(db, devices[1].dev_id.hex())  # tagged as it stood
    assert stored["row_tag"] == rt.row_tag(master, rid, [stored[c] for c in rt.COLUMNS])
    with Registry.open(db, master) as reg:
        assert reg.upgraded_from is None  # said once
    with Registry.open(db) as reg:  # a schema-2 registry reads without the key
        assert reg.get(devices[0].dev_id).authenticated is False
    rt.sql(db, "UPDATE devices SET status = 'revoked'")
    with Registry.open(db, master) as reg:
        with pytest.raises(RegistryError, match=_altered(db, devices[0].dev_id.hex())):
            reg.get(devices[0].dev_id)


def test_schema_2_made_to_look_like_schema_1_is_refused(db: Path) -> None:
    with Registry.open(db) as reg:
        (s,) = _add(reg, 1)
        reg.revoke(s.dev_id)
    # Un-revoke it, and pass the file off as schema 1 so an upgrade would re-tag it.
    rt.sql(db, "UPDATE devices SET status = 'active'")
    rt.sql(db, "ALTER TABLE devices DROP COLUMN row_tag")
    rt.sql(db, "DELETE FROM meta WHERE name = 'devices_tag'")
    rt.sql(db, "UPDATE schema_version SET version = 1")
    with pytest.raises(RegistryError, match="says schema version 1 but holds a version-2 key"):
        Registry.open(db)
    assert rt.sql(db, "SELECT version FROM schema_version") == [(1,)]


def ev(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEVEIL_")}
    return subprocess.run(
        [EDGEVEIL, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_cli_marks_unauthenticated_output_and_announces_the_upgrade(tmp_path: Path) -> None:
    db = init_registry(tmp_path / "edgeveil-registry.db")
    with Registry.open(db) as reg:
        (s,) = _add(reg, 1)
    res = ev(tmp_path, "registry", "list", "--json")
    assert json.loads(res.stdout)[0]["authenticated"] is True
    assert "NOT authenticated" not in ev(tmp_path, "registry", "list").stdout
    default_key_path(db).rename(tmp_path / "away.key")
    res = ev(tmp_path, "registry", "list", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)[0]["authenticated"] is False
    res = ev(tmp_path, "registry", "list")
    assert res.returncode == 0 and s.dev_id.hex() in res.stdout
    assert res.stdout.splitlines()[-1].startswith("metadata NOT authenticated: no master key")
    res = ev(tmp_path, "registry", "show", s.dev_id.hex())
    assert "authenticated: NO: no master key" in res.stdout
    res = ev(tmp_path, "registry", "revoke", s.dev_id.hex())
    assert res.returncode == 2 and "no master key for registry" in res.stderr

    (tmp_path / "v1").mkdir()
    old, master, _ = _v1(tmp_path / "v1")
    (tmp_path / "v1" / "old.db.key").write_bytes(master)
    (tmp_path / "v1" / "old.db.key").chmod(0o600)
    first = ev(tmp_path, "registry", "--registry", str(old), "list")
    assert first.returncode == 0, first.stderr
    assert first.stderr == (
        f"edgeveil: upgraded registry {old} from schema version 1 to 2: every device row "
        "tagged as it stood (docs/registry.md)\n"
    )
    again = ev(tmp_path, "registry", "--registry", str(old), "list")
    assert again.returncode == 0 and again.stderr == ""
