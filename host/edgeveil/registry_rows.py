"""A device row of the registry: its columns, its tag, and the record callers see.

    row = check_row(keys, raw, db)        # a row as read; its tag checked (keys not None)
    put_row(conn, keys, row)              # write the whole row with its new tag
    rec = record(row, authenticated=True) # the public part: a DeviceRecord, no secret

The row tag is HMAC-SHA256 under the master key's "row tag" subkey of the CBOR array of
every column in COLUMNS order, as stored (registry_keys.WrapKeys.row_tag): it covers the
sealed secrets and the device id too, so a value changed, or moved from another row, no
longer verifies. docs/registry.md "Authenticated metadata".
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RegistryError
from .registry_keys import WrapKeys

# The wrapped secrets and their sizes (device/veil/keys.py); dev_id is the primary key.
SECRET_FIELDS = (("cose_key", 16), ("base_iv", 13), ("pseudo_key", 32), ("policy_key", 32))
# Every column of a device row but its tag, in table order: what the row tag covers.
COLUMNS = (
    "dev_id",
    "board",
    "status",
    *(name for name, _ in SECRET_FIELDS),
    "policy_hash",
    "code_hash",
    "last_counter",
    "mac_hash",
    "port",
    "created_at",
    "updated_at",
)
SELECT_ROW = f"SELECT {', '.join(COLUMNS)}, row_tag FROM devices"
Row = dict[str, Any]  # a device row: COLUMNS -> value as stored

_INSERT = f"INSERT INTO devices ({', '.join(COLUMNS)}, row_tag) VALUES ({', '.join('?' * 15)})"
_UPDATE = (
    f"UPDATE devices SET {', '.join(c + ' = ?' for c in COLUMNS[1:])}, row_tag = ? "
    "WHERE dev_id = ?"
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
    # False when read without the master key: nothing vouches for these values.
    authenticated: bool = True

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
        out["authenticated"] = self.authenticated
        return out


Records = list[DeviceRecord]  # (`Registry.list` shadows the builtin inside the class)


def record(row: dict[str, Any], authenticated: bool) -> DeviceRecord:
    """The public part of a device row (a dict of COLUMNS)."""
    mac_hash = row["mac_hash"]
    return DeviceRecord(
        bytes.fromhex(row["dev_id"]),
        row["board"],
        row["status"],
        row["policy_hash"],
        row["code_hash"],
        row["last_counter"],
        mac_hash.hex() if mac_hash is not None else None,
        row["port"],
        row["created_at"],
        row["updated_at"],
        authenticated,
    )


def check_row(keys: WrapKeys | None, raw: Iterable[Any], db: Path) -> Row:
    """A row as SELECT_ROW reads it (COLUMNS, then row_tag), its tag checked if `keys`.

    Raises:
        RegistryError: the tag does not verify; names the device.
    """
    *values, tag = raw
    if keys is not None:
        expected = keys.row_tag(values)
        if not (isinstance(tag, bytes) and hmac.compare_digest(tag, expected)):
            raise RegistryError(
                f"device {values[0]}: its row in registry {db} was altered outside edgeveil "
                "(the row tag does not verify)"
            )
    return dict(zip(COLUMNS, values, strict=True))


def put_row(conn: sqlite3.Connection, keys: WrapKeys, row: Row, *, insert: bool = False) -> None:
    """Write a whole row with its new tag (inside the caller's write transaction)."""
    values = [row[c] for c in COLUMNS]
    tag = keys.row_tag(values)
    if insert:
        conn.execute(_INSERT, (*values, tag))
    else:
        conn.execute(_UPDATE, (*values[1:], tag, values[0]))


def need_text(name: str, value: object) -> None:
    """Refuse a non-string for a TEXT column: what the tag covers must read back as written.

    Raises:
        RegistryError: `value` is not a str.
    """
    if not isinstance(value, str):
        raise RegistryError(f"{name} must be a string, got {type(value).__name__}")
