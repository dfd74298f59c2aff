"""CBOR (RFC 8949) encoder and decoder: the subset edgeveil's wire format needs.

    from veil import cbor
    data = cbor.dumps([1, b"\\x01", "a", {1: -2}, cbor.Tag(16, [])])
    cbor.loads(data)                     # -> [1, b'\\x01', 'a', {1: -2}, Tag(16, [])]
    end = cbor.dump_into(buf, pos, 42)   # encode into a caller's bytearray
    obj, pos = cbor.loads_prefix(stream, pos)   # one item, then where the next starts

Names follow cbor2 (`dumps`, `loads`) so host tests decode the device's bytes with the
real cbor2. Encoding:

- int (-2**64 .. 2**64-1), bytes/bytearray/memoryview (of byte items), str, list/tuple,
  dict, True, False, None, Tag, float (always float64, major 7 additional info 27);
- integers and lengths always in preferred (shortest) form (RFC 8949 §4.2.1);
- maps in the dict's iteration order: the caller decides the order. A plain MicroPython
  dict does NOT iterate in insertion order; pass a `collections.OrderedDict` (a dict
  subclass) where the order on the wire matters;
- anything else raises CBORError, as does nesting deeper than 16 (a cycle included).

Decoding accepts exactly the items above and raises CBORError on anything malformed or
outside the subset: truncated input, trailing bytes (`loads`), reserved additional info,
indefinite lengths, invalid UTF-8, duplicate map keys, unassigned simple values,
undefined, nesting deeper than 16, lengths larger than the remaining input.
Floats of every width decode to float; on a board with single-precision floats (ESP32) a
float64 is rounded to the nearest float32 on decode and widened exactly on encode.

Allocation: `dump_into` allocates nothing for ints in -2**30 .. 2**30-1 (small ints on
every port), None/True/False, and bytes/bytearray/memoryview of byte items; it allocates
for str (the UTF-8 copy), for ints beyond 2**30 (long ints on the ESP32) and in `raise`.
`dumps`, `loads` and `loads_prefix` allocate their results.
"""

import struct

from micropython import const

from . import VeilError

# RFC 8949 §3.1 major types.
_UINT = const(0)
_NINT = const(1)
_BYTES = const(2)
_TEXT = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)

# RFC 8949 §3.3 simple values and float widths (additional information of major 7).
_FALSE = const(20)
_TRUE = const(21)
_NULL = const(22)
_F16 = const(25)
_F32 = const(26)
_F64 = const(27)

# Containers (arrays, maps, tags) nested deeper than this are refused both ways.
MAX_DEPTH = const(16)

# Largest small int on a 31-bit port (ESP32): values up to here never allocate.
_SMALL_MAX = const(0x3FFFFFFF)
# Not const(): larger than a small int on the ESP32.
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF


class CBORError(VeilError):
    """Unsupported value on encode, or malformed / unsupported input on decode."""


class Tag:
    """A tagged data item (RFC 8949 §3.4): `Tag(16, [...])` is a COSE_Encrypt0."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


# ---------------------------------------------------------------------------- encoding


def _head(buf, pos, major, n):
    # RFC 8949 §3 initial byte + argument, preferred (shortest) form (§4.2.1).
    # `buf is None` only counts. n >= 0; n <= _SMALL_MAX takes small-int paths only.
    if n < 24:
        size = 1
    elif n < 0x100:
        size = 2
    elif n < 0x10000:
        size = 3
    elif n <= _SMALL_MAX or n <= _U32_MAX:
        size = 5
    else:
        size = 9
    end = pos + size
    if buf is None:
        return end
    if end > len(buf):
        raise CBORError("buffer full")
    mt = major << 5
    if size == 1:
        buf[pos] = mt | n
        return end
    buf[pos] = mt | (22 + size if size < 5 else (26 if size == 5 else 27))
    i = end - 1
    while i > pos:
        buf[i] = n & 0xFF
        n >>= 8
        i -= 1
    return end


def _copy(buf, pos, data, n):
    # Byte/text string payload (RFC 8949 §3.1, major 2 and 3).
    end = pos + n
    if buf is not None:
        if end > len(buf):
            raise CBORError("buffer full")
        try:
            buf[pos:end] = data
        except ValueError:  # a memoryview whose items are wider than a byte
            raise CBORError("memoryview items must be bytes")
    return end


def _enc(buf, pos, obj, depth):
    # One data item at pos; returns the end. buf None: compute the size only.
    if obj is None:
        return _head(buf, pos, _SIMPLE, _NULL)
    if obj is True:
        return _head(buf, pos, _SIMPLE, _TRUE)
    if obj is False:
        return _head(buf, pos, _SIMPLE, _FALSE)
    t = type(obj)
    if t is int:
        major = _UINT
        if obj < 0:
            # RFC 8949 §3.1 major 1: the argument is -1 - n.
            major = _NINT
            obj = -1 - obj
        # The first test keeps small ints off the long-int comparison.
        if obj > _SMALL_MAX and obj > _U64_MAX:
            raise CBORError("int out of range")
        return _head(buf, pos, major, obj)
    if t is bytes or t is bytearray or t is memoryview:
        n = len(obj)
        return _copy(buf, _head(buf, pos, _BYTES, n), obj, n)
    if t is str:
        data = obj.encode("utf-8")
        n = len(data)
        return _copy(buf, _head(buf, pos, _TEXT, n), data, n)
    if t is float:
        # RFC 8949 §3.3: float64 is major 7, additional information 27.
        end = pos + 9
        if buf is not None:
            if end > len(buf):
                raise CBORError("buffer full")
            buf[pos] = 0xFB
            struct.pack_into(">d", buf, pos + 1, obj)
        return end
    depth += 1
    if depth > MAX_DEPTH:
        raise CBORError("nesting too deep")
    if t is list or t is tuple:
        pos = _head(buf, pos, _ARRAY, len(obj))
        for item in obj:
            pos = _enc(buf, pos, item, depth)
        return pos
    if isinstance(obj, dict):
        pos = _head(buf, pos, _MAP, len(obj))
        for key in obj:
            pos = _enc(buf, pos, key, depth)
            pos = _enc(buf, pos, obj[key], depth)
        return pos
    if t is Tag:
        tag = obj.tag
        if type(tag) is not int or tag < 0 or tag > _U64_MAX:
            raise CBORError("bad tag number")
        return _enc(buf, _head(buf, pos, _TAG, tag), obj.value, depth)
    raise CBORError("cannot encode %s" % t.__name__)


def dump_into(buf, pos, obj):
    """Encode `obj` into bytearray `buf` at `pos`; return the position after it.

    Raises CBORError if `obj` is not encodable or does not fit (the bytes of `buf`
    from `pos` on are then undefined), or if `buf`/`pos` are not a bytearray (or a
    memoryview of one) and a position inside it. Allocation: see the module docstring.
    """
    t = type(buf)
    if t is not bytearray and t is not memoryview:
        raise CBORError("buf must be a bytearray")
    if type(pos) is not int or pos < 0 or pos > len(buf):
        raise CBORError("bad position")
    return _enc(buf, pos, obj, 0)


def dumps(obj):
    """Encode `obj` as one CBOR data item; return bytes. Raises CBORError."""
    buf = bytearray(_enc(None, 0, obj, 0))
    _enc(buf, 0, obj, 0)
    return bytes(buf)


# ---------------------------------------------------------------------------- decoding


def _utf8_ok(data, i, end):
    # RFC 3629 §4: well-formed UTF-8 only (no overlongs, surrogates, or > U+10FFFF).
    # MicroPython's own str() check lets those through, so it is done here.
    while i < end:
        c = data[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            n = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            n = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + n >= end:
            return False
        c = data[i + 1]
        if c < lo or c > hi:
            return False
        for j in range(i + 2, i + n + 1):
            if data[j] & 0xC0 != 0x80:
                return False
        i += n + 1
    return True


def _half(h):
    # RFC 8949 Appendix D: decode an IEEE 754 binary16 value.
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant * 2.0**-24
    elif exp != 31:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    elif mant == 0:
        val = float("inf")
    else:
        val = float("nan")
    return -val if h & 0x8000 else val


def _arg(data, pos, end, ai):
    # RFC 8949 §3: the argument after the initial byte; returns (value, new pos).
    if ai < 24:
        return ai, pos
    if ai > 27:
        # 28..30 reserved (§3); 31 indefinite length / break, outside this subset.
        raise CBORError("unsupported additional info %d" % ai)
    size = 1 << (ai - 24)
    if pos + size > end:
        raise CBORError("truncated")
    n = 0
    for i in range(pos, pos + size):
        n = (n << 8) | data[i]
    return n, pos + size


def _dec(data, pos, end, depth):
    # One data item at pos; returns (value, new pos).
    if pos >= end:
        raise CBORError("truncated")
    ib = data[pos]
    major = ib >> 5
    ai = ib & 0x1F
    pos += 1
    if major == _SIMPLE:
        return _simple(data, pos, end, ai)
    n, pos = _arg(data, pos, end, ai)
    if major == _UINT:
        return n, pos
    if major == _NINT:
        return -1 - n, pos
    if major == _BYTES or major == _TEXT:
        if n > end - pos:
            raise CBORError("truncated string")
        stop = pos + n
        if major == _BYTES:
            return bytes(data[pos:stop]), stop
        if not _utf8_ok(data, pos, stop):
            raise CBORError("invalid UTF-8")
        return str(bytes(data[pos:stop]), "utf-8"), stop
    depth += 1
    if depth > MAX_DEPTH:
        raise CBORError("nesting too deep")
    if major == _ARRAY:
        if n > end - pos:  # every item takes at least one byte
            raise CBORError("array longer than input")
        out = []
        for _ in range(n):
            item, pos = _dec(data, pos, end, depth)
            out.append(item)
        return out, pos
    if major == _MAP:
        if n > (end - pos) >> 1:
            raise CBORError("map longer than input")
        out = {}
        for _ in range(n):
            key, pos = _dec(data, pos, end, depth)
            try:
                hash(key)  # an empty dict's `in` would not look
            except TypeError:
                raise CBORError("unhashable map key")
            if key in out:
                raise CBORError("duplicate map key")
            out[key], pos = _dec(data, pos, end, depth)
        return out, pos
    # major == _TAG
    value, pos = _dec(data, pos, end, depth)
    return Tag(n, value), pos


def _simple(data, pos, end, ai):
    # RFC 8949 §3.3: major 7.
    if ai == _FALSE:
        return False, pos
    if ai == _TRUE:
        return True, pos
    if ai == _NULL:
        return None, pos
    if ai == _F16:
        if pos + 2 > end:
            raise CBORError("truncated")
        return _half((data[pos] << 8) | data[pos + 1]), pos + 2
    if ai == _F32:
        if pos + 4 > end:
            raise CBORError("truncated")
        return struct.unpack_from(">f", data, pos)[0], pos + 4
    if ai == _F64:
        if pos + 8 > end:
            raise CBORError("truncated")
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    # 0..19 and 24 unassigned/unsupported simple values, 23 undefined, 28..30
    # reserved, 31 break without an indefinite-length item.
    raise CBORError("unsupported simple value %d" % ai)


def _check(data):
    t = type(data)
    if not (t is bytes or t is bytearray or t is memoryview):
        raise CBORError("expected bytes, not %s" % t.__name__)


def loads_prefix(data, pos=0):
    """Decode the one data item that starts at `data[pos]`; return (value, next pos).

    Bytes after the item are left alone (a stream of items). Raises CBORError.
    """
    _check(data)
    end = len(data)
    if type(pos) is not int or pos < 0 or pos > end:
        raise CBORError("bad position")
    return _dec(data, pos, end, 0)


def loads(data):
    """Decode `data`, which must hold exactly one data item. Raises CBORError.

    Unlike cbor2.loads, trailing bytes after the item are an error.
    """
    value, pos = loads_prefix(data)
    if pos != len(data):
        raise CBORError("trailing bytes")
    return value
