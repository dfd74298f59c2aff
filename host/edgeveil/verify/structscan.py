"""The structure-aware leak scan: decode, walk every value, compare with the raw inputs.

    index = RawIndex(canaries)                          # raw values by channel and time
    for s in structure_scan(cbor2.loads(plaintext), bt, w, index, k,
                            channels=policy_channels(policy)):
        print(s.describe())    # "record 1 / label 2: hr 287 as number (...)"

Byte search cannot see short values (a one-byte heart rate is in half of all 200-byte
payloads). This scan walks a decoded CBOR item (a SenML pack: a list of maps) and looks at
every number, byte string and text in it, map keys included (docs/leakscan.md):

- a **number** (an int or float, a text that parses as one, base64 of such a text, a byte
  string of 1-8 bytes read as an integer or float in either byte order) is a finding when
  it equals a raw value of its window (`window_start` .. `window_start + window_len`) and
  fewer than k samples lie near it (within 10 %, at least 1 unit), both in that window and
  in the whole recording. Equal means exactly for integers, within 1e-6 relative for
  floats (float32 keeps about 7 digits), to the digits written for decimal text ("23.48"
  equals 23.4815926535), or within `tolerance`. A fixed-point reading ("21.37") is also
  compared in its fixed-point units (2137), coordinates also in 1e-5/1e-6/1e-7 degrees and
  as NMEA's ddmm.mmmm. A value many samples are near is what an honest statistic lands on
  by chance: it is not flagged. bt, t, k, eps and w are the policy's (conformance checks
  them) and are not compared;
- a **byte string or text** is a finding when it equals a raw identifier (an address in
  either byte order, its OUI or device half, an advertisement payload, I2C or UART data,
  UART text), also after reading a text as hex (separators ":-. " dropped) or base64; and
  when it contains one, if an identifier that long is unlikely to be there by chance;
- **split values**: the texts and byte strings under one label are joined across records
  (as they are, and with hex texts decoded) and searched with the byte scanner, so an
  address sent as its OUI in one record and its device half in the next is found.

`text_scan` does the identifier part for the words of console text.
"""

from __future__ import annotations

import base64
import bisect
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import cbor2

from .encodings import COORD_PLACES, Canary, decimal_places, scaled

if TYPE_CHECKING:
    from .leakscan import LeakScanner

REL_FLOAT = 1e-6  # a decoded float equals a raw value within this relative error
REL_EXACT = 1e-12  # ints and decimal text: exact (the slack only absorbs float conversion)
NEAR_REL = 0.10  # "near" a number: within 10 % of it ...
NEAR_MIN = 1.0  # ... or within 1 unit, whichever is wider
ID_INT_MIN = 1 << 16  # identifiers are also compared as integers from this size on
ID_CHANCE_LIMIT = 1e-6  # "contains an identifier" only where chance cannot explain it
B64_MIN_LEN = 2  # a text is read as base64 from this length on (one byte) ...
B64_MIN_NAME = 8  # ... but a SenML name from this one (short names are valid base64)

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_HEX = re.compile(r"([0-9a-fA-F]{2})+")
_B64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_HEX_SEPARATORS = str.maketrans("", "", ":-. ")


@dataclass(frozen=True)
class StructMatch:
    """A decoded value that is (or holds) a raw value."""

    path: str  # "record 1 / label 2", "records 1..2 / label 2 (joined)"
    value: Any  # the decoded item
    canary: Canary
    encoding: str  # how the item holds it: "number", "hex text", "uint16-le bytes", ...
    why: str  # "equals", "contains", or the window facts for a number

    def describe(self) -> str:
        return f"{self.path}: {self.canary.label} as {self.encoding} ({self.why})"

    def detail(self) -> dict[str, object]:
        return {
            **self.canary.facts(),
            "encoding": self.encoding,
            "path": self.path,
            "value": self.value if isinstance(self.value, int | float | str) else repr(self.value),
            "why": self.why,
        }


@dataclass
class _Series:
    """One channel's numeric samples: in time order (time, comparable forms, canary), and
    every form by value (value, time, canary) to find equal values fast."""

    times: list[float] = field(default_factory=list)
    forms: list[tuple[float, ...]] = field(default_factory=list)
    canaries: list[Canary] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    value_at: list[tuple[float, Canary]] = field(default_factory=list)

    def equal(self, lo: float, hi: float, start: float | None, end: float | None) -> Canary | None:
        """A sample with a form in lo..hi seen in start..end (None: at any time)."""
        i = bisect.bisect_left(self.values, lo)
        while i < len(self.values) and self.values[i] <= hi:
            t, c = self.value_at[i]
            if (start is None or t >= start) and (end is None or t < end):
                return c
            i += 1
        return None

    def near(self, lo: float, hi: float) -> int:
        """How many forms of this channel's samples, over the whole recording, are in lo..hi."""
        return bisect.bisect_right(self.values, hi) - bisect.bisect_left(self.values, lo)


def _forms(c: Canary) -> tuple[float, ...]:
    if c.kind == "int":
        return (float(c.value),)  # type: ignore[arg-type]
    d = Decimal(str(c.value))
    places = {decimal_places(d), *(COORD_PLACES if c.kind == "coord" else ())}
    if c.channel == "temp":
        places.add(2)
    forms = {float(v) for p in places - {0} for v in scaled(d, p)}
    if c.kind == "coord":  # NMEA's ddmm.mmmm: degrees * 100 + minutes
        forms.add(float(int(abs(d)) * 100 + (abs(d) - int(abs(d))) * 60))
    return (float(d), *sorted(forms))


class RawIndex:
    """The raw values of a replay, as the structure-aware scan needs them.

    Args:
        canaries: the replay's canaries (edgeveil.verify.canaries).
        scanner: the byte scanner for joined values (built from `canaries` if not given).
    """

    def __init__(self, canaries: list[Canary], scanner: LeakScanner | None = None) -> None:
        self.canaries = list(canaries)
        self._scanner = scanner
        self.series: dict[str, _Series] = {}
        self.ids: dict[bytes, list[tuple[Canary, str]]] = {}
        self.id_ints: dict[int, list[tuple[Canary, str]]] = {}
        samples = []
        for c in self.canaries:
            if c.kind in ("int", "fixed", "coord"):
                forms = _forms(c)
                samples += [(t, c.channel, forms, c) for t in c.times]
            else:
                self._add_id(c)
        samples.sort(key=lambda s: s[0])
        by_value: dict[str, list[tuple[float, float, Canary]]] = {}
        for t, channel, forms, c in samples:
            s = self.series.setdefault(channel, _Series())
            s.times.append(t)
            s.forms.append(forms)
            s.canaries.append(c)
            by_value.setdefault(channel, []).extend((f, t, c) for f in forms)
        for channel, entries in by_value.items():
            entries.sort(key=lambda e: (e[0], e[1]))
            self.series[channel].values = [e[0] for e in entries]
            self.series[channel].value_at = [(e[1], e[2]) for e in entries]
        self.id_counts: dict[int, int] = {}
        for b in self.ids:
            self.id_counts[len(b)] = self.id_counts.get(len(b), 0) + 1
        self.id_lengths = sorted(self.id_counts)

    def _add_id(self, c: Canary) -> None:
        v = c.value
        b = v if isinstance(v, bytes) else str(v).encode()
        forms = [(b, "text" if c.kind == "text" else "bytes")]
        if c.kind in ("addr", "addr-part"):
            forms.append((b[::-1], "bytes-le"))
        for b, name in forms:
            self.ids.setdefault(b, []).append((c, name))
            if c.kind != "text" and len(b) <= 8:
                n = int.from_bytes(b, "big")
                if n >= ID_INT_MIN:
                    self.id_ints.setdefault(n, []).append((c, f"integer of {name}"))

    @property
    def scanner(self) -> LeakScanner:
        if self._scanner is None:
            from .leakscan import LeakScanner

            self._scanner = LeakScanner(self.canaries)
        return self._scanner

    def id_chance(self, length: int, within: int) -> float:
        """Chance that some identifier of `length` bytes occurs at random in `within` bytes."""
        n = self.id_counts.get(length, 0)
        return max(1, within - length + 1) * n * 2.0 ** (-8 * length)


@dataclass
class _Scan:
    index: RawIndex
    start: float | None
    end: float | None
    k: int
    tolerance: float
    channels: Mapping[str, str | None] | None
    out: list[StructMatch] = field(default_factory=list)

    def number(self, x: float | int | Decimal, path: str, item: Any, enc: str, field: str) -> None:
        exact = not isinstance(x, float)
        try:
            xf = float(x)
        except (OverflowError, ValueError):
            return  # beyond any float: no raw value is that large
        if xf != xf or abs(xf) == float("inf"):
            return
        eq = max(self.tolerance, (REL_EXACT if exact else REL_FLOAT) * abs(xf))
        if isinstance(x, Decimal) and decimal_places(x):  # "23.48" equals 23.4815926535
            eq = max(eq, 0.5 * 10.0 ** -decimal_places(x))
        near = max(eq, NEAR_MIN, NEAR_REL * abs(xf))
        if exact and xf == int(xf) and abs(xf) >= ID_INT_MIN:
            for c, form in self.index.id_ints.get(int(xf), []):
                self.out.append(StructMatch(path, item, c, f"{enc} ({form})", "equals"))
        for channel in self._channels(field):
            s = self.index.series.get(channel)
            hit = None if s is None else s.equal(xf - eq, xf + eq, self.start, self.end)
            if s is None or hit is None:
                continue
            lo = 0 if self.start is None else bisect.bisect_left(s.times, self.start)
            hi = len(s.times) if self.end is None else bisect.bisect_left(s.times, self.end)
            # Near it: the window's samples, and (a superset) the recording's. A value many
            # samples are near is what an honest statistic lands on by chance.
            overall = s.near(xf - near, xf + near)
            if overall >= self.k:
                continue
            close = sum(1 for i in range(lo, hi) if min(abs(f - xf) for f in s.forms[i]) <= near)
            why = (
                f"equals a raw {channel} value of its window: {close} of the window's "
                f"{hi - lo} samples and {overall} of the recording's are near it, "
                f"fewer than k={self.k}"
            )
            self.out.append(StructMatch(path, item, hit, enc, why))

    def _channels(self, field: str) -> list[str]:
        """The raw channels a number of `field` ("heart:hr" or "hr") is compared with."""
        if self.channels is not None:
            for key in (field, field.split(":")[-1]):
                if key in self.channels:
                    channel = self.channels[key]
                    return [] if channel is None else [channel]
        return list(self.index.series)

    def blob(
        self, b: bytes, path: str, item: Any, enc: str, field: str, numbers: bool = True
    ) -> None:
        """A byte string: identifiers in it, and (`numbers`) a short one read as a number."""
        idx = self.index
        for c, form in idx.ids.get(b, []):
            self.out.append(StructMatch(path, item, c, f"{enc} ({form})", "equals"))
        for n in idx.id_lengths:
            if n >= len(b) or idx.id_chance(n, len(b)) >= ID_CHANCE_LIMIT:
                continue
            for i in range(len(b) - n + 1):
                for c, form in idx.ids.get(b[i : i + n], []):
                    why = f"contains it at byte {i}"
                    self.out.append(StructMatch(path, item, c, f"{enc} ({form})", why))
        if numbers and 1 <= len(b) <= 8:
            for name, v in _numbers_in(b):
                self.number(v, path, item, f"{name} {enc}", field)

    def text(self, s: str, path: str, item: Any, field: str, b64_min: int = B64_MIN_LEN) -> None:
        t = s.strip()
        if _NUMBER.fullmatch(t):
            self.number(Decimal(t), path, item, "number text", field)
        h = t.translate(_HEX_SEPARATORS)
        if len(h) % 2 and len(h) >= 3:
            h = "0" + h  # "%x" of a number: "11f"
        is_hex = _HEX.fullmatch(h) is not None
        if is_hex:
            self.blob(bytes.fromhex(h), path, item, "hex text", field)
        if len(t) >= b64_min and _B64.fullmatch(t) and not is_hex and not _NUMBER.fullmatch(t):
            for b in _b64_decode(t):
                if _NUMBER.fullmatch(b.decode("latin-1")):  # base64 of a number's text
                    self.number(Decimal(b.decode()), path, item, "base64 number text", field)
                else:
                    self.blob(b, path, item, "base64 text", field)
        if not is_hex:
            self.blob(s.encode(), path, item, "text", field, numbers=False)


_WORD = re.compile(rb"[^\s,;=()\[\]{}<>'\"]+")


def text_scan(text: bytes, raw: RawIndex) -> list[StructMatch]:
    """Raw identifiers among the words of clear text (a board's console output).

    Each word is compared as `structure_scan` compares a decoded text, identifiers only:
    numbers in console text have no window to be compared in. This finds what the byte
    scan cannot, such as an address's OUI printed on one line and its device half on the
    next. Paths are "word at byte N".
    """
    scan = _Scan(raw, None, None, 0, 0.0, None)  # k = 0: no number is ever "below k"
    for m in _WORD.finditer(text):
        word = m.group().decode("utf-8", "replace")
        scan.text(word, f"word at byte {m.start()}", word, "", b64_min=B64_MIN_NAME)
    return scan.out


def _numbers_in(b: bytes) -> Iterator[tuple[str, float | int]]:
    """A short byte string read as each integer and float it could be (distinct values)."""
    n = len(b)
    seen: set[float] = set()
    for order, bb in (("be", b), ("le", b[::-1])):
        suffix = "" if n == 1 else "-" + order
        cands: list[tuple[str, float | int]] = [
            (f"uint{8 * n}{suffix}", int.from_bytes(bb, "big")),
            (f"int{8 * n}{suffix}", int.from_bytes(bb, "big", signed=True)),
        ]
        fmt = {2: "e", 4: "f", 8: "d"}.get(n)
        if fmt:
            cands.append((f"float{8 * n}{suffix}", struct.unpack(">" + fmt, bb)[0]))
        for name, v in cands:
            if v == v and v not in seen:
                seen.add(v)
                yield name, v
        if n == 1:
            return


def _b64_decode(t: str) -> list[bytes]:
    out = []
    core = t.rstrip("=")
    padded = core + "=" * (-len(core) % 4)
    for altchars in (b"+/", b"-_"):
        try:
            out.append(base64.b64decode(padded, altchars=altchars, validate=True))
        except ValueError:
            continue
    return list(dict.fromkeys(out))


# SenML labels whose numbers are times or the policy's own parameters (conformance checks
# them against the policy): never compared with raw values. bt -3, t 6, ut 7 (RFC 8428).
META_LABELS = {-3, 6, 7, "k", "eps", "w"}


MAX_DEPTH = 32  # nesting walked; a report is two levels deep


def _walk(obj: Any, path: str, field: str, depth: int = 0) -> Iterator[tuple[str, Any, str]]:
    """(path, leaf, SenML field name of its record) for every leaf, map keys included."""
    if depth > MAX_DEPTH:
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path} / item {i}", field, depth + 1)
    elif isinstance(obj, dict):
        for key, v in obj.items():
            yield from _walk(key, f"{path} / key {key!r}", field, depth + 1)
            yield from _walk(v, f"{path} / label {key!r}", field, depth + 1)
    elif isinstance(obj, cbor2.CBORTag):
        yield from _walk(obj.value, f"{path} / tag {obj.tag}", field, depth + 1)
    else:
        yield path, obj, field


def _records(obj: Any) -> Iterator[tuple[str, Any, str]]:
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        bn = obj[0].get(-2)
        stream = bn.rstrip(":").split(":")[-1] if isinstance(bn, str) else ""
        for i, rec in enumerate(obj):
            name = rec.get(0)
            fld = f"{stream}:{name.split('/')[0]}" if isinstance(name, str) else ""
            for key, v in rec.items():
                if not isinstance(key, int):  # an integer key is a SenML label
                    yield from _walk(key, f"record {i} / key {key!r}", fld, 1)
                if key in META_LABELS and isinstance(v, int | float):
                    continue
                yield from _walk(v, f"record {i} / label {key!r}", fld, 1)
    else:
        yield from _walk(obj, "item", "")


def structure_scan(
    obj: Any,
    window_start: float | None,
    window_len: float | None,
    raw: RawIndex,
    k: int,
    *,
    tolerance: float = 0.0,
    channels: Mapping[str, str | None] | None = None,
) -> list[StructMatch]:
    """Raw values in a decoded CBOR item (see the module docstring for the rules).

    Args:
        obj: the decoded plaintext (cbor2.loads), normally a SenML pack.
        window_start: the window's start (the pack's base time), Unix seconds; None
            compares numbers with every raw sample, whatever its time.
        window_len: the window's length in seconds.
        raw: the index of the replay's raw values.
        k: the stream's k: a number near fewer than k raw samples of its window is flagged.
        tolerance: how far a decoded number may be from a raw value and still equal it,
            in the raw value's units (0: exact).
        channels: field ("heart:hr", or just "hr") -> the raw channel its values are
            readings of, or None for a field whose values are counts (`policy_channels`
            makes it from a policy); a field not named is compared with every channel.
    """
    end = None if window_start is None or window_len is None else window_start + window_len
    scan = _Scan(raw, window_start, end, k, tolerance, channels)
    for path, leaf, fld in _records(obj):
        if isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, int | float | Decimal | Fraction):
            x = leaf if isinstance(leaf, int | float | Decimal) else float(leaf)
            if isinstance(x, Decimal) and not x.is_finite():
                continue
            if isinstance(x, float) and (x != x or abs(x) == float("inf")):
                continue
            scan.number(x, path, leaf, "number", fld)
        elif isinstance(leaf, bytes | bytearray):
            scan.blob(bytes(leaf), path, bytes(leaf), "bytes", fld)
        elif isinstance(leaf, str):
            is_name = path.endswith((" / label 0", " / label -2"))
            scan.text(leaf, path, leaf, fld, B64_MIN_NAME if is_name else B64_MIN_LEN)
    scan.out += _joined(obj, raw)
    return scan.out


VALUE_AGGS = ("mean", "min", "max", "sum")  # their releases are in the readings' units


def policy_channels(policy: Mapping[str, Any]) -> dict[str, str | None]:
    """`structure_scan`'s `channels` from a policy (docs/policy.md): "stream:field" -> the
    field's input channel for mean/min/max/sum, None for counts (count, hist, distinct,
    distinct_sketch: a count is not a reading and is compared with none)."""
    out: dict[str, str | None] = {}
    for sname, stream in (policy.get("streams") or {}).items():
        for fname, f in (stream.get("fields") or {}).items():
            out[f"{sname}:{fname}"] = f.get("in") if f.get("agg") in VALUE_AGGS else None
    return out


def _joined(obj: Any, raw: RawIndex) -> list[StructMatch]:
    """Byte-scan the texts and byte strings of each label joined across records; keep the
    matches that cross from one record into another (the rest the plain scan sees)."""
    if not (isinstance(obj, list) and len(obj) > 1 and all(isinstance(r, dict) for r in obj)):
        return []
    by_label: dict[Any, list[tuple[int, Any]]] = {}
    for i, rec in enumerate(obj):
        for label, v in rec.items():
            if isinstance(v, str | bytes):
                by_label.setdefault(label, []).append((i, v))
    from .leakscan import outermost

    out = []
    for label, parts in by_label.items():
        if len(parts) < 2:
            continue
        views = (
            ("as sent", [_as_bytes(v) for _, v in parts]),
            ("hex decoded", [_unhex(v) for _, v in parts]),
        )
        for how, pieces in views:
            bounds = []
            pos = 0
            for p in pieces:
                pos += len(p)
                bounds.append(pos)
            joined = b"".join(pieces)
            for m in outermost(raw.scanner.scan(joined)):
                first = bisect.bisect_right(bounds, m.start)
                last = bisect.bisect_left(bounds, m.end)
                if first == last:
                    continue  # inside one record: the plain byte scan reports it
                path = f"records {parts[first][0]}..{parts[last][0]} / label {label!r} (joined)"
                enc = f"{m.encoding}, split over records ({how})"
                out.append(StructMatch(path, joined[m.start : m.end], m.canary, enc, "equals"))
    return out


def _as_bytes(v: str | bytes) -> bytes:
    return v.encode() if isinstance(v, str) else v


def _unhex(v: str | bytes) -> bytes:
    if isinstance(v, str):
        h = v.strip().translate(_HEX_SEPARATORS)
        if _HEX.fullmatch(h):
            return bytes.fromhex(h)
        return v.encode()
    return v
