"""Small records on flash that survive power loss: written aside, then renamed over.

    write_record("ctr", b"\x00\x00\x01\x00")
    read_record("ctr")  # -> b"\x00\x00\x01\x00", None if never written

Each record is `payload || sha256(payload)[:8]` (FIPS 180-4). The new content goes to
`path + ".tmp"` first and `os.rename` replaces the old file in one step (littlefs and
POSIX both make a rename atomic), so a power cut leaves either the old record or the new
one. A record whose checksum does not match, or that exists but cannot be read, raises
StoreError: callers treat that as "do not know", and on the device "do not know" means
"send nothing".
"""

import errno
import hashlib
import os

from micropython import const

from veil import VeilError

_CHECK = const(8)


# The one replace-in-place step; tests swap it to simulate a power cut before it runs.
rename = os.rename


class StoreError(VeilError):
    pass


def _check(payload):
    return hashlib.sha256(payload).digest()[:_CHECK]


def write_record(path, payload):
    """Durably replace the record at `path` with `payload` (allocates)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.write(_check(payload))
    rename(tmp, path)


def read_record(path):
    """The record's payload, or None if it was never written.

    Raises:
        StoreError: the record is torn, corrupt, or exists but cannot be read.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise StoreError("record %s cannot be read: %s" % (path, e))
    if len(data) < _CHECK or _check(data[:-_CHECK]) != data[-_CHECK:]:
        raise StoreError("record %s is corrupt" % path)
    return data[:-_CHECK]
