"""The serial stream splitter: frames, console text, glued and damaged frames."""

from __future__ import annotations

import os

from edgeveil.frames import cobs_encode, split_stream


def _msg(n: int = 120) -> bytes:
    return b"\xd0\x83" + os.urandom(n)  # starts like a COSE_Encrypt0


def test_frames_and_text_in_order() -> None:
    a, b = _msg(), _msg(300)
    data = b"boot\r\n\x00" + cobs_encode(a) + b"\x00veil: hello\n\x00" + cobs_encode(b) + b"\x00"
    items = list(split_stream(data))
    assert [i.kind for i in items] == ["text", "frame", "text", "frame"]
    assert items[1].data == a and items[3].data == b
    assert items[2].data == b"veil: hello\n"


def test_frame_without_leading_zero_is_split_from_text() -> None:
    a = _msg()
    data = b"console line\n" + cobs_encode(a) + b"\x00"
    items = list(split_stream(data))
    assert [i.kind for i in items] == ["text", "frame"]
    assert items[0].data == b"console line\n" and items[1].data == a
    assert items[1].offset == len(b"console line\n")


def test_damaged_frame_is_reported_not_dropped() -> None:
    frame = bytearray(cobs_encode(_msg()))
    frame[0] = 0xFE  # code byte now points past the end
    items = list(split_stream(b"\x00" + bytes(frame) + b"\x00"))
    assert [i.kind for i in items] == ["bad"]
    assert items[0].offset == 1 and "COBS" in items[0].error


def test_trailing_partial_text_is_kept() -> None:
    items = list(split_stream(b"\x00" + cobs_encode(_msg()) + b"\x00tail"))
    assert [i.kind for i in items] == ["frame", "text"]
    assert items[1].data == b"tail"
