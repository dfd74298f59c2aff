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

AGGS = ("count", "sum", "min", "max", "mean", "hist", "distinct", "distinct_sketch", "dwell")
BINNED = ("hist", "dwell")  # released as "<field>/<bin>" records, one per bin
NONNEG = ("count", "hist", "dwell", "distinct", "distinct_sketch")  # counts: never below 0
RANGED = ("mean", "min", "max")  # released inside [lo, hi] (clamped after the noise)
VEIL_T0 = 1699920000  # veil time origin (device/veil/__init__.py): windows align to it
MAX_EXACT_BOUND = 2000  # veil.policy: the exact set's memory on a 100 KiB heap
MAX_DWELL_BOUND = 1000  # veil.policy: 18 bytes of RAM per id (veil.dwell)
MAX_BINS = 32  # veil.policy: at most 31 edges
MAX_SKETCH_BOUND = 1 << 24
MAX_SKETCH_M = 4096


class PolicyError(EdgeveilError):
    """A policy file is malformed or asks for something the device cannot enforce."""


def default_policy() -> dict[str, Any]:
    """The embedded default policy (host/edgeveil/data/default-policy.toml)."""
    text = resources.files("edgeveil").joinpath("data/default-policy.toml").read_text()
    return check_policy(tomllib.loads(text), "default-policy.toml")


def load_policy_file(path: str | Path) -> dict[str, Any]:
    """Read and check a policy TOML file.

    Raises:
        PolicyError: naming the file and the field that is wrong.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    return check_policy(data, str(path))


def check_policy(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a parsed policy before it is compiled; returns it unchanged.

    Args:
        data: the policy as parsed from TOML.
        where: named in error messages (a file name).

    Raises:
        PolicyError: naming `where` and the field that is wrong.
    """
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
            at = f"{where}: streams.{sname}.fields.{fname}"
            _check_distinct(field, at)
            if field["agg"] == "dwell":
                _check_dwell(field, stream.get("window"), at)
    return data


def _check_dwell(field: dict[str, Any], window: Any, where: str) -> None:
    # Mirrors veil.policy.FieldPolicy for agg = "dwell" (docs/policy.md), and refuses bins
    # no window can fill: a dwell inside a window is at most window - 1 seconds.
    bound = field.get("bound")
    if type(bound) is not int or not 1 <= bound <= MAX_DWELL_BOUND:
        raise PolicyError(
            f"{where}.bound must be an integer in 1..{MAX_DWELL_BOUND}, got {bound!r}"
        )
    edges = field.get("edges")
    if (
        not isinstance(edges, list)
        or not 1 <= len(edges) < MAX_BINS
        or any(type(e) is not int for e in edges)
        or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
        or edges[0] < 1
    ):
        raise PolicyError(
            f"{where}.edges must be 1..{MAX_BINS - 1} strictly increasing whole seconds "
            f">= 1, got {edges!r}"
        )
    if type(window) is int and edges[-1] >= window:
        raise PolicyError(
            f"{where}.edges: {edges[-1]} s is not below the stream's window ({window} s): "
            "a dwell within one window never reaches it, so that bin would always be empty"
        )


def _check_distinct(field: dict[str, Any], where: str) -> None:
    # The mode of a distinct count is the policy's choice, never the data's: `distinct`
    # releases min(exact count, bound), `distinct_sketch` a HyperLogLog estimate capped at
    # bound, in every window (docs/policy.md). Mirrors veil.policy.FieldPolicy.
    agg = field["agg"]
    if agg not in ("distinct", "distinct_sketch"):
        if "m" in field:
            raise PolicyError(f"{where}.m is only for agg = 'distinct_sketch'")
        return
    hi = MAX_EXACT_BOUND if agg == "distinct" else MAX_SKETCH_BOUND
    bound = field.get("bound")
    if type(bound) is not int or not 1 <= bound <= hi:
        raise PolicyError(f"{where}.bound must be an integer in 1..{hi}, got {bound!r}")
    if agg == "distinct":
        if "m" in field:
            raise PolicyError(f"{where}.m is only for agg = 'distinct_sketch'")
        return
    m = field.get("m", 1024)
    if type(m) is not int or not 16 <= m <= MAX_SKETCH_M or m & (m - 1):
        raise PolicyError(f"{where}.m must be a power of two in 16..{MAX_SKETCH_M}, got {m!r}")
    if 1000 * bound >= 673 * m * m:
        raise PolicyError(
            f"{where}.bound must be at most {(673 * m * m - 1) // 1000} for m = {m} "
            "(below 0.673 * m * m, where the sketch's sensitivity is finite)"
        )


def policy_cbor(policy: dict[str, Any], dev_id: bytes) -> bytes:
    """The CBOR policy the device decodes (docs/policy.md), bound to `dev_id`."""
    body = {"v": 1, "dev": dev_id, **policy}
    return cbor2.dumps(body)


def compile_policy(policy: dict[str, Any], dev_id: bytes, policy_key: bytes) -> bytes:
    """COSE_Mac0 (HMAC 256/256) over the CBOR policy, kid = device id."""
    return mac0_create(policy_key, policy_cbor(policy, dev_id), dev_id)
