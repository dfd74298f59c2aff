"""The raw values a board was fed, read from its replay: the leak scan's canaries.

    canaries = read_canaries("crowd.jsonl")      # either replay format
    canaries = canaries_from_events(events)      # the same from parsed events

Both replay formats are read (docs/replay.md: normalised samples; docs/vboard-replay.md:
raw advertisements, I2C registers, UART bytes, pins). Every raw value is a canary, with the
event times it was seen at and the channel it came from:

| event | canaries |
|---|---|
| `ble` | `addr` (and its OUI and device half, as separate canaries), `rssi`, `adv_data` bytes |
| `hr` | `bpm` |
| `co2` | `ppm`, `temp` (decimal text: a fixed-point reading) |
| `i2c` | the register's `data` bytes, and its 16-bit big-endian words |
| `uart` | each line of `data` text (and an NMEA GGA/RMC/GLL sentence's coordinates), `hex` bytes |
| any | `lat`/`lon` (coordinates), any other field not listed below (numbers, text) |

Not canaries (they describe the event, not a person): `t`, `kind`, `addr_type`,
`adv_type`, an I2C device's `addr`, `reg` and `regsize`, a UART number, pins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from ..errors import DecodeError
from .encodings import Canary

_SKIP = {"t", "kind", "addr_type", "adv_type", "reg", "regsize", "uart", "pin", "value"}
_COORD_FIELDS = {"lat", "lon", "latitude", "longitude"}
_MIN_BYTES = 2  # shorter byte strings are left to the integer canaries

Key = tuple[str, str, Any, str]


class Sink(Protocol):
    def __call__(self, kind: str, channel: str, value: Any, part: str = "") -> None: ...


def read_canaries(path: str | Path) -> list[Canary]:
    """Canaries of a replay file (JSON Lines, either format; blank lines skipped).

    Raises:
        DecodeError: the file cannot be read, or a line is not a JSON object (named).
    """
    events = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                except ValueError as exc:
                    raise DecodeError(f"{path}: line {n}: not JSON: {exc}") from None
                if not isinstance(e, dict):
                    raise DecodeError(f"{path}: line {n}: not a JSON object")
                events.append(e)
    except OSError as exc:
        raise DecodeError(f"cannot read canaries from {path}: {exc}") from exc
    return canaries_from_events(events)


def canaries_from_events(events: Iterable[Mapping[str, Any]]) -> list[Canary]:
    """One canary per distinct raw value (kind, channel, value), with all its times."""
    seen: dict[Key, list[float]] = {}

    for e in events:
        t = e.get("t")
        time = float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0

        def add(kind: str, channel: str, value: Any, part: str = "", time: float = time) -> None:
            seen.setdefault((kind, channel, value, part), []).append(time)

        _event(e, add)
    return [Canary(k, ch, v, tuple(sorted(ts)), part) for (k, ch, v, part), ts in seen.items()]


def _event(e: Mapping[str, Any], add: Sink) -> None:
    kind = str(e.get("kind", ""))
    handled: set[str] = set()
    if kind == "ble":
        handled = {"addr", "rssi", "adv_data"}
        _addr(e.get("addr"), add)
        _number("rssi", e.get("rssi"), add)
        _hex_bytes("adv", e.get("adv_data"), add)
    elif kind == "hr":
        handled = {"bpm"}
        _number("hr", e.get("bpm"), add)
    elif kind == "co2":
        handled = {"ppm", "temp"}
        _number("co2", e.get("ppm"), add)
        _number("temp", e.get("temp"), add)
    elif kind == "i2c":
        handled = {"addr", "data"}
        _i2c(e.get("data"), add)
    elif kind == "uart":
        handled = {"data", "hex"}
        _uart(e, add)
    elif kind == "pin":
        return
    for name, value in e.items():
        if name in handled or name in _SKIP:
            continue
        if name in _COORD_FIELDS:
            _coord(name[:3], value, add)
        else:
            _number(f"{kind}.{name}", value, add)


def _addr(text: Any, add: Sink) -> None:
    if not isinstance(text, str):
        return
    try:
        b = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        add("text", "ble", text)
        return
    if len(b) != 6:
        add("bytes", "ble", b)
        return
    add("addr", "ble", b)
    add("addr-part", "ble", b[:3], f"OUI of {text.lower()}")
    add("addr-part", "ble", b[3:], f"device half of {text.lower()}")


def _number(channel: str, value: Any, add: Sink) -> None:
    """An int, a decimal text ("21.37") or other text; anything else is not a raw value."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        add("int", channel, value)
    elif isinstance(value, float):
        add("fixed", channel, repr(value))
    elif isinstance(value, str) and value.strip():
        try:
            d = Decimal(value)
        except InvalidOperation:
            add("text", channel, value)
            return
        if not d.is_finite():
            add("text", channel, value)
        elif d == d.to_integral_value() and "." not in value and "e" not in value.lower():
            add("int", channel, int(d))
        else:
            add("fixed", channel, value.strip())


def _coord(channel: str, value: Any, add: Sink) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        add("coord", channel, repr(float(value)))
    elif isinstance(value, str):
        try:
            Decimal(value)
            add("coord", channel, value.strip())
        except InvalidOperation:
            add("text", channel, value)


def _hex_bytes(channel: str, text: Any, add: Sink) -> None:
    if not isinstance(text, str) or not text:
        return
    try:
        b = bytes.fromhex(text)
    except ValueError:
        add("text", channel, text)
        return
    if len(b) >= _MIN_BYTES:
        add("bytes", channel, b)


def _i2c(text: Any, add: Sink) -> None:
    if not isinstance(text, str):
        return
    _hex_bytes("i2c", text, add)
    try:
        b = bytes.fromhex(text)
    except ValueError:
        return
    # Sensor readings are 16-bit big-endian words: packed (0, 2, 4...) or, on Sensirion
    # parts, each followed by its CRC byte (0, 3, 6...).
    starts = set(range(0, len(b) - 1, 2)) | set(range(0, len(b) - 1, 3))
    for i in sorted(starts):
        add("int", "i2c", int.from_bytes(b[i : i + 2], "big"))


def _uart(e: Mapping[str, Any], add: Sink) -> None:
    if isinstance(e.get("hex"), str):
        _hex_bytes("uart", e["hex"], add)
    text = e.get("data")
    if not isinstance(text, str):
        return
    for line in text.splitlines():
        line = line.strip()
        if line:
            add("text", "uart", line)
            _nmea(line, add)


def _nmea(line: str, add: Sink) -> None:
    """Coordinates of an NMEA 0183 GGA, RMC or GLL sentence (ddmm.mmmm,N,dddmm.mmmm,E)."""
    fields = line.split("*")[0].split(",")
    at = {"GGA": 2, "RMC": 3, "GLL": 1}.get(fields[0][3:6]) if fields[0][:1] == "$" else None
    if at is None or len(fields) < at + 4:
        return
    for channel, raw, hemi, width in (
        ("lat", fields[at], fields[at + 1], 2),
        ("lon", fields[at + 2], fields[at + 3], 3),
    ):
        try:
            deg = Decimal(raw[:width])
            minutes = Decimal(raw[width:])
        except InvalidOperation:
            continue
        add("fixed", f"nmea.{channel}", raw)
        value = (deg + minutes / 60).quantize(Decimal("1e-7")).normalize()
        add("coord", channel, format(-value if hemi in ("S", "W") else value, "f"))
