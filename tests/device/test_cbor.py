# veil.cbor in MicroPython: RFC 8949 Appendix A vectors, every error path, no allocation.
import math
from array import array
from binascii import hexlify, unhexlify
from collections import OrderedDict

import micropython
from veil import VeilError
from veil.cbor import CBORError, Tag, dump_into, dumps, loads, loads_prefix


def h(s):
    return unhexlify(s.replace(" ", ""))


def hexof(b):
    return hexlify(b).decode()


# RFC 8949 Appendix A, Table 6: (value, encoding) pairs that round-trip both ways.
# Hex typed in from the RFC; values that need a big int are built from arithmetic.
_APPENDIX_A = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (2**64 - 1, "1bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (-(2**64), "3bffffffffffffffff"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (
        list(range(1, 26)),
        "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
    ),
    ({}, "a0"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (1.1, "fb3ff199999999999a"),
    (1.0e300, "fb7e37e43c8800759c"),
    (-4.1, "fbc010666666666666"),
    (Tag(1, 1363896240), "c11a514b67b0"),
    (Tag(23, b"\x01\x02\x03\x04"), "d74401020304"),
    (Tag(24, b"\x64\x49\x45\x54\x46"), "d818456449455446"),
    (Tag(32, "http://www.example.com"), "d82076687474703a2f2f7777772e6578616d706c652e636f6d"),
]


def test_appendix_a_encode():
    for value, enc in _APPENDIX_A:
        got = hexof(dumps(value))
        assert got == enc, (value, got, enc)


def test_appendix_a_decode():
    for value, enc in _APPENDIX_A:
        got = loads(h(enc))
        assert got == value, (enc, got, value)
        assert type(got) is type(value), (enc, type(got))


def test_appendix_a_maps():
    # Map order on the wire is the caller's: an OrderedDict pins it (a plain MicroPython
    # dict does not iterate in insertion order).
    m = OrderedDict()
    m[1] = 2
    m[3] = 4
    assert hexof(dumps(m)) == "a201020304"
    assert loads(h("a201020304")) == {1: 2, 3: 4}
    m = OrderedDict()
    m["a"] = 1
    m["b"] = [2, 3]
    assert hexof(dumps(m)) == "a26161016162820203"
    assert loads(h("a26161016162820203")) == {"a": 1, "b": [2, 3]}
    assert loads(h("826161a161626163")) == ["a", {"b": "c"}]
    assert hexof(dumps(["a", {"b": "c"}])) == "826161a161626163"
    m = OrderedDict()
    for k in "abcde":
        m[k] = k.upper()
    enc = "a56161614161626142616361436164614461656145"
    assert hexof(dumps(m)) == enc
    assert loads(h(enc)) == {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}


def test_appendix_a_floats_decode():
    # Floats of all three widths from Appendix A decode to the same value.
    vectors = [
        ("f90000", 0.0),
        ("f93c00", 1.0),
        ("f93e00", 1.5),
        ("f97bff", 65504.0),
        ("fa47c35000", 100000.0),
        ("fa7f7fffff", 3.4028234663852886e38),
        ("f90001", 5.960464477539063e-08),
        ("f90400", 6.103515625e-05),
        ("f9c400", -4.0),
        ("fb3ff199999999999a", 1.1),
        ("fbc010666666666666", -4.1),
        ("f97c00", float("inf")),
        ("f9fc00", float("-inf")),
        ("fa7f800000", float("inf")),
        ("fbfff0000000000000", float("-inf")),
    ]
    for enc, value in vectors:
        got = loads(h(enc))
        assert type(got) is float, enc
        assert got == value, (enc, got, value)
    negzero = loads(h("f98000"))
    assert negzero == 0.0 and math.copysign(1.0, negzero) == -1.0
    for enc in ("f97e00", "fa7fc00000", "fb7ff8000000000000"):
        assert math.isnan(loads(h(enc))), enc


def test_float_encode_is_float64():
    # RFC 8949 §3.3: 0.0 as float64 is fb 0000000000000000; 1.5 as fb 3ff8000000000000.
    assert hexof(dumps(0.0)) == "fb0000000000000000"
    assert hexof(dumps(1.5)) == "fb3ff8000000000000"
    assert hexof(dumps(-0.0)) == "fb8000000000000000"


def test_preferred_lengths():
    # RFC 8949 §4.2.1: shortest argument at every boundary, for ints and lengths.
    cases = [
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (-24, "37"),
        (-25, "3818"),
        (-256, "38ff"),
        (-257, "390100"),
        (-(2**32), "3affffffff"),
        (-(2**32) - 1, "3b0000000100000000"),
    ]
    for value, enc in cases:
        assert hexof(dumps(value)) == enc, value
        assert loads(h(enc)) == value, enc
    assert dumps(b"x" * 23)[:1] == b"\x57"
    assert dumps(b"x" * 24)[:2] == b"\x58\x18"
    assert dumps("y" * 256)[:3] == b"\x79\x01\x00"
    assert dumps([0] * 24)[:2] == b"\x98\x18"
    assert dumps(tuple([0] * 3)) == b"\x83\x00\x00\x00"


def test_non_preferred_input_decodes():
    # A decoder accepts longer-than-needed arguments (RFC 8949 §4.2 is for encoders).
    assert loads(h("1b0000000000000001")) == 1
    assert loads(h("5900020102")) == b"\x01\x02"


def test_bytes_like_inputs_and_outputs():
    assert dumps(bytearray(b"\x01\x02")) == b"\x42\x01\x02"
    assert dumps(memoryview(b"\x00\x01\x02\x03")[1:3]) == b"\x42\x01\x02"
    assert loads(bytearray(h("4401020304"))) == b"\x01\x02\x03\x04"
    assert loads(memoryview(h("824101f6"))) == [b"\x01", None]
    assert type(loads(h("4101"))) is bytes


def test_loads_prefix_stream():
    data = h("01 8102 6161 ff")
    v, pos = loads_prefix(data)
    assert (v, pos) == (1, 1)
    v, pos = loads_prefix(data, pos)
    assert (v, pos) == ([2], 3)
    v, pos = loads_prefix(data, pos)
    assert (v, pos) == ("a", 5)
    _raises(loads_prefix, data, pos)  # 0xff: break outside an indefinite item
    _raises(loads_prefix, data, len(data))  # nothing left
    _raises(loads_prefix, data, len(data) + 1)
    _raises(loads_prefix, data, -1)
    _raises(loads_prefix, data, "0")


def test_tag():
    assert Tag(16, [1]) == Tag(16, [1])
    assert Tag(16, [1]) != Tag(16, [2])
    assert Tag(16, [1]) != Tag(17, [1])
    assert not (Tag(16, 1) == 1)
    t = loads(h("d0 83 43a1010a a1 0442 6b69 40"))
    assert isinstance(t, Tag) and t.tag == 16
    assert t.value == [b"\xa1\x01\x0a", {4: b"ki"}, b""]
    assert hash(Tag(1, 2)) == hash(Tag(1, 2))
    assert hexof(dumps(Tag(2**64 - 1, 0))) == "dbffffffffffffffff00"
    # A tag as a map key (hashable) and tagged tags.
    assert loads(h("a1c10102")) == {Tag(1, 1): 2}
    assert loads(h("c1c201")) == Tag(1, Tag(2, 1))


def _raises(fn, *args):
    try:
        fn(*args)
    except CBORError as e:
        assert isinstance(e, VeilError)
        return e
    except Exception as e:  # noqa: BLE001 - anything but CBORError fails the test
        raise AssertionError("%r raised %r, not CBORError" % (args, e))
    raise AssertionError("%r did not raise" % (args,))


class _Thing:
    pass


def test_encode_unsupported_types():
    for bad in ({1, 2}, frozenset(), _Thing(), object(), _Thing, len, range(3), 1j, Ellipsis):
        _raises(dumps, bad)
        _raises(dump_into, bytearray(64), 0, bad)
    # Unsupported values nested inside containers, and as map keys.
    _raises(dumps, [1, [2, {3}]])
    _raises(dumps, {1: object()})
    _raises(dumps, {(): 1, _Thing(): 2})
    _raises(dumps, Tag(1, {2}))
    _raises(dumps, Tag(-1, 0))
    _raises(dumps, Tag(2**64, 0))
    _raises(dumps, Tag("1", 0))


def test_encode_int_range():
    assert dumps(2**64 - 1) == h("1bffffffffffffffff")
    assert dumps(-(2**64)) == h("3bffffffffffffffff")
    _raises(dumps, 2**64)
    _raises(dumps, -(2**64) - 1)
    _raises(dumps, 2**100)
    _raises(dumps, -(2**100))


def test_dump_into_positions_and_overflow():
    buf = bytearray(16)
    end = dump_into(buf, 3, 1000)
    assert end == 6 and buf[3:6] == h("1903e8")
    end = dump_into(buf, end, b"\xaa\xbb")
    assert end == 9 and buf[6:9] == h("42aabb")
    end = dump_into(buf, end, [True, None])
    assert end == 12 and buf[9:12] == h("82f5f6")
    assert buf[:3] == bytearray(3)
    # Exactly fitting works; one byte short raises, for every kind of item.
    assert dump_into(bytearray(9), 0, 1.5) == 9
    cases = [
        (1000, 3),
        (2**40, 9),
        (b"abc", 4),
        ("abc", 4),
        ([1, 2], 3),
        (1.5, 9),
        (None, 1),
        (Tag(24, 0), 3),
    ]
    for value, size in cases:
        assert dump_into(bytearray(size), 0, value) == size, value
        _raises(dump_into, bytearray(size - 1), 0, value)
        _raises(dump_into, bytearray(size + 2), 3, value)
    _raises(dump_into, bytearray(0), 0, 0)
    # A buffer that cannot be written, or a position outside it, is the caller's error.
    _raises(dump_into, bytes(8), 0, 0)
    _raises(dump_into, None, 0, 0)
    _raises(dump_into, bytearray(8), -1, 0)
    _raises(dump_into, bytearray(8), 9, 0)
    _raises(dump_into, bytearray(8), "0", 0)
    # A writable memoryview works as the buffer; one of wider items cannot be encoded.
    view = memoryview(bytearray(4))
    assert dump_into(view, 1, 1000) == 4 and bytes(view) == h("001903e8")
    _raises(dumps, memoryview(array("h", [1, 2])))


def test_dump_into_allocates_nothing():
    # Ints below 2**30 (small ints on the ESP32 too), simple values and short byte
    # strings encode into a caller's buffer without touching the heap.
    buf = bytearray(64)
    payload = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    mutable = bytearray(b"\xff" * 20)
    view = memoryview(mutable)[2:10]
    values = (0, 23, 24, 255, 256, 65535, 65536, 2**30 - 1, -1, -(2**30), None, True)
    dump_into(buf, 0, payload)  # warm up anything lazily created
    micropython.heap_lock()
    try:
        pos = 0
        for v in values:
            pos = dump_into(buf, pos, v)
        pos = dump_into(buf, pos, payload)
        pos = dump_into(buf, pos, mutable)
        pos = dump_into(buf, 0, view)
    finally:
        micropython.heap_unlock()
    assert pos == 9
    # Compare afterwards with the encodings of the RFC 8949 §3.1 rules.
    out = bytearray(64)
    pos = 0
    for v in values:
        pos = dump_into(out, pos, v)
    assert out[:pos] == h(
        "00 17 1818 18ff 190100 19ffff 1a00010000 1a3fffffff 20 3a3fffffff f6 f5"
    )
    assert buf[:9] == h("48ffffffffffffffff")


def test_decode_truncated():
    for enc in (
        "",
        "18",
        "19 01",
        "1a 0000 00",
        "1b 00000000 000000",
        "38",
        "42 01",
        "62 61",
        "5a 0000",
        "82 01",
        "a1 01",
        "a2 0102 03",
        "c1",
        "d8",
        "f9 00",
        "fa 0000 00",
        "fb 0000 0000 0000 00",
        "9a",
        "81 81",
    ):
        _raises(loads, h(enc))


def test_decode_trailing_bytes():
    for enc in ("0100", "f6f6", "8001", "a0a0", "4101ff", "00 00"):
        _raises(loads, h(enc))


def test_decode_reserved_and_indefinite():
    for major in range(8):
        for ai in (28, 29, 30):
            _raises(loads, bytes([(major << 5) | ai]) + b"\x00" * 9)
    # Indefinite lengths (ai 31) are outside the subset; for 0, 1, 6 they are malformed.
    for enc in ("5f 41 01 ff", "7f 61 61 ff", "9f ff", "bf ff", "1f", "3f", "df 00", "ff"):
        _raises(loads, h(enc))


def test_decode_simple_values():
    # Only false/true/null are supported; undefined (23) and others are refused.
    for enc in ("e0", "f0", "f3", "f7", "f8 20", "f8 ff", "f8 14"):
        _raises(loads, h(enc))


def test_decode_invalid_utf8():
    # RFC 3629 §4: overlongs, surrogates, > U+10FFFF, stray/missing continuation bytes.
    for payload in (
        "c0 80",
        "c1 bf",
        "e0 80 80",
        "e0 9f bf",
        "ed a0 80",
        "ed bf bf",
        "f0 80 80 80",
        "f0 8f bf bf",
        "f4 90 80 80",
        "f5 80 80 80",
        "ff",
        "80",
        "bf",
        "c3",
        "e6 b0",
        "f0 9f 98",
        "c3 28",
        "e6 28 b4",
        "f0 9f 28 80",
        "61 80",
    ):
        data = h(payload)
        _raises(loads, bytes([0x60 | len(data)]) + data)
    # Boundary code points that are valid.
    for payload, text in (
        ("7f", "\x7f"),
        ("c2 80", "\x80"),
        ("df bf", "\u07ff"),
        ("e0 a0 80", "\u0800"),
        ("ed 9f bf", "\ud7ff"),
        ("ee 80 80", "\ue000"),
        ("ef bf bf", "\uffff"),
        ("f0 90 80 80", "\U00010000"),
        ("f4 8f bf bf", "\U0010ffff"),
    ):
        data = h(payload)
        assert loads(bytes([0x60 | len(data)]) + data) == text, payload


def test_decode_duplicate_and_bad_keys():
    _raises(loads, h("a2 01 01 01 02"))
    _raises(loads, h("a2 6161 01 6161 02"))
    _raises(loads, h("a1 80 01"))  # array key: not hashable
    _raises(loads, h("a1 a0 01"))  # map key
    _raises(loads, h("a1 c1 80 01"))  # tag of an array: not hashable


def test_decode_lengths_beyond_input():
    # Lengths far larger than the input fail fast, before any allocation.
    for enc in (
        "5b ffffffffffffffff",
        "7b ffffffffffffffff",
        "9b ffffffffffffffff",
        "bb ffffffffffffffff",
        "5a ffffffff 00",
        "9a 00010000 00",
        "a2 01 02 03",
        "83 01 02",
    ):
        _raises(loads, h(enc))


def test_decode_rejects_non_bytes():
    for bad in ("a0", None, 1, [0]):
        _raises(loads, bad)
        _raises(loads_prefix, bad)


def test_depth_limit():
    # 16 nested containers are fine, 17 are not, both ways; tags count as nesting.
    ok = 0
    for _ in range(16):
        ok = [ok]
    assert loads(dumps(ok)) == ok
    _raises(dumps, [ok])
    assert loads(b"\x81" * 16 + b"\x00") == ok
    _raises(loads, b"\x81" * 17 + b"\x00")
    _raises(loads, b"\xa1\x00" * 17 + b"\x00")
    _raises(loads, b"\xc1" * 17 + b"\x00")
    assert loads(b"\xc1" * 16 + b"\x00").tag == 1
    _raises(loads, b"\x81" * 1000 + b"\x00")
    # A cycle is caught by the same limit, not by a RecursionError.
    cyc = []
    cyc.append(cyc)
    _raises(dumps, cyc)


def test_roundtrip_mixed():
    value = [
        0,
        -1,
        2**63,
        -(2**63),
        b"\x00" * 300,
        "h\u00e9llo \u6c34",
        [],
        [[[]]],
        {"k": {1: [True, False, None]}},
        Tag(16, [b"", {}, b"ct"]),
        0.25,
        -1e-300,
    ]
    assert loads(dumps(value)) == value
