"""Recordings for the replay source (docs/replay.md): a crowd of phones and a wearer.

    events = footfall(seed=1, start=1_700_000_000, minutes=30)
    write_jsonl(events, "rec.jsonl")

Deterministic for a seed, so tests and the demo know the ground truth: every BLE address
and heart rate that went in, which is what the leak scan looks for in what came out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Event = dict[str, Any]


def _random_addr(rng: random.Random) -> str:
    # Resolvable/non-resolvable private addresses as phones use: top two bits 01 or 00.
    first = rng.randrange(0, 64) | 0x40
    rest = [rng.randrange(256) for _ in range(5)]
    return ":".join(f"{b:02x}" for b in [first, *rest])


def footfall(seed: int, start: int, minutes: int, rate_per_min: float = 6.0) -> list[Event]:
    """BLE advertisements of visitors who arrive, linger, and leave.

    Each visitor's phone advertises every 10-40 s with RSSI around -70 dBm while present.
    """
    rng = random.Random(seed)
    events: list[Event] = []
    end = start + minutes * 60
    t = float(start)
    while True:
        t += rng.expovariate(rate_per_min / 60.0)
        if t >= end:
            break
        addr = _random_addr(rng)
        dwell = rng.randint(60, 1200)
        base_rssi = rng.randint(-85, -55)
        seen = t
        while seen < min(t + dwell, end):
            rssi = max(-127, min(20, base_rssi + rng.randint(-6, 6)))
            events.append({"t": int(seen), "kind": "ble", "addr": addr, "rssi": rssi})
            seen += rng.uniform(10, 40)
    return events


def heart(seed: int, start: int, minutes: int) -> list[Event]:
    """One wearer's heart rate every 2 s: rest, a walk, a run."""
    rng = random.Random(seed)
    events: list[Event] = []
    bpm = 65.0
    for i in range(minutes * 30):
        phase = (i * 3) // (minutes * 30)
        target = (68, 110, 160)[phase]
        bpm += (target - bpm) * 0.05 + rng.gauss(0, 2)
        events.append({"t": start + 2 * i, "kind": "hr", "bpm": max(35, min(220, round(bpm)))})
    return events


def merge(*streams: Iterable[Event]) -> list[Event]:
    """All events in event-time order (stable for equal times)."""
    out = [e for s in streams for e in s]
    out.sort(key=lambda e: e["t"])
    return out


def write_jsonl(events: Iterable[Event], path: str | Path) -> None:
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")


def demo_recording(seed: int = 7, start: int = 1_700_000_100, minutes: int = 30) -> list[Event]:
    """The embedded default recording: a shop's footfall and a wearer's heart rate."""
    return merge(footfall(seed, start, minutes), heart(seed + 1, start, minutes))
