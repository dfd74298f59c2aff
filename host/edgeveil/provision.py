"""Provisioning: a device's secrets and signed policy into its NVS, and into the registry.

    with open_link(port) as link, Registry.open(db) as reg:
        report = provision(link, board, reg, policy, port)

Two phases, so that no device ever holds keys the registry lacks:

1. the secrets are generated on the host and recorded in the registry as `pending`
   (wrapped under the master key) before anything reaches the device;
2. they are written to NVS namespace "veil" (the policy and keys first, `dev_id` last, so
   a device that has a dev_id has everything), committed, and read back; then the message
   counter record is created on the board's filesystem if it has none (`ensure_counter`);
   only when every value read back matches and the counter record is sound does the
   registry entry become `active`.

The counter record (`/veil.ctr`, veil.egress.Counter, in veil.store's format) holds the
next COSE message counter; the device refuses to send without it. An existing record is
never reset, not even by `force`: a counter that went back would reuse nonces. (The
epsilon budget record, `/veil.eps`, needs no provisioning: the device reads a missing one
as "nothing spent yet" and writes it at its first release.)

A run killed anywhere leaves either nothing, or a `pending` entry that `resume()` settles
with the device in hand: it completes it (writes again and confirms) when the device holds
that dev_id or part of its keys, and rolls it back only when the device holds none of it.
Each entry records the board's MAC (`machine.unique_id()`), and `resume_board()` settles
only the entries of the board it is talking to, whatever port that board is on now.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .boards import Board, list_boards
from .demo import DeviceSecrets
from .errors import EdgeveilError
from .link import device_info
from .policy import compile_policy

NAMESPACE = "veil"
# Where the board's app looks for its message counter (veil.footfall.STATE + "/veil.ctr").
COUNTER_PATH = "/veil.ctr"
# Written in this order; dev_id last marks a complete set (device/veil/keys.py).
_ORDER = ("policy", "cose_key", "base_iv", "pseudo_key", "policy_key", "dev_id")


class ProvisionError(EdgeveilError):
    """Provisioning was refused or could not be confirmed (the message says which)."""


class LinkLike(Protocol):
    def exec(self, code: str, timeout: float = 10.0) -> str: ...
    def eval(self, expr: str, secret: bool = False) -> object: ...


@dataclass(frozen=True)
class ProvisionReport:
    dev_id: str
    board: str
    port: str
    policy_hash: str
    status: str
    seconds: float
    counter: str = ""  # "created" or "kept": the message counter record on the board
    code_hash: str | None = None  # of the code the board boots (None: nothing deployed)

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        return "provisioned %s (%s), policy %s, code %s, %.2f s" % (
            self.dev_id,
            self.board,
            self.policy_hash[:16],
            self.code_hash[:16] if self.code_hash else "not deployed yet",
            self.seconds,
        )


# Device-side helpers, sent as code; every value goes in through repr().
_READ = (
    """
import esp32
def _evr(names):
    n = esp32.NVS(%r)
    out = {}
    for k in names:
        b = bytearray(2048)
        try:
            out[k] = bytes(b[:n.get_blob(k, b)])
        except OSError:
            out[k] = None
    return out
"""
    % NAMESPACE
)


def read_device(link: LinkLike, names: tuple[str, ...] = _ORDER) -> dict[str, bytes | None]:
    """What the device's NVS holds under each of `names` (default: every provisioned
    name; None: absent)."""
    link.exec(_READ)
    got = link.eval("_evr(%r)" % (list(names),), secret=True)
    if not isinstance(got, dict):
        raise ProvisionError("device answered %r to an NVS read" % (got,))
    return {k: (bytes(v) if isinstance(v, bytes | bytearray) else None) for k, v in got.items()}


def read_mac(link: LinkLike) -> bytes:
    """The board's base MAC (`machine.unique_id()`, what esptool's read_mac shows), which
    identifies a board whatever port it is on today."""
    link.exec("import machine")
    got = link.eval("machine.unique_id()")
    if not isinstance(got, bytes) or len(got) != 6:
        raise ProvisionError("device answered %r for its MAC (machine.unique_id())" % (got,))
    return got


@dataclass(frozen=True)
class ResumeReport:
    """What `provision --resume` settled on one port: {dev_id hex: outcome}."""

    port: str
    resumed: dict[str, str]

    def summary(self) -> str:
        return ", ".join("%s %s" % kv for kv in self.resumed.items()) or "nothing pending"

    def as_json(self) -> dict[str, object]:
        return {"port": self.port, "resumed": dict(self.resumed)}


def counter_record(start: int = 0) -> bytes:
    """The message counter record as veil.store writes it: the counter as 8 big-endian
    bytes, then the first 8 bytes of their SHA-256 (veil.egress.Counter.create)."""
    payload = start.to_bytes(8, "big")
    return payload + hashlib.sha256(payload).digest()[:8]


def read_counter_record(data: bytes) -> int | None:
    """The counter a record holds, or None if it is not a sound record."""
    if len(data) != 16 or hashlib.sha256(data[:8]).digest()[:8] != data[8:]:
        return None
    return int.from_bytes(data[:8], "big")


# Device side: create the record (written aside, renamed over, as veil.store does) only if
# nothing is at the path; answer what is there afterwards.
_COUNTER = """
import os
def _evc(p, rec):
    try:
        os.stat(p)
        state = 'kept'
    except OSError as e:
        if e.errno != 2:
            raise
        with open(p + '.tmp', 'wb') as f:
            f.write(rec)
        os.rename(p + '.tmp', p)
        state = 'created'
    with open(p, 'rb') as f:
        return state, f.read(64)
"""


def ensure_counter(link: LinkLike, path: str = COUNTER_PATH) -> str:
    """Create the message counter record at `path` on the board unless one exists.

    Returns:
        "created" or "kept".

    Raises:
        ProvisionError: what is at `path` is not a sound counter record (left as it is:
            the device refuses to send with it; nothing here ever resets a counter).
    """
    link.exec(_COUNTER)
    got = link.eval("_evc(%r, %r)" % (path, counter_record()))
    if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], bytes)):
        raise ProvisionError("device answered %r to the counter check" % (got,))
    state, data = got
    if read_counter_record(data) is None:
        raise ProvisionError(
            "%s on the device is not a sound message counter record; it is left as it is "
            "(the device will refuse to send until it is settled by hand)" % path
        )
    return str(state)


def write_device(link: LinkLike, values: dict[str, bytes]) -> None:
    lines = ["import esp32", "n = esp32.NVS(%r)" % NAMESPACE]
    for name in _ORDER:
        lines.append("n.set_blob(%r, %r)" % (name, values[name]))
    lines.append("n.commit()")
    link.exec("\n".join(lines), timeout=30.0)


def _confirm(link: LinkLike, values: dict[str, bytes]) -> None:
    got = read_device(link)
    wrong = [k for k in _ORDER if got.get(k) != values[k]]
    if wrong:
        raise ProvisionError("read-back mismatch for %s" % ", ".join(wrong))


def device_board(link: LinkLike, board: Board | None, port: str) -> Board:
    """The board file for the device on `link`: `board` checked against what its
    MicroPython reports (native code architecture, and the chip its machine string names),
    or, without one, the only board file that fits.

    Raises:
        ProvisionError: `board` does not fit the device (wrong chip or wrong board file),
            or no single board file fits.
    """
    info = device_info(link, port)
    arch = info["arch"]
    named = re.search(r"with (ESP32\w*)", info["machine"] or "")
    chip = named.group(1).lower() if named else None
    reports = "%s code%s" % (arch or "bytecode-only", " on an %s" % chip if chip else "")

    def fits(b: Board) -> bool:
        return (arch is None or b.mpy_arch == arch) and (chip is None or b.chip == chip)

    if board is not None:
        if not fits(board):
            raise ProvisionError(
                "%s: wrong board: %s is an %s running %s code, but the device reports %s; "
                "nothing was written (give the board's --board)"
                % (port, board.name, board.chip, board.mpy_arch, reports)
            )
        return board
    found = [b for b in list_boards() if fits(b)]
    if len(found) != 1:
        raise ProvisionError(
            "%s: the device reports %s, which %s; give --board"
            % (
                port,
                reports,
                "fits " + " and ".join(b.name for b in found) if found else "no board file fits",
            )
        )
    return found[0]


def provision(
    link: LinkLike,
    board: Board | None,
    registry: Any,
    policy: dict[str, Any],
    port: str,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ProvisionReport:
    """Generate, record (pending), write, read back, activate. See the module docstring.

    `board` is checked against the device (`device_board`); None: the board file that fits.

    Raises:
        ProvisionError: the device already holds keys (without `force`), or read-back failed;
            the registry entry then stays pending for `resume()`.
    """
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    board = device_board(link, board, port)
    held = read_device(link).get("dev_id")
    if held is not None and not force:
        pending = is_pending(registry, held)
        raise ProvisionError(
            "the device on %s is already provisioned as %s; %s"
            % (
                port,
                held.hex(),
                "its entry is pending: `--resume` settles it"
                if pending
                else "use --force to replace its keys",
            )
        )
    secrets = DeviceSecrets.generate()
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    policy_hash = hashlib.sha256(blob).hexdigest()
    registry.add_pending(
        secrets.dev_id, board.name, secrets, policy_hash, port, mac=read_mac(link)
    )
    say("recorded %s as pending" % secrets.dev_id.hex())
    values = secrets.nvs_values(blob)
    write_device(link, values)
    say("written to NVS")
    _confirm(link, values)
    counter = ensure_counter(link)
    say("message counter record %s" % counter)
    code_hash = _record_code(link, registry, secrets.dev_id)
    wiped = registry.activate(secrets.dev_id)
    say("confirmed and active" + wiped_note(wiped))
    if held is not None and held != secrets.dev_id:
        try:
            registry.mark_wiped(held)  # the board no longer holds the old keys
        except EdgeveilError:
            pass  # a device this registry never knew
    return ProvisionReport(
        secrets.dev_id.hex(),
        board.name,
        port,
        policy_hash,
        "active",
        time.monotonic() - t0,
        counter,
        code_hash,
    )


def is_pending(registry: Any, dev_id: bytes) -> bool:
    """Whether the registry holds `dev_id` as pending (False: not pending, or unknown)."""
    try:
        return bool(registry.get(dev_id).status == "pending")
    except EdgeveilError:
        return False  # a device this registry does not know


def resume(
    link: LinkLike,
    registry: Any,
    dev_id: bytes,
    policy_blob_of: Callable[[DeviceSecrets], bytes],
    port: str,
) -> str:
    """Settle a pending entry with its device at hand: "completed" or "rolled back"."""
    secrets = registry.secrets(dev_id)
    on_device = read_device(link)
    values = secrets.nvs_values(policy_blob_of(secrets))
    mine = [k for k in _ORDER if on_device.get(k) is not None and on_device[k] == values[k]]
    if not mine:
        # None of this entry reached the device (it holds nothing, or an older complete
        # set): forgetting the entry loses no key the device has.
        registry.delete_pending(dev_id)
        return "rolled back"
    # Some or all of it did: the device may already use these keys, so finish the job,
    # with the policy the entry was made with (the registry vouches for that hash).
    given = hashlib.sha256(values["policy"]).hexdigest()
    recorded = registry.get(dev_id).policy_hash
    if given != recorded:
        raise ProvisionError(
            "%s: device %s was provisioned with policy %s, the policy given is %s; resume "
            "with the same --policy (the entry stays pending)"
            % (port, dev_id.hex(), recorded[:16], given[:16])
        )
    write_device(link, values)
    _confirm(link, values)
    ensure_counter(link)
    _record_code(link, registry, dev_id)
    registry.activate(dev_id)
    return "completed"


def wiped_note(wiped: list[str]) -> str:
    """How a progress line names the devices whose keys a run replaced on the chip."""
    return "; the chip's earlier device %s is now wiped" % ", ".join(wiped) if wiped else ""


def _record_code(link: LinkLike, registry: Any, dev_id: bytes) -> str | None:
    """Record in the registry the code hash of what the board boots, if it has code."""
    from .deploy import deployed_code_hash

    code_hash = deployed_code_hash(link)
    if code_hash:
        registry.set_code_hash(dev_id, code_hash)
    return code_hash


def resume_board(
    link: LinkLike,
    registry: Any,
    policy_blob_of: Callable[[DeviceSecrets], bytes],
    port: str,
) -> dict[str, str]:
    """Settle every pending entry that belongs to the board on `link`.

    An entry belongs to the board that was provisioned: its MAC is recorded with it, and
    only entries with this board's MAC are settled here. On a jig the ports may have been
    renumbered since (a replugged hub): matching by port would roll back an entry whose
    keys are on another board, judged by a board that never held them. Entries recorded
    without a MAC (an older edgeveil did not record one) are matched by port.

    Returns:
        {dev_id hex: "completed" | "rolled back" | "wiped"}: "wiped" for the board's
        earlier devices whose keys a completed entry replaced (`Registry.activate`);
        empty when nothing is pending here.
    """
    mac = read_mac(link)
    on_chip = registry.find_mac(mac)
    mine = [r for r in on_chip if r.status == "pending"]
    mine += [r for r in registry.pending() if r.mac_hash is None and r.port == port]
    done = {
        rec.dev_id.hex(): resume(link, registry, rec.dev_id, policy_blob_of, port) for rec in mine
    }
    for rec in on_chip:
        if rec.status in ("active", "revoked") and registry.get(rec.dev_id).status == "wiped":
            done[rec.dev_id.hex()] = "wiped"
    return done
