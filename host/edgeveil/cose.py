"""COSE (RFC 9052) on the host: open what the device encrypts, sign what it must trust.

    out = decrypt0(key, base_iv, msg, kid=b"dev-0001")   # Decrypted(kid, counter, plaintext)
    signed = mac0_create(policy_key, policy_cbor, kid)   # COSE_Mac0 for the device
    kid, payload = mac0_verify(policy_key, signed)

The formats are the device's (`device/veil/cose.py`), checked byte for byte:

- COSE_Encrypt0: ``16([h'a1010a', {4: kid, 6: partial_iv}, ciphertext || tag8])``,
  AES-CCM-16-64-128 (alg 10), nonce = Base IV XOR left-padded Partial IV (RFC 9052 §3.1),
  AAD = Enc_structure ``["Encrypt0", h'a1010a', external_aad]`` (RFC 9052 §5.3).
- COSE_Mac0: ``17([h'a2010504' + bstr(kid), {}, payload, tag32])``, HMAC 256/256 (alg 5),
  MAC_structure ``["MAC0", protected, h'', payload]`` (RFC 9052 §6.3). The kid is in the
  protected header, so it is authenticated with the payload.

Parsing is strict where cbor2 is lenient (notes/library-pitfalls.md): the whole input must
be one item, and a map with a repeated label is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from io import BytesIO
from typing import Any, NamedTuple

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from .errors import CryptoError, DecodeError

ALG_AES_CCM_16_64_128 = 10  # RFC 9053 §4.2
ALG_HMAC_256_256 = 5  # RFC 9053 §3.1
ENC0_PROTECTED = b"\xa1\x01\x0a"  # {1: 10}
NONCE_LEN = 13
TAG_LEN = 8
COUNTER_LIMIT = 1 << 40  # Partial IV of at most 5 bytes

_H_ALG, _H_KID, _H_IV, _H_PARTIAL_IV = 1, 4, 5, 6  # RFC 9052 §3.1
_TAG_ENCRYPT0 = 0xD0  # tag 16, one byte head
_TAG_MAC0 = 0xD1  # tag 17
_MAC_LEN = 32


class Decrypted(NamedTuple):
    """A decrypted COSE_Encrypt0: key id, message counter (Partial IV), plaintext."""

    kid: bytes
    counter: int
    plaintext: bytes


class Verified(NamedTuple):
    """A verified COSE_Mac0: key id and the authenticated payload."""

    kid: bytes
    payload: bytes


def partial_iv(counter: int) -> bytes:
    """The Partial IV of `counter`: big-endian, leading zeros removed, at least one byte.

    Raises:
        CryptoError: the counter is not an int in 0 .. 2**40 - 1.
    """
    if type(counter) is not int or not 0 <= counter < COUNTER_LIMIT:
        raise CryptoError(f"counter must be an int in 0 .. 2**40 - 1, got {counter!r}")
    return counter.to_bytes(max(1, (counter.bit_length() + 7) // 8), "big")


def nonce_for(base_iv: bytes, partial_iv: bytes) -> bytes:
    """The 13-byte AES-CCM nonce: Base IV XOR the Partial IV left-padded (RFC 9052 §3.1).

    Computed bytewise, so a Base IV starting with 0x00 keeps its length (pycose 1.1.0
    loses it, notes/library-pitfalls.md).

    Raises:
        CryptoError: the Base IV is not 13 bytes or the Partial IV is longer.
    """
    if len(base_iv) != NONCE_LEN:
        raise CryptoError("base IV must be 13 bytes")
    if len(partial_iv) > NONCE_LEN:
        raise CryptoError("Partial IV longer than the nonce")
    padded = bytes(NONCE_LEN - len(partial_iv)) + bytes(partial_iv)
    return bytes(a ^ b for a, b in zip(base_iv, padded, strict=True))


def _enc_structure(external_aad: bytes) -> bytes:
    return cbor2.dumps(["Encrypt0", ENC0_PROTECTED, bytes(external_aad)])


def _aesccm(key: bytes) -> AESCCM:
    if len(key) != 16:
        raise CryptoError("COSE key must be 16 bytes (AES-128)")
    return AESCCM(bytes(key), tag_length=TAG_LEN)


def encrypt0(
    key: bytes,
    base_iv: bytes,
    kid: bytes,
    counter: int,
    plaintext: bytes,
    external_aad: bytes = b"",
) -> bytes:
    """COSE_Encrypt0 exactly as the device makes it (for tests and virtual boards).

    Raises:
        CryptoError: bad key, Base IV, kid or counter.
    """
    if not isinstance(kid, bytes | bytearray) or not kid:
        raise CryptoError("kid must be non-empty bytes")
    piv = partial_iv(counter)
    ct = _aesccm(key).encrypt(
        nonce_for(base_iv, piv), bytes(plaintext), _enc_structure(external_aad)
    )
    uhdr = {_H_KID: bytes(kid), _H_PARTIAL_IV: piv}
    return cbor2.dumps(cbor2.CBORTag(16, [ENC0_PROTECTED, uhdr, ct]))


class _Reader:
    """Reads consecutive CBOR items from `data` with cbor2, tracking the position."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self._fp = BytesIO(self.data)
        self._dec = cbor2.CBORDecoder(self._fp)

    @property
    def pos(self) -> int:
        return self._fp.tell()

    def head(self, expected: int, what: str) -> None:
        if self.pos >= len(self.data) or self.data[self.pos] != expected:
            raise DecodeError(f"{what}: expected initial byte 0x{expected:02x}")
        self._fp.seek(self.pos + 1)

    def item(self) -> Any:
        try:
            return self._dec.decode()
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"malformed CBOR at byte {self.pos}: {exc}") from exc

    def map_(self, what: str) -> dict[Any, Any]:
        # The pair count in the head must match the decoded size: cbor2 keeps the last
        # value of a repeated key silently.
        start = self.pos
        first = self.data[start] if start < len(self.data) else -1
        if not 0xA0 <= first <= 0xB7:
            raise DecodeError(f"{what}: expected a map of at most 23 entries")
        value = self.item()
        if not isinstance(value, dict) or len(value) != first - 0xA0:
            raise DecodeError(f"{what}: repeated label")
        return value

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{len(self.data) - self.pos} trailing bytes after the message")


def _bstr(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise DecodeError(f"{what} must be a byte string")
    return value


def _int_labels(m: dict[Any, Any], allowed: tuple[int, ...], what: str) -> None:
    for label in m:
        if type(label) is not int or label not in allowed:
            raise DecodeError(f"{what}: unexpected label {label!r}")


class Encrypt0(NamedTuple):
    """A parsed, not yet authenticated COSE_Encrypt0: key id, Partial IV, ciphertext."""

    kid: bytes
    partial_iv: bytes
    ciphertext: bytes

    @property
    def counter(self) -> int:
        return int.from_bytes(self.partial_iv, "big")


def parse_encrypt0(msg: bytes) -> Encrypt0:
    """Check the shape of a device's COSE_Encrypt0 and return its parts, decrypting nothing.

    Raises:
        DecodeError: not a COSE_Encrypt0 of the accepted shape (the message says where).
    """
    r = _Reader(msg)
    r.head(_TAG_ENCRYPT0, "COSE_Encrypt0 tag 16")
    r.head(0x83, "COSE_Encrypt0 array of 3")
    if _bstr(r.item(), "protected header") != ENC0_PROTECTED:
        raise DecodeError("protected header must be exactly a1 01 0a ({1: 10})")
    uhdr = r.map_("unprotected header")
    ct = _bstr(r.item(), "ciphertext")
    r.end()
    if _H_IV in uhdr:
        raise DecodeError("IV (label 5) is not accepted beside the Partial IV")
    _int_labels(uhdr, (_H_KID, _H_PARTIAL_IV), "unprotected header")
    kid = _bstr(uhdr.get(_H_KID), "kid (label 4)")
    piv = _bstr(uhdr.get(_H_PARTIAL_IV), "Partial IV (label 6)")
    if not kid:
        raise DecodeError("kid is empty")
    if not 1 <= len(piv) <= 5 or (len(piv) > 1 and piv[0] == 0):
        raise DecodeError("Partial IV must be 1..5 bytes without leading zeros")
    if len(ct) < TAG_LEN:
        raise DecodeError("ciphertext shorter than the tag")
    return Encrypt0(kid, piv, ct)


def decrypt0(
    key: bytes,
    base_iv: bytes,
    msg: bytes | Encrypt0,
    kid: bytes | None = None,
    external_aad: bytes = b"",
) -> Decrypted:
    """Authenticate and decrypt a device's COSE_Encrypt0.

    Args:
        key: the device's 16-byte COSE key.
        base_iv: the device's 13-byte Base IV.
        msg: the whole message (tag 16 included; nothing may follow it), or its parts
            from parse_encrypt0.
        kid: if given, the message's kid must equal it.
        external_aad: external AAD the sender bound (none for device reports).

    Returns:
        Decrypted(kid, counter, plaintext).

    Raises:
        DecodeError: not a COSE_Encrypt0 of the accepted shape.
        CryptoError: wrong kid, key or Base IV, or a tampered message.
    """
    parts = msg if isinstance(msg, Encrypt0) else parse_encrypt0(msg)
    if kid is not None and not hmac.compare_digest(parts.kid, bytes(kid)):
        raise CryptoError("kid mismatch")
    try:
        pt = _aesccm(key).decrypt(
            nonce_for(base_iv, parts.partial_iv), parts.ciphertext, _enc_structure(external_aad)
        )
    except InvalidTag as exc:
        raise CryptoError("COSE_Encrypt0 authentication failed") from exc
    return Decrypted(parts.kid, parts.counter, pt)


def _mac(key: bytes, protected: bytes, payload: bytes) -> bytes:
    mac_structure = cbor2.dumps(["MAC0", protected, b"", payload])
    return hmac.new(bytes(key), mac_structure, hashlib.sha256).digest()


def mac0_create(key: bytes, payload: bytes, kid: bytes) -> bytes:
    """COSE_Mac0 (tag 17, HMAC 256/256) over `payload`, with `kid` in the protected header.

    Raises:
        CryptoError: empty key or kid.
    """
    if not key:
        raise CryptoError("MAC key must not be empty")
    if not isinstance(kid, bytes | bytearray) or not kid:
        raise CryptoError("kid must be non-empty bytes")
    protected = b"\xa2\x01\x05\x04" + cbor2.dumps(bytes(kid))
    payload = bytes(payload)
    tag = _mac(key, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {}, payload, tag]))


def mac0_verify(key: bytes, msg: bytes) -> Verified:
    """Verify a COSE_Mac0 of the shape mac0_create makes.

    Returns:
        Verified(kid, payload).

    Raises:
        DecodeError: not a COSE_Mac0 of the accepted shape.
        CryptoError: wrong key or a changed byte.
    """
    if not key:
        raise CryptoError("MAC key must not be empty")
    r = _Reader(msg)
    r.head(_TAG_MAC0, "COSE_Mac0 tag 17")
    r.head(0x84, "COSE_Mac0 array of 4")
    protected = _bstr(r.item(), "protected header")
    if r.map_("unprotected header"):
        raise DecodeError("unprotected header must be empty")
    payload = _bstr(r.item(), "payload")
    tag = _bstr(r.item(), "tag")
    r.end()
    p = _Reader(protected)
    phdr = p.map_("protected header")
    p.end()
    _int_labels(phdr, (_H_ALG, _H_KID), "protected header")
    alg = phdr.get(_H_ALG)
    if type(alg) is not int or alg != ALG_HMAC_256_256 or len(phdr) != 2:
        raise DecodeError("protected header must be {1: 5, 4: kid}")
    kid = _bstr(phdr.get(_H_KID), "kid (label 4)")
    if not kid or len(tag) != _MAC_LEN:
        raise DecodeError("empty kid or a tag that is not 32 bytes")
    if not hmac.compare_digest(_mac(key, protected, payload), tag):
        raise CryptoError("COSE_Mac0 authentication failed")
    return Verified(kid, payload)
