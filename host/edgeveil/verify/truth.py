"""Ground truth: what a device computes from a replay before it adds any noise.

    truth = ground_truth("replay.jsonl", policy)
    tv = truth.get("footfall", 1700000100, "visitors")   # None if unknown
    tv.value, tv.n, tv.released                         # aggregate, contributions, n >= k
    post(field, tv.value)                               # what a zero noise would release

A host re-implementation of the device pipeline's arithmetic (device/veil/), written from
its documented semantics and tested against the device code itself in the MicroPython VM
with a sampler that draws no noise (tests/host/test_verify_truth.py):

- sources: the replay format of docs/replay.md (veil.sources.replay: integer `t` at or
  after veil.T0, the ble/hr/co2 normalizers, a bad line rejected; a co2 line whose `temp`
  is bad has already fed its `co2` sample), or the raw-event replay of
  docs/vboard-replay.md, of which only `ble` events reach the pipeline (as channels
  "ble" and "rssi" at the event's whole second; a SCAN_RSP only reaches an active scan);
- windows (veil.window, veil.pipeline.Stream): per stream, tumbling in veil time and
  aligned to multiples of the length, opened by the stream's first sample of any channel,
  closed by a sample at or past its end or at the end of the replay; a sample before the
  open window is late and dropped;
- aggregates (veil.aggregate, veil.distinct, veil.dwell): contributions clamped to
  [lo, hi]; the mean rounded half up ((2s + n) // 2n); a value on a histogram edge in the
  bin above; distinct = min(distinct ids, bound); dwell = per id held (the first `bound`
  distinct ids of the window) the time between its first and last sighting, binned;
- the gate (veil.gate): `n`, compared with k, is min(distinct ids, bound) for distinct
  and the number of contributions (dwell: ids held) otherwise.

`distinct_sketch` has no ground truth here: its estimate depends on a key the device draws
at random each window. Its records are left out (the statistics check skips them).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy import BINNED, NONNEG, RANGED
from ..policy import VEIL_T0 as T0

_RAW_KINDS = ("i2c", "uart", "pin")
_RAW_BLE_KEYS = ("addr_type", "adv_type", "adv_data")
_SCAN_RSP = 4

Sample = tuple[int, str, Any]  # (veil time, channel, value)
Key = tuple[str, int, str]  # (stream, window start in Unix seconds, record name)


@dataclass(frozen=True)
class TrueValue:
    """One record's value as the device computed it, before noise."""

    stream: str
    start: int  # window start, Unix seconds (the report's base time)
    name: str  # record name: the field, or "<field>/<bin>"
    field: str
    agg: str
    value: int  # the aggregate (the mean rounded as the device does)
    n: int  # contributions the gate compared with the stream's k
    k: int

    @property
    def released(self) -> bool:
        """Whether k-suppression lets this record out (the ε budget aside)."""
        return self.n >= self.k


@dataclass
class Truth:
    """Every record of every window a replay opens, by (stream, start, name)."""

    values: dict[Key, TrueValue] = field(default_factory=dict)
    events: int = 0  # replay lines that reached the pipeline
    rejected: int = 0  # lines the device rejects (or, raw replays, ignores)

    def get(self, stream: str, start: int, name: str) -> TrueValue | None:
        return self.values.get((stream, start, name))

    def __len__(self) -> int:
        return len(self.values)


# --- replays --------------------------------------------------------------------------


def read_events(replay: str | Path | Iterable[str]) -> list[Any]:
    """The JSON values of a replay's lines (None for a line that is not JSON)."""
    if isinstance(replay, (str, Path)):
        with open(replay, encoding="utf-8") as f:
            lines = f.read().splitlines()
    else:
        lines = list(replay)
    out: list[Any] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(None)
    return out


def is_raw(events: list[Any]) -> bool:
    """Whether a replay is a raw-event replay (docs/vboard-replay.md), not a sample one.

    It is when an event has a kind only raw replays have (i2c, uart, pin) or a `ble`
    event has a raw field (addr_type, adv_type, adv_data). A float `t` alone decides
    nothing: the replay source rejects that line, a board reads its whole second.
    """
    for e in events:
        if not isinstance(e, dict):
            continue
        if e.get("kind") in _RAW_KINDS:
            return True
        if e.get("kind") == "ble" and any(k in e for k in _RAW_BLE_KEYS):
            return True
    return False


def _addr(text: Any) -> bytes | None:
    if type(text) is not str or len(text) != 17:
        return None
    try:
        return bytes(int(text[i : i + 2], 16) for i in range(0, 17, 3))
    except ValueError:
        return None


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()  # MicroPython's isdigit() knows ASCII digits only


def _fixed(text: Any, places: int) -> int | None:
    """veil.sources.fixed: decimal text to an int scaled by 10**places, truncating."""
    if type(text) is int:
        return int(text * 10**places)
    if type(text) is not str or not text:
        return None
    neg = text[0] == "-"
    s = text[1:] if neg else text
    whole, _, frac = s.partition(".")
    if not _digits(whole) or (frac and not _digits(frac)):
        return None
    frac = (frac + "0" * places)[:places]
    v = int(whole) * 10**places + (int(frac) if frac else 0)
    return -v if neg else v


def _normalize(e: dict[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
    """(samples emitted, whether the line is accepted), as the device's normalizers do."""
    kind = e.get("kind")
    if kind == "ble":
        rssi = e.get("rssi")
        if type(rssi) is not int or not -127 <= rssi <= 20:
            return [], False
        a = _addr(e.get("addr"))
        return ([("ble", a), ("rssi", rssi)], True) if a is not None else ([], False)
    if kind == "hr":
        bpm = e.get("bpm")
        ok = type(bpm) is int and 0 < bpm < 300
        return ([("hr", bpm)], True) if ok else ([], False)
    if kind == "co2":
        ppm = e.get("ppm")
        if type(ppm) is not int or not 0 <= ppm <= 40000:
            return [], False
        out: list[tuple[str, Any]] = [("co2", ppm)]
        if "temp" in e:
            temp = _fixed(e["temp"], 2)
            if temp is None:
                return out, False  # co2 was fed before the temp failed to parse
            out.append(("temp", temp))
        return out, True
    return [], False


def _event_time(e: dict[str, Any], raw: bool) -> int | None:
    """The event's whole Unix second, or None where the device drops the line."""
    t = e.get("t")
    if raw:
        # Only advertisements reach the pipeline, read off the board's clock (whole
        # seconds); a passive scan never sees a SCAN_RSP.
        if e.get("kind") != "ble" or e.get("adv_type", 0) == _SCAN_RSP:
            return None
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not t >= T0:
            return None
        return int(t)
    if type(t) is not int or t < T0:
        return None  # veil.sources.replay: integer Unix seconds after veil.T0 only
    return t


def samples(events: list[Any], raw: bool | None = None) -> tuple[list[Sample], int, int]:
    """The pipeline's samples from replay events -> (samples, accepted, rejected).

    Args:
        events: parsed replay lines (read_events).
        raw: a raw-event replay (only BLE advertisements reach the pipeline); None: guess
            with is_raw().
    """
    raw = is_raw(events) if raw is None else raw
    out: list[Sample] = []
    ok = bad = 0
    for e in events:
        if not isinstance(e, dict):
            bad += 1
            continue
        t = _event_time(e, raw)
        if t is None:
            bad += 1
            continue
        emitted, accepted = _normalize(e)
        out += [(t - T0, ch, v) for ch, v in emitted]
        ok += accepted
        bad += not accepted
    return out, ok, bad


# --- aggregates -----------------------------------------------------------------------


class _Agg:
    """One field's aggregate over one window (the device's semantics, host arithmetic)."""

    def __init__(self, f: dict[str, Any], window: int) -> None:
        self.agg = f["agg"]
        self.lo, self.hi = f.get("lo", 0), f.get("hi", 0)
        self.edges = list(f.get("edges") or [])
        self.bound = f.get("bound", 0)
        self.window = window
        self.n = 0
        self.total = 0
        self.vmin: int | None = None
        self.vmax: int | None = None
        self.bins = [0] * (len(self.edges) + 1)
        self.ids: dict[bytes, list[int]] = {}  # id -> [first, last] offset (dwell)

    def add(self, v: Any, t: int) -> None:
        a = self.agg
        if a == "count":
            self.n += 1
        elif a == "hist":
            self.bins[bisect.bisect_right(self.edges, v)] += 1
            self.n += 1
        elif a in ("distinct", "dwell"):
            self._add_id(bytes(v), t % self.window)
        else:
            c = min(max(v, self.lo), self.hi)
            self.n += 1
            self.total += c
            self.vmin = c if self.vmin is None else min(self.vmin, c)
            self.vmax = c if self.vmax is None else max(self.vmax, c)

    def _add_id(self, ident: bytes, off: int) -> None:
        seen = self.ids.get(ident)
        if seen is not None:
            seen[0], seen[1] = min(seen[0], off), max(seen[1], off)
        elif len(self.ids) < self.bound:  # past the bound an id is counted by nothing
            self.ids[ident] = [off, off]

    def results(self, name: str) -> tuple[list[tuple[str, int]], int]:
        """([(record name, value)], n compared with k)."""
        a = self.agg
        if a == "hist":
            return [(f"{name}/{i}", c) for i, c in enumerate(self.bins)], self.n
        if a == "dwell":
            bins = [0] * (len(self.edges) + 1)
            for first, last in self.ids.values():
                bins[bisect.bisect_right(self.edges, last - first)] += 1
            return [(f"{name}/{i}", c) for i, c in enumerate(bins)], len(self.ids)
        if a == "distinct":
            return [(name, len(self.ids))], len(self.ids)
        if a == "count":
            return [(name, self.n)], self.n
        if self.n == 0:
            return [], 0
        if a == "mean":
            return [(name, (2 * self.total + self.n) // (2 * self.n))], self.n
        v = {"sum": self.total, "min": self.vmin, "max": self.vmax}[a]
        assert v is not None
        return [(name, v)], self.n


class _Stream:
    def __init__(self, name: str, sp: dict[str, Any], out: Truth) -> None:
        self.name = name
        self.length = sp["window"]
        self.k = sp["k"]
        self.fields = {
            fname: f for fname, f in sp["fields"].items() if f["agg"] != "distinct_sketch"
        }
        self.out = out
        self.start: int | None = None
        self.aggs: dict[str, _Agg] = {}

    def feed(self, t: int, channel: str, v: Any) -> None:
        if self.start is not None and t < self.start:
            return  # late: veil.window drops it
        if self.start is not None and t >= self.start + self.length:
            self.close()
        if self.start is None:
            self.start = t - t % self.length
            self.aggs = {n: _Agg(f, self.length) for n, f in self.fields.items()}
        for fname, f in self.fields.items():
            if f["in"] == channel:
                self.aggs[fname].add(v, t)

    def close(self) -> None:
        if self.start is None:
            return
        start = self.start + T0
        for fname, agg in self.aggs.items():
            recs, n = agg.results(fname)
            for rname, value in recs:
                tv = TrueValue(self.name, start, rname, fname, agg.agg, value, n, self.k)
                self.out.values[(self.name, start, rname)] = tv
        self.start = None


def ground_truth(
    replay: str | Path | Iterable[str], policy: dict[str, Any], raw: bool | None = None
) -> Truth:
    """The true value of every record a device fed `replay` under `policy` computes.

    Args:
        replay: a replay file (or its lines): docs/replay.md or docs/vboard-replay.md.
        policy: the device's policy (edgeveil.policy.load_policy_file / default_policy).
        raw: force the raw-event (True) or sample (False) reading; None guesses.

    Returns:
        Truth, keyed by (stream, window start in Unix seconds, record name); records of
        suppressed fields are included (their `released` is False).
    """
    events = read_events(replay)
    smp, ok, bad = samples(events, raw)
    out = Truth(events=ok, rejected=bad)
    streams = [_Stream(name, sp, out) for name, sp in policy["streams"].items()]
    for t, ch, v in smp:
        for s in streams:
            s.feed(t, ch, v)
    for s in streams:
        s.close()
    return out


def iter_released(truth: Truth) -> Iterator[TrueValue]:
    """The records k-suppression lets out, in key order."""
    for key in sorted(truth.values):
        tv = truth.values[key]
        if tv.released:
            yield tv


# --- the gate's arithmetic ------------------------------------------------------------


def generalize(value: int, prec: int) -> int:
    """veil.privacy.generalize: the nearest multiple of `prec`, ties away from zero."""
    if prec <= 1:
        return value
    half = prec // 2
    if value >= 0:
        return (value + half) // prec * prec
    return -((-value + half) // prec * prec)


def post(f: dict[str, Any], value: int) -> int:
    """The gate's post-processing of an already noised value (veil.gate._release)."""
    agg = f["agg"]
    if agg in NONNEG:
        value = max(0, value)
    elif agg in RANGED:
        value = min(max(value, f["lo"]), f["hi"])
    return generalize(value, f.get("prec", 1))


def sensitivity(f: dict[str, Any]) -> int:
    """How far one person moves the field's statistic (docs/policy.md; veil.aggregate).

    count, hist, distinct: cap; sum: cap * max(|lo|, |hi|); mean, min, max: hi - lo;
    dwell: 2 * cap (veil.dwell); distinct_sketch: cap * (ceil(C^2 / (A - C)) + 1).
    """
    agg, cap = f["agg"], f.get("cap", 1)
    if agg in ("count", "hist", "distinct"):
        return cap
    if agg == "sum":
        return cap * max(abs(f["lo"]), abs(f["hi"]))
    if agg in RANGED:
        return f["hi"] - f["lo"]
    if agg == "dwell":
        return 2 * cap
    if agg == "distinct_sketch":
        return cap * _sketch_step(f["bound"], f.get("m", 1024))
    raise ValueError(f"unknown aggregate {agg!r}")


def _sketch_step(c: int, m: int) -> int:
    # veil.distinct.DistinctSketch: A = alpha_m m^2 as anum / aden (Flajolet et al. 2007).
    if m >= 128:
        anum, aden = 7213 * m**3, 10000 * m + 10790
    else:
        anum, aden = {16: 673, 32: 697, 64: 709}[m] * m * m, 1000
    num, den = c * c * aden, anum - c * aden
    return -(-num // den) + 1


def scale(f: dict[str, Any]) -> float:
    """The discrete Laplace scale sensitivity / ε of the field's noise (ε in milli-units)."""
    return sensitivity(f) * 1000 / f["eps"]


def record_field(stream: dict[str, Any], name: str) -> tuple[str, dict[str, Any]] | None:
    """The policy field a record name ("visitors", "zones/2") belongs to, if any."""
    fname, _, b = name.partition("/")
    f = stream["fields"].get(fname)
    if f is None:
        return None
    if f["agg"] in BINNED:
        ok = b.isdigit() and int(b) < len(f["edges"]) + 1
    else:
        ok = not b
    return (fname, f) if ok else None
