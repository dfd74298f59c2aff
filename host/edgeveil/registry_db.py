"""The registry's SQLite file: its schema, creating it, checking it on open, upgrading it.

    init_registry("fleet.db")                  # fleet.db (schema 2) + fleet.db.key (0600)
    conn = connect(db, timeout=30.0)           # WAL, synchronous=FULL, busy timeout
    version, registry_id, key_check = check_database(conn, db)
    keys, upgraded = unlock(conn, db, master, source)  # key check, schema 1 -> 2, device set

Schema 2 adds to each device row `row_tag`, an HMAC (registry_keys.WrapKeys.row_tag) over
all its other columns, and to `meta` a `devices_tag` over the set of device ids, so that a
row changed, swapped, inserted or deleted outside edgeveil is noticed by whoever holds the
master key. A row and its tag: registry_rows.py; `Registry` (registry.py) reads and writes
them; this module only knows the file. Layout and encodings: docs/registry.md.
"""

from __future__ import annotations

import hmac
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from .errors import RegistryError
from .registry_keys import (
    ENV_MASTER_KEY,
    MASTER_KEY_LEN,
    WrapKeys,
    default_key_path,
    parse_master_key,
    write_exclusive,
)
from .registry_rows import COLUMNS

ENV_REGISTRY = "EDGEVEIL_REGISTRY"
DEFAULT_REGISTRY = "edgeveil-registry.db"
SCHEMA_VERSION = 2
APPLICATION_ID = 0x45564C52  # "EVLR" in the SQLite header (PRAGMA application_id)
DEV_ID_LEN = 8
STATUSES = ("pending", "active", "revoked", "wiped")
DEVICES_TAG = "devices_tag"  # the meta entry holding the tag over the set of device ids

_SQLITE_MAGIC = b"SQLite format 3\x00"

# Schema 1, as edgeveil 1 made it; schema 2 is this plus _ADD_ROW_TAG (new files and
# upgraded ones end up with the same table).
_SCHEMA_V1 = f"""
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE devices (
    dev_id       TEXT PRIMARY KEY CHECK (length(dev_id) = {2 * DEV_ID_LEN}),
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
# An empty default never verifies; every write sets the real tag in the same statement.
_ADD_ROW_TAG = "ALTER TABLE devices ADD COLUMN row_tag BLOB NOT NULL DEFAULT x''"


def default_registry_path() -> Path:
    """`$EDGEVEIL_REGISTRY` if set, else `./edgeveil-registry.db`."""
    return Path(os.environ.get(ENV_REGISTRY) or DEFAULT_REGISTRY)


def now() -> str:
    """The time now, as the registry stores it (ISO 8601, UTC, microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dev_id_bytes(dev_id: bytes | str) -> bytes:
    """A device id as bytes; accepts the 8 bytes or their 16 hex digits."""
    if isinstance(dev_id, str):
        try:
            raw = bytes.fromhex(dev_id)
        except ValueError:
            raw = b""
    else:
        raw = bytes(dev_id)
    if len(raw) != DEV_ID_LEN:
        raise RegistryError(f"a device id is {DEV_ID_LEN} bytes ({2 * DEV_ID_LEN} hex digits)")
    return raw


def connect(db: Path, timeout: float) -> sqlite3.Connection:
    """A connection to an existing registry file (never creates one), autocommit mode."""
    uri = "file:" + quote(str(db.resolve())) + "?mode=rw"  # never creates a file
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    conn.execute("PRAGMA synchronous = FULL")  # a committed device survives power loss
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def init_registry(path: str | Path | None = None, key_path: str | Path | None = None) -> Path:
    """Create a registry and its master key; refuses to overwrite either.

    The key comes from `EDGEVEIL_MASTER_KEY` (64 hex digits) when that is set and no
    `key_path` is given; otherwise 32 random bytes are written to `key_path` (default
    `<db>.key`), created exclusively with mode 0600.

    Args:
        path: the database; default `default_registry_path()`.
        key_path: where to create the key file.

    Returns:
        The registry's path.

    Raises:
        RegistryError: the database or key file exists, or the environment key is invalid.
    """
    db = Path(path) if path is not None else default_registry_path()
    env = os.environ.get(ENV_MASTER_KEY)
    if env and key_path is not None:
        raise RegistryError(f"both {ENV_MASTER_KEY} and a key file were given; choose one")
    if db.exists():
        raise RegistryError(f"{db} exists; refusing to overwrite it")
    created: list[Path] = []
    try:
        if env and key_path is None:
            master = parse_master_key(env, ENV_MASTER_KEY)
        else:
            master = os.urandom(MASTER_KEY_LEN)
            kp = Path(key_path) if key_path is not None else default_key_path(db)
            write_exclusive(kp, master, "master key file")
            created.append(kp)
        write_exclusive(db, b"", "registry")
        created.append(db)
        _create_schema(db, master)
    except BaseException:
        for p in reversed(created):
            for q in (p, Path(str(p) + "-wal"), Path(str(p) + "-shm")):
                q.unlink(missing_ok=True)
        raise
    return db


def _create_schema(db: Path, master: bytes) -> None:
    registry_id = os.urandom(16)
    keys = WrapKeys(master, registry_id)
    conn = connect(db, 30.0)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for stmt in (*_SCHEMA_V1.split(";"), _ADD_ROW_TAG):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("registry_id", registry_id),
                ("key_check", keys.check_v2),
                (DEVICES_TAG, keys.devices_tag([])),
                ("created_at", now()),
            ],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def check_header(db: Path) -> None:
    """Refuse a missing file or one that is not SQLite before sqlite3 touches it."""
    try:
        with open(db, "rb") as f:
            head = f.read(100)
    except FileNotFoundError as exc:
        raise RegistryError(
            f"no registry at {db}: create one with `edgeveil init --registry {db}`"
        ) from exc
    except OSError as exc:
        raise RegistryError(f"cannot read registry {db}: {exc.strerror}") from exc
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise RegistryError(f"{db} is corrupt or not a registry (no SQLite header)")


def check_database(conn: sqlite3.Connection, db: Path) -> tuple[int, bytes, bytes]:
    """Check a just-opened registry; returns (schema version, registry id, key check value).

    Schema versions 1 (to be upgraded with the key) and 2 are accepted.
    """
    conn.execute("PRAGMA journal_mode = WAL")
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise RegistryError(f"{db} is an SQLite database but not an edgeveil registry")
    try:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    except (sqlite3.OperationalError, TypeError) as exc:
        raise RegistryError(f"registry {db} has no schema version: corrupt") from exc
    if version not in (1, SCHEMA_VERSION):
        raise RegistryError(
            f"registry {db} has schema version {version}; this edgeveil reads {SCHEMA_VERSION}"
        )
    problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise RegistryError(f"registry {db} is corrupt: {'; '.join(problems[:3])}")
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    if not {"registry_id", "key_check"} <= meta.keys():
        raise RegistryError(f"registry {db} lacks its key check value: corrupt")
    return int(version), bytes(meta["registry_id"]), bytes(meta["key_check"])


def device_ids(conn: sqlite3.Connection) -> list[str]:
    """Every device id as stored (the set the devices tag covers)."""
    return [r[0] for r in conn.execute("SELECT dev_id FROM devices").fetchall()]


def check_devices_tag(conn: sqlite3.Connection, keys: WrapKeys, db: Path) -> list[str]:
    """The device ids, once their set matches the tag in meta (call inside a transaction,
    so both are read from one snapshot).

    Raises:
        RegistryError: a device row was deleted or inserted outside edgeveil.
    """
    ids = device_ids(conn)
    found = conn.execute("SELECT value FROM meta WHERE name = ?", (DEVICES_TAG,)).fetchone()
    if found is None or not hmac.compare_digest(bytes(found[0]), keys.devices_tag(ids)):
        raise RegistryError(
            f"registry {db}: the set of devices was altered outside edgeveil (a device row "
            "deleted or inserted: the devices tag does not verify)"
        )
    return ids


def store_devices_tag(conn: sqlite3.Connection, keys: WrapKeys, ids: list[str]) -> None:
    """Record the tag over the set of device ids `ids` (inside the writing transaction)."""
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (DEVICES_TAG, keys.devices_tag(ids)))


def upgrade_v1(conn: sqlite3.Connection, keys: WrapKeys) -> bool:
    """Schema 1 -> 2 in one transaction: add `row_tag`, tag every row as it stands, tag the
    set of devices, replace the key check value with schema 2's, and bump the version.

    Returns:
        True if this call upgraded it; False if another process had already done so.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
        if version != 1:
            conn.execute("ROLLBACK")
            return False
        conn.execute(_ADD_ROW_TAG)
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM devices").fetchall()
        conn.executemany(
            "UPDATE devices SET row_tag = ? WHERE dev_id = ?",
            [(keys.row_tag(r), r[0]) for r in rows],
        )
        store_devices_tag(conn, keys, [r[0] for r in rows])
        conn.execute("UPDATE meta SET value = ? WHERE name = 'key_check'", (keys.check_v2,))
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def unlock(
    conn: sqlite3.Connection, db: Path, master: bytes | None, source: str
) -> tuple[WrapKeys | None, int | None]:
    """Check the database and the master key; upgrade schema 1; check the set of devices.

    Returns:
        The subkeys (None without a master key), and 1 if schema 1 was upgraded here.
    """
    version, registry_id, check = check_database(conn, db)
    if master is None:
        if version == 1:
            raise RegistryError(
                f"registry {db} has schema version 1: its master key is needed to upgrade "
                f"it to version {SCHEMA_VERSION} (set {ENV_MASTER_KEY}, put the key file at "
                f"{default_key_path(db)}, or pass --key-file)"
            )
        return None, None
    keys = WrapKeys(master, registry_id)
    if not hmac.compare_digest(keys.check if version == 1 else keys.check_v2, check):
        if version == 1 and hmac.compare_digest(keys.check_v2, check):
            raise RegistryError(
                f"registry {db} says schema version 1 but holds a version-2 key check: it "
                "was altered outside edgeveil; refusing to upgrade (and so re-tag) it"
            )
        raise RegistryError(f"wrong master key for registry {db} (from {source})")
    upgraded = 1 if version == 1 and upgrade_v1(conn, keys) else None
    conn.execute("BEGIN")  # one snapshot for the ids and their tag
    try:
        check_devices_tag(conn, keys, db)
    finally:
        conn.execute("COMMIT")
    return keys, upgraded
