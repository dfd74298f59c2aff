"""COSE (RFC 9052) for veil: COSE_Encrypt0 with AES-CCM-16-64-128, COSE_Mac0 with HMAC 256/256.

    from veil import cose
    msg = cose.encrypt0(key16, base_iv13, kid, counter, plaintext)   # tag 16, bytes
    kid, counter, plaintext = cose.decrypt0(key16, base_iv13, msg)  # CryptoError/CBORError
    sig = cose.mac0_create(policy_key, payload, kid)                  # tag 17, bytes
    kid, payload = cose.mac0_verify(policy_key, sig)                  # CryptoError/CBORError

COSE_Encrypt0 (RFC 9052 §5.2), exactly this shape and nothing else:

    16([ h'a1010a',                 / protected: {1: 10}, alg AES-CCM-16-64-128 /
         {4: kid, 6: partial_iv},   / unprotected: kid, Partial IV /
         ciphertext || 8-byte tag ])

The Partial IV is the message counter, big-endian with leading zeros removed (at least one
byte); the nonce is the 13-byte Base IV XOR the Partial IV left-padded to 13 bytes
(RFC 9052 §3.1). The counter must never repeat for a key: the caller persists it.

COSE_Mac0 (RFC 9052 §6.2) authenticates the privacy policy. The kid rides in the
*protected* header so that it is covered by the MAC and no byte of the message can change
without failing verification:

    17([ h'a2010504' + bstr(kid),   / protected: {1: 5, 4: kid}, alg HMAC 256/256 /
         {},                        / unprotected: empty /
         payload,
         32-byte tag ])

Both decoders are strict: exactly these labels, no duplicates (veil.cbor rejects them),
no trailing bytes, tag present. Allocation: every function allocates (it runs at window
close or at boot, never per sample). Counters up to 2**40 are long ints on a 31-bit port;
that is fine here, off the per-sample path.
"""

from micropython import const

from veil import cbor
from veil.crypto import CryptoError, ccm_decrypt, ccm_encrypt, ct_equal, hmac_sha256

# RFC 9052 §3.1 common header labels.
_H_ALG = const(1)
_H_KID = const(4)
_H_IV = const(5)
_H_PARTIAL_IV = const(6)
# RFC 9052 §2 CBOR tags.
_TAG_ENCRYPT0 = const(16)
_TAG_MAC0 = const(17)
# RFC 9053 §4.2 / §3.1 algorithm ids.
_ALG_CCM_16_64_128 = const(10)
_ALG_HMAC_256_256 = const(5)

_NONCE_LEN = const(13)  # AES-CCM-16-64-128: L = 2, 13-byte nonce
_TAG_LEN = const(8)
_KEY_LEN = const(16)
_PIV_MAX_LEN = const(5)  # counter < 2**40
COUNTER_LIMIT = 1 << 40  # message counters are 0 .. COUNTER_LIMIT - 1
_MAC_LEN = const(32)

# The encoded protected header {1: 10}: the only one accepted (RFC 9052 §3: the bstr as
# sent is what enters the AAD, so it is compared byte for byte).
ENC0_PROTECTED = b"\xa1\x01\x0a"
_MAC0_PROTECTED_HEAD = b"\xa2\x01\x05\x04"  # {1: 5, 4: ...} then the kid bstr


def _check_keys(key, base_iv):
    if len(key) != _KEY_LEN:
        raise CryptoError("COSE key must be 16 bytes")
    if base_iv is not None and len(base_iv) != _NONCE_LEN:
        raise CryptoError("base IV must be 13 bytes")


def _check_kid(kid):
    t = type(kid)
    if not (t is bytes or t is bytearray or t is memoryview) or not len(kid):
        raise CryptoError("kid must be non-empty bytes")


def partial_iv(counter):
    """The Partial IV of `counter`: big-endian, leading zeros removed, at least 1 byte."""
    if type(counter) is not int or counter < 0 or counter >= COUNTER_LIMIT:
        raise CryptoError("counter must be an int in 0 .. 2**40 - 1")
    n = 1
    while counter >> (8 * n):
        n += 1
    piv = bytearray(n)
    for i in range(n):
        piv[n - 1 - i] = (counter >> (8 * i)) & 0xFF
    return bytes(piv)


def nonce_for(base_iv, piv):
    """RFC 9052 §3.1: Partial IV left-padded to the nonce length, XORed with the Base IV."""
    nonce = bytearray(base_iv)
    off = _NONCE_LEN - len(piv)
    for i in range(len(piv)):
        nonce[off + i] ^= piv[i]
    return bytes(nonce)


def _enc_structure(protected, external_aad):
    # RFC 9052 §5.3: Enc_structure = ["Encrypt0", protected bstr, external_aad bstr]
    return cbor.dumps(["Encrypt0", protected, bytes(external_aad)])


def encrypt0(key, base_iv, kid, counter, plaintext, external_aad=b""):
    """COSE_Encrypt0 (tag 16) of `plaintext` under `key`, message number `counter`."""
    _check_keys(key, base_iv)
    _check_kid(kid)
    piv = partial_iv(counter)
    aad = _enc_structure(ENC0_PROTECTED, external_aad)
    ct = ccm_encrypt(key, nonce_for(base_iv, piv), aad, plaintext, _TAG_LEN)
    uhdr = {_H_KID: bytes(kid), _H_PARTIAL_IV: piv}
    return cbor.dumps(cbor.Tag(_TAG_ENCRYPT0, [ENC0_PROTECTED, uhdr, ct]))


def _cose_array(msg, tag, n):
    # Strict outer shape: one CBOR item (no trailing bytes), tag `tag`, array of n.
    obj = cbor.loads(msg)
    if not isinstance(obj, cbor.Tag) or obj.tag != tag:
        raise CryptoError("not a tagged COSE message (tag %d required)" % tag)
    arr = obj.value
    if type(arr) is not list or len(arr) != n:
        raise CryptoError("COSE message must be an array of %d" % n)
    return arr


def decrypt0(key, base_iv, msg, kid=None, external_aad=b""):
    """Decrypt a COSE_Encrypt0; return (kid, counter, plaintext).

    If `kid` is given, the message's kid must equal it. Raises CryptoError for anything
    outside the accepted shape or failing authentication, CBORError for malformed CBOR.
    """
    _check_keys(key, base_iv)
    protected, uhdr, ct = _cose_array(msg, _TAG_ENCRYPT0, 3)
    if type(protected) is not bytes or protected != ENC0_PROTECTED:
        raise CryptoError("protected header must be {1: 10}")
    if type(uhdr) is not dict:
        raise CryptoError("unprotected header must be a map")
    if _H_IV in uhdr:
        # RFC 9052 §3.1: IV and Partial IV must not both be present.
        raise CryptoError("IV (label 5) is not accepted")
    for label in uhdr:
        if type(label) is not int or (label != _H_KID and label != _H_PARTIAL_IV):
            raise CryptoError("unexpected unprotected header label %r" % (label,))
    got_kid = uhdr.get(_H_KID)
    piv = uhdr.get(_H_PARTIAL_IV)
    if type(got_kid) is not bytes or not got_kid:
        raise CryptoError("kid (label 4) missing")
    if type(piv) is not bytes or not 1 <= len(piv) <= _PIV_MAX_LEN:
        raise CryptoError("Partial IV (label 6) missing or longer than 5 bytes")
    if len(piv) > 1 and piv[0] == 0:
        raise CryptoError("Partial IV has leading zeros")
    if kid is not None and not ct_equal(got_kid, kid):
        raise CryptoError("kid mismatch")
    if type(ct) is not bytes or len(ct) < _TAG_LEN:
        raise CryptoError("ciphertext missing or shorter than the tag")
    counter = 0
    for b in piv:
        counter = (counter << 8) | b
    aad = _enc_structure(protected, external_aad)
    pt = ccm_decrypt(key, nonce_for(base_iv, piv), aad, ct, _TAG_LEN)
    return got_kid, counter, pt


def _mac_structure(protected, payload):
    # RFC 9052 §6.3: MAC_structure = ["MAC0", protected, external_aad (empty), payload]
    return cbor.dumps(["MAC0", protected, b"", payload])


def mac0_create(key, payload, kid):
    """COSE_Mac0 (tag 17) of `payload` under `key` with HMAC 256/256; kid is protected."""
    _check_kid(kid)
    if not len(key):
        raise CryptoError("MAC key must not be empty")
    payload = bytes(payload)
    protected = _MAC0_PROTECTED_HEAD + cbor.dumps(bytes(kid))
    tag = hmac_sha256(key, _mac_structure(protected, payload))
    return cbor.dumps(cbor.Tag(_TAG_MAC0, [protected, {}, payload, tag]))


def mac0_verify(key, msg):
    """Verify a COSE_Mac0 made by mac0_create; return (kid, payload).

    Raises CryptoError for a wrong key, any changed byte or any other shape, CBORError for
    malformed CBOR.
    """
    if not len(key):
        raise CryptoError("MAC key must not be empty")
    protected, uhdr, payload, tag = _cose_array(msg, _TAG_MAC0, 4)
    if type(protected) is not bytes or type(payload) is not bytes or type(tag) is not bytes:
        raise CryptoError("COSE_Mac0 fields must be byte strings")
    if type(uhdr) is not dict or uhdr:
        raise CryptoError("unprotected header must be empty")
    phdr = cbor.loads(protected)  # strict: one map, no duplicate labels
    if type(phdr) is not dict or len(phdr) != 2 or _H_ALG not in phdr or _H_KID not in phdr:
        raise CryptoError("protected header must be {1: 5, 4: kid}")
    alg = phdr[_H_ALG]
    for label in phdr:
        if type(label) is not int:
            raise CryptoError("protected header labels must be integers")
    if type(alg) is not int or alg != _ALG_HMAC_256_256:
        raise CryptoError("protected header must be {1: 5, 4: kid}")
    kid = phdr.get(_H_KID)
    if type(kid) is not bytes or not kid:
        raise CryptoError("kid (label 4) missing from the protected header")
    if len(tag) != _MAC_LEN:
        raise CryptoError("MAC tag must be 32 bytes")
    if not ct_equal(hmac_sha256(key, _mac_structure(protected, payload)), tag):
        raise CryptoError("COSE_Mac0 authentication failed")
    return kid, payload
