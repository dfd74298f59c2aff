"""The leak corpus (issue 5 item 3): a leak planted in every encoding must be found, in the
plaintext and in clear on the wire, whole and split across two records; captures of the
real device pipeline fed the same canaries must give no finding at all.

Messages are made as the device makes them: a SenML pack (CBOR) sealed with
edgeveil.cose.encrypt0 and framed with COBS between 0x00 bytes. The planted bytes are
spelled independently of the code under test (tests/host/leak_spelling.py).
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from edgeveil.boards import load_board
from edgeveil.cose import decrypt0, encrypt0
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.frames import cobs_encode, split_stream
from edgeveil.policy import compile_policy, default_policy
from edgeveil.replaygen import (
    CANARY_ADDR,
    CANARY_BPM,
    CANARY_COORD,
    CANARY_TEMP,
    canary_events,
    footfall,
    heart,
    merge,
)
from edgeveil.verify.encodings import Canary, encode
from edgeveil.verify.leakscan import (
    LeakMatch,
    LeakScanner,
    RawIndex,
    StructMatch,
    canaries_from_events,
    outermost,
    structure_scan,
    text_scan,
    to_finding,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leak_spelling import (
    expect_addr,
    expect_bytes,
    expect_coord,
    expect_decimal,
    expect_int,
    expect_part,
    expect_text,
)

START = 1_700_000_100
MINUTES = 20
WINDOW = 300
KEY, IV, KID = bytes(range(16)), bytes(range(1, 14)), b"\x11" * 8
ADV = "02011a0bff4c0010075f1d9c3e6a8b20"
NMEA = "$GPRMC,081836,A,3751.6512,S,14507.3650,E,000.0,360.0,130998,011.3,E*62"
# Raw values only this test plants: a one-byte heart rate and a negative RSSI no phone of
# the crowd has, so that every integer width has a distinctive value to carry.
EXTRA = [
    {"t": START + 601, "kind": "hr", "bpm": 251},
    {"t": START + 603, "kind": "ble", "addr": "6a:01:02:03:04:05", "rssi": -119, "adv_data": ADV},
    {"t": START + 605, "kind": "uart", "uart": 1, "data": NMEA + "\r\n"},
]


@dataclass
class World:
    events: list[dict[str, Any]]
    canaries: list[Canary]
    scanner: LeakScanner
    index: RawIndex

    def canary(self, kind: str, channel: str, value: Any) -> Canary:
        (c,) = [c for c in self.canaries if (c.kind, c.channel, c.value) == (kind, channel, value)]
        return c


@pytest.fixture(scope="module")
def world() -> World:
    events = merge(
        footfall(5, START, MINUTES),
        heart(6, START, MINUTES),
        canary_events(START, MINUTES, seed=5, gnss=True),
        EXTRA,
    )
    canaries = canaries_from_events(events)
    scanner = LeakScanner(canaries)
    return World(events, canaries, scanner, RawIndex(canaries, scanner))


# -- messages as the device makes them, and every scan over them --------------------------


def record0(window_start: int, k: int = 10) -> dict[Any, Any]:
    return {
        -2: "0011223344556677:heart:",
        -3: window_start,
        0: "hr",
        2: 75,
        "k": k,
        "eps": 2000,
        "w": WINDOW,
    }


def plaintext(window_start: int, items: list[bytes]) -> bytes:
    """A SenML pack whose records after the first carry `items`: raw CBOR items, spliced in
    as they are so that a non-preferred encoding (a float32, a decimal fraction) stays."""
    out = bytes([0x80 + 1 + len(items)]) + cbor2.dumps(record0(window_start))
    for i, item in enumerate(items):
        out += b"\xa4" + cbor2.dumps(0) + cbor2.dumps(f"x/{i}") + cbor2.dumps(2) + item
        out += cbor2.dumps("k") + cbor2.dumps(10) + cbor2.dumps("eps") + cbor2.dumps(2000)
    return out


def frame(pt: bytes, counter: int = 1) -> bytes:
    return b"\x00" + cobs_encode(encrypt0(KEY, IV, KID, counter, pt)) + b"\x00"


def clean_frame(window_start: int = START) -> bytes:
    return frame(plaintext(window_start, [cbor2.dumps(3)]), counter=0)


def as_item(name: str, data: bytes) -> bytes:
    """The CBOR item a leaky device would put the bytes in: itself for a CBOR encoding, a
    text string for text, else a byte string."""
    if name.startswith("cbor-"):
        return data
    if all(32 <= b < 127 for b in data):
        return cbor2.dumps(data.decode())
    return cbor2.dumps(data)


def window_of(t: float) -> int:
    return int(t) - (int(t) - START) % WINDOW


Found = list[tuple[str, LeakMatch | StructMatch]]


def split_frames(stream: bytes) -> list[bytes]:
    return [i.data for i in split_stream(stream) if i.kind == "frame"]


def scan_all(stream: bytes, w: World) -> Found:
    """(where, match) for everything found in a serial stream, as the verifier scans it."""
    found: Found = [("wire", m) for m in outermost(w.scanner.scan(stream))]
    for item in split_stream(stream):
        if item.kind == "text":
            found += [("console", s) for s in text_scan(item.data, w.index)]
        if item.kind != "frame":
            continue  # clear bytes: the wire scan above covered them
        found += [("cose", m) for m in outermost(w.scanner.scan(item.data))]
        pt = decrypt0(KEY, IV, item.data, kid=KID).plaintext
        found += [("plaintext", m) for m in outermost(w.scanner.scan(pt))]
        obj = cbor2.loads(pt)
        r0 = obj[0]
        found += [("structure", s) for s in structure_scan(obj, r0[-3], r0["w"], w.index, r0["k"])]
    return found


def named(found: Found, where: str, canary: Canary) -> set[str]:
    return {m.encoding for wh, m in found if wh == where and m.canary is canary}


# -- the corpus ---------------------------------------------------------------------------


def corpus(w: World) -> list[tuple[Canary, dict[str, bytes]]]:
    addr = bytes.fromhex(CANARY_ADDR.replace(":", ""))
    return [
        (w.canary("addr", "ble", addr), expect_addr(addr)),
        (w.canary("addr-part", "ble", addr[:3]), expect_part(addr[:3])),
        (w.canary("addr-part", "ble", addr[3:]), expect_part(addr[3:])),
        (w.canary("int", "hr", CANARY_BPM), expect_int(CANARY_BPM)),
        (w.canary("int", "hr", 251), expect_int(251)),
        (w.canary("int", "rssi", -119), expect_int(-119)),
        (w.canary("fixed", "temp", CANARY_TEMP), expect_decimal(CANARY_TEMP, [2, 10])),
        (w.canary("coord", "lat", CANARY_COORD[0]), expect_coord(CANARY_COORD[0], "lat")),
        (w.canary("coord", "lon", CANARY_COORD[1]), expect_coord(CANARY_COORD[1], "lon")),
        (w.canary("bytes", "adv", bytes.fromhex(ADV)), expect_bytes(bytes.fromhex(ADV))),
        (w.canary("text", "uart", NMEA), expect_text(NMEA)),
    ]


def _undetectable_alone(name: str) -> bool:
    """A base64 fragment ("-at0/1/2": the characters of a value inside a longer base64
    text) that is too short to search decodes only with the bytes around it: planted on
    its own it is no leak of anything (docs/leakscan.md, "What it cannot find")."""
    return "-at" in name.split(":")[0]


def test_every_encoding_planted_in_the_plaintext_is_found(world: World) -> None:
    misses = []
    checked = 0
    for canary, spelled in corpus(world):
        searched = set(world.scanner.searchable(canary))
        for p in encode(canary):
            data = spelled[p.name]
            stream = clean_frame() + frame(
                plaintext(window_of(canary.times[0]), [as_item(p.name, data)])
            )
            found = scan_all(stream, world)
            if p.name in searched:
                # Found by name (under the widest encoding that holds it, if any: planted
                # bytes inside a CBOR byte string are the value's cbor-bytes form too).
                pt = decrypt0(KEY, IV, split_frames(stream)[1], kid=KID).plaintext
                ok = p.name in {m.encoding for m in world.scanner.scan(pt) if m.canary is canary}
                ok = ok and bool(named(found, "plaintext", canary))
            elif _undetectable_alone(p.name):
                continue
            else:
                ok = bool(named(found, "structure", canary))
            checked += 1
            if not ok:
                misses.append((canary.label, p.name, data))
            # Nothing but the planted canary is ever named, and never in clear on the wire.
            assert {m.canary for _, m in found} <= {canary, *_relatives(world, canary)}, found
            assert not [m for wh, m in found if wh in ("wire", "cose")]
    assert not misses, "\n".join(map(str, misses))
    assert checked > 850  # 885: every encoding of 11 canaries but the lone base64 fragments


def test_every_searchable_encoding_in_clear_on_the_wire_is_found(world: World) -> None:
    misses = []
    for canary, spelled in corpus(world):
        for name in world.scanner.searchable(canary):
            data = spelled[name]
            # Text goes out as a console line, binary right beside the frame.
            extra = b"veil: " + data + b"\n" if all(32 <= b < 127 for b in data) else data
            stream = clean_frame() + extra + clean_frame()
            hits = [m for m in world.scanner.scan(stream) if m.encoding == name]
            if not (hits and named(scan_all(stream, world), "wire", canary)):
                misses.append((canary.label, name))
                continue
            at = len(clean_frame()) + (len(b"veil: ") if extra != data else 0)
            assert [(m.start, m.end) for m in hits if m.canary is canary] == [(at, at + len(data))]
    assert not misses, misses


def test_an_address_oui_and_device_half_printed_apart_are_found(world: World) -> None:
    addr = bytes.fromhex(CANARY_ADDR.replace(":", ""))
    oui, half = (
        world.canary("addr-part", "ble", addr[:3]),
        world.canary("addr-part", "ble", addr[3:]),
    )
    for text in (b"oui 5e:ca:7a\ndev 11-d0-9b\n", b"vendor=5ECA7A id=9bd011\n"):
        found = scan_all(clean_frame() + text + clean_frame(), world)
        assert {m.canary for wh, m in found if wh == "console"} == {oui, half}, text


SPLITS = [
    # (what, the two records' values, the address's encoding the joined scan names)
    ("address as OUI and device half bytes", [b"\x5e\xca\x7a", b"\x11\xd0\x9b"], "bytes"),
    ("address as two hex halves", ["5eca7a", "11d09b"], "text-plain"),
    ("address as two colon-text halves", ["5e:ca:7a", "11:d0:9b"], "bytes"),
    ("address reversed, halves", [b"\x9b\xd0\x11", b"\x7a\xca\x5e"], "bytes-le"),
    ("address in base64, two groups", ["Xsp6", "EdCb"], "base64:bytes"),
]


@pytest.mark.parametrize("what, parts, encoding", SPLITS, ids=[s[0] for s in SPLITS])
def test_an_address_split_across_two_records_is_found(
    world: World, what: str, parts: list[Any], encoding: str
) -> None:
    addr = world.canary("addr", "ble", bytes.fromhex(CANARY_ADDR.replace(":", "")))
    pt = plaintext(window_of(addr.times[0]), [cbor2.dumps(p) for p in parts])
    found = scan_all(clean_frame() + frame(pt), world)
    joined = [m for wh, m in found if wh == "structure" and m.canary is addr]
    assert any(encoding in m.encoding and "split over records" in m.encoding for m in joined)
    assert any(m.path == "records 1..2 / label 2 (joined)" for m in joined)


def test_values_split_across_two_records_are_found(world: World) -> None:
    addr = bytes.fromhex(CANARY_ADDR.replace(":", ""))
    digest = hashlib.sha256(addr).hexdigest()
    temp = world.canary("fixed", "temp", CANARY_TEMP)
    f64 = struct.pack("<d", float(CANARY_TEMP))
    cases = [
        (world.canary("addr", "ble", addr), [digest[:32], digest[32:]], "sha256-hex:bytes"),
        (temp, [CANARY_TEMP[:8], CANARY_TEMP[8:]], "decimal"),
        (temp, [f64[:4], f64[4:]], "float64-le"),
    ]
    for canary, parts, encoding in cases:
        pt = plaintext(window_of(canary.times[0]), [cbor2.dumps(p) for p in parts])
        found = scan_all(clean_frame() + frame(pt), world)
        encs = {m.encoding for wh, m in found if wh == "structure" and m.canary is canary}
        assert f"{encoding}, split over records (as sent)" in encs, (encoding, encs)


def _relatives(w: World, c: Canary) -> set[Canary]:
    """Canaries one planted value may also be named as: an address's parts and the other
    way round, a fixed-point reading's other forms."""
    if c.kind not in ("addr", "addr-part"):
        return set()
    return {x for x in w.canaries if x.kind in ("addr", "addr-part") and x.channel == "ble"}


# -- structure-aware rules ----------------------------------------------------------------


def test_a_number_is_flagged_only_in_its_window_and_below_k(world: World) -> None:
    hr = world.canary("int", "hr", CANARY_BPM)
    ws = window_of(hr.times[0])

    def flagged(obj: Any, start: int | None, k: int = 10, **kw: Any) -> list[StructMatch]:
        return [
            s for s in structure_scan(obj, start, WINDOW, world.index, k, **kw) if s.canary is hr
        ]

    pack = [record0(ws), {0: "x", 2: CANARY_BPM}]
    (m,) = flagged(pack, ws)
    assert m.path == "record 1 / label 2" and m.encoding == "number"
    assert "1 of the window's" in m.why and "k=10" in m.why
    assert not flagged(pack, ws + WINDOW)  # the next window never saw 287
    assert flagged(pack, None)  # no window given: compared with every sample
    assert not flagged(pack, ws, k=1)  # one sample backs it: k=1 allows that
    assert not flagged([record0(ws), {0: "x", 2: CANARY_BPM + 1}], ws)  # exact by default
    assert flagged([record0(ws), {0: "x", 2: CANARY_BPM + 1}], ws, tolerance=1)
    assert flagged([record0(ws), {0: "x", 2: float(CANARY_BPM)}], ws)
    # Compared only with the field's own channel when the policy says which that is.
    assert flagged(pack, ws, channels={"x": "hr"})
    assert not flagged(pack, ws, channels={"x": "co2"})
    # The policy's own numbers (k, eps, w, bt) are never compared with raw values.
    assert not flagged([{**record0(ws), "k": CANARY_BPM, "eps": CANARY_BPM}], ws)


def test_a_common_reading_is_not_flagged_even_when_equal(world: World) -> None:
    """The wearer's own heart rate in a window where many samples are near it: what an
    honest mean can land on. Only a value few samples are near is a finding."""
    ws = START
    samples = [e["bpm"] for e in world.events if e["kind"] == "hr" and ws <= e["t"] < ws + WINDOW]
    common = max(set(samples), key=samples.count)
    found = structure_scan([record0(ws), {0: "hr", 2: common}], ws, WINDOW, world.index, 10)
    assert not found


def test_scanner_and_naive_scan_agree(world: World) -> None:
    rng = random.Random(1)
    entries = world.scanner.searched
    for _ in range(40):
        data = bytearray(os.urandom(rng.randint(100, 400)))
        for _ in range(rng.randint(0, 5)):
            pattern = entries[rng.randrange(len(entries))][0]
            at = rng.randrange(len(data) + 1)
            data[at:at] = pattern
        data = bytes(data)
        fast = world.scanner.scan(data)
        assert fast == world.scanner.naive_scan(data)
    assert fast  # the planted patterns were found


def test_outermost_keeps_the_widest_spans(world: World) -> None:
    digest = hashlib.md5(bytes.fromhex(CANARY_ADDR.replace(":", ""))).hexdigest()
    matches = world.scanner.scan(b"x" + digest.encode() + b"y")
    assert {m.encoding for m in matches} == {"md5-hex:bytes", "md5-hex16:bytes", "md5-hex8:bytes"}
    (m,) = outermost(matches)
    assert (m.encoding, m.start, m.end) == ("md5-hex:bytes", 1, 33)


def test_findings_name_value_encoding_and_place(world: World) -> None:
    addr = world.canary("addr", "ble", bytes.fromhex(CANARY_ADDR.replace(":", "")))
    (m,) = outermost(world.scanner.scan(b"id=5E-CA-7A-11-D0-9B"))
    f = to_finding(m, "the serial stream", offset=100)
    assert f.check == "leak" and f.offset == 103 and f.message is None
    assert (
        f.what
        == "ble address 5e:ca:7a:11:d0:9b as text-dash-upper at bytes 3..20 of the serial stream"
    )
    assert f.detail["encoding"] == "text-dash-upper" and f.detail["canary"] == addr.label
    s = structure_scan([record0(START), {0: "x", 2: CANARY_BPM}], None, None, world.index, 10)
    g = to_finding(s[0], "the plaintext of message 4", message=4)
    assert g.message == 4 and g.what.startswith(
        "the plaintext of message 4: record 1 / label 2: hr 287"
    )


# -- clean captures: the real device pipeline, fed every canary above ---------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_clean_device_captures_give_no_finding(world: World, seed: int) -> None:
    secrets = DeviceSecrets.generate()
    blob = compile_policy(default_policy(), secrets.dev_id, secrets.policy_key)
    events = merge(
        footfall(seed, START, 60),
        heart(seed + 1, START, 60),
        canary_events(START, 60, seed=seed, bpm_run=3),
    )
    heap = load_board("esp32-generic").vm_app_heap_bytes
    with tempfile.TemporaryDirectory() as tmp:
        console = run_device(secrets, blob, events, heap, Path(tmp))
    canaries = canaries_from_events(events)
    scanner = LeakScanner(canaries)
    index = RawIndex(canaries, scanner)
    found: list[str] = [m.describe("wire") for m in scanner.scan(console)]
    frames = 0
    for item in split_stream(console):
        if item.kind == "text":
            found += [s.describe() for s in text_scan(item.data, index)]
            continue
        assert item.kind == "frame"
        frames += 1
        pt = decrypt0(secrets.cose_key, secrets.base_iv, item.data, kid=secrets.dev_id).plaintext
        found += [m.describe("cose") for m in scanner.scan(item.data)]
        found += [m.describe("plaintext") for m in scanner.scan(pt)]
        obj = cbor2.loads(pt)
        found += [
            s.describe() for s in structure_scan(obj, obj[0][-3], obj[0]["w"], index, obj[0]["k"])
        ]
    assert frames >= 20  # 12 windows of two streams
    assert not found


# -- bad input never crashes the scans ----------------------------------------------------

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.integers(min_value=-(10**40), max_value=10**40),  # bignums (CBOR tags 2 and 3)
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from(["287", "5e:ca:7a", "Xsp6EdCb", "1e999", "-0", "AR8=", "+w", "011f"]),
)
_CBOR = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.one_of(st.integers(-3, 6), st.text(max_size=5)), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    obj=_CBOR,
    start=st.one_of(st.none(), st.integers(START - 600, START + 1800)),
    k=st.integers(0, 20),
)
def test_structure_scan_takes_any_cbor_item(
    world: World, obj: Any, start: int | None, k: int
) -> None:
    decoded = cbor2.loads(cbor2.dumps(obj))
    for s in structure_scan(decoded, start, WINDOW, world.index, k):
        assert s.describe() and s.canary in world.canaries
    assert isinstance(text_scan(cbor2.dumps(obj), world.index), list)


def test_structure_scan_takes_deep_and_odd_items(world: World) -> None:
    deep: Any = CANARY_BPM
    for _ in range(2000):  # deeper than Python's recursion limit
        deep = [deep]
    odd = [cbor2.CBORTag(4, [-2, 2137]), cbor2.CBORTag(99, {b"k": frozenset({1, 2})}), 10**400]
    for obj in (deep, odd, {"x": deep}, [], {}, [{}], [{0: 1}]):
        assert isinstance(structure_scan(obj, START, WINDOW, world.index, 10), list)
