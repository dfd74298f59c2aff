"""Split a serial byte stream into COBS frames and console text.

    for item in split_stream(data):
        item.kind    # "frame" (decoded COSE bytes), "text", or "bad" (undecodable frame)

Frames are `0x00 COBS(msg) 0x00` (docs/wire-format.md). Console text never contains 0x00,
so everything between two 0x00 bytes is one frame candidate. A frame whose leading 0x00
was lost arrives glued to the console text before it; the reader then tries the longest
suffix of that text that decodes as a frame whose content is valid CBOR (tag 16), and
reports the rest as text. Nothing is dropped silently: undecodable candidates come back
as "bad" items with their offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import DecodeError


@dataclass(frozen=True)
class StreamItem:
    kind: str  # "frame" | "text" | "bad"
    offset: int  # where the item starts in the stream
    data: bytes  # decoded message for frames, raw bytes otherwise
    error: str = ""


def cobs_decode(frame: bytes) -> bytes:
    """Decode one COBS frame; accepts both forms of a trailing 254-byte run.

    Raises:
        DecodeError: a code byte points past the end, or the frame holds 0x00.
    """
    out = bytearray()
    i, n = 0, len(frame)
    if n == 0:
        raise DecodeError("empty COBS frame")
    while i < n:
        code = frame[i]
        end = i + code
        if code == 0 or end > n:
            raise DecodeError(f"bad COBS code byte {code:#04x} at offset {i}")
        chunk = frame[i + 1 : end]
        if 0 in chunk:
            raise DecodeError(f"0x00 inside a COBS frame at offset {i + 1 + chunk.index(0)}")
        out += chunk
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` (the same form the device emits: no trailing 0x01 after a full run)."""
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
            continue
        block.append(b)
        if len(block) == 254:
            out += b"\xff" + block
            block.clear()
    if block or not data or data[-1] == 0 or len(out) == 0:
        out += bytes([len(block) + 1]) + block
    return bytes(out)


_MAX_FRAME = 4096  # longest frame searched for inside a piece glued to console text


def _looks_like_message(msg: bytes) -> bool:
    # COSE_Encrypt0 is CBOR tag 16 (0xd0) around a 3-element array (0x83).
    return len(msg) > 2 and msg[0] == 0xD0 and msg[1] == 0x83


def _is_text(chunk: bytes) -> bool:
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _classify(piece: bytes, offset: int) -> Iterator[StreamItem]:
    """One piece between 0x00 bytes: a frame, text, text glued to a frame, or bad."""
    for start in range(max(0, len(piece) - _MAX_FRAME), len(piece)):
        try:
            msg = cobs_decode(piece[start:])
        except DecodeError:
            continue
        if _looks_like_message(msg) and _is_text(piece[:start]):
            if start:
                yield StreamItem("text", offset, piece[:start])
            yield StreamItem("frame", offset + start, msg)
            return
    if _is_text(piece):
        yield StreamItem("text", offset, piece)
        return
    try:
        cobs_decode(piece)
        why = "decodes as COBS but is not a COSE_Encrypt0 message"
    except DecodeError as exc:
        why = str(exc)
    yield StreamItem("bad", offset, piece, why)


def split_stream(data: bytes) -> Iterator[StreamItem]:
    """Items in `data`, in order, classified piece by piece between 0x00 delimiters.

    Each piece is judged on its own (text never holds 0x00, a frame never does), so a lost
    or doubled delimiter affects only the piece it touches.
    """
    pos = 0
    while pos < len(data):
        nxt = data.find(b"\x00", pos)
        end = len(data) if nxt < 0 else nxt
        if end > pos:
            yield from _classify(data[pos:end], pos)
        pos = end + 1
