"""What leaves the registry for a backend: COSE_Key sets and JSON.

    cbor = export_cose_keys(reg, include_secrets=True)     # CBOR array of COSE_Key maps
    doc = export_json(reg)                                 # public metadata, no keys

Keys leave only when asked for explicitly (`include_secrets=True`), and only those of
active devices; the pseudonym and policy keys never do. Every record read on the way is
checked against its row tag when the registry has its master key (registry.py). Formats:
docs/registry.md "Command line".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import cbor2

from .cose import ALG_AES_CCM_16_64_128
from .demo import DeviceSecrets
from .errors import RegistryError
from .registry import Records, Registry

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
        RegistryError: `include_secrets` not set, no master key, unknown or inactive device,
            or a row altered outside edgeveil.
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

    Without `include_secrets` every device (or `dev_ids`) is listed, each with
    `authenticated` saying whether its row tag was checked (False without the master key);
    with it, only active ones, as for `export_cose_keys`. The pseudonym and policy keys are
    never exported.

    Raises:
        RegistryError: no master key (with secrets), unknown or inactive device, or a row
            altered outside edgeveil.
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
