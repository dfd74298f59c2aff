"""Dwell fields in a policy: the host (edgeveil.policy) and the device (veil.policy) accept
the same ones, and the host refuses early, naming the field, what the device would refuse.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from edgeveil.policy import PolicyError, check_policy, default_policy, policy_cbor
from edgeveil.vm import run_code

DEV = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def _with_dwell(**over: Any) -> dict[str, Any]:
    pol = copy.deepcopy(default_policy())
    field = {"agg": "dwell", "in": "ble", "edges": [30, 120], "bound": 100, "eps": 500}
    field.update(over)
    pol["streams"]["footfall"]["fields"] = {"dwell": field}
    return pol


def _device(policies: list[dict[str, Any]]) -> list[str]:
    """'ok <agg> <bound> <edges>' or the device's refusal, per policy, from one VM run."""
    blobs = [policy_cbor(p, DEV) for p in policies]
    code = (
        "from veil.policy import Policy, PolicyError\nfrom veil.cbor import loads\n"
        f"for b in {blobs!r}:\n"
        "    try:\n"
        f"        f = Policy(loads(b), {DEV!r}).streams[0].fields[0]\n"
        "        print('ok', f.agg, f.bound, f.edges)\n"
        "    except PolicyError as e:\n"
        "        print('refused', e)\n"
    )
    r = run_code(code, 102400)
    assert r.ok, r.stdout + r.stderr
    return r.stdout.decode().splitlines()


def test_default_policy_has_a_dwell_field_the_device_reads() -> None:
    pol = default_policy()
    dwell = pol["streams"]["footfall"]["fields"]["dwell"]
    assert dwell["agg"] == "dwell" and dwell["edges"][-1] < pol["streams"]["footfall"]["window"]
    assert _device([_with_dwell(), _with_dwell(bound=1000, edges=[1])]) == [
        "ok dwell 100 [30, 120]",
        "ok dwell 1000 [1]",
    ]


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"bound": 0}, ".bound "),
        ({"bound": 1001}, ".bound "),
        ({"bound": None}, ".bound "),
        ({"edges": []}, ".edges "),
        ({"edges": [0, 30]}, ".edges "),
        ({"edges": [60, 30]}, ".edges "),
        ({"edges": [30, 30]}, ".edges "),
        ({"edges": [1.5]}, ".edges "),
        ({"edges": list(range(1, 33))}, ".edges "),
        ({"m": 64}, ".m "),
    ],
)
def test_host_refuses_what_the_device_would(over: dict[str, Any], needle: str) -> None:
    pol = _with_dwell(**over)
    if over.get("bound", 0) is None:
        del pol["streams"]["footfall"]["fields"]["dwell"]["bound"]
    with pytest.raises(PolicyError, match="streams.footfall.fields.dwell") as exc:
        check_policy(pol, "test")
    assert needle in str(exc.value)
    assert _device([pol])[0].startswith("refused ")


def test_host_refuses_a_bin_no_window_can_fill() -> None:
    # A dwell inside a 300-s window is at most 299 s: an edge at 300 makes a dead bin.
    with pytest.raises(PolicyError, match=r"fields.dwell.edges: 300 s is not below"):
        check_policy(_with_dwell(edges=[60, 300]), "test")
    check_policy(_with_dwell(edges=[60, 299]), "test")
