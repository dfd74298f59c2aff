"""The leak scan's encodings, canaries and chance estimate, against independent spellings.

Every expected byte string here is computed with struct, base64, hashlib, cbor2 and string
formatting directly, never by calling edgeveil.verify.encodings: a wrong encoder cannot
agree with itself.
"""

from __future__ import annotations

import pytest
from edgeveil.replaygen import (
    CANARY_ADDR,
    CANARY_BPM,
    CANARY_COORD,
    CANARY_PPM,
    CANARY_TEMP,
    canary_events,
    demo_recording,
    footfall,
    heart,
    merge,
)
from edgeveil.verify.canaries import canaries_from_events
from edgeveil.verify.encodings import Canary, encode
from edgeveil.verify.leakscan import LeakScanner
from leak_spelling import (
    ADDR,
    expect_addr,
    expect_bytes,
    expect_coord,
    expect_decimal,
    expect_int,
    expect_part,
    expect_text,
)

CASES = [
    (Canary("addr", "ble", ADDR), expect_addr(ADDR)),
    (
        Canary("addr", "ble", bytes.fromhex("c47e11029a3b")),
        expect_addr(bytes.fromhex("c47e11029a3b")),
    ),
    (Canary("addr-part", "ble", ADDR[:3], part="OUI"), expect_part(ADDR[:3])),
    (Canary("int", "hr", 287), expect_int(287)),
    (Canary("int", "rssi", -71), expect_int(-71)),
    (Canary("int", "co2", 38917), expect_int(38917)),
    (Canary("int", "i2c.x", 123456789012), expect_int(123456789012)),
    (Canary("fixed", "temp", "21.37"), expect_decimal("21.37", [2])),
    (Canary("fixed", "temp", CANARY_TEMP), expect_decimal(CANARY_TEMP, [2, 10])),
    (Canary("fixed", "x", "-3.5"), expect_decimal("-3.5", [1])),
    (Canary("coord", "lat", CANARY_COORD[0]), expect_coord(CANARY_COORD[0], "lat")),
    (Canary("coord", "lon", CANARY_COORD[1]), expect_coord(CANARY_COORD[1], "lon")),
    (
        Canary("bytes", "adv", bytes.fromhex("02011a0bff4c00100506")),
        expect_bytes(bytes.fromhex("02011a0bff4c00100506")),
    ),
    (Canary("text", "uart", "$GPGGA,123519,4807.038,N"), expect_text("$GPGGA,123519,4807.038,N")),
]


@pytest.mark.parametrize("canary, expected", CASES, ids=[c.label for c, _ in CASES])
def test_every_encoding_agrees_with_an_independent_spelling(
    canary: Canary, expected: dict[str, bytes]
) -> None:
    got = {p.name: p.data for p in encode(canary)}
    wrong = {n: (d, expected.get(n)) for n, d in got.items() if expected.get(n) != d}
    assert not wrong, wrong
    # Every independently spelled form is produced (under its own name or, when two forms
    # are the same bytes, under the first name that made them).
    missing = {n for n, d in expected.items() if d and d not in got.values()}
    assert not missing


def test_chance_decides_what_is_byte_searched() -> None:
    scanner = LeakScanner([c for c, _ in CASES])
    searched = {(c.label, name) for _, c, name in scanner.searched}
    skipped = {(n.canary.label, n.encoding) for n in scanner.not_searched}

    def state(label: str, name: str) -> str:
        return (
            "searched"
            if (label, name) in searched
            else ("skipped" if (label, name) in skipped else "absent")
        )

    addr = "ble address 5e:ca:7a:11:d0:9b"
    # 48 bits: every form of a full address is searched, the hashes' 8-digit prefixes too.
    assert state(addr, "bytes") == state(addr, "text-cisco-le-upper") == "searched"
    assert state(addr, "sha256-HEX8:text-plain") == state(addr, "eui64-ul-iid") == "searched"
    # 24 bits: an OUI is left to the structure-aware scan in every form.
    assert (
        state("5e:ca:7a (OUI)", "text-colon") == state("5e:ca:7a (OUI)", "cbor-bytes") == "skipped"
    )
    # A heart rate: no byte form is long enough except its hashes.
    assert state("hr 287", "decimal") == state("hr 287", "uint32-le") == "skipped"
    assert state("hr 287", "float64-be") == state("hr 287", "cbor-float32") == "skipped"
    assert state("hr 287", "md5:decimal") == state("hr 287", "sha1-hex8:decimal") == "searched"
    # 12 significant digits of decimal text are searched; the 8 that %f keeps are not.
    temp = f"temp {CANARY_TEMP}"
    assert state(temp, "decimal") == state(temp, "float32-le") == "searched"
    assert state(temp, "printf-f") == state(temp, "decimal*1e2") == "skipped"
    # Zero and sign padding carry little: 123456789012 is 5 bytes of information.
    big = "i2c.x 123456789012"
    assert state(big, "uint40-le") == state(big, "uint64-be") == "searched"
    assert state("rssi -71", "int64-le") == "skipped"


def test_canaries_from_both_replay_formats() -> None:
    events = [
        {"t": 1, "kind": "ble", "addr": "5e:ca:7a:11:d0:9b", "rssi": -71},
        {
            "t": 2,
            "kind": "ble",
            "addr": "5E:CA:7A:11:D0:9B",
            "rssi": -71,
            "addr_type": 1,
            "adv_type": 3,
            "adv_data": "02011a",
        },
        {"t": 3, "kind": "hr", "bpm": 287},
        {"t": 4, "kind": "co2", "ppm": 812, "temp": "21.37"},
        {"t": 5, "kind": "i2c", "addr": 98, "reg": 60421, "regsize": 16, "data": "01f4a2"},
        {
            "t": 6,
            "kind": "uart",
            "uart": 1,
            "data": "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n",
        },
        {"t": 7, "kind": "uart", "uart": 2, "hex": "b562010700"},
        {"t": 8, "kind": "pin", "pin": 4, "value": 1},
        {"t": 9, "kind": "gnss", "lat": "48.1172936518", "lon": "-11.5", "id": "wearer-7"},
    ]
    got = {
        (c.kind, c.channel, c.value if not isinstance(c.value, bytes) else c.value.hex()): c.times
        for c in canaries_from_events(events)
    }
    assert got[("addr", "ble", "5eca7a11d09b")] == (1.0, 2.0)  # one canary, both sightings
    assert got[("addr-part", "ble", "5eca7a")] == got[("addr-part", "ble", "11d09b")] == (1.0, 2.0)
    assert got[("int", "rssi", -71)] == (1.0, 2.0)
    assert got[("bytes", "adv", "02011a")] == (2.0,)
    assert got[("int", "hr", 287)] == (3.0,)
    assert got[("int", "co2", 812)] == (4.0,) and got[("fixed", "temp", "21.37")] == (4.0,)
    assert got[("bytes", "i2c", "01f4a2")] == (5.0,)
    assert got[("int", "i2c", 0x01F4)] == (5.0,)  # the SCD4x CO2 word: 500 ppm
    assert (
        "text",
        "uart",
        "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
    ) in got
    assert got[("coord", "lat", "48.1173")] == (6.0,)  # 48 deg 07.038 min
    assert got[("coord", "lon", "11.5166667")] == (6.0,)
    assert got[("fixed", "nmea.lat", "4807.038")] == (6.0,)
    assert got[("bytes", "uart", "b562010700")] == (7.0,)
    assert got[("coord", "lat", "48.1172936518")] == got[("coord", "lon", "-11.5")] == (9.0,)
    assert got[("text", "gnss.id", "wearer-7")] == (9.0,)
    # What describes an event rather than a person is no canary.
    values = {v for _, _, v in got}
    assert 60421 not in values and 98 not in values and 4 not in values


def test_replaygen_plants_canaries_and_leaves_the_default_recording_alone() -> None:
    plain = demo_recording(seed=3, start=1_700_000_100, minutes=30)
    assert plain == merge(footfall(3, 1_700_000_100, 30), heart(4, 1_700_000_100, 30))
    planted = canary_events(1_700_000_100, 30, seed=3, bpm_run=3, gnss=True)
    with_canaries = demo_recording(seed=3, start=1_700_000_100, minutes=30, plant=True)
    assert sorted(map(str, with_canaries)) == sorted(
        map(str, plain + canary_events(1_700_000_100, 30, seed=3))
    )
    hr = [e for e in planted if e["kind"] == "hr"]
    assert [e["bpm"] for e in hr] == [CANARY_BPM] * 3
    assert all(e["t"] % 2 == 1 for e in hr)  # between the wearer's own even-second samples
    assert {e["addr"] for e in planted if e["kind"] == "ble"} == {CANARY_ADDR}
    assert [(e["ppm"], e["temp"]) for e in planted if e["kind"] == "co2"] == [
        (CANARY_PPM, CANARY_TEMP)
    ]
    assert [(e["lat"], e["lon"]) for e in planted if e["kind"] == "gnss"] == [CANARY_COORD]
    assert [e["t"] for e in planted] == sorted(e["t"] for e in planted)
    # None of the planted values is in the recording it is planted into.
    assert CANARY_ADDR not in {e.get("addr") for e in plain}
    assert CANARY_BPM not in {e.get("bpm") for e in plain}
