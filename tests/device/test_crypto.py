# veil.crypto against published known-answer vectors (RFC 4231, RFC 5869, RFC 3610,
# NIST SP 800-38C Appendix C), plus tamper and argument checks. Runs in MicroPython.
import binascii

from veil import VeilError
from veil.crypto import (
    CryptoError,
    ccm_decrypt,
    ccm_encrypt,
    ct_equal,
    hkdf_sha256,
    hmac_sha256,
)


def h(s):
    return binascii.unhexlify(s.replace(" ", "").replace("\n", ""))


def rng(a, b):
    return bytes(range(a, b))


# --- HMAC-SHA256: RFC 4231 §4 ----------------------------------------------------------


def test_hmac_rfc4231_case1():
    assert hmac_sha256(b"\x0b" * 20, b"Hi There") == h(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


def test_hmac_rfc4231_case2():
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?") == h(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_hmac_rfc4231_case3():
    assert hmac_sha256(b"\xaa" * 20, b"\xdd" * 50) == h(
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
    )


def test_hmac_rfc4231_case4():
    assert hmac_sha256(rng(1, 26), b"\xcd" * 50) == h(
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
    )


def test_hmac_rfc4231_case6_long_key():
    msg = b"Test Using Larger Than Block-Size Key - Hash Key First"
    assert hmac_sha256(b"\xaa" * 131, msg) == h(
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    )


def test_hmac_rfc4231_case7_long_key_and_data():
    msg = (
        b"This is a test using a larger than block-size key and a larger than "
        b"block-size data. The key needs to be hashed before being used by the "
        b"HMAC algorithm."
    )
    assert hmac_sha256(b"\xaa" * 131, msg) == h(
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
    )


def test_hmac_accepts_bytearray_and_memoryview():
    key = bytearray(b"Jefe")
    msg = memoryview(b"what do ya want for nothing?")
    assert hmac_sha256(key, msg) == hmac_sha256(b"Jefe", b"what do ya want for nothing?")


# --- HKDF-SHA256: RFC 5869 Appendix A ---------------------------------------------------


def test_hkdf_rfc5869_case1():
    okm = hkdf_sha256(b"\x0b" * 22, rng(0, 13), rng(0xF0, 0xFA), 42)
    assert okm == h(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    # The extract step alone is HMAC(salt, IKM): the PRK of case 1.
    assert hmac_sha256(rng(0, 13), b"\x0b" * 22) == h(
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    )


def test_hkdf_rfc5869_case2_long_inputs():
    okm = hkdf_sha256(rng(0, 0x50), rng(0x60, 0xB0), rng(0xB0, 0x100), 82)
    assert okm == h(
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87"
    )


def test_hkdf_rfc5869_case3_empty_salt_and_info():
    expect = h(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert hkdf_sha256(b"\x0b" * 22, b"", b"", 42) == expect
    assert hkdf_sha256(b"\x0b" * 22, None, b"", 42) == expect


def test_hkdf_length_limits():
    assert hkdf_sha256(b"k", b"s", b"i", 0) == b""
    assert len(hkdf_sha256(b"k", b"s", b"i", 255 * 32)) == 255 * 32
    for bad in (-1, 255 * 32 + 1):
        try:
            hkdf_sha256(b"k", b"s", b"i", bad)
        except CryptoError:
            pass
        else:
            raise AssertionError("length %d accepted" % bad)


# --- AES-CCM: RFC 3610 §8 packet vectors (M = 8, L = 2, 13-byte nonce) ----------------

_RFC3610_KEY = h("C0 C1 C2 C3 C4 C5 C6 C7 C8 C9 CA CB CC CD CE CF")

# (nonce, total packet, header length, expected packet = header || ciphertext || tag)
_RFC3610 = (
    (
        "00 00 00 03 02 01 00 A0 A1 A2 A3 A4 A5",
        rng(0, 0x1F),
        8,
        "00 01 02 03 04 05 06 07 58 8C 97 9A 61 C6 63 D2 F0 66 D0 C2 C0 F9 89 80"
        " 6D 5F 6B 61 DA C3 84 17 E8 D1 2C FD F9 26 E0",
    ),
    (
        "00 00 00 04 03 02 01 A0 A1 A2 A3 A4 A5",
        rng(0, 0x20),
        8,
        "00 01 02 03 04 05 06 07 72 C9 1A 36 E1 35 F8 CF 29 1C A8 94 08 5C 87 E3"
        " CC 15 C4 39 C9 E4 3A 3B A0 91 D5 6E 10 40 09 16",
    ),
    (
        "00 00 00 05 04 03 02 A0 A1 A2 A3 A4 A5",
        rng(0, 0x21),
        8,
        "00 01 02 03 04 05 06 07 51 B1 E5 F4 4A 19 7D 1D A4 6B 0F 8E 2D 28 2A E8"
        " 71 E8 38 BB 64 DA 85 96 57 4A DA A7 6F BD 9F B0 C5",
    ),
)


def test_ccm_rfc3610_packet_vectors_1_to_3():
    for nonce_hex, packet, hlen, expect_hex in _RFC3610:
        nonce = h(nonce_hex)
        expect = h(expect_hex)
        aad = packet[:hlen]
        pt = packet[hlen:]
        out = ccm_encrypt(_RFC3610_KEY, nonce, aad, pt)
        assert type(out) is bytes
        assert aad + out == expect, nonce_hex
        assert ccm_decrypt(_RFC3610_KEY, nonce, aad, expect[hlen:]) == pt


# --- AES-CCM: NIST SP 800-38C Appendix C (other nonce and tag lengths) -----------------

_NIST_KEY = rng(0x40, 0x50)


def test_ccm_nist_example1_7_byte_nonce_4_byte_tag():
    out = ccm_encrypt(_NIST_KEY, rng(0x10, 0x17), rng(0, 8), rng(0x20, 0x24), tag_len=4)
    assert out == h("7162015b 4dac255d")
    assert ccm_decrypt(_NIST_KEY, rng(0x10, 0x17), rng(0, 8), out, 4) == rng(0x20, 0x24)


def test_ccm_nist_example2_8_byte_nonce_6_byte_tag():
    out = ccm_encrypt(_NIST_KEY, rng(0x10, 0x18), rng(0, 16), rng(0x20, 0x30), tag_len=6)
    assert out == h("d2a1f0e051ea5f62081a7792073d593d 1fc64fbfaccd")


def test_ccm_nist_example3_12_byte_nonce_8_byte_tag():
    out = ccm_encrypt(_NIST_KEY, rng(0x10, 0x1C), rng(0, 20), rng(0x20, 0x38))
    assert out == h("e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5 484392fbc1b09951")


class _Pattern:
    # A long byte sequence (i & 0xff for i < n) that needs no heap: the test's 100 KiB
    # heap has no contiguous 64 KiB block to spare. CCM only takes len() and iterates AAD.
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        for i in range(self.n):
            yield i & 0xFF


def test_ccm_nist_example4_13_byte_nonce_64k_aad():
    # 65536 bytes of AAD: the 0xff 0xfe + 32-bit length encoding (RFC 3610 §2.2).
    aad = _Pattern(65536)
    nonce = rng(0x10, 0x1D)
    out = ccm_encrypt(_NIST_KEY, nonce, aad, rng(0x20, 0x40), tag_len=14)
    assert out == h(
        "69915dad1e84c6376a68c2967e4dab615ae0fd1faec44cc484828529463ccf72"
        " b4ac6bec93e8598e7f0dadbcea5b"
    )
    assert ccm_decrypt(_NIST_KEY, nonce, aad, out, 14) == rng(0x20, 0x40)


# --- AES-CCM: tampering and arguments -----------------------------------------------


def _rejects(fn, *args):
    try:
        fn(*args)
    except CryptoError:
        return True
    return False


def test_ccm_any_flipped_bit_fails():
    nonce = h("00 00 00 03 02 01 00 A0 A1 A2 A3 A4 A5")
    aad = rng(0, 8)
    ct = ccm_encrypt(_RFC3610_KEY, nonce, aad, rng(8, 0x1F))
    for i in range(len(ct)):  # every byte of ciphertext and tag
        for bit in (0x01, 0x80):
            bad = bytearray(ct)
            bad[i] ^= bit
            assert _rejects(ccm_decrypt, _RFC3610_KEY, nonce, aad, bad), (i, bit)
    for i in range(len(aad)):
        bad = bytearray(aad)
        bad[i] ^= 0x01
        assert _rejects(ccm_decrypt, _RFC3610_KEY, nonce, bad, ct), i
    bad_nonce = bytearray(nonce)
    bad_nonce[12] ^= 0x01
    assert _rejects(ccm_decrypt, _RFC3610_KEY, bad_nonce, aad, ct)
    bad_key = bytearray(_RFC3610_KEY)
    bad_key[0] ^= 0x01
    assert _rejects(ccm_decrypt, bad_key, nonce, aad, ct)
    assert _rejects(ccm_decrypt, _RFC3610_KEY, nonce, aad + b"\x00", ct)
    assert _rejects(ccm_decrypt, _RFC3610_KEY, nonce, aad, ct[:-1])
    assert _rejects(ccm_decrypt, _RFC3610_KEY, nonce, aad, ct + b"\x00")


def test_ccm_empty_payload_and_empty_aad():
    nonce = bytes(13)
    tag = ccm_encrypt(_NIST_KEY, nonce, b"", b"")
    assert len(tag) == 8
    assert ccm_decrypt(_NIST_KEY, nonce, b"", tag) == b""
    # No AAD and empty AAD are the same thing (RFC 3610 §2.2: Adata = 0).
    ct = ccm_encrypt(_NIST_KEY, nonce, b"", b"abc")
    assert ccm_decrypt(_NIST_KEY, nonce, bytearray(), ct) == b"abc"
    assert _rejects(ccm_decrypt, _NIST_KEY, nonce, b"x", ct)


def test_ccm_round_trip_lengths_across_block_boundaries():
    key = rng(0, 16)
    nonce = rng(0x30, 0x3D)
    for n in (1, 15, 16, 17, 31, 32, 33, 100, 1000):
        pt = bytes((i * 7) & 0xFF for i in range(n))
        for aad in (b"", b"a" * 14, b"b" * 15, b"c" * 30):
            ct = ccm_encrypt(key, nonce, aad, pt)
            assert len(ct) == n + 8
            assert ct[:n] != pt
            assert ccm_decrypt(key, nonce, aad, memoryview(ct)) == pt


def test_ccm_bad_arguments():
    nonce = bytes(13)
    key = bytes(16)
    assert _rejects(ccm_encrypt, bytes(15), nonce, b"", b"x")
    assert _rejects(ccm_encrypt, bytes(32), nonce, b"", b"x")  # AES-128 only
    assert _rejects(ccm_encrypt, key, bytes(6), b"", b"x")
    assert _rejects(ccm_encrypt, key, bytes(14), b"", b"x")
    for tag_len in (0, 2, 3, 5, 18):
        assert _rejects(ccm_encrypt, key, nonce, b"", b"x", tag_len)
    assert _rejects(ccm_encrypt, key, nonce, b"", _Pattern(65536))  # L = 2: max 65535
    assert _rejects(ccm_decrypt, key, nonce, b"", bytes(7))  # shorter than the tag
    assert issubclass(CryptoError, VeilError)


def test_ccm_several_kib_payload():
    # Well within L = 2's 65535 bytes; plaintext, work buffer and result share the heap.
    pt = bytes(8192)
    ct = ccm_encrypt(_NIST_KEY, bytes(13), b"", pt)
    assert ccm_decrypt(_NIST_KEY, bytes(13), b"", ct) == pt


def test_ct_equal():
    assert ct_equal(b"", b"")
    assert ct_equal(b"abc", bytearray(b"abc"))
    assert not ct_equal(b"abc", b"abd")
    assert not ct_equal(b"abc", b"ab")
    assert not ct_equal(b"\x80", b"\x00")
