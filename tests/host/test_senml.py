"""Strict SenML pack decoding (docs/wire-format.md)."""

from __future__ import annotations

import cbor2
import pytest
from edgeveil.errors import DecodeError
from edgeveil.senml import decode_pack

GOOD = [{-2: "ab:s:", -3: 1700000100, "w": 300, 0: "n", 2: 7, "k": 5, "eps": 500}]


def test_good_pack_resolves_names_and_times() -> None:
    pack = decode_pack(cbor2.dumps(GOOD + [{0: "m", 2: -3, "k": 5, "eps": 500, 6: 10}]))
    assert pack.base_name == "ab:s:" and pack.window == 300
    assert [(r.name, r.value, r.time) for r in pack.records] == [
        ("ab:s:n", 7, 1700000100),
        ("ab:s:m", -3, 1700000110),
    ]


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps(GOOD) + b"\x00",  # trailing byte
        cbor2.dumps([{**GOOD[0], 2: True}]),  # a boolean is not a value
        cbor2.dumps([{**GOOD[0], "raw": 1}]),  # unknown label
        cbor2.dumps([{k: v for k, v in GOOD[0].items() if k != -3}]),  # no base time
        cbor2.dumps(GOOD + [{-2: "x", 0: "n", 2: 1, "k": 5, "eps": 1}]),  # base in record 1
        # Label 2 twice (cbor2 would keep the second value silently).
        bytes([0x81, 0xA8]) + cbor2.dumps(GOOD[0])[1:] + b"\x02\x18\x63",
        # The value 7 in a longer head than needed (0x18 0x07 instead of 0x07).
        cbor2.dumps(GOOD).replace(b"\x02\x07", b"\x02\x18\x07"),
    ],
)
def test_bad_packs_are_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_pack(data)
