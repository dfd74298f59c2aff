"""Raw-event replays for the virtual ESP32's emulated peripherals (docs/vboard-replay.md).

    events = ble_footfall(seed=1, n_phones=20, minutes=60, canary="c0:ff:ee:00:00:01")
    write_raw_replay("crowd.jsonl", events)

Unlike `edgeveil.replaygen` (normalised samples for `veil.sources.replay`), these are what
the board's radio and buses see: advertisements with their address type, PDU type and
payload, I2C register contents, UART bytes. Deterministic for a seed, so a test knows
every address that went in (the ground truth for counts and for leak scans).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import VBoardError

RawEvent = dict[str, Any]

ADV_IND = 0  # connectable, scannable undirected (most phones)
ADV_NONCONN_IND = 3
SCAN_RSP = 4
ADDR_RANDOM = 1

_COMPANIES = (0x004C, 0x0006, 0x0075, 0x00E0)  # Apple, Microsoft, Samsung, Google
_ADV_MAX = 31


def write_raw_replay(path: str | Path, events: Iterable[RawEvent]) -> int:
    """Write `events` as a raw-event replay (JSON Lines, one event a line).

    Args:
        path: the file to write.
        events: dicts with at least "t" (Unix seconds) and "kind", in time order.

    Returns:
        The number of events written.

    Raises:
        VBoardError: an event lacks "t" or "kind", or goes back in time.
    """
    n = 0
    last = -math.inf
    with open(path, "w", encoding="utf-8") as f:
        for e in events:
            t = e.get("t")
            if isinstance(t, bool) or not isinstance(t, int | float) or "kind" not in e:
                raise VBoardError(f"replay event {n + 1}: 't' (Unix seconds) and 'kind' needed")
            if t < last:
                raise VBoardError(f"replay event {n + 1}: t={t} is before the one before it")
            last = t
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
            n += 1
    return n


def first_time(path: str | Path) -> float | None:
    """The "t" of a replay's first event (a board's boot time `t0` to replay it from)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return float(json.loads(line)["t"])
    return None


def _private_addr(rng: random.Random) -> str:
    # A resolvable private address: the two most significant bits are 0b01 (Bluetooth Core
    # spec, Vol 6 Part B, 1.3), which is what phones advertise with and rotate.
    first = 0x40 | rng.randrange(64)
    return ":".join(f"{b:02x}" for b in [first, *(rng.randrange(256) for _ in range(5))])


def _adv_payload(rng: random.Random) -> str:
    flags = bytes((0x02, 0x01, 0x1A))  # AD "Flags": LE general discoverable, BR/EDR capable
    company = rng.choice(_COMPANIES)
    body = bytes(rng.randrange(256) for _ in range(rng.randint(4, _ADV_MAX - 7)))
    mfr = bytes((len(body) + 3, 0xFF, company & 0xFF, company >> 8)) + body  # 0xFF: mfr data
    return (flags + mfr).hex()


def ble_footfall(
    seed: int,
    n_phones: int,
    minutes: int,
    *,
    start: int = 1_700_000_100,
    canary: str | None = None,
    interval_s: tuple[float, float] = (2.0, 10.0),
    rotate_s: tuple[int, int] = (480, 900),
) -> list[RawEvent]:
    """Raw advertisements of `n_phones` phones passing a scanner during `minutes`.

    Each phone arrives at a random time, stays 1-30 minutes (or to the end), and
    advertises every `interval_s` seconds (as the scanner hears it) with an RSSI around
    its own level. It uses random private addresses (addr_type 1) and, like phones do,
    changes address and payload every `rotate_s` seconds. A `canary` address, when
    given, is one more phone that stays the whole time and never rotates, so a leak
    scan has a known value to look for.

    Returns:
        Events sorted by "t" (float seconds, millisecond resolution).
    """
    rng = random.Random(seed)
    end = start + minutes * 60
    events: list[RawEvent] = []
    phones: list[tuple[float, float, str | None]] = []
    for _ in range(n_phones):
        arrive = start + rng.uniform(0, minutes * 60)
        phones.append((arrive, min(end, arrive + rng.uniform(60, 1800)), None))
    if canary is not None:
        phones.append((float(start), float(end), canary))
    for arrive, leave, fixed in phones:
        level = rng.randint(-90, -50)
        period = rng.uniform(*interval_s)
        t = arrive
        next_rotation = arrive
        addr = payload = ""
        adv_type = rng.choice((ADV_IND, ADV_IND, ADV_NONCONN_IND))
        while t < leave:
            if t >= next_rotation:
                addr = fixed or _private_addr(rng)
                payload = _adv_payload(rng)
                next_rotation = math.inf if fixed else t + rng.randint(*rotate_s)
            rssi = max(-127, min(20, level + rng.randint(-8, 8)))
            events.append(
                {
                    "t": round(t, 3),
                    "kind": "ble",
                    "addr": addr,
                    "addr_type": ADDR_RANDOM,
                    "adv_type": adv_type,
                    "rssi": rssi,
                    "adv_data": payload,
                }
            )
            t += period * rng.uniform(0.8, 1.2)
    events.sort(key=lambda e: e["t"])
    return events


def i2c_event(t: float, addr: int, reg: int, data: bytes, regsize: int = 8) -> RawEvent:
    """From `t` on, I2C device `addr` answers `data` for register `reg`."""
    return {
        "t": t,
        "kind": "i2c",
        "addr": addr,
        "reg": reg,
        "regsize": regsize,
        "data": data.hex(),
    }


def uart_event(t: float, data: bytes | str, uart: int = 1) -> RawEvent:
    """At `t`, `data` arrives on UART `uart` (text such as an NMEA sentence, or bytes)."""
    if isinstance(data, str):
        return {"t": t, "kind": "uart", "uart": uart, "data": data}
    return {"t": t, "kind": "uart", "uart": uart, "hex": data.hex()}


def pin_event(t: float, pin: int, value: int) -> RawEvent:
    """At `t`, something outside drives GPIO `pin` to `value`."""
    return {"t": t, "kind": "pin", "pin": pin, "value": value}
