"""The leak scan over a whole capture: every canary, every encoding, every byte that left.

    scan_capture(traffic, "crowd.jsonl", policy, report)

What is scanned, and how (docs/leakscan.md has the encodings and the chance rule):
- bytes, with one multi-pattern matcher (leakscan.LeakScanner): each serial stream as it
  came off the wire (frames and console text together), each MQTT payload and topic, each
  COSE message of a serial frame (COBS-decoded: COBS rewrites zero bytes), and each
  decrypted plaintext;
- structure (structscan): each decoded plaintext, item by item, against the raw values of
  its report's window, and the words of the console text against the raw identifiers.
Each match is a "leak" finding naming the value, the encoding, the message and the offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DecodeError
from .leakscan import (
    LeakScanner,
    RawIndex,
    outermost,
    policy_channels,
    read_canaries,
    structure_scan,
    text_scan,
    to_finding,
)
from .messages import Traffic
from .report import VerifyReport

_NO_POLICY_K = 2  # without a policy, a value backed by a single raw sample is still flagged


def scan_capture(
    traffic: Traffic, canaries: str | Path, policy: dict[str, Any] | None, report: VerifyReport
) -> None:
    """Add a "leak" finding for every raw value of `canaries` found in `traffic`."""
    try:
        values = read_canaries(canaries)
    except DecodeError as exc:
        report.errors.append(f"canaries unreadable: {exc}")
        return
    scanner = LeakScanner(values)
    raw = RawIndex(values, scanner)
    report.facts["canaries"] = len(values)
    report.facts["patterns"] = len(scanner.searched)
    found: dict[str, list[tuple[int, str]]] = {}  # source -> (offset, canary) byte matches
    for w in traffic.wire:
        where = f"the {w.what} from {w.source}"
        if w.what == "console text":  # a part of a stream already byte-scanned
            for m in text_scan(w.data, raw):
                at = w.offset + int(m.path.rpartition(" ")[2])  # "word at byte N"
                if not any(o == at and c == m.canary.label for o, c in found.get(w.source, [])):
                    report.add(to_finding(m, where, offset=at))
            continue
        for lm in outermost(scanner.scan(w.data)):
            report.add(to_finding(lm, where, offset=w.offset))
            found.setdefault(w.source, []).append((w.offset + lm.start, lm.canary.label))
        report.cover("leak")
    streams = (policy or {}).get("streams", {})
    channels = policy_channels(policy) if policy else None
    for msg in traffic.messages:
        if msg.channel != "mqtt" and msg.cose:  # an MQTT payload was scanned as wire bytes
            where = f"the COSE message {msg.index}"
            for lm in outermost(scanner.scan(msg.cose)):
                report.add(to_finding(lm, where, message=msg.index, offset=msg.offset))
        if msg.plaintext is None:
            continue
        report.cover("leak")
        where = f"the plaintext of message {msg.index}"
        for lm in outermost(scanner.scan(msg.plaintext)):
            report.add(to_finding(lm, where, message=msg.index))
        if msg.decoded is None:
            continue
        start = length = None
        k = min((s["k"] for s in streams.values()), default=_NO_POLICY_K)
        if msg.pack is not None:
            start, length = msg.pack.base_time, msg.pack.window
            stream = msg.pack.base_name.rstrip(":").rpartition(":")[2]
            k = streams.get(stream, {}).get("k", k)
        for sm in structure_scan(msg.decoded, start, length, raw, k, channels=channels):
            report.add(to_finding(sm, where, message=msg.index))
