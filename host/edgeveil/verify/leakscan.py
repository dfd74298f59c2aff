"""The leak scan: every raw value of the replay, in every encoding, in bytes that left.

    canaries = read_canaries("crowd.jsonl")
    scanner = LeakScanner(canaries)                 # one Aho-Corasick automaton, built once
    for m in outermost(scanner.scan(data)):         # one pass over the bytes
        m.canary.label, m.encoding, m.start, m.end
    index = RawIndex(canaries, scanner)
    for s in structure_scan(cbor2.loads(plaintext), bt, w, index, k):
        s.describe()                                # "record 1 / label 2: ..."

Byte search (`LeakScanner`) looks for the patterns of edgeveil.verify.encodings whose
chance of occurring in a random `message_len`-byte message is below `limit` (4 KiB and
1e-6 by default: about 32 bits of information); the others are listed in `not_searched`
and left to the structure-aware scan (edgeveil.verify.structscan), which decodes the
plaintext and compares what it finds with the raw values themselves. docs/leakscan.md
says exactly what is and is not searched.

pyahocorasick works on text: bytes are mapped one to one onto code points 0-255 (latin-1).
The automaton holds each pattern's first `KEY_LEN` bytes (building it over the full
patterns takes several times longer); a key hit is confirmed against the whole pattern.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import ahocorasick

from .canaries import canaries_from_events, read_canaries
from .encodings import Canary, encode

if TYPE_CHECKING:
    from .report import Finding

__all__ = [
    "Canary",
    "LeakMatch",
    "LeakScanner",
    "RawIndex",
    "StructMatch",
    "canaries_from_events",
    "outermost",
    "policy_channels",
    "read_canaries",
    "structure_scan",
    "text_scan",
    "to_finding",
]

MESSAGE_LEN = 4096  # the message size the chance estimate is made for
CHANCE_LIMIT = 1e-6  # a pattern more likely than this to occur by chance is not searched
KEY_LEN = 8

Entry = tuple[bytes, Canary, str]  # pattern bytes, canary, encoding name


@dataclass(frozen=True)
class LeakMatch:
    """One canary found as bytes: `data[start:end]` is the canary in `encoding`."""

    canary: Canary
    encoding: str
    start: int
    end: int

    def describe(self, where: str = "") -> str:
        """One line: value, encoding, place ("... at bytes 17..29 of the plaintext")."""
        place = f"bytes {self.start}..{self.end}"
        return f"{self.canary.label} as {self.encoding} at {place}" + (
            f" of {where}" if where else ""
        )

    def detail(self) -> dict[str, object]:
        """JSON-able facts for a report."""
        return {
            **self.canary.facts(),
            "encoding": self.encoding,
            "start": self.start,
            "end": self.end,
            "first_seen": self.canary.times[0] if self.canary.times else None,
        }


class NotSearched(NamedTuple):
    """A pattern too short or too plain to search as bytes, and its chance of occurring."""

    canary: Canary
    encoding: str
    chance: float


class LeakScanner:
    """All searchable patterns of `canaries` in one multi-pattern matcher.

    Args:
        canaries: the raw values to look for.
        message_len: message size the chance of a pattern is estimated for.
        limit: patterns with a larger chance of occurring at random are not searched.
    """

    def __init__(
        self,
        canaries: Iterable[Canary],
        *,
        message_len: int = MESSAGE_LEN,
        limit: float = CHANCE_LIMIT,
    ) -> None:
        self.canaries = list(canaries)
        self.message_len = message_len
        self.limit = limit
        self.searched: list[Entry] = []
        self.not_searched: list[NotSearched] = []
        for c in self.canaries:
            for p in encode(c):
                positions = message_len - len(p.data) + 1  # chance(p, message_len), inlined
                ch = (positions if positions > 1 else 1) * 2.0**-p.bits
                if ch < limit:
                    self.searched.append((p.data, c, p.name))
                else:
                    self.not_searched.append(NotSearched(c, p.name, ch))
        keys: dict[bytes, list[Entry]] = {}
        for e in self.searched:
            keys.setdefault(e[0][:KEY_LEN], []).append(e)
        self._automaton = ahocorasick.Automaton()
        for key, entries in keys.items():
            self._automaton.add_word(key.decode("latin-1"), (len(key), entries))
        if keys:
            self._automaton.make_automaton()

    def searchable(self, canary: Canary) -> list[str]:
        """The encodings of `canary` this scanner searches for."""
        return [name for _, c, name in self.searched if c is canary]

    def scan(self, data: bytes) -> list[LeakMatch]:
        """Every occurrence of every searched pattern in `data`, in one pass."""
        if not self.searched:
            return []
        data = bytes(data)
        out = []
        for end, (klen, entries) in self._automaton.iter(data.decode("latin-1")):
            start = end - klen + 1
            for pattern, canary, name in entries:
                if len(pattern) == klen or data.startswith(pattern, start):
                    out.append(LeakMatch(canary, name, start, start + len(pattern)))
        return _ordered(out)

    def naive_scan(self, data: bytes) -> list[LeakMatch]:
        """The same as `scan`, one `bytes.find` loop per pattern (benchmark and tests)."""
        data = bytes(data)
        out = []
        for pattern, canary, name in self.searched:
            i = data.find(pattern)
            while i >= 0:
                out.append(LeakMatch(canary, name, i, i + len(pattern)))
                i = data.find(pattern, i + 1)
        return _ordered(out)


def _ordered(matches: list[LeakMatch]) -> list[LeakMatch]:
    return sorted(matches, key=lambda m: (m.start, -m.end, m.encoding, m.canary.label))


def outermost(matches: Iterable[LeakMatch]) -> list[LeakMatch]:
    """Matches not strictly inside another match's span (a hash's 8-digit prefix inside the
    full hex digest, an OUI inside its address): what a report should name."""
    out: list[LeakMatch] = []
    reach = -1  # the furthest end among spans that start at or before the current one
    reach_span: tuple[int, int] | None = None
    for m in sorted(matches, key=lambda m: (m.start, -m.end)):
        span = (m.start, m.end)
        if reach >= m.end and reach_span != span:
            continue
        out.append(m)
        if m.end > reach:
            reach, reach_span = m.end, span
    return _ordered(out)


def to_finding(
    match: LeakMatch | StructMatch,
    where: str,
    *,
    message: int | None = None,
    offset: int | None = None,
) -> Finding:
    """A report finding for `match` found in `where` ("the plaintext of message 3").

    Args:
        match: a byte match (LeakMatch) or a structure match (StructMatch).
        where: what was scanned, as a person names it.
        message: index of the message in the capture, if any.
        offset: byte offset of what was scanned in the stream or capture; a byte match's
            own start is added to it.
    """
    from .report import Finding

    if isinstance(match, LeakMatch):
        what = match.describe(where)
        at = None if offset is None else offset + match.start
        return Finding("leak", what, message, at, {"where": where, **match.detail()})
    what = f"{where}: {match.describe()}"
    return Finding("leak", what, message, offset, {"where": where, **match.detail()})


# The structure-aware scan lives in its own module; it is part of this API.
from .structscan import (  # noqa: E402
    RawIndex,
    StructMatch,
    policy_channels,
    structure_scan,
    text_scan,
)
