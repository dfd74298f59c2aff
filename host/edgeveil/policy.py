"""Privacy policies: written as TOML by people, compiled to CBOR, authenticated per device.

    pol = load_policy_file("policy.toml")         # or default_policy()
    blob = compile_policy(pol, dev_id, policy_key)  # COSE_Mac0 bytes for the device's NVS

The device (veil.policy) re-validates everything; this side rejects early with the file
and field named, so an integrator never provisions a policy the device would refuse.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import cbor2

from .cose import mac0_create
from .errors import EdgeveilError

AGGS = ("count", "sum", "min", "max", "mean", "hist", "distinct")


class PolicyError(EdgeveilError):
    """A policy file is malformed or asks for something the device cannot enforce."""


def default_policy() -> dict[str, Any]:
    """The embedded default policy (host/edgeveil/data/default-policy.toml)."""
    text = resources.files("edgeveil").joinpath("data/default-policy.toml").read_text()
    return _check(tomllib.loads(text), "default-policy.toml")


def load_policy_file(path: str | Path) -> dict[str, Any]:
    """Read and check a policy TOML file.

    Raises:
        PolicyError: naming the file and the field that is wrong.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    return _check(data, str(path))


def _check(data: dict[str, Any], where: str) -> dict[str, Any]:
    for key in ("period", "eps_period", "epoch"):
        if type(data.get(key)) is not int or data[key] <= 0:
            raise PolicyError(f"{where}: '{key}' must be a positive integer")
    streams = data.get("streams")
    if not isinstance(streams, dict) or not streams:
        raise PolicyError(f"{where}: at least one [streams.NAME] table is required")
    for sname, stream in streams.items():
        fields = stream.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise PolicyError(f"{where}: streams.{sname} has no fields")
        for fname, field in fields.items():
            if field.get("agg") not in AGGS:
                raise PolicyError(
                    f"{where}: streams.{sname}.fields.{fname}.agg must be one of "
                    f"{', '.join(AGGS)}, got {field.get('agg')!r}"
                )
            if type(field.get("eps")) is not int or field["eps"] <= 0:
                raise PolicyError(
                    f"{where}: streams.{sname}.fields.{fname}.eps must be a positive "
                    "integer (milli-epsilon per window)"
                )
    return data


def policy_cbor(policy: dict[str, Any], dev_id: bytes) -> bytes:
    """The CBOR policy the device decodes (docs/policy.md), bound to `dev_id`."""
    body = {"v": 1, "dev": dev_id, **policy}
    return cbor2.dumps(body)


def compile_policy(policy: dict[str, Any], dev_id: bytes, policy_key: bytes) -> bytes:
    """COSE_Mac0 (HMAC 256/256) over the CBOR policy, kid = device id."""
    return mac0_create(policy_key, policy_cbor(policy, dev_id), dev_id)
