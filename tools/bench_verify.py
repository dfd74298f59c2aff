"""Leak-scan benchmark (issue 5, "Measure"): messages per second scanned with 1,000+
canaries in every encoding, Aho-Corasick against one search per pattern, in the same run.

    make bench-verify          # or: .venv/bin/python tools/bench_verify.py [-m 3000] [-n 100]

Canaries: 1,000 BLE addresses (random private addresses, with their OUIs and device
halves) and 1,000 heart-rate, CO2 and temperature readings, each with every encoding of
edgeveil.verify.encodings. Messages: SenML packs as the device makes them (a footfall or
heart window, 100-300 bytes), sealed with COSE_Encrypt0 and framed with COBS; each is
scanned as wire bytes (the frame) and as plaintext, and its decoded pack goes through the
structure-aware scan. None holds a canary, so every finding would be a false positive
(the count is printed). The naive scan (`LeakScanner.naive_scan`: one `bytes.find` loop
per pattern) runs on the first `-n` messages only, as it is a few thousand times slower.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

import cbor2  # noqa: E402
from edgeveil.cose import encrypt0  # noqa: E402
from edgeveil.frames import cobs_encode  # noqa: E402
from edgeveil.verify.canaries import canaries_from_events  # noqa: E402
from edgeveil.verify.leakscan import (  # noqa: E402
    LeakScanner,
    RawIndex,
    outermost,
    structure_scan,
)

T = TypeVar("T")
START = 1_700_000_100
WINDOW = 300
KEY, IV, KID = bytes(16), bytes(range(1, 14)), b"benchdev"


@dataclass(frozen=True)
class Message:
    wire: bytes  # 0x00 COBS(COSE_Encrypt0) 0x00
    plaintext: bytes


def make_events(rng: random.Random, n_addr: int = 1000, n_other: int = 1000) -> list[dict]:
    """n_addr distinct phones and n_other distinct readings, spread over an hour."""
    events = []
    for _ in range(n_addr):
        addr = [0x40 | rng.randrange(64), *(rng.randrange(256) for _ in range(5))]
        events.append(
            {
                "t": START + rng.randrange(3600),
                "kind": "ble",
                "addr": ":".join(f"{b:02x}" for b in addr),
                "rssi": rng.randint(-95, -45),
            }
        )
    for i in range(n_other):
        t = START + rng.randrange(3600)
        if i % 2:
            events.append({"t": t, "kind": "hr", "bpm": rng.randint(40, 200)})
        else:
            temp = f"{rng.uniform(15, 30):.{rng.randint(2, 6)}f}"
            events.append({"t": t, "kind": "co2", "ppm": rng.randint(400, 5000), "temp": temp})
    events.sort(key=lambda e: e["t"])
    return events


def full_verify(events: list[dict], messages: list[Message], workdir: Path) -> tuple[int, float]:
    """edgeveil.verify.verify on a capture of `messages` with `events` as the canaries:
    frames, decryption, counters, leak scan, structure scan and statistics (no policy:
    conformance does not run). Returns (findings, seconds), the replay and capture
    files made outside the timing."""
    from edgeveil.capture import CaptureWriter
    from edgeveil.replaygen import write_jsonl
    from edgeveil.verify import Keyring, verify
    from edgeveil.verify.messages import DeviceKeys

    replay, cap = workdir / "replay.jsonl", workdir / "bench.capture"
    write_jsonl(events, replay)
    with CaptureWriter(cap, source="bench") as w:
        for m in messages:
            w.write("serial", m.wire, "/dev/bench")
    ring = Keyring([DeviceKeys(KID, KEY, IV)])
    report, seconds = timed(lambda: verify(cap, keyring=ring, canaries=replay))
    return len(report.findings), seconds


def make_messages(rng: random.Random, n: int) -> list[Message]:
    """Footfall and heart windows as edgeveil devices send them."""
    out = []
    for i in range(n):
        start = START + WINDOW * (i // 2 % 12)
        pseudonym = rng.randbytes(8).hex()
        if i % 2:
            names = ["visitors", *(f"dwell/{b}" for b in range(4))]
            stream, k, eps = "footfall", 5, 500
        else:
            names = [*(f"zones/{b}" for b in range(4)), "hr"]
            stream, k, eps = "heart", 10, 2000
        pack = []
        for name in names:
            rec = {0: name, 2: rng.randint(0, 250), "k": k, "eps": eps}
            if not pack:
                rec.update({-2: f"{pseudonym}:{stream}:", -3: start, "w": WINDOW})
            pack.append(rec)
        pt = cbor2.dumps(pack)
        msg = encrypt0(KEY, IV, KID, i, pt)
        out.append(Message(b"\x00" + cobs_encode(msg) + b"\x00", pt))
    return out


def scan_messages(scanner: LeakScanner, index: RawIndex, messages: list[Message]) -> int:
    """The scanning part of verification: wire and plaintext bytes, then the structure of
    the decoded pack. Returns the number of findings."""
    found = 0
    for m in messages:
        found += len(outermost(scanner.scan(m.wire)))
        found += len(outermost(scanner.scan(m.plaintext)))
        pack = cbor2.loads(m.plaintext)
        found += len(structure_scan(pack, pack[0][-3], pack[0]["w"], index, pack[0]["k"]))
    return found


def naive_messages(scanner: LeakScanner, messages: list[Message]) -> int:
    found = 0
    for m in messages:
        found += len(outermost(scanner.naive_scan(m.wire)))
        found += len(outermost(scanner.naive_scan(m.plaintext)))
    return found


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", type=int, default=3000, help="messages to scan (default 3000)")
    ap.add_argument("-n", type=int, default=40, help="messages for the naive scan (40)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    events = make_events(rng)
    canaries = canaries_from_events(events)
    cpu = time.process_time()
    scanner, build = timed(LeakScanner, canaries)
    build_cpu = time.process_time() - cpu
    index, build_index = timed(RawIndex, canaries, scanner)
    messages = make_messages(rng, args.m)
    size = sum(len(m.plaintext) for m in messages) / len(messages)
    wire = sum(len(m.wire) for m in messages) / len(messages)
    print(
        f"canaries: {len(canaries)} ({sum(c.kind == 'addr' for c in canaries)} BLE addresses "
        f"with their OUIs and device halves, the rest readings); patterns: "
        f"{len(scanner.searched)} searched, {len(scanner.not_searched)} too short to search"
    )
    print(
        f"automaton built in {build:.2f} s ({build_cpu:.2f} s CPU); "
        f"raw-value index in {build_index:.2f} s"
    )
    print(f"messages: {len(messages)}, plaintext {size:.0f} B and frame {wire:.0f} B on average")
    ac_bytes, t_bytes = timed(_bytes_only, scanner, messages)
    found, t_all = timed(scan_messages, scanner, index, messages)
    subset = messages[: args.n]
    naive_found, t_naive = timed(naive_messages, scanner, subset)
    ac_sub, t_ac_sub = timed(_bytes_only, scanner, subset)
    assert naive_found == ac_sub, (naive_found, ac_sub)
    rate_ac = len(messages) / t_bytes
    rate_naive = len(subset) / t_naive
    print(f"Aho-Corasick byte scan (wire + plaintext): {rate_ac:,.0f} messages/s")
    print(f"byte scan + structure-aware scan:          {len(messages) / t_all:,.0f} messages/s")
    print(f"naive byte scan (a find loop per pattern): {rate_naive:,.1f} messages/s")
    print(f"ratio Aho-Corasick / naive byte scan:      {rate_ac / rate_naive:,.0f}x")
    print(f"findings (all would be false positives): {found} (byte scan alone: {ac_bytes})")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        n_found, t_verify = full_verify(events, messages, Path(tmp))
    print(
        f"edgeveil verify, whole capture (decrypt, counters, both scans, statistics; the "
        f"automaton built inside): {len(messages) / t_verify:,.0f} messages/s "
        f"({t_verify:.1f} s, {n_found} findings)"
    )


def _bytes_only(scanner: LeakScanner, messages: list[Message]) -> int:
    found = 0
    for m in messages:
        found += len(outermost(scanner.scan(m.wire))) + len(outermost(scanner.scan(m.plaintext)))
    return found


if __name__ == "__main__":
    main()
