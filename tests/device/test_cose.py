# veil.cose: COSE_Encrypt0 (AES-CCM-16-64-128) and COSE_Mac0 (HMAC 256/256), RFC 9052.
# Expected bytes are written out from the RFC's rules here, not taken from the code.
import binascii

from veil import VeilError, cbor
from veil.cose import decrypt0, encrypt0, mac0_create, mac0_verify, nonce_for, partial_iv
from veil.crypto import CryptoError, ccm_encrypt, hmac_sha256

KEY = bytes(range(0x10, 0x20))
BASE_IV = binascii.unhexlify("00a1a2a3a4a5a6a7a8a9aaabac")  # first byte 0x00 on purpose
KID = b"dev-0001"
PT = b"\x81\xa2\x00\x63tmp\x02\x18\x2a"  # a small SenML-like CBOR pack


def _raises(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except VeilError:
        return True
    return False


def test_partial_iv_is_minimal_big_endian():
    assert partial_iv(0) == b"\x00"
    assert partial_iv(1) == b"\x01"
    assert partial_iv(255) == b"\xff"
    assert partial_iv(256) == b"\x01\x00"
    assert partial_iv(2**32) == b"\x01\x00\x00\x00\x00"
    assert partial_iv(2**40 - 1) == b"\xff" * 5


def test_nonce_is_base_iv_xor_left_padded_partial_iv():
    # RFC 9052 §3.1
    assert nonce_for(BASE_IV, b"\x00") == BASE_IV
    assert nonce_for(BASE_IV, b"\x01\x00") == binascii.unhexlify("00a1a2a3a4a5a6a7a8a9aaaaac")
    assert nonce_for(b"\xff" * 13, b"\x0f") == b"\xff" * 12 + b"\xf0"


def test_encrypt0_wire_layout():
    msg = encrypt0(KEY, BASE_IV, KID, 256, PT)
    assert type(msg) is bytes
    # 16([h'a1010a', {4: kid, 6: h'0100'}, ct]) — tag 16, array of 3, protected bstr.
    assert msg[:6] == b"\xd0\x83\x43\xa1\x01\x0a"
    obj = cbor.loads(msg)
    assert obj.tag == 16
    protected, uhdr, ct = obj.value
    assert protected == b"\xa1\x01\x0a"
    assert uhdr == {4: KID, 6: b"\x01\x00"}
    # Ciphertext = AES-CCM(nonce, AAD = Enc_structure ["Encrypt0", h'a1010a', h''])
    aad = b"\x83\x68Encrypt0\x43\xa1\x01\x0a\x40"
    nonce = binascii.unhexlify("00a1a2a3a4a5a6a7a8a9aaaaac")
    assert ct == ccm_encrypt(KEY, nonce, aad, PT, 8)
    assert len(ct) == len(PT) + 8


def test_encrypt0_external_aad_is_bound():
    msg = encrypt0(KEY, BASE_IV, KID, 3, PT, b"ctx")
    aad = b"\x83\x68Encrypt0\x43\xa1\x01\x0a\x43ctx"
    assert cbor.loads(msg).value[2] == ccm_encrypt(KEY, nonce_for(BASE_IV, b"\x03"), aad, PT)
    assert decrypt0(KEY, BASE_IV, msg, external_aad=b"ctx") == (KID, 3, PT)
    assert _raises(decrypt0, KEY, BASE_IV, msg)


def test_round_trip_counters():
    for counter in (0, 1, 255, 256, 65535, 65536, 2**30 - 1, 2**30, 2**32, 2**40 - 1):
        msg = encrypt0(KEY, BASE_IV, KID, counter, PT)
        assert decrypt0(KEY, BASE_IV, msg) == (KID, counter, PT), counter
        assert decrypt0(KEY, BASE_IV, msg, kid=KID)[1] == counter
    assert decrypt0(KEY, BASE_IV, encrypt0(KEY, BASE_IV, KID, 7, b"")) == (KID, 7, b"")


def test_counters_give_distinct_nonces_and_ciphertexts():
    seen = set()
    for counter in (0, 1, 255, 256, 2**32):
        seen.add(cbor.loads(encrypt0(KEY, BASE_IV, KID, counter, PT)).value[2])
    assert len(seen) == 5


def test_counter_limits():
    for bad in (-1, 2**40, 2**41, True, 1.0, None, "1"):
        try:
            encrypt0(KEY, BASE_IV, KID, bad, PT)
        except CryptoError:
            pass
        else:
            raise AssertionError("counter %r accepted" % (bad,))


def test_bad_keys_and_kid_arguments():
    assert _raises(encrypt0, bytes(15), BASE_IV, KID, 0, PT)
    assert _raises(encrypt0, KEY, bytes(12), KID, 0, PT)
    assert _raises(encrypt0, KEY, BASE_IV, b"", 0, PT)
    assert _raises(encrypt0, KEY, BASE_IV, "kid", 0, PT)
    msg = encrypt0(KEY, BASE_IV, KID, 0, PT)
    assert _raises(decrypt0, KEY, bytes(14), msg)


def test_wrong_key_base_iv_or_kid_rejected():
    msg = encrypt0(KEY, BASE_IV, KID, 42, PT)
    other = bytearray(KEY)
    other[15] ^= 1
    assert _raises(decrypt0, bytes(other), BASE_IV, msg)
    iv = bytearray(BASE_IV)
    iv[0] ^= 1
    assert _raises(decrypt0, KEY, bytes(iv), msg)
    try:
        decrypt0(KEY, BASE_IV, msg, kid=b"dev-0002")
    except CryptoError:
        pass
    else:
        raise AssertionError("wrong kid accepted")


def test_any_tampered_byte_rejected():
    msg = encrypt0(KEY, BASE_IV, KID, 300, PT)
    for i in range(len(msg)):
        for bit in (0x01, 0x80):
            bad = bytearray(msg)
            bad[i] ^= bit
            # With the expected kid pinned, a changed kid byte fails too.
            assert _raises(decrypt0, KEY, BASE_IV, bytes(bad), KID), (i, bit)
    assert _raises(decrypt0, KEY, BASE_IV, msg + b"\x00")  # trailing byte
    assert _raises(decrypt0, KEY, BASE_IV, msg[:-1])  # truncated


def _msg(tag, protected, uhdr, ct):
    return cbor.dumps(cbor.Tag(tag, [protected, uhdr, ct]))


def test_strict_structure():
    good = cbor.loads(encrypt0(KEY, BASE_IV, KID, 5, PT)).value
    prot, uhdr, ct = good
    # The unmodified pieces reassemble to a message that decrypts.
    assert decrypt0(KEY, BASE_IV, _msg(16, prot, uhdr, ct)) == (KID, 5, PT)
    bad = [
        cbor.dumps(good),  # untagged
        _msg(17, prot, uhdr, ct),  # wrong tag
        cbor.dumps(cbor.Tag(16, [prot, uhdr])),  # two elements
        cbor.dumps(cbor.Tag(16, [prot, uhdr, ct, b""])),  # four elements
        _msg(16, b"\xa1\x01\x0b", uhdr, ct),  # other algorithm
        _msg(16, b"", uhdr, ct),  # empty protected
        _msg(16, b"\xa2\x01\x0a\x04\x41\x00", uhdr, ct),  # extra protected label
        _msg(16, prot, {4: KID}, ct),  # no Partial IV
        _msg(16, prot, {6: b"\x05"}, ct),  # no kid
        _msg(16, prot, {4: KID, 6: b"\x05", 5: bytes(13)}, ct),  # IV beside Partial IV
        _msg(16, prot, {4: KID, 6: b"\x05", 99: 0}, ct),  # unknown label
        _msg(16, prot, {4: KID, 6: b"\x00\x05"}, ct),  # Partial IV with leading zero
        _msg(16, prot, {4: KID, 6: b""}, ct),  # empty Partial IV
        _msg(16, prot, {4: KID, 6: b"\x01" * 6}, ct),  # Partial IV beyond 2**40
        _msg(16, prot, {4: KID, 6: 5}, ct),  # Partial IV not a bstr
        _msg(16, prot, {4: "dev", 6: b"\x05"}, ct),  # kid not a bstr
        _msg(16, prot, uhdr, ct[:7]),  # shorter than the tag
        _msg(16, prot, [], ct),  # unprotected not a map
        b"",
        b"\xd0",
    ]
    for i, m in enumerate(bad):
        assert _raises(decrypt0, KEY, BASE_IV, m), i
    # A duplicated label is refused by the decoder (a2 04 .. 04 ..).
    dup = b"\xd0\x83\x43\xa1\x01\x0a\xa3\x04\x41x\x06\x41\x05\x04\x41y" + cbor.dumps(ct)
    assert _raises(decrypt0, KEY, BASE_IV, dup)


# --- COSE_Mac0 --------------------------------------------------------------------------

MAC_KEY = bytes(range(32))
POLICY = cbor.dumps({"dev": "dev-0001", "streams": {}})


def test_mac0_wire_layout_and_tag():
    msg = mac0_create(MAC_KEY, POLICY, KID)
    # 17([h'a2 01 05 04 48 <kid>', {}, payload, tag32])
    protected = b"\xa2\x01\x05\x04\x48" + KID
    assert msg[:2] == b"\xd1\x84"
    obj = cbor.loads(msg)
    assert obj.tag == 17
    assert obj.value[0] == protected
    assert obj.value[1] == {}
    assert obj.value[2] == POLICY
    # RFC 9052 §6.3: MAC_structure = ["MAC0", protected, h'', payload]
    mac_structure = b"\x84\x64MAC0\x4d" + protected + b"\x40" + cbor.dumps(POLICY)
    assert obj.value[3] == hmac_sha256(MAC_KEY, mac_structure)


def test_mac0_round_trip():
    msg = mac0_create(MAC_KEY, POLICY, KID)
    assert mac0_verify(MAC_KEY, msg) == (KID, POLICY)
    assert mac0_verify(MAC_KEY, mac0_create(MAC_KEY, b"", b"k")) == (b"k", b"")


def test_mac0_any_flipped_byte_rejected():
    msg = mac0_create(MAC_KEY, POLICY, KID)
    for i in range(len(msg)):
        for bits in (0x01, 0xFF):
            bad = bytearray(msg)
            bad[i] ^= bits
            assert _raises(mac0_verify, MAC_KEY, bytes(bad)), (i, bits)
    assert _raises(mac0_verify, MAC_KEY, msg + b"\x00")
    assert _raises(mac0_verify, MAC_KEY, msg[:-1])


def test_mac0_wrong_key_rejected():
    msg = mac0_create(MAC_KEY, POLICY, KID)
    key = bytearray(MAC_KEY)
    key[0] ^= 0x80
    assert _raises(mac0_verify, bytes(key), msg)
    assert _raises(mac0_verify, b"", msg)


def test_mac0_strict_structure():
    obj = cbor.loads(mac0_create(MAC_KEY, POLICY, KID))
    prot, uhdr, payload, tag = obj.value
    assert mac0_verify(MAC_KEY, cbor.dumps(cbor.Tag(17, [prot, uhdr, payload, tag])))

    def remac(protected, unprotected=None):
        # A correctly MACed message with some other header: still refused by shape.
        ms = cbor.dumps(["MAC0", protected, b"", payload])
        return cbor.dumps(
            cbor.Tag(17, [protected, unprotected or {}, payload, hmac_sha256(MAC_KEY, ms)])
        )

    bad = [
        cbor.dumps(obj.value),  # untagged
        cbor.dumps(cbor.Tag(16, obj.value)),
        cbor.dumps(cbor.Tag(17, [prot, uhdr, payload])),
        remac(b"\xa1\x01\x05"),  # no kid
        remac(b"\xa2\x01\x07\x04\x41k"),  # alg 7 (HMAC 384/384)
        remac(b"\xa3\x01\x05\x04\x41k\x05\x40"),  # extra label
        remac(b"\xa2\x01\x05\x04\x61k"),  # kid as text
        remac(b"\xa2\x01\x05\x04\x41k", {4: b"k"}),  # non-empty unprotected
        remac(b"\xa2\x01\x05\x01\x05"),  # duplicate label
        remac(b"\xa2\x01\x05\x04\x41k\x00"),  # trailing byte in protected
        cbor.dumps(cbor.Tag(17, [prot, uhdr, payload, tag[:16]])),  # truncated tag
    ]
    for i, m in enumerate(bad):
        assert _raises(mac0_verify, MAC_KEY, m), i
