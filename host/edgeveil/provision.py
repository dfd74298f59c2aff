"""Provisioning: a device's secrets and signed policy into its NVS, and into the registry.

    with open_link(port) as link, Registry.open(db) as reg:
        report = provision(link, board, reg, policy, port)

Two phases, so that no device ever holds keys the registry lacks:

1. the secrets are generated on the host and recorded in the registry as `pending`
   (wrapped under the master key) before anything reaches the device;
2. they are written to NVS namespace "veil" (the policy and keys first, `dev_id` last, so
   a device that has a dev_id has everything), committed, and read back; only when every
   value read back matches does the registry entry become `active`.

A run killed anywhere leaves either nothing, or a `pending` entry that `resume()` settles
with the device in hand: it completes it (writes again and confirms) when the device holds
that dev_id or part of its keys, and rolls it back only when the device holds none of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .boards import Board
from .demo import DeviceSecrets
from .errors import EdgeveilError
from .policy import compile_policy

NAMESPACE = "veil"
# Written in this order; dev_id last marks a complete set (device/veil/keys.py).
_ORDER = ("policy", "cose_key", "base_iv", "pseudo_key", "policy_key", "dev_id")


class ProvisionError(EdgeveilError):
    """Provisioning was refused or could not be confirmed (the message says which)."""


class LinkLike(Protocol):
    def exec(self, code: str, timeout: float = 10.0) -> str: ...
    def eval(self, expr: str) -> object: ...


@dataclass(frozen=True)
class ProvisionReport:
    dev_id: str
    board: str
    port: str
    policy_hash: str
    status: str
    seconds: float


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


def read_device(link: LinkLike) -> dict[str, bytes | None]:
    """What the device's NVS holds under each provisioned name (None: absent)."""
    link.exec(_READ)
    got = link.eval("_evr(%r)" % (list(_ORDER),))
    if not isinstance(got, dict):
        raise ProvisionError("device answered %r to an NVS read" % (got,))
    return {k: (bytes(v) if isinstance(v, bytes | bytearray) else None) for k, v in got.items()}


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


def provision(
    link: LinkLike,
    board: Board,
    registry: Any,
    policy: dict[str, Any],
    port: str,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ProvisionReport:
    """Generate, record (pending), write, read back, activate. See the module docstring.

    Raises:
        ProvisionError: the device already holds keys (without `force`), or read-back failed;
            the registry entry then stays pending for `resume()`.
    """
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    held = read_device(link).get("dev_id")
    if held is not None and not force:
        raise ProvisionError(
            "the device on %s is already provisioned as %s; use --force to replace its keys"
            % (port, held.hex())
        )
    secrets = DeviceSecrets.generate()
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    policy_hash = hashlib.sha256(blob).hexdigest()
    registry.add_pending(secrets.dev_id, board.name, secrets, policy_hash, port)
    say("recorded %s as pending" % secrets.dev_id.hex())
    values = secrets.nvs_values(blob)
    write_device(link, values)
    say("written to NVS")
    _confirm(link, values)
    registry.activate(secrets.dev_id)
    say("confirmed and active")
    if held is not None and held != secrets.dev_id:
        try:
            registry.mark_wiped(held)  # the board no longer holds the old keys
        except EdgeveilError:
            pass  # a device this registry never knew
    return ProvisionReport(
        secrets.dev_id.hex(), board.name, port, policy_hash, "active", time.monotonic() - t0
    )


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
    # Some or all of it did: the device may already use these keys, so finish the job.
    write_device(link, values)
    _confirm(link, values)
    registry.activate(dev_id)
    return "completed"
