"""The registry's documented layout, rebuilt for tests without edgeveil's code.

docs/registry.md specifies the key derivation (HKDF-SHA256, salt = meta.registry_id, info
"edgeveil registry v1: <label>"), the wrapping (nonce || AES-256-GCM, AAD = dev_id ||
field name), the row tag (HMAC-SHA256 of the CBOR array of the columns in table order) and
the devices tag (HMAC-SHA256 of the sorted CBOR array of device ids). The helpers here
compute those from the documentation, and change a registry with plain sqlite3 as
someone with write access to the file would, so tests never take an expected value from
the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# docs/registry.md "Schema (version 2)": the columns, in order, that the row tag covers.
COLUMNS = (
    "dev_id",
    "board",
    "status",
    "cose_key",
    "base_iv",
    "pseudo_key",
    "policy_key",
    "policy_hash",
    "code_hash",
    "last_counter",
    "mac_hash",
    "port",
    "created_at",
    "updated_at",
)
SECRETS = ("cose_key", "base_iv", "pseudo_key", "policy_key")

# Schema version 1 as edgeveil 1 wrote it (docs/registry.md of that version).
V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE devices (
    dev_id       TEXT PRIMARY KEY CHECK (length(dev_id) = 16),
    board        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked', 'wiped')),
    cose_key     BLOB NOT NULL,
    base_iv      BLOB NOT NULL,
    pseudo_key   BLOB NOT NULL,
    policy_key   BLOB NOT NULL,
    policy_hash  TEXT NOT NULL,
    code_hash    TEXT,
    last_counter INTEGER CHECK (last_counter >= 0),
    mac_hash     BLOB,
    port         TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX devices_status ON devices (status);
CREATE INDEX devices_mac_hash ON devices (mac_hash);
"""


def subkey(master: bytes, registry_id: bytes, label: str) -> bytes:
    info = b"edgeveil registry v1: " + label.encode()
    return HKDF(SHA256(), 32, registry_id, info).derive(master)


def row_tag(master: bytes, registry_id: bytes, values: Sequence[Any]) -> bytes:
    msg = cbor2.dumps(list(values))
    return hmac.new(subkey(master, registry_id, "row tag"), msg, hashlib.sha256).digest()


def mac_hash(master: bytes, registry_id: bytes, mac: bytes) -> bytes:
    return hmac.new(subkey(master, registry_id, "mac hash"), mac, hashlib.sha256).digest()


def devices_tag(master: bytes, registry_id: bytes, dev_ids: Iterable[str]) -> bytes:
    msg = cbor2.dumps(sorted(dev_ids))
    return hmac.new(subkey(master, registry_id, "device set"), msg, hashlib.sha256).digest()


def sql(db: Path, statement: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement with plain sqlite3 and commit; returns the rows it produced."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def registry_id(db: Path) -> bytes:
    return bytes(sql(db, "SELECT value FROM meta WHERE name = 'registry_id'")[0][0])


def row(db: Path, dev_id: str) -> dict[str, Any]:
    """One device row as stored, every column including row_tag."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute("SELECT * FROM devices WHERE dev_id = ?", (dev_id,)).fetchone()
        return dict(found)
    finally:
        conn.close()


def retag(db: Path, master: bytes, dev_id: str) -> None:
    """Give a row the tag its current values deserve (what only the key holder can do)."""
    r = row(db, dev_id)
    tag = row_tag(master, registry_id(db), [r[c] for c in COLUMNS])
    sql(db, "UPDATE devices SET row_tag = ? WHERE dev_id = ?", (tag, dev_id))


def make_v1_registry(db: Path, master: bytes, devices: Sequence[Any]) -> bytes:
    """A schema-1 registry holding `devices` (DeviceSecrets), built with sqlite3 and the
    documented derivation only; returns its registry id."""
    rid = os.urandom(16)
    wrap = AESGCM(subkey(master, rid, "wrap"))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA application_id = 1163283538")  # 0x45564C52, "EVLR"
    conn.executescript(V1_SCHEMA)
    with conn:
        conn.execute("INSERT INTO schema_version VALUES (1)")
        meta = [("registry_id", rid), ("key_check", subkey(master, rid, "key check"))]
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [*meta, ("created_at", "2025")])
        for i, s in enumerate(devices):
            sealed = []
            for name in SECRETS:
                nonce = os.urandom(12)
                aad = s.dev_id + name.encode()
                sealed.append(nonce + wrap.encrypt(nonce, getattr(s, name), aad))
            mac = mac_hash(master, rid, bytes(6))
            when = f"2025-01-01T00:00:0{i}.000000Z"
            values = (s.dev_id.hex(), "esp32-generic", "active", *sealed, "ab" * 32)
            values += ("c0de", 7 + i, mac, f"/dev/ttyUSB{i}", when, when)
            conn.execute(f"INSERT INTO devices VALUES ({', '.join('?' * 14)})", values)
    conn.close()
    return rid
