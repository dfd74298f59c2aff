"""The whole device pipeline in the MicroPython VM, checked from the outside.

Device output is decrypted with only the exported key material (cryptography's AESCCM via
edgeveil.cose, and pycose), decoded with cbor2, and searched for the raw inputs.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import cbor2
import pytest
from edgeveil.boards import load_board
from edgeveil.cose import decrypt0, nonce_for
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.frames import split_stream
from edgeveil.policy import compile_policy, default_policy, policy_cbor
from edgeveil.replaygen import demo_recording, footfall, heart, merge
from edgeveil.senml import decode_pack
from pycose.headers import IV, KID, Algorithm, PartialIV
from pycose.keys import SymmetricKey
from pycose.messages import Enc0Message

HEAP = load_board("esp32-generic").vm_app_heap_bytes


def _run(secrets: DeviceSecrets, blob: bytes, events: list[dict]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return run_device(secrets, blob, events, HEAP, Path(tmp))


def _frames(console: bytes) -> list[bytes]:
    return [i.data for i in split_stream(console) if i.kind == "frame"]


@pytest.fixture(scope="module")
def demo_run() -> tuple[DeviceSecrets, list[dict], bytes]:
    secrets = DeviceSecrets.generate()
    events = demo_recording(seed=3, minutes=20)
    blob = compile_policy(default_policy(), secrets.dev_id, secrets.policy_key)
    return secrets, events, _run(secrets, blob, events)


def test_reports_decrypt_with_exported_key_in_cryptography_and_pycose(demo_run) -> None:
    secrets, _events, console = demo_run
    frames = _frames(console)
    assert len(frames) >= 4
    counters = []
    for msg in frames:
        d = decrypt0(secrets.cose_key, secrets.base_iv, msg, kid=secrets.dev_id)
        counters.append(d.counter)
        tag = cbor2.loads(msg)
        assert tag.tag == 16 and tag.value[0] == b"\xa1\x01\x0a"
        # pycose, with the 13-byte nonce set explicitly (library-pitfalls.md).
        enc = Enc0Message.decode(msg)
        assert enc.get_attr(KID) == secrets.dev_id
        enc.uhdr_update({IV: nonce_for(secrets.base_iv, enc.get_attr(PartialIV))})
        enc.key = SymmetricKey(k=secrets.cose_key)
        assert enc.get_attr(Algorithm).identifier == 10
        assert enc.decrypt() == d.plaintext
    assert counters == sorted(set(counters)), "counters repeat or go backwards"


def test_only_policy_fields_leave_and_no_raw_address(demo_run) -> None:
    secrets, events, console = demo_run
    policy = default_policy()
    allowed = set()
    for sname, stream in policy["streams"].items():
        for fname, f in stream["fields"].items():
            if f["agg"] in ("hist", "dwell"):
                allowed |= {f"{sname}:{fname}/{i}" for i in range(len(f["edges"]) + 1)}
            else:
                allowed.add(f"{sname}:{fname}")
    raw = {bytes.fromhex(e["addr"].replace(":", "")) for e in events if e["kind"] == "ble"}
    assert raw
    for msg in _frames(console):
        pt = decrypt0(secrets.cose_key, secrets.base_iv, msg).plaintext
        pack = decode_pack(pt)
        for r in pack.records:
            short = r.name.split(":", 1)[1]
            assert short in allowed, r.name
            assert r.k >= 5
        for a in raw:
            assert a not in pt and a not in msg
            assert a.hex().encode() not in pt and a.hex().encode() not in console
    assert secrets.cose_key not in console and secrets.pseudo_key not in console


def test_field_missing_from_policy_never_appears() -> None:
    secrets = DeviceSecrets.generate()
    policy = default_policy()
    del policy["streams"]["heart"]["fields"]["zones"]
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    frames = _frames(_run(secrets, blob, demo_recording(seed=4, minutes=15)))
    assert frames
    for msg in frames:
        pack = decode_pack(decrypt0(secrets.cose_key, secrets.base_iv, msg).plaintext)
        assert all("zones" not in r.name for r in pack.records)


@pytest.mark.parametrize("damage", ["flip", "other-key", "other-device", "missing"])
def test_bad_policy_sends_nothing_and_says_why(damage: str) -> None:
    secrets = DeviceSecrets.generate()
    policy = default_policy()
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    if damage == "flip":
        b = bytearray(blob)
        b[len(b) // 2] ^= 0x01
        blob = bytes(b)
    elif damage == "other-key":
        blob = compile_policy(policy, secrets.dev_id, b"\x07" * 32)
    elif damage == "other-device":
        blob = compile_policy(policy, b"\x09" * 8, secrets.policy_key)
    else:
        blob = b""
    console = _run(secrets, blob, demo_recording(seed=5, minutes=10))
    assert _frames(console) == []
    assert b"refusing to send anything" in console


def test_missing_key_sends_nothing() -> None:
    secrets = DeviceSecrets.generate()
    blob = compile_policy(default_policy(), secrets.dev_id, secrets.policy_key)
    short = dataclasses.replace(secrets, cose_key=secrets.cose_key[:15])
    console = _run(short, blob, demo_recording(seed=6, minutes=10))
    assert _frames(console) == []
    assert b"refusing to send anything" in console and b"cose_key" in console


def test_budget_exhaustion_stops_reports() -> None:
    secrets = DeviceSecrets.generate()
    policy = default_policy()
    # Room for exactly two heart windows (2 x 4000 milli-eps), no footfall at all.
    policy["eps_period"] = 8000
    del policy["streams"]["footfall"]
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    events = merge(heart(1, 1_700_000_100, 40), footfall(1, 1_700_000_100, 1))
    console = _run(secrets, blob, events)
    assert len(_frames(console)) == 2
    assert b"budget for the period is spent" in console


def test_policy_cbor_is_read_by_device_decoder() -> None:
    from edgeveil.vm import run_code

    dev = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    data = policy_cbor(default_policy(), dev)
    code = (
        "from veil.policy import Policy\nfrom veil.cbor import loads\n"
        f"p = Policy(loads({data!r}), {dev!r})\n"
        "print(sorted(s.name for s in p.streams), p.period, p.eps_period)\n"
    )
    r = run_code(code, 102400)
    assert r.ok, r.stdout + r.stderr
    pol = default_policy()
    assert r.stdout.decode().strip() == (
        f"{sorted(pol['streams'])} {pol['period']} {pol['eps_period']}"
    )
