"""Recordings for the replay source (docs/replay.md): a crowd of phones and a wearer.

    events = footfall(seed=1, start=1_700_000_000, minutes=30)
    write_jsonl(events, "rec.jsonl")
    planted = canary_events(start=1_700_000_000, minutes=30)   # distinctive raw values
    events = merge(events, planted)                           # or demo_recording(plant=True)

Deterministic for a seed, so tests and the demo know the ground truth: every BLE address
and heart rate that went in, which is what the leak scan looks for in what came out.
The planted canaries are values no honest report can land on by chance: an impossible
heart rate, a made-up BLE address, a CO2 reading with many significant digits.
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


CANARY_BPM = 287  # a heart rate no wearer has; the device still accepts it (1..299)
CANARY_ADDR = "5e:ca:7a:11:d0:9b"  # made up; a private address (top bits 01), no 00/ff byte
CANARY_PPM = 38917
CANARY_TEMP = "23.4815926535"  # 12 significant digits: searchable even as decimal text
CANARY_COORD = ("48.1172936518", "11.5166719274")  # lat, lon: only with gnss=True


def canary_events(
    start: int,
    minutes: int,
    *,
    seed: int = 0,
    bpm_run: int = 1,
    addr_minutes: int = 10,
    gnss: bool = False,
) -> list[Event]:
    """The planted canaries, for a recording that starts at `start` and lasts `minutes`.

    - `bpm_run` heart-rate samples of CANARY_BPM, 2 s apart at odd seconds from the middle
      of the recording (between the wearer's own samples, which come at even seconds);
    - a phone with address CANARY_ADDR, advertising every 20 s for `addr_minutes` from a
      third of the way in;
    - one CO2 reading of CANARY_PPM ppm at CANARY_TEMP degrees, two thirds of the way in;
    - with `gnss`, one {"kind": "gnss", "lat", "lon"} fix at CANARY_COORD (no device
      source reads it yet: a board rejects and counts the line; for verifier tests).

    Returns:
        The events, in time order, deterministic for a seed.
    """
    rng = random.Random(seed)
    span = minutes * 60
    mid = start + span // 2
    events: list[Event] = [
        {"t": mid + (1 - mid % 2) + 2 * i, "kind": "hr", "bpm": CANARY_BPM} for i in range(bpm_run)
    ]
    t = start + span // 3
    while t < min(start + span // 3 + addr_minutes * 60, start + span):
        rssi = -58 + rng.randint(-4, 4)
        events.append({"t": t, "kind": "ble", "addr": CANARY_ADDR, "rssi": rssi})
        t += 20
    when = start + 2 * span // 3
    events.append({"t": when, "kind": "co2", "ppm": CANARY_PPM, "temp": CANARY_TEMP})
    if gnss:
        lat, lon = CANARY_COORD
        events.append({"t": when + 1, "kind": "gnss", "lat": lat, "lon": lon})
    events.sort(key=lambda e: e["t"])
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


def demo_recording(
    seed: int = 7, start: int = 1_700_000_100, minutes: int = 30, plant: bool = False
) -> list[Event]:
    """The embedded default recording: a shop's footfall and a wearer's heart rate; with
    `plant`, also the canaries of `canary_events` (seeded with `seed`)."""
    streams = [footfall(seed, start, minutes), heart(seed + 1, start, minutes)]
    if plant:
        streams.append(canary_events(start, minutes, seed=seed))
    return merge(*streams)
