"""From a capture to authenticated messages: frames, keys, decryption, counters.

    keyring = Keyring.from_registry(registry)          # or Keyring.from_cose_keys(path)
    traffic = extract(capture, report)                 # frames and clear wire bytes
    authenticate(traffic.messages, keyring, report)    # decrypts; findings for the rest

Serial records of one source are joined back into the byte stream the board sent and
split into COBS frames and console text (edgeveil.frames); an MQTT record is one message.
Whatever cannot be read (a torn capture line, an undecodable frame, CBOR that is not a
COSE_Encrypt0) is an "input" finding with its offset; it never stops the run.

Authenticity findings: a key id no key is known for, a device that is revoked or was never
confirmed, a tag that does not verify, a counter seen before (replay) or lower than one
already seen from the same device (out of order), an MQTT topic naming another device.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from ..capture import Capture
from ..cose import decrypt0, parse_encrypt0
from ..errors import CryptoError, DecodeError, EdgeveilError
from ..frames import split_stream
from ..registry import Registry
from ..senml import Pack
from .report import Finding, VerifyReport

_STREAM_CHANNELS = ("serial", "file")


@dataclass(frozen=True)
class DeviceKeys:
    """What the verifier knows of one device: its COSE key, and more from a registry."""

    dev_id: bytes
    cose_key: bytes = field(repr=False)
    base_iv: bytes = field(repr=False)
    pseudo_key: bytes | None = field(default=None, repr=False)  # registry only
    policy_key: bytes | None = field(default=None, repr=False)  # registry only
    status: str = "active"
    policy_hash: str | None = None

    @classmethod
    def from_secrets(cls, secrets: Any, policy: dict[str, Any] | None = None) -> DeviceKeys:
        """An active device with these secrets (edgeveil.demo.DeviceSecrets), provisioned
        with `policy` (its hash is what a registry would record), or with no policy known."""
        from ..policy import compile_policy

        digest = None
        if policy is not None:
            blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
            digest = hashlib.sha256(blob).hexdigest()
        return cls(
            secrets.dev_id,
            secrets.cose_key,
            secrets.base_iv,
            secrets.pseudo_key,
            secrets.policy_key,
            "active",
            digest,
        )


class Keyring:
    """Device keys by key id (the device id)."""

    def __init__(self, devices: Iterable[DeviceKeys] = ()) -> None:
        self.devices = {d.dev_id: d for d in devices}

    def get(self, kid: bytes) -> DeviceKeys | None:
        return self.devices.get(kid)

    def __len__(self) -> int:
        return len(self.devices)

    @classmethod
    def from_registry(cls, registry: Registry) -> Keyring:
        """Every device in the registry, whatever its status (a revoked one is a finding)."""
        out = []
        for rec in registry.list():
            s = registry.secrets(rec.dev_id)
            out.append(
                DeviceKeys(
                    rec.dev_id,
                    s.cose_key,
                    s.base_iv,
                    s.pseudo_key,
                    s.policy_key,
                    rec.status,
                    rec.policy_hash,
                )
            )
        return cls(out)

    @classmethod
    def from_cose_keys(cls, path: str | Path) -> Keyring:
        """A CBOR array of COSE_Key maps, as `edgeveil registry export --format cose-key`.

        Raises:
            DecodeError: the file is not such an array (names the entry that is wrong).
        """
        try:
            items = cbor2.loads(Path(path).read_bytes())
        except (OSError, cbor2.CBORDecodeError, ValueError) as exc:
            raise DecodeError(f"{path}: not a CBOR array of COSE_Key maps: {exc}") from exc
        if not isinstance(items, list):
            raise DecodeError(f"{path}: not a CBOR array of COSE_Key maps")
        out = []
        for i, k in enumerate(items):
            kid, key, iv = (k.get(label) if isinstance(k, dict) else None for label in (2, -1, 5))
            if not (type(kid) is bytes and type(key) is bytes and type(iv) is bytes):
                raise DecodeError(f"{path}: COSE_Key {i} lacks kid (2), k (-1) or Base IV (5)")
            if len(key) != 16 or len(iv) != 13:
                raise DecodeError(f"{path}: COSE_Key {i}: k must be 16 bytes, Base IV 13")
            out.append(DeviceKeys(kid, key, iv))
        return cls(out)


@dataclass
class Message:
    """One COSE message as it left the board, and what the verifier learned of it."""

    index: int
    channel: str  # "serial", "file" or "mqtt"
    source: str  # port, broker or file it was captured from
    offset: int  # byte offset in its serial stream, or of its line in the capture file
    t: float  # arrival time (host clock)
    cose: bytes  # the COSE_Encrypt0 bytes (a decoded frame, or an MQTT payload)
    topic: str | None = None
    kid: bytes | None = None
    counter: int | None = None
    device: DeviceKeys | None = None
    plaintext: bytes | None = None  # set once it authenticated
    pack: Pack | None = None  # set once the plaintext decoded as a SenML pack
    decoded: Any = None  # the plaintext as generic CBOR, for the structure-aware scan


@dataclass
class WireBytes:
    """Bytes that crossed the wire in clear, to be scanned for leaks as they are."""

    source: str
    offset: int
    data: bytes
    what: str  # "serial stream", "console text" (a part of one), "MQTT payload", "MQTT topic"


@dataclass
class Traffic:
    messages: list[Message] = field(default_factory=list)
    wire: list[WireBytes] = field(default_factory=list)


def extract(capture: Capture, report: VerifyReport) -> Traffic:
    """Frames and clear bytes of a capture; input findings for what cannot be read."""
    out = Traffic()
    report.cover("input", len(capture.records))
    for line, offset, what in capture.problems:
        report.add(Finding("input", f"capture line {line}: {what}", offset=offset))
    streams: dict[str, tuple[bytearray, list[int], list[float]]] = {}
    for rec in capture.records:
        if rec.channel in _STREAM_CHANNELS:
            buf, starts, times = streams.setdefault(rec.source, (bytearray(), [], []))
            starts.append(len(buf))
            times.append(rec.t)
            buf += rec.data
        elif rec.channel == "mqtt":
            out.wire.append(WireBytes(rec.source, rec.offset, rec.data, "MQTT payload"))
            if rec.topic:
                topic = rec.topic.encode()
                out.wire.append(WireBytes(rec.source, rec.offset, topic, "MQTT topic"))
            _add(out, report, "mqtt", rec.source, rec.offset, rec.t, rec.data, rec.topic)
        else:
            report.add(Finding("input", f"unknown channel {rec.channel!r}", offset=rec.offset))
    for source, (buf, starts, times) in streams.items():
        data = bytes(buf)
        out.wire.append(WireBytes(source, 0, data, "serial stream"))
        for item in split_stream(data):
            if item.kind == "frame":
                # Arrival time: that of the chunk holding the frame's last byte.
                end = item.offset + len(item.data)
                t = times[max(0, bisect.bisect_right(starts, end) - 1)]
                _add(out, report, "serial", source, item.offset, t, item.data, None)
            elif item.kind == "text":
                out.wire.append(WireBytes(source, item.offset, item.data, "console text"))
            elif item.kind == "bad":
                report.add(
                    Finding(
                        "input",
                        f"undecodable frame from {source}: {item.error}",
                        offset=item.offset,
                        detail={"source": source, "length": len(item.data)},
                    )
                )
    report.facts["messages"] = len(out.messages)
    return out


def _add(
    out: Traffic,
    report: VerifyReport,
    channel: str,
    source: str,
    offset: int,
    t: float,
    data: bytes,
    topic: str | None,
) -> None:
    index = len(out.messages)
    msg = Message(index, channel, source, offset, t, data, topic)
    out.messages.append(msg)
    try:
        parts = parse_encrypt0(data)
    except DecodeError as exc:
        msg.cose = b""
        report.add(
            Finding("input", f"not a COSE_Encrypt0 message: {exc}", message=index, offset=offset)
        )
        return
    msg.kid, msg.counter = parts.kid, parts.counter


def authenticate(messages: list[Message], keyring: Keyring, report: VerifyReport) -> None:
    """Decrypt every message under its device's key; findings for what does not hold."""
    seen: dict[bytes, dict[int, Message]] = {}
    highest: dict[bytes, int] = {}
    for msg in messages:
        if msg.kid is None or msg.counter is None:
            continue  # already an input finding
        report.cover("authenticity")
        kid, ctr = msg.kid, msg.counter

        def finding(what: str, m: Message = msg, **detail: Any) -> None:
            report.add(
                Finding(
                    "authenticity",
                    what,
                    m.index,
                    m.offset,
                    {"kid": (m.kid or b"").hex(), **detail},
                )
            )

        dev = keyring.get(kid)
        if dev is None:
            finding(f"unknown key id {kid.hex()}: no key for this device")
            continue
        try:
            out = decrypt0(dev.cose_key, dev.base_iv, parse_encrypt0(msg.cose), kid=kid)
        except (CryptoError, DecodeError) as exc:
            finding(f"device {kid.hex()} counter {ctr}: {exc} (bad tag or wrong key)")
            continue
        msg.device, msg.plaintext = dev, out.plaintext
        if dev.status != "active":
            finding(f"device {kid.hex()} is {dev.status} in the registry but sent a report")
        if msg.topic is not None and msg.topic != f"edgeveil/{kid.hex()}/up":
            finding(f"MQTT topic {msg.topic!r} is not device {kid.hex()}'s", topic=msg.topic)
        dev_seen = seen.setdefault(kid, {})
        if ctr in dev_seen:
            first = dev_seen[ctr]
            how = "an identical copy" if first.cose == msg.cose else "different bytes"
            finding(
                f"device {kid.hex()} counter {ctr} seen before in message {first.index} "
                f"({how}): a replayed message (or an MQTT QoS 1 redelivery)",
                first=first.index,
            )
        elif ctr < highest.get(kid, -1):
            finding(
                f"device {kid.hex()} counter {ctr} after {highest[kid]}: out of order",
                previous=highest[kid],
            )
        dev_seen.setdefault(ctr, msg)
        highest[kid] = max(ctr, highest.get(kid, -1))
    report.facts["devices"] = len(seen)


def decode_plaintexts(messages: list[Message], report: VerifyReport) -> None:
    """Decode each authenticated plaintext as generic CBOR and as a SenML pack."""
    from ..senml import decode_pack, loads_strict

    for msg in messages:
        if msg.plaintext is None:
            continue
        try:
            msg.decoded = loads_strict(msg.plaintext)
            msg.pack = decode_pack(msg.plaintext)
        except (DecodeError, EdgeveilError) as exc:
            report.add(
                Finding(
                    "conformance",
                    f"plaintext is not a SenML pack edgeveil sends: {exc}",
                    msg.index,
                    msg.offset,
                )
            )
