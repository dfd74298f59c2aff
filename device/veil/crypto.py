"""Symmetric primitives for veil: HMAC-SHA256, HKDF-SHA256 and AES-CCM.

    from veil import crypto
    tag = crypto.hmac_sha256(key, b"message")                 # 32 bytes
    okm = crypto.hkdf_sha256(ikm, salt, b"info", 32)
    ct = crypto.ccm_encrypt(key16, nonce13, aad, plaintext)    # ciphertext || 8-byte tag
    pt = crypto.ccm_decrypt(key16, nonce13, aad, ct)           # CryptoError if tampered

Built only on `cryptolib.aes` in ECB mode (mode 1, the one every port has; CTR is often
compiled out) and `hashlib.sha256`. AES-CCM follows RFC 3610 / NIST SP 800-38C; COSE's
AES-CCM-16-64-128 (alg 10, RFC 9053 §4.2) is a 13-byte nonce (L = 2) and an 8-byte tag.
Other nonce lengths (7..13 bytes) work too, the payload is capped at 65535 bytes.

Allocation: each call allocates its few buffers and result up front; the per-block loops
of CCM only index preallocated bytearrays and call `aes.encrypt(in, out)`, which writes
into the given buffer. CCM runs at window close, not on the per-sample path; every integer
in it stays below 2**16 (lengths, block counters), so it needs no long ints on a 31-bit
small-int port.
"""

import hashlib

from cryptolib import aes
from micropython import const

from veil import VeilError

_AES_ECB = const(1)  # cryptolib mode 1 = ECB
_BLOCK = const(16)
_SHA256_BLOCK = const(64)  # RFC 2104 §2: B = 64 for SHA-256
_SHA256_LEN = const(32)
_MAX_PAYLOAD = const(65535)  # L = 2 with a 13-byte nonce (RFC 3610 §2)
_MAX_AAD = const(0xFEFF)  # RFC 3610 §2.2: below 2**16 - 2**8 the length is 2 bytes


class CryptoError(VeilError):
    """Bad key, nonce or length, or a message that fails authentication."""


def ct_equal(a, b):
    """True if `a` and `b` hold the same bytes; time depends only on the lengths."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


# --- HMAC (RFC 2104) and HKDF (RFC 5869) ----------------------------------------------


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of `msg` under `key`; 32 bytes."""
    if len(key) > _SHA256_BLOCK:
        # RFC 2104 §3: keys longer than B are hashed first.
        key = hashlib.sha256(key).digest()
    pad = bytearray(_SHA256_BLOCK)
    pad[: len(key)] = key
    for i in range(_SHA256_BLOCK):
        pad[i] ^= 0x36  # ipad
    h = hashlib.sha256(pad)
    h.update(msg)
    inner = h.digest()
    for i in range(_SHA256_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C  # undo ipad, apply opad
    h = hashlib.sha256(pad)
    h.update(inner)
    return h.digest()


def hkdf_sha256(ikm, salt, info, length):
    """HKDF-SHA256 (RFC 5869): extract with `salt` (None or b"" = 32 zero bytes), expand."""
    if length < 0 or length > 255 * _SHA256_LEN:
        raise CryptoError("HKDF length out of range")
    if not salt:
        salt = bytes(_SHA256_LEN)  # RFC 5869 §2.2
    prk = hmac_sha256(salt, ikm)
    out = bytearray(length)
    t = b""
    pos = 0
    i = 1
    while pos < length:
        # RFC 5869 §2.3: T(i) = HMAC(PRK, T(i-1) | info | i)
        t = hmac_sha256(prk, t + info + bytes((i,)))
        n = min(_SHA256_LEN, length - pos)
        out[pos : pos + n] = t[:n]
        pos += n
        i += 1
    return bytes(out)


# --- AES-CCM (RFC 3610, NIST SP 800-38C) ---------------------------------------------


def _check(key, nonce, tag_len, n):
    if len(key) != 16:
        raise CryptoError("AES-128 key must be 16 bytes")
    if len(nonce) < 7 or len(nonce) > 13:
        raise CryptoError("CCM nonce must be 7..13 bytes")
    # RFC 3610 §2: M in {4, 6, ..., 16}
    if tag_len < 4 or tag_len > 16 or tag_len & 1:
        raise CryptoError("CCM tag length must be 4, 6, ..., 16")
    if n < 0 or n > _MAX_PAYLOAD:
        raise CryptoError("CCM payload too long")


def _absorb(cipher, x, pos, data):
    # CBC-MAC: XOR `data` into the running block `x` from offset `pos`, encrypt each full
    # block in place. Returns the new offset. No allocation.
    for c in data:
        x[pos] ^= c
        pos += 1
        if pos == _BLOCK:
            cipher.encrypt(x, x)
            pos = 0
    return pos


def _flush(cipher, x, pos):
    # Zero padding to a block boundary (RFC 3610 §2.2): XOR with zeros is a no-op.
    if pos:
        cipher.encrypt(x, x)


def _cbc_mac(cipher, nonce, aad, msg, n, tag_len, x, b):
    """CBC-MAC T over B0 | encoded aad | msg[:n] (RFC 3610 §2.2), left in `x`."""
    nn = len(nonce)
    q = 15 - nn  # L
    # B0: flags = 64*Adata + 8*M' + L', M' = (M-2)/2, L' = L-1
    b[0] = (0x40 if len(aad) else 0) | (((tag_len - 2) >> 1) << 3) | (q - 1)
    for i in range(nn):
        b[1 + i] = nonce[i]
    for i in range(q):
        b[15 - i] = (n >> (8 * i)) & 0xFF if i < 2 else 0  # n <= 65535
    cipher.encrypt(b, x)
    pos = 0
    la = len(aad)
    if la:
        if la <= _MAX_AAD:
            x[0] ^= la >> 8
            x[1] ^= la & 0xFF
            pos = 2
        else:
            # RFC 3610 §2.2: 0xff 0xfe then a 32-bit length (aad < 2**32 here by memory).
            x[0] ^= 0xFF
            x[1] ^= 0xFE
            for i in range(4):
                x[2 + i] ^= (la >> (24 - 8 * i)) & 0xFF
            pos = 6
        pos = _absorb(cipher, x, pos, aad)
        _flush(cipher, x, pos)
    pos = 0
    for i in range(n):
        x[pos] ^= msg[i]
        pos += 1
        if pos == _BLOCK:
            cipher.encrypt(x, x)
            pos = 0
    _flush(cipher, x, pos)


def _ctr(cipher, nonce, src, dst, n, a, s):
    """CTR keystream from A_1 (RFC 3610 §2.3): dst[:n] = src[:n] XOR S_1 | S_2 | ..."""
    nn = len(nonce)
    q = 15 - nn
    a[0] = q - 1  # flags = L'
    for i in range(nn):
        a[1 + i] = nonce[i]
    for i in range(q):
        a[15 - i] = 0
    ctr = 0  # at most 4096 blocks (payload <= 65535)
    for off in range(0, n, _BLOCK):
        ctr += 1
        a[15] = ctr & 0xFF
        a[14] = ctr >> 8
        cipher.encrypt(a, s)
        end = min(off + _BLOCK, n)
        for i in range(off, end):
            dst[i] = src[i] ^ s[i - off]


def _s0(cipher, nonce, a, s):
    # S_0 = E(A_0), the block that masks the tag (RFC 3610 §2.3).
    nn = len(nonce)
    a[0] = 14 - nn  # L' = L - 1 = 15 - nn - 1
    for i in range(nn):
        a[1 + i] = nonce[i]
    for i in range(nn + 1, 16):
        a[i] = 0
    cipher.encrypt(a, s)


def ccm_encrypt(key, nonce, aad, plaintext, tag_len=8):
    """AES-CCM encrypt; returns ciphertext || tag (`tag_len` bytes)."""
    n = len(plaintext)
    _check(key, nonce, tag_len, n)
    cipher = aes(key, _AES_ECB)
    x = bytearray(_BLOCK)
    b = bytearray(_BLOCK)
    _cbc_mac(cipher, nonce, aad, plaintext, n, tag_len, x, b)
    s = bytearray(_BLOCK)
    out = bytearray(n + tag_len)
    _ctr(cipher, nonce, plaintext, out, n, b, s)
    _s0(cipher, nonce, b, s)
    for i in range(tag_len):
        out[n + i] = x[i] ^ s[i]  # U = T XOR first-M(S_0)
    return bytes(out)


def ccm_decrypt(key, nonce, aad, data, tag_len=8):
    """AES-CCM decrypt `data` = ciphertext || tag; CryptoError if it does not verify."""
    if len(data) < tag_len:
        raise CryptoError("CCM input shorter than the tag")
    n = len(data) - tag_len
    _check(key, nonce, tag_len, n)
    cipher = aes(key, _AES_ECB)
    a = bytearray(_BLOCK)
    s = bytearray(_BLOCK)
    out = bytearray(n)
    _ctr(cipher, nonce, data, out, n, a, s)
    x = bytearray(_BLOCK)
    _cbc_mac(cipher, nonce, aad, out, n, tag_len, x, a)
    _s0(cipher, nonce, a, s)
    acc = 0
    for i in range(tag_len):
        acc |= x[i] ^ s[i] ^ data[n + i]
    if acc:
        for i in range(n):
            out[i] = 0  # RFC 3610 §2.5: release nothing of an unauthenticated message
        raise CryptoError("CCM authentication failed")
    return bytes(out)
