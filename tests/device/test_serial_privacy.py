# COBS framing on the console, and the privacy transforms.
from veil.privacy import clamp, generalize, pseudonym, suppressed
from veil.transport.serial import FrameError, SerialTransport, cobs_encode_into


def _enc(data):
    out = bytearray(len(data) + len(data) // 254 + 2)
    n = cobs_encode_into(data, out)
    return bytes(out[:n])


def test_cobs_published_examples():
    # Examples from the COBS description (Cheshire & Baker 1999; Wikipedia's table).
    assert _enc(b"\x00") == b"\x01\x01"
    assert _enc(b"\x00\x00") == b"\x01\x01\x01"
    assert _enc(b"\x00\x11\x00") == b"\x01\x02\x11\x01"
    assert _enc(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert _enc(b"\x11\x22\x33\x44") == b"\x05\x11\x22\x33\x44"
    assert _enc(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"
    run = bytes(range(1, 255))  # 254 non-zero bytes: no trailing 0x01 in our form
    assert _enc(run) == b"\xff" + run
    assert _enc(b"\x00" + run) == b"\x01\xff" + run
    assert _enc(run + b"\x00") == b"\xff" + run + b"\x01\x01"


def test_cobs_output_never_holds_zero():
    # Round trips through the host decoder: tests/interop/test_cobs_interop.py.
    for n in (0, 1, 2, 253, 254, 255, 300, 508, 509):
        for fill in (0, 1, 7):
            enc = _enc(bytes((i * fill) % 256 for i in range(n)))
            assert 0 not in enc
            assert len(enc) <= n + n // 254 + 1


class _Buf:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data.extend(b)


def test_serial_transport_frames_with_zero_both_sides():
    out = _Buf()
    t = SerialTransport(out, max_message=300)
    t.send(b"\xd0\x83\x00\x01")
    t.send(b"abc")
    assert bytes(out.data) == b"\x00\x03\xd0\x83\x02\x01\x00" + b"\x00\x04abc\x00"
    try:
        t.send(bytes(400))
        raise AssertionError("oversized message framed")
    except FrameError:
        pass


def test_generalize_to_precision():
    assert generalize(1234, 50) == 1250
    assert generalize(1224, 50) == 1200
    assert generalize(1225, 50) == 1250
    assert generalize(-1225, 50) == -1250
    assert generalize(-1224, 50) == -1200
    assert generalize(7, 1) == 7
    for v in range(-300, 300, 7):
        g = generalize(v, 25)
        assert g % 25 == 0 and abs(g - v) <= 12


def test_k_suppression_at_boundary():
    k = 5
    assert suppressed(k - 1, k)
    assert not suppressed(k, k)
    assert not suppressed(k + 1, k)


def test_clamp():
    assert clamp(5, 0, 3) == 3 and clamp(-1, 0, 3) == 0 and clamp(2, 0, 3) == 2


def test_pseudonyms_rotate_per_epoch_and_depend_on_key():
    key = b"\x11" * 32
    a0 = pseudonym(key, 0, b"device")
    a1 = pseudonym(key, 1, b"device")
    assert len(a0) == 8 and a0 != a1
    assert pseudonym(key, 0, b"device") == a0  # stable within an epoch
    assert pseudonym(b"\x12" * 32, 0, b"device") != a0
    assert pseudonym(key, 0, b"devicf") != a0
    seen = set(pseudonym(key, e, b"device") for e in range(50))
    assert len(seen) == 50
