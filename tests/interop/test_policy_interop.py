"""Host policy checks (edgeveil.policy) agree with the device's (veil.policy) on distinct
counts: what the host compiles the device accepts, and what the host refuses early the
device refuses too, at the exact edges.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from edgeveil.policy import PolicyError, check_policy, default_policy, policy_cbor
from edgeveil.vm import run_code

DEV = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def _with_field(field: dict[str, Any]) -> dict[str, Any]:
    pol = copy.deepcopy(default_policy())
    pol["streams"]["footfall"]["fields"]["visitors"] = field
    return pol


def _device_verdicts(policies: list[dict[str, Any]]) -> list[str]:
    """'ok' or the device's PolicyError message, per policy, from one VM run."""
    blobs = [policy_cbor(p, DEV) for p in policies]
    code = (
        "from veil.policy import Policy, PolicyError\nfrom veil.cbor import loads\n"
        f"for b in {blobs!r}:\n"
        "    try:\n"
        f"        p = Policy(loads(b), {DEV!r})\n"
        "        f = p.streams[0].fields[0]\n"
        "        print('ok', f.agg, f.bound, f.m)\n"
        "    except PolicyError as e:\n"
        "        print('refused', e)\n"
    )
    r = run_code(code, 102400)
    assert r.ok, r.stdout + r.stderr
    return r.stdout.decode().splitlines()


def _host_ok(pol: dict[str, Any]) -> bool:
    try:
        check_policy(pol, "test")
    except PolicyError:
        return False
    return True


def _sketch(bound: int, m: int | None = None) -> dict[str, Any]:
    f: dict[str, Any] = {"agg": "distinct_sketch", "in": "ble", "bound": bound, "eps": 500}
    if m is not None:
        f["m"] = m
    return f


def test_sketch_policy_compiles_and_device_reads_it() -> None:
    out = _device_verdicts([_with_field(_sketch(100000)), _with_field(_sketch(5000, 256))])
    assert out == ["ok distinct_sketch 100000 1024", "ok distinct_sketch 5000 256"]


@pytest.mark.parametrize("m", [16, 64, 256, 1024, 4096])
def test_host_and_device_agree_on_the_sketch_bound_edge(m: int) -> None:
    edge = (673 * m * m - 1) // 1000  # the largest bound below 0.673 m^2
    ok, over = _with_field(_sketch(edge, m)), _with_field(_sketch(edge + 1, m))
    assert _host_ok(ok) and not _host_ok(over)
    verdicts = _device_verdicts([ok, over])
    assert verdicts[0].startswith("ok ") and verdicts[1].startswith("refused ")


@pytest.mark.parametrize(
    ("field", "needle"),
    [
        ({"agg": "distinct_sketch", "in": "ble", "bound": 500, "m": 1000, "eps": 5}, ".m "),
        ({"agg": "distinct_sketch", "in": "ble", "bound": 500, "m": 8192, "eps": 5}, ".m "),
        ({"agg": "distinct", "in": "ble", "bound": 2001, "eps": 5}, ".bound "),
        ({"agg": "distinct", "in": "ble", "bound": 50, "m": 64, "eps": 5}, ".m "),
        ({"agg": "count", "in": "ble", "m": 64, "eps": 5}, ".m "),
    ],
)
def test_host_refuses_what_the_device_would(field: dict[str, Any], needle: str) -> None:
    pol = _with_field(field)
    with pytest.raises(PolicyError, match="streams.footfall.fields.visitors"):
        check_policy(pol, "test")
    with pytest.raises(PolicyError) as exc:
        check_policy(pol, "test")
    assert needle in str(exc.value)
    assert _device_verdicts([pol])[0].startswith("refused ")
