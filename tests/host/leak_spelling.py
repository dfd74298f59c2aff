"""Independent spellings of every encoding the leak scan searches for (test helper).

Computed with struct, base64, hashlib, cbor2 and string formatting directly, never with
edgeveil.verify.encodings, so the tests that compare the two can fail. Each function
returns {encoding name: bytes} for one raw value.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from decimal import Decimal

import cbor2

SEPS = {"colon": ":", "dash": "-", "plain": "", "dot": ".", "space": " "}
ADDR = bytes.fromhex("5eca7a11d09b")


def b64_core(data: bytes, align: int, url: bool) -> bytes:
    """The base64 characters of `data` that stay the same whatever surrounds it: compare
    two encodings with opposite neighbouring bytes and keep the run that agrees."""
    alt = b"-_" if url else None
    a = base64.b64encode(b"\x00" * align + data + b"\x00" * 3, altchars=alt)
    b = base64.b64encode(b"\xff" * align + data + b"\xff" * 3, altchars=alt)
    same = [i for i in range(len(a)) if a[i] == b[i]]  # the core, then "=" padding
    end = 0
    while end < len(same) and same[end] == same[0] + end:
        end += 1
    return a[same[0] : same[0] + end].rstrip(b"=") if same else b""


def b64s(form: str, data: bytes) -> dict[str, bytes]:
    out = {}
    for tag, alt in (("base64", None), ("base64url", b"-_")):
        full = base64.b64encode(data, altchars=alt)
        out[f"{tag}:{form}"] = full
        out[f"{tag}-nopad:{form}"] = full.rstrip(b"=")
        for align in (0, 1, 2):
            out[f"{tag}-at{align}:{form}"] = b64_core(data, align, alt is not None)
    return out


def hashes(form: str, data: bytes) -> dict[str, bytes]:
    out = {}
    for algo, fn in (("md5", hashlib.md5), ("sha1", hashlib.sha1), ("sha256", hashlib.sha256)):
        d = fn(data).digest()
        out[f"{algo}:{form}"] = d
        for suffix, n in (("hex", 2 * len(d)), ("hex16", 16), ("hex8", 8)):
            out[f"{algo}-{suffix}:{form}"] = d.hex()[:n].encode()
            out[f"{algo}-{suffix.upper()}:{form}"] = d.hex()[:n].upper().encode()
    return out


def smallest(v: int) -> bytes:
    n = 1
    while True:
        try:
            return v.to_bytes(n, "big", signed=v < 0)
        except OverflowError:
            n += 1


def int_core(v: int, tag: str = "") -> dict[str, bytes]:
    e = {"decimal" + tag: str(v).encode(), "cbor-int" + tag: cbor2.dumps(v)}
    for n in range(1, 9):
        try:
            be = v.to_bytes(n, "big", signed=v < 0)
        except OverflowError:
            continue
        kind = ("uint" if v >= 0 else "int") + str(8 * n)
        if n == 1:
            e[kind + tag] = be
        else:
            e[f"{kind}-be{tag}"], e[f"{kind}-le{tag}"] = be, be[::-1]
    m = smallest(v)
    e.update({"hex" + tag: m.hex().encode(), "HEX" + tag: m.hex().upper().encode()})
    e.update(
        {"hex-le" + tag: m[::-1].hex().encode(), "HEX-le" + tag: m[::-1].hex().upper().encode()}
    )
    if v >= 0:
        e.update(
            {"hex-int" + tag: format(v, "x").encode(), "HEX-int" + tag: format(v, "X").encode()}
        )
    return e


def floats(f: float) -> dict[str, bytes]:
    e = {
        "float-repr": repr(f).encode(),
        "printf-f": ("%f" % f).encode(),
        "printf-2f": ("%.2f" % f).encode(),
        "printf-e": ("%e" % f).encode(),
        "printf-g": ("%g" % f).encode(),
        "float32-le": struct.pack("<f", f),
        "float32-be": struct.pack(">f", f),
        "float64-le": struct.pack("<d", f),
        "float64-be": struct.pack(">d", f),
        "cbor-float64": b"\xfb" + struct.pack(">d", f),
        "cbor-float32": b"\xfa" + struct.pack(">f", f),
    }
    if abs(f) <= 65504 and struct.unpack(">e", struct.pack(">e", f))[0] == f:
        e["cbor-float16"] = b"\xf9" + struct.pack(">e", f)
    return e


def expect_int(v: int) -> dict[str, bytes]:
    e = int_core(v) | floats(float(v))
    e["cbor-text"] = cbor2.dumps(str(v))
    e["cbor-bytes"] = cbor2.dumps(smallest(v))
    for form, data in (("decimal", str(v).encode()), ("bytes", smallest(v))):
        e |= b64s(form, data) | hashes(form, data)
    return e


def expect_decimal(text: str, places: list[int]) -> dict[str, bytes]:
    d = Decimal(text)
    f = float(d)
    digits = len(d.normalize().as_tuple().digits)
    e = {"decimal": text.encode(), "decimal-norm": format(d.normalize(), "f").encode()}
    e |= floats(f)
    e["printf-e-exact"] = ("%.*e" % (digits - 1, f)).encode()
    e["cbor-decimal"] = cbor2.dumps(d)
    e["cbor-text"] = cbor2.dumps(text)
    for p in places:
        x = d * 10**p
        trunc = int(x)  # toward zero, as the device's fixed() does
        e |= int_core(trunc, f"*1e{p}")
        if int(x.to_integral_value()) != trunc:
            e |= int_core(int(x.to_integral_value()), f"*1e{p}r")
    return e | b64s("decimal", text.encode()) | hashes("decimal", text.encode())


def addr_texts(b: bytes, cisco: bool) -> dict[str, bytes]:
    e = {}
    for order, bb in (("", b), ("-le", bytes(reversed(b)))):
        for name, sep in SEPS.items():
            t = sep.join("%02x" % x for x in bb)
            e[f"text-{name}{order}"] = t.encode()
            e[f"text-{name}{order}-upper"] = t.upper().encode()
        if cisco:
            h = "".join("%02x" % x for x in bb)
            t = ".".join((h[:4], h[4:8], h[8:]))
            e[f"text-cisco{order}"], e[f"text-cisco{order}-upper"] = t.encode(), t.upper().encode()
    return e


def expect_addr(b: bytes) -> dict[str, bytes]:
    le = bytes(reversed(b))
    colon = ":".join("%02x" % x for x in b)
    e = {"bytes": b, "bytes-le": le} | addr_texts(b, cisco=True)
    n = int(b.hex(), 16)
    e["int48-decimal"] = str(n).encode()
    e["int48-decimal-le"] = str(int(le.hex(), 16)).encode()
    e["uint64-be"], e["uint64-le"] = struct.pack(">Q", n), struct.pack("<Q", n)
    e["cbor-bytes"], e["cbor-bytes-le"] = cbor2.dumps(b), cbor2.dumps(le)
    e["cbor-int"] = cbor2.dumps(n)
    e["cbor-text"], e["cbor-text-upper"] = cbor2.dumps(colon), cbor2.dumps(colon.upper())
    eui = b[:3] + b"\xff\xfe" + b[3:]
    for name, x in (("eui64", eui), ("eui64-ul", bytes([eui[0] ^ 2]) + eui[1:])):
        h = x.hex()
        groups = [h[0:4], h[4:8], h[8:12], h[12:16]]
        texts = {
            "plain": h,
            "colon": ":".join(h[i : i + 2] for i in range(0, 16, 2)),
            "iid": ":".join(groups),
            "iid-short": ":".join(g.lstrip("0") or "0" for g in groups),
        }
        e[name] = x
        for t, s in texts.items():
            e[f"{name}-{t}"], e[f"{name}-{t}-upper"] = s.encode(), s.upper().encode()
    for form, data in (("bytes", b), ("bytes-le", le), ("text-colon", colon.encode())):
        e |= b64s(form, data)
    for form, data in (
        ("bytes", b),
        ("bytes-le", le),
        ("text-colon", colon.encode()),
        ("text-colon-upper", colon.upper().encode()),
        ("text-plain", b.hex().encode()),
        ("text-plain-upper", b.hex().upper().encode()),
    ):
        e |= hashes(form, data)
    return e


def expect_part(b: bytes) -> dict[str, bytes]:
    colon = ":".join("%02x" % x for x in b)
    e = {"bytes": b, "bytes-le": bytes(reversed(b))} | addr_texts(b, cisco=False)
    e["cbor-bytes"], e["cbor-bytes-le"] = cbor2.dumps(b), cbor2.dumps(bytes(reversed(b)))
    e["cbor-text"] = cbor2.dumps(colon)
    e["int24-decimal"] = str(int(b.hex(), 16)).encode()
    return e


def expect_bytes(b: bytes) -> dict[str, bytes]:
    e = {"bytes": b, "hex:bytes": b.hex().encode(), "HEX:bytes": b.hex().upper().encode()}
    e["cbor-bytes"] = cbor2.dumps(b)
    return e | b64s("bytes", b) | hashes("bytes", b)


def expect_text(s: str) -> dict[str, bytes]:
    d = s.encode()
    e = {"text": d, "cbor-text": cbor2.dumps(s), "hex:text": d.hex().encode()}
    e["HEX:text"] = d.hex().upper().encode()
    return e | b64s("text", d) | hashes("text", d)


def expect_coord(text: str, channel: str) -> dict[str, bytes]:
    d = Decimal(text)
    places = sorted({-d.as_tuple().exponent, 5, 6, 7})  # type: ignore[operator]
    e = expect_decimal(text, places)
    for p in (5, 6, 7):
        e[f"decimal-{p}dp"] = format(d, f".{p}f").encode()
    deg = int(d)
    width = 3 if channel == "lon" else 2
    minutes = (d - deg) * 60
    e["nmea-ddmm"] = (str(deg).zfill(width) + format(float(minutes), "07.4f")).encode()
    return e
