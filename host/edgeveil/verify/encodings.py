"""Every form a leaked raw value could take on the wire, each named: the leak scan's patterns.

    canary = Canary("addr", "ble", bytes.fromhex("c47e11029a3b"))
    for p in encode(canary):
        p.data   # the bytes to look for
        p.name   # "uint64-le", "text-dash-le-upper", "sha256-hex8:text-colon"
        p.bits   # estimated information content; chance(p) = positions * 2**-bits

A `Canary` is one raw value the board saw (edgeveil.verify.canaries reads them from a
replay). A name is `<form>` for a direct encoding of the value and `<transform>:<form>` when
hex, base64 or a hash is applied to one of its forms; docs/leakscan.md lists them all.

The information estimate is what decides whether a pattern is searched for as bytes at all
(edgeveil.verify.leakscan): a random message holds a pattern of b bits at a given place with
probability 2**-b. Per symbol: 8 bits for a binary byte, but 1 bit for a byte of a leading
or trailing run of 0x00 or 0xff (zero or sign padding, common in any binary data), 2 bits for
a CBOR head byte, 4 per hex digit (0 for a separator), 6 per base64 character, log2(10) per
significant decimal digit (none for a sign, point, exponent or padding zero), 6.5 per
character of other text.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import NamedTuple

KINDS = ("addr", "addr-part", "int", "fixed", "coord", "bytes", "text")

# Fixed-point units of the device's channels (docs/replay.md): temp is centi-degrees.
CHANNEL_PLACES = {"temp": 2}
COORD_PLACES = (5, 6, 7)  # degrees scaled by 1e5, 1e6, 1e7: the usual fixed-point GNSS forms

_PAD_BITS = 1.0
_HEAD_BITS = 2.0
_DIGIT_BITS = math.log2(10)
_TEXT_BITS = 6.5
_SEPARATORS = {"colon": ":", "dash": "-", "plain": "", "dot": ".", "space": " "}


@dataclass(frozen=True, eq=False)
class Canary:
    """One raw value the board saw, with the event times it was seen at.

    kind: "addr" (6 bytes, display order), "addr-part" (3 bytes: an address's OUI or
    device half), "int", "fixed" (decimal text such as "21.37"), "coord" (decimal degrees
    as text), "bytes" or "text". channel: where it came from ("ble", "hr", "temp", "adv",
    "i2c", "uart", "lat", ...).
    """

    kind: str
    channel: str
    value: int | str | bytes
    times: tuple[float, ...] = ()
    part: str = ""  # addr-part: "OUI of <address>" or "device half of <address>"

    def facts(self) -> dict[str, object]:
        """What a report says of the canary: its label, kind and channel."""
        return {"canary": self.label, "kind": self.kind, "channel": self.channel}

    @property
    def label(self) -> str:
        """The canary as a person names it: "ble address c4:7e:11:02:9a:3b", "hr 287"."""
        v = self.value
        if isinstance(v, bytes):
            if self.kind == "addr":
                return f"{self.channel} address {_colon(v)}"
            if self.kind == "addr-part":
                return f"{_colon(v)} ({self.part})"
            shown = v.hex() if len(v) <= 24 else v[:24].hex() + "..."
            return f"{self.channel} bytes {shown}"
        if self.kind == "text":
            text = str(v)
            return f"{self.channel} text {text if len(text) <= 40 else text[:40] + '...'!r}"
        return f"{self.channel} {v}"


class Pattern(NamedTuple):
    data: bytes
    name: str
    bits: float


def chance(p: Pattern, message_len: int) -> float:
    """Probability that `p` occurs by chance somewhere in a random message of that length."""
    positions = max(1, message_len - len(p.data) + 1)
    return positions * 2.0**-p.bits


def encode(c: Canary) -> list[Pattern]:
    """Every encoding of `c`, first name kept where two encodings give the same bytes."""
    out: dict[bytes, Pattern] = {}
    for p in _ENCODERS[c.kind](c):
        if p.data and p.data not in out:
            out[p.data] = p
    return list(out.values())


# -- information estimates ---------------------------------------------------------------


def _runs(d: bytes, chars: tuple[bytes, ...]) -> int:
    """Length of the longest leading run plus the longest trailing run of one of `chars`."""
    n = len(d)
    lead = 0
    for c in chars:
        if d[:1] == c:
            lead = max(lead, n - len(d.lstrip(c)))
    if lead == n:
        return n
    trail = 0
    for c in chars:
        if d[-1:] == c:
            trail = max(trail, n - len(d.rstrip(c)))
    return lead + trail


_BIN_PAD = (b"\x00", b"\xff")
_HEX_PAD = (b"0", b"f", b"F")
_B64_PAD = (b"A",)


def bin_bits(d: bytes) -> float:
    pad = _runs(d, _BIN_PAD)
    return 8.0 * (len(d) - pad) + _PAD_BITS * pad


def hex_bits(s: bytes) -> float:
    core = s.translate(None, b":-. ")
    pad = _runs(core, _HEX_PAD)
    return 4.0 * (len(core) - pad) + 0.5 * pad


def b64_bits(s: bytes) -> float:
    core = s.rstrip(b"=")
    pad = _runs(core, _B64_PAD)
    return 6.0 * (len(core) - pad) + 0.75 * pad


def dec_bits(s: bytes) -> float:
    mant = s.lower().split(b"e")[0].lstrip(b"+-")
    whole, _, frac = mant.partition(b".")
    digits = (whole + frac).lstrip(b"0")
    if frac:
        digits = digits.rstrip(b"0")
    return _DIGIT_BITS * len(digits)


def text_bits(s: bytes) -> float:
    return _TEXT_BITS * len(s)


def _bin(name: str, d: bytes) -> Pattern:
    return Pattern(d, name, bin_bits(d))


def _dec(name: str, s: str) -> Pattern:
    d = s.encode()
    return Pattern(d, name, dec_bits(d))


def _hex(name: str, s: str) -> Pattern:
    d = s.encode()
    return Pattern(d, name, hex_bits(d))


def _cbor(name: str, d: bytes, content_bits: float) -> Pattern:
    # The head is structure: it tells little about the value.
    return Pattern(d, name, content_bits + _HEAD_BITS)


# -- CBOR (RFC 8949 §3: a head is the major type and the argument in 0, 1, 2, 4 or 8 bytes)


def cbor_head(major: int, n: int) -> bytes:
    m = major << 5
    if n < 24:
        return bytes([m | n])
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([m | ai]) + n.to_bytes(width, "big")
    raise ValueError("CBOR argument above 2**64 - 1")


def _cbor_int(v: int) -> bytes | None:
    if -(1 << 64) <= v < 1 << 64:
        return cbor_head(0, v) if v >= 0 else cbor_head(1, -1 - v)
    return None


def _cbor_text(name: str, s: str, bits: float) -> Pattern:
    d = s.encode()
    return _cbor(name, cbor_head(3, len(d)) + d, bits)


def _cbor_bytes(name: str, b: bytes) -> Pattern:
    return _cbor(name, cbor_head(2, len(b)) + b, bin_bits(b))


def _cbor_floats(f: float) -> list[Pattern]:
    """CBOR floats of f: float64 always, float32 always (a lossy leak is still a leak),
    float16 only where it holds f exactly."""
    out = [_cbor("cbor-float64", b"\xfb" + struct.pack(">d", f), bin_bits(struct.pack(">d", f)))]
    try:
        f32 = struct.pack(">f", f)
        out.append(_cbor("cbor-float32", b"\xfa" + f32, bin_bits(f32)))
        f16 = struct.pack(">e", f)
        if struct.unpack(">e", f16)[0] == f:
            out.append(_cbor("cbor-float16", b"\xf9" + f16, bin_bits(f16)))
    except (OverflowError, struct.error):
        pass
    return out


# -- transforms applied to a form: hex, base64, hashes -----------------------------------


def _hexes(form: str, data: bytes) -> list[Pattern]:
    h = data.hex()
    return [_hex(f"hex:{form}", h), _hex(f"HEX:{form}", h.upper())]


def b64_core(data: bytes, align: int, url: bool = False) -> bytes:
    """The base64 characters of `data` that do not depend on the bytes around it, when it
    starts `align` (0, 1 or 2) bytes into a 3-byte group of a longer base64 text."""
    enc = base64.urlsafe_b64encode if url else base64.b64encode
    e = enc(bytes(align) + data)
    first = -(-8 * align // 6)
    last = (8 * align + 8 * len(data)) // 6
    return e[first:last]


def _b64s(form: str, data: bytes) -> list[Pattern]:
    out = []
    for tag, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        full = enc(data)
        out.append(Pattern(full, f"{tag}:{form}", b64_bits(full)))
        out.append(Pattern(full.rstrip(b"="), f"{tag}-nopad:{form}", b64_bits(full)))
        for align in (0, 1, 2):
            core = b64_core(data, align, url=tag == "base64url")
            out.append(Pattern(core, f"{tag}-at{align}:{form}", b64_bits(core)))
    return out


def _hashes(form: str, data: bytes) -> list[Pattern]:
    out = []
    for algo in ("md5", "sha1", "sha256"):
        # A digest is uniformly random: every byte and hex digit counts in full.
        d = hashlib.new(algo, data).digest()
        out.append(Pattern(d, f"{algo}:{form}", 8.0 * len(d)))
        h = d.hex()
        for suffix, cut in (("hex", len(h)), ("hex16", 16), ("hex8", 8)):
            out.append(Pattern(h[:cut].encode(), f"{algo}-{suffix}:{form}", 4.0 * cut))
            up = h[:cut].upper().encode()
            out.append(Pattern(up, f"{algo}-{suffix.upper()}:{form}", 4.0 * cut))
    return out


def _derived(form: str, data: bytes) -> list[Pattern]:
    return _b64s(form, data) + _hashes(form, data)


# -- numbers -----------------------------------------------------------------------------


def min_bytes(v: int) -> bytes:
    """v big-endian in as few bytes as hold it (two's complement when negative)."""
    if v >= 0:
        return v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")
    return v.to_bytes(((-v - 1).bit_length() + 8) // 8, "big", signed=True)


def _fixed_ints(v: int, tag: str) -> list[Pattern]:
    """v as a 1..8-byte integer, both byte orders: unsigned when v >= 0 (the signed form is
    the same bytes wherever it fits), signed when v < 0."""
    out = []
    for n in range(1, 9):
        if not (-(1 << (8 * n - 1)) <= v < (1 << (8 * n))):
            continue
        kind = f"uint{8 * n}" if v >= 0 else f"int{8 * n}"
        be = v.to_bytes(n, "big", signed=v < 0)
        if n == 1:
            out.append(_bin(kind + tag, be))
            continue
        out.append(_bin(f"{kind}-le{tag}", be[::-1]))
        out.append(_bin(f"{kind}-be{tag}", be))
    return out


def _float_binaries(f: float, tag: str = "") -> list[Pattern]:
    out = []
    for fmt, name in (("f", "float32"), ("d", "float64")):
        try:
            out.append(_bin(f"{name}-le{tag}", struct.pack("<" + fmt, f)))
            out.append(_bin(f"{name}-be{tag}", struct.pack(">" + fmt, f)))
        except (OverflowError, struct.error):
            continue
    return out


def _float_texts(f: float) -> list[Pattern]:
    return [
        _dec("float-repr", repr(f)),
        _dec("printf-f", "%f" % f),
        _dec("printf-2f", "%.2f" % f),
        _dec("printf-e", "%e" % f),
        _dec("printf-g", "%g" % f),
    ]


def _int_core(v: int, tag: str = "") -> list[Pattern]:
    """The direct forms of an integer: decimal, fixed-width binaries, CBOR int, hex."""
    out = [_dec("decimal" + tag, str(v)), *_fixed_ints(v, tag)]
    head = _cbor_int(v)
    if head is not None:
        out.append(_cbor("cbor-int" + tag, head, bin_bits(head[1:]) if len(head) > 1 else 0))
    mb = min_bytes(v)
    out += [
        _hex("hex" + tag, mb.hex()),
        _hex("HEX" + tag, mb.hex().upper()),
        _hex("hex-le" + tag, mb[::-1].hex()),
        _hex("HEX-le" + tag, mb[::-1].hex().upper()),
    ]
    if v >= 0:
        out += [_hex("hex-int" + tag, "%x" % v), _hex("HEX-int" + tag, "%X" % v)]
    return out


def _int(c: Canary) -> list[Pattern]:
    v = c.value
    assert isinstance(v, int)
    dec = str(v)
    mb = min_bytes(v)
    out = _int_core(v)
    out += _float_texts(float(v)) + _float_binaries(float(v))
    out += _cbor_floats(float(v))
    out += [_cbor_text("cbor-text", dec, dec_bits(dec.encode())), _cbor_bytes("cbor-bytes", mb)]
    return out + _derived("decimal", dec.encode()) + _derived("bytes", mb)


def decimal_places(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def scaled_pair(d: Decimal, places: int) -> tuple[int, int]:
    """d in units of 10**-places, truncated and rounded (the same when it is exact)."""
    x = d.scaleb(places)
    return int(x.to_integral_value(ROUND_DOWN)), int(x.to_integral_value(ROUND_HALF_EVEN))


def scaled(d: Decimal, places: int) -> set[int]:
    return set(scaled_pair(d, places))


def _decimal_forms(c: Canary, extra_places: tuple[int, ...]) -> tuple[Decimal, list[Pattern]]:
    text = str(c.value).lstrip("+")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text!r}") from None
    f = float(d)
    norm = format(d.normalize(), "f")
    sig = len(d.normalize().as_tuple().digits)
    out = [_dec("decimal", text), _dec("decimal-norm", norm)]
    out += _float_texts(f) + [_dec("printf-e-exact", "%.*e" % (max(0, sig - 1), f))]
    out += _float_binaries(f) + _cbor_floats(f)
    frac = _cbor_int(int(d.scaleb(decimal_places(d))))
    if frac is not None:  # RFC 8949 §3.4.4 decimal fraction: 4([exponent, mantissa])
        fr = b"\xc4\x82" + _cbor_int(-decimal_places(d)) + frac  # type: ignore[operator]
        out.append(_cbor("cbor-decimal", fr, dec_bits(text.encode())))
    out += [_cbor_text("cbor-text", t, dec_bits(t.encode())) for t in (text, norm)]
    places = {decimal_places(d), CHANNEL_PLACES.get(c.channel, 0), *extra_places} - {0}
    for p in sorted(places):
        trunc, rounded = scaled_pair(d, p)
        out += _int_core(trunc, f"*1e{p}")  # exact, or truncated as the device's sources do
        if rounded != trunc:
            out += _int_core(rounded, f"*1e{p}r")
    return d, out + _derived("decimal", text.encode())


def _fixed(c: Canary) -> list[Pattern]:
    return _decimal_forms(c, ())[1]


def _coord(c: Canary) -> list[Pattern]:
    d, out = _decimal_forms(c, COORD_PLACES)
    for p in COORD_PLACES:
        out.append(_dec(f"decimal-{p}dp", str(d.quantize(Decimal(1).scaleb(-p)))))
    deg = int(abs(d))
    minutes = (abs(d) - deg) * 60
    width = 3 if c.channel in ("lon", "longitude") else 2
    out.append(_dec("nmea-ddmm", f"{deg:0{width}d}{minutes:07.4f}"))
    return out


# -- addresses, bytes, text --------------------------------------------------------------


def _colon(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _addr_texts(b: bytes, with_cisco: bool) -> list[Pattern]:
    out = []
    for order, bb in (("", b), ("-le", b[::-1])):
        pairs = [f"{x:02x}" for x in bb]
        for sep_name, sep in _SEPARATORS.items():
            text = sep.join(pairs)
            out.append(_hex(f"text-{sep_name}{order}", text))
            out.append(_hex(f"text-{sep_name}{order}-upper", text.upper()))
        if with_cisco:
            h = bb.hex()
            cisco = f"{h[0:4]}.{h[4:8]}.{h[8:12]}"
            out.append(_hex(f"text-cisco{order}", cisco))
            out.append(_hex(f"text-cisco{order}-upper", cisco.upper()))
    return out


def eui64(addr: bytes, flip_ul: bool = False) -> bytes:
    """The EUI-64 of a 48-bit address (ff:fe in the middle); with the universal/local bit
    flipped it is IPv6's modified EUI-64 interface identifier (RFC 4291 appendix A)."""
    e = addr[:3] + b"\xff\xfe" + addr[3:]
    return bytes([e[0] ^ 0x02]) + e[1:] if flip_ul else e


def _eui64s(b: bytes) -> list[Pattern]:
    out = []
    for name, e in (("eui64", eui64(b)), ("eui64-ul", eui64(b, flip_ul=True))):
        h = e.hex()
        groups = [h[i : i + 4] for i in range(0, 16, 4)]
        texts = {
            "plain": h,
            "colon": _colon(e),
            "iid": ":".join(groups),
            "iid-short": ":".join(g.lstrip("0") or "0" for g in groups),
        }
        out.append(_bin(name, e))
        for tname, t in texts.items():
            out.append(_hex(f"{name}-{tname}", t))
            out.append(_hex(f"{name}-{tname}-upper", t.upper()))
    return out


def _addr(c: Canary) -> list[Pattern]:
    b = c.value
    assert isinstance(b, bytes)
    v_be, v_le = int.from_bytes(b, "big"), int.from_bytes(b, "little")
    colon = _colon(b)
    out = [_bin("bytes", b), _bin("bytes-le", b[::-1]), *_addr_texts(b, with_cisco=True)]
    out += [_dec("int48-decimal", str(v_be)), _dec("int48-decimal-le", str(v_le))]
    out += [
        _bin("uint64-be", v_be.to_bytes(8, "big")),
        _bin("uint64-le", v_be.to_bytes(8, "little")),
    ]
    out += [_cbor_bytes("cbor-bytes", b), _cbor_bytes("cbor-bytes-le", b[::-1])]
    out.append(_cbor("cbor-int", _cbor_int(v_be) or b"", bin_bits(b)))
    out += [
        _cbor_text("cbor-text", colon, hex_bits(colon.encode())),
        _cbor_text("cbor-text-upper", colon.upper(), hex_bits(colon.encode())),
    ]
    out += _eui64s(b)
    for form, data in (("bytes", b), ("bytes-le", b[::-1]), ("text-colon", colon.encode())):
        out += _b64s(form, data)
    forms = [
        ("bytes", b),
        ("bytes-le", b[::-1]),
        ("text-colon", colon.encode()),
        ("text-colon-upper", colon.upper().encode()),
        ("text-plain", b.hex().encode()),
        ("text-plain-upper", b.hex().upper().encode()),
    ]
    for form, data in forms:
        out += _hashes(form, data)
    return out


def _addr_part(c: Canary) -> list[Pattern]:
    b = c.value
    assert isinstance(b, bytes)
    colon = _colon(b)
    out = [_bin("bytes", b), _bin("bytes-le", b[::-1]), *_addr_texts(b, with_cisco=False)]
    out += [_cbor_bytes("cbor-bytes", b), _cbor_bytes("cbor-bytes-le", b[::-1])]
    out += [_cbor_text("cbor-text", colon, hex_bits(colon.encode()))]
    return out + [_dec("int24-decimal", str(int.from_bytes(b, "big")))]


def _bytes(c: Canary) -> list[Pattern]:
    b = c.value
    assert isinstance(b, bytes)
    return [
        _bin("bytes", b),
        *_hexes("bytes", b),
        _cbor_bytes("cbor-bytes", b),
        *_derived("bytes", b),
    ]


def _text(c: Canary) -> list[Pattern]:
    s = str(c.value)
    d = s.encode()
    out = [Pattern(d, "text", text_bits(d)), _cbor_text("cbor-text", s, text_bits(d))]
    return out + _hexes("text", d) + _derived("text", d)


_ENCODERS: dict[str, Callable[[Canary], list[Pattern]]] = {
    "addr": _addr,
    "addr-part": _addr_part,
    "int": _int,
    "fixed": _fixed,
    "coord": _coord,
    "bytes": _bytes,
    "text": _text,
}
