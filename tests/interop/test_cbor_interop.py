"""veil.cbor (in the MicroPython VM) against the real cbor2, on values hypothesis draws.

Each hypothesis example is a batch of values handled by one VM run. Per value the VM
gets two lines on stdin:

- ``D <hex>``: cbor2's encoding; the device decodes it (`loads`) and re-encodes the
  result (`dumps`);
- ``E <source>``: the value as a MicroPython expression (maps as OrderedDict in the
  value's own order, floats from their IEEE 754 bits); the device encodes it (`dumps`).

It answers one line each, ``OK <hex>`` or ``ERR <exception class>``. CPython then
checks that cbor2 decodes every device encoding to the original value (types and float
bits included), that the direct encoding equals cbor2's byte for byte, and that the
re-encoding does too where a decoded map cannot have lost its order (no map with more
than one key; MicroPython dicts are unordered) — and then it also equals cbor2's
canonical form when no float is present (the device always writes float64).
"""

from __future__ import annotations

import io
import math
import struct
from typing import Any

import cbor2
from edgeveil.vm import run_code
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HEAP = 102400

_VM_CODE = """\
import struct, sys
from binascii import hexlify, unhexlify
from collections import OrderedDict as OD
from veil import cbor

def F(x):
    return struct.unpack('>d', unhexlify(x))[0]

while True:
    line = sys.stdin.readline()
    if not line:
        break
    op, arg = line.rstrip('\\n').split(' ', 1)
    try:
        if op == 'D':
            out = cbor.dumps(cbor.loads(unhexlify(arg)))
        elif op == 'P':
            v, pos = cbor.loads_prefix(unhexlify(arg))
            out = cbor.dumps([v, pos])
        elif op == 'F':
            out = struct.pack('>d', cbor.loads(unhexlify(arg)))
        else:
            out = cbor.dumps(eval(arg))
        print('OK', hexlify(out).decode())
    except Exception as e:
        print('ERR', type(e).__name__)
"""

U64 = 2**64
ints = st.integers(min_value=-U64, max_value=U64 - 1)
leaves = st.one_of(
    ints,
    st.binary(max_size=40),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
keys = st.one_of(ints, st.text(max_size=8))


def nested(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return leaves
    inner = nested(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    )


values = nested(4)


def run_device(lines: list[str]) -> list[str]:
    """Feed `lines` to the device program; return its answers, one per line."""
    stdin = "".join(line + "\n" for line in lines).encode()
    result = run_code(_VM_CODE, HEAP, stdin=stdin)
    assert result.ok, result.stdout + result.stderr
    answers = result.stdout.decode().splitlines()
    assert len(answers) == len(lines), answers
    return answers


def ok_bytes(answer: str) -> bytes:
    assert answer.startswith("OK "), answer
    return bytes.fromhex(answer[3:])


def mpy_source(v: Any) -> str:
    """`v` as a MicroPython expression that rebuilds it exactly."""
    if isinstance(v, float):
        return "F('%s')" % struct.pack(">d", v).hex()
    if isinstance(v, list):
        return "[%s]" % ", ".join(mpy_source(x) for x in v)
    if isinstance(v, dict):
        pairs = ", ".join("(%s, %s)" % (mpy_source(k), mpy_source(x)) for k, x in v.items())
        return "OD([%s])" % pairs
    if v is None or isinstance(v, (bool, int, bytes, str)):
        return ascii(v)  # \x, \u, \U escapes: one line of ASCII, valid MicroPython
    raise TypeError(type(v))


def same(a: Any, b: Any) -> bool:
    """Equality that also demands equal types and equal float bits."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def walk(v: Any) -> list[Any]:
    out = [v]
    if isinstance(v, list):
        for x in v:
            out += walk(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            out += walk(k) + walk(x)
    return out


def order_safe(v: Any) -> bool:
    return all(not (isinstance(x, dict) and len(x) > 1) for x in walk(v))


def has_float(v: Any) -> bool:
    return any(isinstance(x, float) for x in walk(v))


def strict_cbor2_loads(data: bytes) -> Any:
    """cbor2 decode that also insists on consuming every byte (cbor2.loads does not)."""
    fp = io.BytesIO(data)
    value = cbor2.CBORDecoder(fp).decode()
    assert fp.tell() == len(data), "trailing bytes after the device's item"
    return value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values, min_size=1, max_size=30))
def test_device_and_cbor2_agree(batch: list[Any]) -> None:
    lines = []
    for v in batch:
        lines.append("D " + cbor2.dumps(v).hex())
        lines.append("E " + mpy_source(v))
    answers = run_device(lines)
    for i, v in enumerate(batch):
        reencoded = ok_bytes(answers[2 * i])
        direct = ok_bytes(answers[2 * i + 1])
        assert same(strict_cbor2_loads(reencoded), v), (v, reencoded.hex())
        assert same(strict_cbor2_loads(direct), v), (v, direct.hex())
        # Insertion order kept (OrderedDict), f64 floats, shortest ints: cbor2's default.
        assert direct == cbor2.dumps(v), (v, direct.hex())
        if order_safe(v):
            assert reencoded == cbor2.dumps(v), (v, reencoded.hex())
            if not has_float(v):
                assert reencoded == cbor2.dumps(v, canonical=True), (v, reencoded.hex())


narrow_floats = st.one_of(
    st.floats(width=16, allow_nan=False),
    st.floats(width=32, allow_nan=False),
)


@settings(max_examples=10, deadline=None)
@given(st.lists(narrow_floats, min_size=1, max_size=50))
def test_device_decodes_cbor2_half_and_single_floats(batch: list[float]) -> None:
    encodings = [cbor2.dumps(x, canonical=True) for x in batch]
    # canonical=True makes cbor2 write the shortest float that keeps the value.
    assert all(e[0] in (0xF9, 0xFA) for e in encodings), [e.hex() for e in encodings]
    answers = run_device(["F " + e.hex() for e in encodings])
    for x, enc, answer in zip(batch, encodings, answers, strict=True):
        got = struct.unpack(">d", ok_bytes(answer))[0]
        assert struct.pack(">d", got) == struct.pack(">d", x), (enc.hex(), got, x)


def test_device_decodes_half_float_specials() -> None:
    # IEEE 754 binary16 corner cases; the expected values are cbor2's, not the device's.
    encodings = [
        "f90000",
        "f98000",
        "f90001",
        "f983ff",
        "f903ff",
        "f90400",
        "f97bff",
        "f97c00",
        "f9fc00",
        "f97e00",
        "f9fe01",
        "fa7fc00000",
        "fa00000001",
    ]
    answers = run_device(["F " + e for e in encodings])
    for enc, answer in zip(encodings, answers, strict=True):
        got = struct.unpack(">d", ok_bytes(answer))[0]
        want = cbor2.loads(bytes.fromhex(enc))
        if math.isnan(want):
            assert math.isnan(got), enc
        else:
            assert struct.pack(">d", got) == struct.pack(">d", want), (enc, got, want)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(values, st.binary(min_size=1, max_size=8)), min_size=1, max_size=20))
def test_device_rejects_trailing_bytes_cbor2_accepts(batch: list[tuple[Any, bytes]]) -> None:
    lines = []
    for v, garbage in batch:
        enc = cbor2.dumps(v)
        # The pitfall this guards against: cbor2.loads silently ignores the garbage.
        assert same(cbor2.loads(enc + garbage), v)
        lines.append("D " + (enc + garbage).hex())
        lines.append("P " + (enc + garbage).hex())
    answers = run_device(lines)
    for i, (v, garbage) in enumerate(batch):
        enc = cbor2.dumps(v)
        assert answers[2 * i] == "ERR CBORError", (v, garbage, answers[2 * i])
        # loads_prefix stops right after the item, where the garbage starts.
        got, pos = cbor2.loads(ok_bytes(answers[2 * i + 1]))
        assert same(got, v) and pos == len(enc), (v, got, pos)
