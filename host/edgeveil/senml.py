"""Decode the SenML packs edgeveil devices send (RFC 8428, CBOR representation).

    pack = decode_pack(plaintext)
    pack.base_name, pack.base_time, [(r.name, r.value) for r in pack.records]

Strict: the whole input must be one CBOR array of maps, each label must be a SenML label
edgeveil uses or one of its extension labels (docs/wire-format.md), values must be
integers (`type(v) is int`: a boolean is not a value), and no map may repeat a label.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import cbor2

from .errors import DecodeError

BN, BT, N, U, V, T = -2, -3, 0, 1, 2, 6
EXT = ("k", "eps", "w")  # k applied, milli-epsilon spent, window length in seconds
_KNOWN = {BN, BT, N, U, V, T, *EXT}


@dataclass(frozen=True)
class Record:
    name: str
    value: int
    k: int
    eps: int
    time: int


@dataclass(frozen=True)
class Pack:
    base_name: str
    base_time: int
    window: int
    records: list[Record] = field(default_factory=list)


def loads_strict(data: bytes) -> object:
    """cbor2 decode that rejects trailing bytes (cbor2.loads ignores them)."""
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        raise DecodeError(f"not CBOR: {exc}") from exc
    if fp.tell() != len(data):
        raise DecodeError(f"{len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj


def _int(rec: dict, label: object, i: int) -> int:
    v = rec.get(label)
    if type(v) is not int:
        raise DecodeError(f"record {i}: label {label!r} must be an integer, got {v!r}")
    return v


def decode_pack(plaintext: bytes) -> Pack:
    """Decode and check one SenML pack.

    Raises:
        DecodeError: naming the record and label that is wrong.
    """
    obj = loads_strict(plaintext)
    # cbor2 keeps the last value of a repeated label silently; the device writes each
    # label once in preferred encoding, so the bytes must be exactly what cbor2 re-makes.
    if cbor2.dumps(obj) != plaintext:
        raise DecodeError("SenML pack repeats a label or is not in preferred encoding")
    if not isinstance(obj, list) or not obj:
        raise DecodeError("SenML pack must be a non-empty array")
    first = obj[0]
    if not isinstance(first, dict) or BN not in first or BT not in first:
        raise DecodeError("record 0: base name (-2) and base time (-3) are required")
    bn, bt = first[BN], _int(first, BT, 0)
    if not isinstance(bn, str):
        raise DecodeError("record 0: base name must be text")
    window = _int(first, "w", 0)
    records = []
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise DecodeError(f"record {i}: must be a map")
        unknown = set(rec) - _KNOWN
        if unknown:
            raise DecodeError(f"record {i}: unknown labels {sorted(map(str, unknown))}")
        if i and (BN in rec or BT in rec):
            raise DecodeError(f"record {i}: base fields only in record 0")
        name = rec.get(N)
        if not isinstance(name, str):
            raise DecodeError(f"record {i}: name (0) must be text")
        records.append(
            Record(
                name=bn + name,
                value=_int(rec, V, i),
                k=_int(rec, "k", i),
                eps=_int(rec, "eps", i),
                time=bt + (_int(rec, T, i) if T in rec else 0),
            )
        )
    return Pack(bn, bt, window, records)
