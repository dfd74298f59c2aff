"""The device registry: every provisioned device, its state, and its keys wrapped.

    init_registry("fleet.db")                   # fleet.db + fleet.db.key (0600, 32 bytes)
    with Registry.open("fleet.db") as reg:      # key: EDGEVEIL_MASTER_KEY or fleet.db.key
        reg.add_pending(s.dev_id, "esp32-generic", s, policy_hash, "/dev/ttyUSB0")
        reg.activate(s.dev_id)                  # after the device read its keys back
        cbor = export_cose_keys(reg, include_secrets=True)   # what a backend decrypts with

One SQLite file (WAL journal, `synchronous=FULL`, busy timeout, every write in a
`BEGIN IMMEDIATE` transaction) shared by every process of a factory jig. The device id
(the COSE kid, sent in clear in every message) is the primary key; the four secrets are
each sealed with AES-256-GCM under a key derived from the master key, with a fresh 12-byte
nonce and AAD = device id || field name, so a wrapped value moved to another row or column
no longer opens. A key check value stored beside them makes a wrong master key fail before
anything is decrypted. The MAC address is never stored; a keyed hash of it is, to recognise
a board that comes back. Layout and key handling: docs/registry.md.
"""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cbor2

from .closing import Closing
from .cose import ALG_AES_CCM_16_64_128
from .demo import DeviceSecrets
from .errors import RegistryError
from .registry_keys import (
    ENV_MASTER_KEY,
    MASTER_KEY_LEN,
    WrapKeys,
    default_key_path,
    parse_master_key,
    resolve_master_key,
    write_exclusive,
)

ENV_REGISTRY = "EDGEVEIL_REGISTRY"
DEFAULT_REGISTRY = "edgeveil-registry.db"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x45564C52  # "EVLR" in the SQLite header (PRAGMA application_id)
DEV_ID_LEN = 8
STATUSES = ("pending", "active", "revoked", "wiped")
# The wrapped secrets and their sizes (device/veil/keys.py); dev_id is the primary key.
SECRET_FIELDS = (("cose_key", 16), ("base_iv", 13), ("pseudo_key", 32), ("policy_key", 32))

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = f"""
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
_RECORD_COLUMNS = (
    "dev_id, board, status, policy_hash, code_hash, last_counter, mac_hash, port, "
    "created_at, updated_at"
)


@dataclass(frozen=True)
class DeviceRecord:
    """One device as the registry knows it. Holds no secret."""

    dev_id: bytes
    board: str
    status: str
    policy_hash: str
    code_hash: str | None
    last_counter: int | None  # highest message counter seen; None before the first
    mac_hash: str | None  # keyed hash (hex) of the MAC address; the MAC itself is not kept
    port: str | None  # where it was provisioned
    created_at: str  # ISO 8601, UTC
    updated_at: str

    def to_json(self, public: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (dev_id as hex); `public` leaves out the local port and MAC hash."""
        out: dict[str, Any] = {
            "dev_id": self.dev_id.hex(),
            "board": self.board,
            "status": self.status,
            "policy_hash": self.policy_hash,
            "code_hash": self.code_hash,
            "last_counter": self.last_counter,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if not public:
            out["port"] = self.port
            out["mac_hash"] = self.mac_hash
        return out


Records = list[DeviceRecord]  # (`Registry.list` shadows the builtin inside the class)


def default_registry_path() -> Path:
    """`$EDGEVEIL_REGISTRY` if set, else `./edgeveil-registry.db`."""
    return Path(os.environ.get(ENV_REGISTRY) or DEFAULT_REGISTRY)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dev_id(dev_id: bytes | str) -> bytes:
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


def _connect(db: Path, timeout: float) -> sqlite3.Connection:
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
    conn = _connect(db, 30.0)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        check = WrapKeys(master, registry_id).check
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("registry_id", registry_id), ("key_check", check), ("created_at", _now())],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


class Registry(Closing):
    """An open registry. Use `Registry.open(...)` as a context manager."""

    def __init__(self, conn: sqlite3.Connection, path: Path, keys: WrapKeys | None) -> None:
        self._conn = conn
        self.path = path
        self._keys = keys

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        master_key: bytes | None = None,
        *,
        key_path: str | Path | None = None,
        timeout: float = 30.0,
    ) -> Registry:
        """Open a registry and check the master key against it before anything else.

        The key is, in order: `master_key`, `key_path`, `EDGEVEIL_MASTER_KEY`, `<db>.key`.
        Without any, the registry opens for metadata only (list, show, revoke); calls that
        need the key raise.

        Args:
            path: the database; default `default_registry_path()`.
            master_key: the 32-byte master key.
            key_path: a master key file.
            timeout: seconds to wait for another writer (a jig's other processes).

        Raises:
            RegistryError: no registry there, not an edgeveil registry, corrupt, wrong
                master key, or a key file with too-open permissions.
        """
        db = Path(path) if path is not None else default_registry_path()
        _check_header(db)
        master, source = resolve_master_key(db, master_key, key_path)
        try:
            conn = _connect(db, timeout)
        except sqlite3.OperationalError as exc:  # permissions, locked, I/O
            raise RegistryError(f"cannot open registry {db}: {exc}") from exc
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {db} is corrupt: {exc}") from exc
        try:
            registry_id, check = _check_database(conn, db)
            keys = None
            if master is not None:
                keys = WrapKeys(master, registry_id)
                if not hmac.compare_digest(keys.check, check):
                    raise RegistryError(f"wrong master key for registry {db} (from {source})")
        except sqlite3.Error as exc:
            conn.close()
            raise RegistryError(f"registry {db} is corrupt: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, db, keys)

    def close(self) -> None:
        self._conn.close()

    @property
    def has_key(self) -> bool:
        """Whether the master key was found (needed to add devices and read secrets)."""
        return self._keys is not None

    # --- writes -----------------------------------------------------------------------

    def add_pending(
        self,
        dev_id: bytes | str,
        board: str,
        secrets: DeviceSecrets,
        policy_hash: str,
        port: str | None,
        *,
        mac: bytes | None = None,
    ) -> None:
        """Record a device being provisioned, status `pending`, its secrets wrapped.

        Args:
            dev_id: the device id (must equal `secrets.dev_id`).
            board: the board name.
            secrets: the device's secrets.
            policy_hash: hash of the policy provisioned to it.
            port: the serial port it was provisioned on.
            mac: its MAC address; only a keyed hash of it is stored.

        Raises:
            RegistryError: no master key, malformed secrets, or the device is already known.
        """
        did = _dev_id(dev_id)
        keys = self._need_key()
        if secrets.dev_id != did:
            raise RegistryError("dev_id does not match the secrets' dev_id")
        if not board:
            raise RegistryError("board must not be empty")
        sealed = []
        for name, size in SECRET_FIELDS:
            value = getattr(secrets, name)
            if not isinstance(value, bytes | bytearray) or len(value) != size:
                raise RegistryError(f"{name} must be {size} bytes")
            sealed.append(keys.seal(did, name, bytes(value)))
        now = _now()
        row = (did.hex(), board, "pending", *sealed, policy_hash, None, None)
        row += (keys.mac_hash(mac) if mac is not None else None, port, now, now)
        with self._write() as conn:
            exists = conn.execute(
                "SELECT status FROM devices WHERE dev_id = ?", (did.hex(),)
            ).fetchone()
            if exists:
                raise RegistryError(f"device {did.hex()} is already registered ({exists[0]})")
            conn.execute(f"INSERT INTO devices VALUES ({', '.join('?' * 14)})", row)

    def activate(self, dev_id: bytes | str) -> None:
        """pending -> active, once the device has confirmed its keys.

        Raises:
            RegistryError: unknown device, or it is not pending.
        """
        self._transition(dev_id, ("pending",), "active")

    def revoke(self, dev_id: bytes | str) -> None:
        """pending or active -> revoked (its messages are no longer accepted); idempotent.

        Raises:
            RegistryError: unknown device, or it is wiped.
        """
        self._transition(dev_id, ("pending", "active", "revoked"), "revoked")

    def mark_wiped(self, dev_id: bytes | str) -> None:
        """active or revoked -> wiped: the device's keys were replaced on the board (its old
        messages still decrypt with the kept keys); idempotent.

        Raises:
            RegistryError: unknown device, or it is pending.
        """
        self._transition(dev_id, ("active", "revoked", "wiped"), "wiped")

    def delete_pending(self, dev_id: bytes | str) -> None:
        """Remove a pending device (rolls back a provisioning that did not complete).

        Raises:
            RegistryError: unknown device, or it is not pending (an active device's keys
                are never deleted).
        """
        did = _dev_id(dev_id)
        with self._write() as conn:
            self._status_in(conn, did, ("pending",), "delete")
            conn.execute("DELETE FROM devices WHERE dev_id = ?", (did.hex(),))

    def set_code_hash(self, dev_id: bytes | str, code_hash: str) -> None:
        """Record the hash of the code deployed to a device (`edgeveil deploy` prints it).

        Raises:
            RegistryError: unknown device.
        """
        self._update(dev_id, "code_hash = ?", (code_hash,))

    def update_counter(self, dev_id: bytes | str, counter: int) -> bool:
        """Record a message counter seen from a device; the stored value only increases.

        Returns:
            True if `counter` was above the last one seen (now recorded); False if not (a
            replayed or reordered message; nothing changes).

        Raises:
            RegistryError: unknown device, or a negative counter.
        """
        if type(counter) is not int or counter < 0:
            raise RegistryError(f"a counter is a non-negative int, got {counter!r}")
        did = _dev_id(dev_id)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE devices SET last_counter = ?, updated_at = ? WHERE dev_id = ? "
                "AND (last_counter IS NULL OR last_counter < ?)",
                (counter, _now(), did.hex(), counter),
            )
            if cur.rowcount:
                return True
            self._row(conn, did)  # raises for an unknown device
            return False

    # --- reads ------------------------------------------------------------------------

    def get(self, dev_id: bytes | str) -> DeviceRecord:
        """The device's record (no secrets).

        Raises:
            RegistryError: unknown device.
        """
        with self._read() as conn:
            return _record(self._row(conn, _dev_id(dev_id)))

    def secrets(self, dev_id: bytes | str) -> DeviceSecrets:
        """The device's secrets, unwrapped (for export and provisioning only).

        Raises:
            RegistryError: no master key, unknown device, or a wrapped value that does not
                authenticate (the row was tampered with).
        """
        did = _dev_id(dev_id)
        keys = self._need_key()
        cols = ", ".join(name for name, _ in SECRET_FIELDS)
        with self._read() as conn:
            self._row(conn, did)
            sealed = conn.execute(
                f"SELECT {cols} FROM devices WHERE dev_id = ?", (did.hex(),)
            ).fetchone()
        values = {
            name: keys.open(did, name, s)
            for (name, _), s in zip(SECRET_FIELDS, sealed, strict=True)
        }
        return DeviceSecrets(dev_id=did, **values)

    def list(self, status: str | None = None) -> Records:
        """Devices, oldest first, optionally only those with `status`.

        Raises:
            RegistryError: unknown status.
        """
        sql = f"SELECT {_RECORD_COLUMNS} FROM devices"
        args: tuple[Any, ...] = ()
        if status is not None:
            if status not in STATUSES:
                raise RegistryError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
            sql += " WHERE status = ?"
            args = (status,)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, dev_id", args).fetchall()
        return [_record(r) for r in rows]

    def pending(self) -> Records:
        """Devices whose provisioning has not completed (for `provision --resume`)."""
        return self.list("pending")

    def find_mac(self, mac: bytes) -> Records:
        """Devices provisioned on a board with this MAC address (compared by keyed hash).

        Raises:
            RegistryError: no master key.
        """
        h = self._need_key().mac_hash(mac)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM devices WHERE mac_hash = ? ORDER BY created_at",
                (h,),
            ).fetchall()
        return [_record(r) for r in rows]

    # --- plumbing ---------------------------------------------------------------------

    def _need_key(self) -> WrapKeys:
        if self._keys is None:
            raise RegistryError(
                f"no master key for registry {self.path}: set {ENV_MASTER_KEY} or put the "
                f"key file at {default_key_path(self.path)} (or pass --key-file)"
            )
        return self._keys

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front, so racing
        writers queue on the busy timeout instead of failing at their first write."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._db_error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._db_error(exc) from exc
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise self._db_error(exc) from exc

    def _db_error(self, exc: sqlite3.Error) -> RegistryError:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return RegistryError(f"registry {self.path} is busy (another writer): {exc}")
        return RegistryError(f"registry {self.path}: {exc}")

    def _row(self, conn: sqlite3.Connection, did: bytes) -> tuple[Any, ...]:
        row = conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM devices WHERE dev_id = ?", (did.hex(),)
        ).fetchone()
        if row is None:
            raise RegistryError(f"unknown device {did.hex()} in registry {self.path}")
        return tuple(row)

    def _status_in(
        self, conn: sqlite3.Connection, did: bytes, allowed: Iterable[str], action: str
    ) -> str:
        status = str(self._row(conn, did)[2])
        if status not in allowed:
            raise RegistryError(f"cannot {action} device {did.hex()}: it is {status}")
        return status

    def _transition(self, dev_id: bytes | str, allowed: tuple[str, ...], new: str) -> None:
        did = _dev_id(dev_id)
        with self._write() as conn:
            if self._status_in(conn, did, allowed, f"make {new}") != new:
                conn.execute(
                    "UPDATE devices SET status = ?, updated_at = ? WHERE dev_id = ?",
                    (new, _now(), did.hex()),
                )

    def _update(self, dev_id: bytes | str, assignment: str, args: tuple[Any, ...]) -> None:
        did = _dev_id(dev_id)
        with self._write() as conn:
            self._row(conn, did)
            conn.execute(
                f"UPDATE devices SET {assignment}, updated_at = ? WHERE dev_id = ?",
                (*args, _now(), did.hex()),
            )


def _record(row: tuple[Any, ...]) -> DeviceRecord:
    dev_id, board, status, policy_hash, code_hash, counter, mac_hash, port, created, updated = row
    return DeviceRecord(
        bytes.fromhex(dev_id),
        board,
        status,
        policy_hash,
        code_hash,
        counter,
        mac_hash.hex() if mac_hash is not None else None,
        port,
        created,
        updated,
    )


def _check_header(db: Path) -> None:
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


def _check_database(conn: sqlite3.Connection, db: Path) -> tuple[bytes, bytes]:
    """Check a just-opened registry; returns (registry id, key check value)."""
    conn.execute("PRAGMA journal_mode = WAL")
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise RegistryError(f"{db} is an SQLite database but not an edgeveil registry")
    try:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    except (sqlite3.OperationalError, TypeError) as exc:
        raise RegistryError(f"registry {db} has no schema version: corrupt") from exc
    if version != SCHEMA_VERSION:
        raise RegistryError(
            f"registry {db} has schema version {version}; this edgeveil reads {SCHEMA_VERSION}"
        )
    problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise RegistryError(f"registry {db} is corrupt: {'; '.join(problems[:3])}")
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    if not {"registry_id", "key_check"} <= meta.keys():
        raise RegistryError(f"registry {db} lacks its key check value: corrupt")
    return bytes(meta["registry_id"]), bytes(meta["key_check"])


# --- export ------------------------------------------------------------------------------

COSE_KTY_SYMMETRIC = 4  # RFC 9053 §7: kty Symmetric
COSE_KEY_OPS_DECRYPT = 4  # RFC 9052 Table 5
# COSE_Key labels: RFC 9052 §7.1 (kty 1, kid 2, alg 3, key_ops 4, Base IV 5), RFC 9053 §6.1 (k -1)
_K_KTY, _K_KID, _K_ALG, _K_OPS, _K_BASE_IV, _K_K = 1, 2, 3, 4, 5, -1


def cose_key_map(secrets: DeviceSecrets) -> dict[int, Any]:
    """The COSE_Key (RFC 9052 §7) a backend decrypts a device's reports with."""
    return {
        _K_KTY: COSE_KTY_SYMMETRIC,
        _K_KID: secrets.dev_id,
        _K_ALG: ALG_AES_CCM_16_64_128,
        _K_OPS: [COSE_KEY_OPS_DECRYPT],
        _K_BASE_IV: secrets.base_iv,
        _K_K: secrets.cose_key,
    }


def _export_selection(registry: Registry, dev_ids: Iterable[bytes | str] | None) -> Records:
    """Devices whose keys may be exported: all active ones, or exactly `dev_ids` (active)."""
    if dev_ids is None:
        return registry.list("active")
    recs = [registry.get(d) for d in dev_ids]
    for r in recs:
        if r.status != "active":
            raise RegistryError(f"device {r.dev_id.hex()} is {r.status}; only active keys export")
    return recs


def export_cose_keys(
    registry: Registry,
    dev_ids: Iterable[bytes | str] | None = None,
    *,
    include_secrets: bool = False,
) -> bytes:
    """A CBOR array of COSE_Key maps (kty 4, kid = device id, alg 10, key_ops [decrypt],
    Base IV under label 5, k): everything a backend needs to open the devices' reports.

    Args:
        registry: an open registry with its master key.
        dev_ids: devices to export (each must be active); default every active device.
        include_secrets: must be True: this output holds keys, so asking is explicit.

    Raises:
        RegistryError: `include_secrets` not set, no master key, unknown or inactive device.
    """
    if not include_secrets:
        raise RegistryError("COSE_Key export holds keys: it needs include_secrets=True")
    keys = [cose_key_map(registry.secrets(r.dev_id)) for r in _export_selection(registry, dev_ids)]
    return cbor2.dumps(keys, canonical=True)


def export_json(
    registry: Registry,
    dev_ids: Iterable[bytes | str] | None = None,
    *,
    include_secrets: bool = False,
) -> bytes:
    """Devices as JSON: public metadata, plus the COSE key and Base IV (hex) if asked.

    Without `include_secrets` every device (or `dev_ids`) is listed; with it, only active
    ones, as for `export_cose_keys`. The pseudonym and policy keys are never exported.

    Raises:
        RegistryError: no master key (with secrets), unknown or inactive device.
    """
    if include_secrets:
        recs = _export_selection(registry, dev_ids)
    elif dev_ids is None:
        recs = registry.list()
    else:
        recs = [registry.get(d) for d in dev_ids]
    devices = []
    for r in recs:
        item = r.to_json(public=True)
        if include_secrets:
            s = registry.secrets(r.dev_id)
            item.update(
                alg=ALG_AES_CCM_16_64_128, cose_key=s.cose_key.hex(), base_iv=s.base_iv.hex()
            )
        devices.append(item)
    doc = {"format": "edgeveil-registry-export", "version": 1, "devices": devices}
    return (json.dumps(doc, indent=2) + "\n").encode()
