"""COBS frames made by the device's encoder decode with the host's reader."""

from __future__ import annotations

import pytest
from edgeveil.errors import DecodeError
from edgeveil.frames import cobs_decode, cobs_encode
from edgeveil.vm import run_code

_CASES = [
    bytes((i * fill) % 256 for i in range(n))
    for n in (0, 1, 2, 253, 254, 255, 300, 508, 509)
    for fill in (0, 1, 7)
]


def test_device_frames_decode_on_the_host_and_match_host_encoder() -> None:
    code = (
        "import binascii\nfrom veil.transport.serial import cobs_encode_into\n"
        f"for d in {_CASES!r}:\n"
        "    out = bytearray(len(d) + len(d) // 254 + 2)\n"
        "    n = cobs_encode_into(d, out)\n"
        "    print(binascii.hexlify(out[:n]).decode())\n"
    )
    r = run_code(code, 102400)
    assert r.ok, r.stdout + r.stderr
    lines = r.stdout.decode().split()
    assert len(lines) == len(_CASES)
    for data, line in zip(_CASES, lines, strict=True):
        frame = bytes.fromhex(line)
        assert cobs_decode(frame) == data
        assert frame == cobs_encode(data)


def test_host_reader_accepts_both_trailing_forms() -> None:
    run = bytes(range(1, 255))
    assert cobs_decode(b"\xff" + run) == run
    assert cobs_decode(b"\xff" + run + b"\x01") == run


@pytest.mark.parametrize("bad", [b"\x05\x11", b"\x00", b"\x03\x11\x00", b""])
def test_host_reader_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        cobs_decode(bad)
