"""The device registry: every provisioned device, its state, and its keys wrapped.

    init_registry("fleet.db")                   # fleet.db + fleet.db.key (0600, 32 bytes)
    with Registry.open("fleet.db") as reg:      # key: EDGEVEIL_MASTER_KEY or fleet.db.key
        reg.add_pending(s.dev_id, "esp32-generic", s, policy_hash, "/dev/ttyUSB0")
        reg.activate(s.dev_id)                  # after the device read its keys back

One SQLite file (WAL, `synchronous=FULL`, every write one `BEGIN IMMEDIATE` transaction)
shared by every process of a factory jig; the device id (the COSE kid) is the primary key.
The four secrets are sealed with AES-256-GCM under a subkey of the master key, AAD = device
id || field name; a key check value makes a wrong master key fail before anything else.
Each row also carries a tag, an HMAC over all its columns: reads with the master key check
it for every row they return, writes check the row before changing it and tag the result
in the same transaction. A tag over the set of device ids, checked on open and before each
add or delete, notices a deleted row. Writing needs the master key; without it records
read with `authenticated=False`. The file itself: registry_db.py; exports:
registry_export.py; layout, encodings and what is not protected: docs/registry.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .closing import Closing
from .demo import DeviceSecrets
from .errors import RegistryError
from .registry_db import (
    STATUSES,
    check_devices_tag,
    check_header,
    connect,
    default_registry_path,
    dev_id_bytes,
    init_registry,
    now,
    store_devices_tag,
    unlock,
)
from .registry_keys import ENV_MASTER_KEY, WrapKeys, default_key_path, resolve_master_key
from .registry_rows import (
    COLUMNS,
    SECRET_FIELDS,
    SELECT_ROW,
    DeviceRecord,
    Records,
    Row,
    check_row,
    need_text,
    put_row,
    record,
)

# What callers import from here (the rest of the registry lives in registry_*.py).
__all__ = ["DeviceRecord", "Records", "Registry", "default_registry_path", "init_registry"]


class Registry(Closing):
    """An open registry. Use `Registry.open(...)` as a context manager.

    `upgraded_from` is 1 when this open upgraded a schema-1 registry (say so once), else
    None.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        keys: WrapKeys | None,
        upgraded_from: int | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        self._keys = keys
        self.upgraded_from = upgraded_from

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
        Without any, the registry opens for reading only (list, show), its records marked
        unauthenticated; calls that write or need the secrets raise. With the key, a
        schema-1 registry is upgraded (see `upgraded_from`) and the set of devices is
        checked against its tag.

        Args:
            path: the database; default `default_registry_path()`.
            master_key: the 32-byte master key.
            key_path: a master key file.
            timeout: seconds to wait for another writer (a jig's other processes).

        Raises:
            RegistryError: no registry there, not an edgeveil registry, corrupt, wrong
                master key, a key file with too-open permissions, a schema-1 registry and
                no key to upgrade it, or a device row deleted outside edgeveil.
        """
        db = Path(path) if path is not None else default_registry_path()
        check_header(db)
        master, source = resolve_master_key(db, master_key, key_path)
        try:
            conn = connect(db, timeout)
        except sqlite3.OperationalError as exc:  # permissions, locked, I/O
            raise RegistryError(f"cannot open registry {db}: {exc}") from exc
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {db} is corrupt: {exc}") from exc
        try:
            keys, upgraded = unlock(conn, db, master, source)
        except sqlite3.Error as exc:
            conn.close()
            raise RegistryError(f"registry {db} is corrupt: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, db, keys, upgraded)

    def close(self) -> None:
        self._conn.close()

    @property
    def has_key(self) -> bool:
        """Whether the master key was found (needed to write, and to read secrets)."""
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
            RegistryError: no master key, malformed secrets, the device is already known,
                or the set of devices was altered outside edgeveil.
        """
        did = dev_id_bytes(dev_id)
        keys = self._need_key()
        if secrets.dev_id != did:
            raise RegistryError("dev_id does not match the secrets' dev_id")
        if not board or not isinstance(board, str):
            raise RegistryError("board must be a non-empty string")
        need_text("policy_hash", policy_hash)
        if port is not None:
            need_text("port", port)
        sealed = []
        for name, size in SECRET_FIELDS:
            value = getattr(secrets, name)
            if not isinstance(value, bytes | bytearray) or len(value) != size:
                raise RegistryError(f"{name} must be {size} bytes")
            sealed.append(keys.seal(did, name, bytes(value)))
        t = now()
        mac_hash = keys.mac_hash(mac) if mac is not None else None
        values = (did.hex(), board, "pending", *sealed, policy_hash, None, None, mac_hash, port)
        row = dict(zip(COLUMNS, (*values, t, t), strict=True))
        with self._write() as conn:
            ids = check_devices_tag(conn, keys, self.path)
            exists = conn.execute(
                "SELECT status FROM devices WHERE dev_id = ?", (did.hex(),)
            ).fetchone()
            if exists:
                raise RegistryError(f"device {did.hex()} is already registered ({exists[0]})")
            self._put(conn, row, insert=True)
            store_devices_tag(conn, keys, [*ids, did.hex()])

    def activate(self, dev_id: bytes | str) -> list[str]:
        """pending -> active, once the device has confirmed its keys.

        A chip holds one device's keys, so every other active or revoked device recorded
        with the same MAC is marked `wiped` in the same transaction: its keys were replaced
        on that chip (`--force`, a run completed by `--resume`, an erase and a new
        provision), even when the run that replaced them was cut off before saying so.

        Returns:
            The device ids (hex) marked wiped.

        Raises:
            RegistryError: no master key, unknown device, or it is not pending.
        """
        did = dev_id_bytes(dev_id)
        with self._write() as conn:
            row = self._fetch_in(conn, did, ("pending",), "make active")
            t = now()
            self._put(conn, {**row, "status": "active", "updated_at": t})
            if row["mac_hash"] is None:
                return []
            raws = conn.execute(
                SELECT_ROW + " WHERE mac_hash = ? AND dev_id != ? AND status IN (?, ?)",
                (row["mac_hash"], did.hex(), "active", "revoked"),
            ).fetchall()
            wiped = [self._checked(r) for r in raws]
            for old in wiped:
                self._put(conn, {**old, "status": "wiped", "updated_at": t})
        return sorted(r["dev_id"] for r in wiped)

    def revoke(self, dev_id: bytes | str) -> None:
        """pending or active -> revoked (its messages are no longer accepted); idempotent.

        Raises:
            RegistryError: no master key (the new status is tagged), unknown device, or it
                is wiped.
        """
        self._transition(dev_id, ("pending", "active", "revoked"), "revoked")

    def mark_wiped(self, dev_id: bytes | str) -> None:
        """active or revoked -> wiped: the device's keys were replaced on the board (its old
        messages still decrypt with the kept keys); idempotent.

        Raises:
            RegistryError: no master key, unknown device, or it is pending.
        """
        self._transition(dev_id, ("active", "revoked", "wiped"), "wiped")

    def delete_pending(self, dev_id: bytes | str) -> None:
        """Remove a pending device (rolls back a provisioning that did not complete).

        Raises:
            RegistryError: no master key, unknown device, or it is not pending (an active
                device's keys are never deleted).
        """
        did = dev_id_bytes(dev_id)
        with self._write() as conn:
            keys = self._need_key()
            ids = check_devices_tag(conn, keys, self.path)
            self._fetch_in(conn, did, ("pending",), "delete")
            conn.execute("DELETE FROM devices WHERE dev_id = ?", (did.hex(),))
            store_devices_tag(conn, keys, [i for i in ids if i != did.hex()])

    def set_code_hash(self, dev_id: bytes | str, code_hash: str) -> None:
        """Record the hash of the code deployed to a device (`edgeveil deploy` prints it).

        Raises:
            RegistryError: no master key, unknown device, or `code_hash` not a string.
        """
        did = dev_id_bytes(dev_id)
        need_text("code_hash", code_hash)
        with self._write() as conn:
            row = self._fetch(conn, did)
            self._put(conn, {**row, "code_hash": code_hash, "updated_at": now()})

    def update_counter(self, dev_id: bytes | str, counter: int) -> bool:
        """Record a message counter seen from a device; the stored value only increases.

        Read, compare and write happen in one `BEGIN IMMEDIATE` transaction, so concurrent
        updates keep the maximum.

        Returns:
            True if `counter` was above the last one seen (now recorded); False if not (a
            replayed or reordered message; nothing changes).

        Raises:
            RegistryError: no master key, unknown device, or a negative counter.
        """
        if type(counter) is not int or counter < 0:
            raise RegistryError(f"a counter is a non-negative int, got {counter!r}")
        did = dev_id_bytes(dev_id)
        with self._write() as conn:
            row = self._fetch(conn, did)
            last = row["last_counter"]
            if last is not None and counter <= last:
                return False
            self._put(conn, {**row, "last_counter": counter, "updated_at": now()})
            return True

    # --- reads ------------------------------------------------------------------------

    def get(self, dev_id: bytes | str) -> DeviceRecord:
        """The device's record (no secrets).

        Raises:
            RegistryError: unknown device, or its row was altered outside edgeveil.
        """
        with self._read() as conn:
            return self._record(self._fetch(conn, dev_id_bytes(dev_id)))

    def secrets(self, dev_id: bytes | str) -> DeviceSecrets:
        """The device's secrets, unwrapped (for export and provisioning only).

        Raises:
            RegistryError: no master key, unknown device, its row was altered outside
                edgeveil, or a wrapped value that does not authenticate.
        """
        did = dev_id_bytes(dev_id)
        keys = self._need_key()
        with self._read() as conn:
            row = self._fetch(conn, did)
        values = {name: keys.open(did, name, row[name]) for name, _ in SECRET_FIELDS}
        return DeviceSecrets(dev_id=did, **values)

    def list(self, status: str | None = None) -> Records:
        """Devices, oldest first, optionally only those with `status`.

        Raises:
            RegistryError: unknown status, or a row altered outside edgeveil.
        """
        sql = SELECT_ROW
        args: tuple[Any, ...] = ()
        if status is not None:
            if status not in STATUSES:
                raise RegistryError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
            sql += " WHERE status = ?"
            args = (status,)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, dev_id", args).fetchall()
        return [self._record(self._checked(r)) for r in rows]

    def pending(self) -> Records:
        """Devices whose provisioning has not completed (for `provision --resume`)."""
        return self.list("pending")

    def find_mac(self, mac: bytes) -> Records:
        """Devices provisioned on a board with this MAC address (compared by keyed hash).

        Raises:
            RegistryError: no master key, or a row altered outside edgeveil.
        """
        h = self._need_key().mac_hash(mac)
        with self._read() as conn:
            rows = conn.execute(
                SELECT_ROW + " WHERE mac_hash = ? ORDER BY created_at", (h,)
            ).fetchall()
        return [self._record(self._checked(r)) for r in rows]

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
        """One write transaction (the master key is needed to tag what it writes).

        BEGIN IMMEDIATE takes the write lock up front, so racing writers queue on the busy
        timeout instead of failing at their first write."""
        self._need_key()
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

    def _checked(self, raw: Iterable[Any]) -> Row:
        return check_row(self._keys, raw, self.path)

    def _record(self, row: Row) -> DeviceRecord:
        return record(row, authenticated=self._keys is not None)

    def _fetch(self, conn: sqlite3.Connection, did: bytes) -> Row:
        raw = conn.execute(SELECT_ROW + " WHERE dev_id = ?", (did.hex(),)).fetchone()
        if raw is None:
            raise RegistryError(f"unknown device {did.hex()} in registry {self.path}")
        return self._checked(raw)

    def _fetch_in(
        self, conn: sqlite3.Connection, did: bytes, allowed: Iterable[str], action: str
    ) -> Row:
        row = self._fetch(conn, did)
        if row["status"] not in allowed:
            raise RegistryError(f"cannot {action} device {did.hex()}: it is {row['status']}")
        return row

    def _put(self, conn: sqlite3.Connection, row: Row, *, insert: bool = False) -> None:
        put_row(conn, self._need_key(), row, insert=insert)

    def _transition(self, dev_id: bytes | str, allowed: tuple[str, ...], new: str) -> None:
        did = dev_id_bytes(dev_id)
        with self._write() as conn:
            row = self._fetch_in(conn, did, allowed, f"make {new}")
            if row["status"] != new:
                self._put(conn, {**row, "status": new, "updated_at": now()})
