"""Bad input never crashes the verifier: random and mutated captures, thousands of them.

Each input is a capture whose serial stream (and MQTT payloads) are random bytes, or real
device frames mutated: bits flipped, bytes cut, inserted or duplicated, frames truncated,
delimiters lost, CBOR that is not COSE, COSE for another key. verify() must return a
report (never raise), every finding must carry a message index or an offset, and a
message the device really sent, left intact, must still authenticate.

EDGEVEIL_FUZZ_N sets the number of inputs (default 2000; `make fuzz-verify` runs 50,000).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import cbor2
import pytest
from edgeveil.boards import load_board
from edgeveil.capture import CaptureWriter
from edgeveil.cose import encrypt0
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.frames import cobs_encode, split_stream
from edgeveil.policy import compile_policy, default_policy
from edgeveil.replaygen import demo_recording, write_jsonl
from edgeveil.verify import Keyring, verify
from edgeveil.verify.messages import DeviceKeys

N = int(os.environ.get("EDGEVEIL_FUZZ_N", "2000"))
EVENTS = demo_recording(seed=21, minutes=15)


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> tuple[DeviceSecrets, list[bytes], Keyring, Path]:
    s = DeviceSecrets.generate()
    blob = compile_policy(default_policy(), s.dev_id, s.policy_key)
    with tempfile.TemporaryDirectory() as tmp:
        console = run_device(
            s, blob, EVENTS, load_board("esp32-generic").vm_app_heap_bytes, Path(tmp)
        )
    frames = [i.data for i in split_stream(console) if i.kind == "frame"]
    ring = Keyring([DeviceKeys.from_secrets(s, default_policy())])
    canaries = tmp_path_factory.mktemp("fuzz") / "rec.jsonl"
    write_jsonl(EVENTS, canaries)
    return s, frames, ring, canaries


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[i : i + rng.randint(1, 16)]
        elif op == 2:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            b[i:i] = b[max(0, i - 8) : i]  # duplicate a run
        elif op == 4:
            b[i:i] = b"\x00"  # a stray delimiter
        else:
            b = b[:i]  # truncate
    return bytes(b)


def _stream(
    rng: random.Random, frames: list[bytes], stranger: DeviceSecrets
) -> tuple[bytes, set[bytes]]:
    """A serial stream mixing intact, mutated and alien frames; returns it and the intact."""
    parts, intact = [], set()
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(7)
        f = rng.choice(frames)
        if kind == 0:
            parts.append(b"\x00" + cobs_encode(f) + b"\x00")
            intact.add(f)
        elif kind == 1:
            parts.append(_mutate(rng, b"\x00" + cobs_encode(f) + b"\x00"))
        elif kind == 2:
            parts.append(b"\x00" + cobs_encode(_mutate(rng, f)) + b"\x00")
        elif kind == 3:
            parts.append(rng.randbytes(rng.randint(1, 300)))
        elif kind == 4:
            junk = cbor2.dumps(rng.choice([[1, 2], {"a": b"x"}, cbor2.CBORTag(16, [1]), 7]))
            parts.append(b"\x00" + cobs_encode(junk) + b"\x00")
        elif kind == 5:
            alien = encrypt0(
                stranger.cose_key,
                stranger.base_iv,
                stranger.dev_id,
                rng.randrange(1000),
                rng.randbytes(20),
            )
            parts.append(b"\x00" + cobs_encode(alien) + b"\x00")
        else:
            parts.append(b"console: " + bytes(rng.randrange(32, 127) for _ in range(40)) + b"\r\n")
    return b"".join(parts), intact


def test_thousands_of_bad_inputs_never_crash_the_verifier(device) -> None:
    s, frames, ring, canaries = device
    stranger = DeviceSecrets.generate()
    rng = random.Random(int(os.environ.get("EDGEVEIL_FUZZ_SEED", "1")))
    counts = {"input": 0, "authenticity": 0, "conformance": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(N):
            stream, intact = _stream(rng, frames, stranger)
            path = Path(tmp) / f"{n}.capture"
            with CaptureWriter(path, source="fuzz") as w:
                cut = rng.randrange(len(stream) + 1)
                w.write("serial", stream[:cut], "/dev/pts/fuzz")
                w.write("serial", stream[cut:], "/dev/pts/fuzz")
                if rng.random() < 0.3:
                    w.write("mqtt", _mutate(rng, rng.choice(frames)), "mqtt://x", topic="t/x")
            if rng.random() < 0.1:  # a torn capture line too
                with open(path, "ab") as f:
                    f.write(b'{"t": 1, "ch": "ser')
            report = verify(path, keyring=ring, canaries=canaries if n % 10 == 0 else None)
            for f in report.findings:
                assert f.message is not None or f.offset is not None or f.check != "input", f
                counts[f.check] = counts.get(f.check, 0) + 1
            assert report.exit_code in (0, 1, 2)
            if intact:
                assert report.covered.get("authenticity", 0) >= 1
    # The corpus exercised every kind of bad input, not only one.
    assert counts["input"] > N // 4 and counts["authenticity"] > N // 4, counts
