"""The registry's master key: where it comes from, how it is kept, what is derived from it.

    key, source = resolve_master_key(db, None, None)   # env, key file, or <db>.key
    keys = WrapKeys(key, registry_id)                   # subkeys for one registry
    sealed = keys.seal(dev_id, "cose_key", value)       # nonce + AES-GCM, AAD dev_id+field
    tag = keys.row_tag(row_values)                      # HMAC over a device row (CBOR array)

The master key is 32 random bytes in a file only its owner may read (created with O_EXCL,
mode 0600; a file the group or others can read is refused, as ssh refuses a private key),
or 64 hex digits in `EDGEVEIL_MASTER_KEY`. It is never used directly: HKDF-SHA256 with the
registry's random id as salt derives one subkey per purpose (wrapping, the key check values,
the MAC hash, the row tags, the device-set tag), so two registries under the same master key
share no subkey. The encodings the tags cover are in docs/registry.md ("Authenticated
metadata").
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import RegistryError

ENV_MASTER_KEY = "EDGEVEIL_MASTER_KEY"
MASTER_KEY_LEN = 32
_NONCE_LEN = 12  # AES-GCM
_KDF_INFO = b"edgeveil registry v1: "


def default_key_path(registry: str | Path) -> Path:
    """The master key file beside a registry: `<db>.key`."""
    p = Path(registry)
    return p.with_name(p.name + ".key")


def parse_master_key(text: str, source: str) -> bytes:
    """A master key given as 64 hex digits (EDGEVEIL_MASTER_KEY).

    Raises:
        RegistryError: not 64 hex digits; the message names `source`, never the value.
    """
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != MASTER_KEY_LEN:
        raise RegistryError(f"{source}: the master key must be {2 * MASTER_KEY_LEN} hex digits")
    return key


def read_key_file(path: str | Path) -> bytes:
    """Read a master key file (32 raw bytes, or 64 hex digits), refusing one others can read.

    Like ssh with a private key: a file that is not ours, or that the group or others may
    read or write, is refused.

    Raises:
        RegistryError: missing, too open, not ours, or not a key.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise RegistryError(f"no master key file {p}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot read master key file {p}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"master key file {p} is not a regular file")
        if st.st_uid != os.geteuid():
            raise RegistryError(f"master key file {p} is not owned by you; refusing to use it")
        if st.st_mode & 0o077:
            raise RegistryError(
                f"master key file {p} is accessible by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it: run `chmod 600 {p}`"
            )
        data = os.read(fd, 4 * MASTER_KEY_LEN)
    finally:
        os.close(fd)
    if len(data) == MASTER_KEY_LEN:
        return data
    try:
        return parse_master_key(data.decode("ascii"), f"master key file {p}")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"master key file {p} is not a {MASTER_KEY_LEN}-byte key") from exc


def resolve_master_key(
    db: Path, master_key: bytes | None, key_path: str | Path | None
) -> tuple[bytes | None, str]:
    """The master key and where it came from: argument, key file, environment, `<db>.key`."""
    if master_key is not None:
        if len(master_key) != MASTER_KEY_LEN:
            raise RegistryError(f"the master key must be {MASTER_KEY_LEN} bytes")
        return bytes(master_key), "the given key"
    if key_path is not None:
        return read_key_file(key_path), f"key file {key_path}"
    env = os.environ.get(ENV_MASTER_KEY)
    if env:
        return parse_master_key(env, ENV_MASTER_KEY), ENV_MASTER_KEY
    default = default_key_path(db)
    if default.exists():
        return read_key_file(default), f"key file {default}"
    return None, ""


class WrapKeys:
    """Subkeys of the master key for one registry (HKDF-SHA256, salt = registry id).

    `check` is the key check value of a schema-1 registry, `check_v2` that of schema 2: a
    different value, so a schema-2 file cannot be passed off as schema 1 (whose upgrade tags
    every row as it stands) by anyone who lacks the master key.
    """

    def __init__(self, master: bytes, registry_id: bytes) -> None:
        self.wrap = AESGCM(self._derive(master, registry_id, b"wrap"))
        self.check = self._derive(master, registry_id, b"key check")
        self.check_v2 = self._derive(master, registry_id, b"key check, schema 2")
        self._mac = self._derive(master, registry_id, b"mac hash")
        self._row = self._derive(master, registry_id, b"row tag")
        self._set = self._derive(master, registry_id, b"device set")

    @staticmethod
    def _derive(master: bytes, salt: bytes, label: bytes) -> bytes:
        return HKDF(SHA256(), 32, salt, _KDF_INFO + label).derive(master)

    def seal(self, dev_id: bytes, field: str, value: bytes) -> bytes:
        nonce = os.urandom(_NONCE_LEN)
        return nonce + self.wrap.encrypt(nonce, value, dev_id + field.encode())

    def open(self, dev_id: bytes, field: str, sealed: bytes) -> bytes:
        try:
            return self.wrap.decrypt(
                sealed[:_NONCE_LEN], sealed[_NONCE_LEN:], dev_id + field.encode()
            )
        except (InvalidTag, ValueError) as exc:
            raise RegistryError(
                f"{field} of device {dev_id.hex()} does not unwrap: the row was altered "
                "or copied from elsewhere"
            ) from exc

    def mac_hash(self, mac: bytes) -> bytes:
        return hmac.new(self._mac, bytes(mac), "sha256").digest()

    def row_tag(self, values: Sequence[Any]) -> bytes:
        """HMAC-SHA256 under the row-tag subkey of the CBOR array of a row's values, in
        column order and as stored (text, bytes, integer or null)."""
        return hmac.new(self._row, cbor2.dumps(list(values), canonical=True), "sha256").digest()

    def devices_tag(self, dev_ids: Iterable[str]) -> bytes:
        """HMAC-SHA256 under the device-set subkey of the CBOR array of every device id (as
        stored: 16 hex digits), sorted."""
        return hmac.new(self._set, cbor2.dumps(sorted(dev_ids)), "sha256").digest()


def write_exclusive(path: Path, data: bytes, what: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise RegistryError(f"{what} {path} exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise RegistryError(f"cannot create {what} {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
