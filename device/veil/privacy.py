"""Privacy transforms applied at window close, before anything becomes a report.

    pseudonym(pseudo_key, epoch, b"\\x01\\x02")   # 8-byte keyed pseudonym, rotates per epoch
    generalize(1234, 50)                       # -> 1250: nearest multiple of the precision
    suppressed(n, k)                           # True when a group of n is smaller than k

Pseudonyms: the per-epoch key is HKDF-SHA256(pseudo_key, salt="veil-pseudo",
info=epoch index as 4 big-endian bytes) (RFC 5869), and the pseudonym is the first 8 bytes
of HMAC-SHA256(epoch key, value) (RFC 2104). Without the key a pseudonym links nothing;
across epochs the same value gets unrelated pseudonyms.
"""

from veil.crypto import hkdf_sha256, hmac_sha256

_SALT = b"veil-pseudo"


def epoch_key(pseudo_key, epoch):
    """The pseudonymization key of epoch number `epoch` (allocates)."""
    if epoch < 0 or epoch >= 1 << 32:
        raise ValueError("epoch out of range")
    info = bytes(((epoch >> 24) & 0xFF, (epoch >> 16) & 0xFF, (epoch >> 8) & 0xFF, epoch & 0xFF))
    return hkdf_sha256(pseudo_key, _SALT, info, 32)


def pseudonym(pseudo_key, epoch, value):
    """8-byte keyed pseudonym of `value` (bytes) in epoch `epoch` (allocates)."""
    return hmac_sha256(epoch_key(pseudo_key, epoch), value)[:8]


def generalize(value, precision):
    """Round `value` to the nearest multiple of `precision` (ties away from zero)."""
    if precision <= 1:
        return value
    half = precision // 2
    if value >= 0:
        return (value + half) // precision * precision
    return -((-value + half) // precision * precision)


def suppressed(n, k):
    """True when a group of `n` contributions is too small to release under k-anonymity."""
    return n < k


def clamp(value, lo, hi):
    if value < lo:
        return lo
    if value > hi:
        return hi
    return value
