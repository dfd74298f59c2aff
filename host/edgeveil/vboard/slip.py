"""SLIP framing (RFC 1055) as the ESP32 ROM loader and esptool use it, and the checksum
the loader puts on data blocks.

Each packet is wrapped in 0xC0 bytes; inside it 0xC0 travels as DB DC and 0xDB as DB DD.
`SlipDecoder.feed` keeps a partial frame between calls and ignores bytes between frames.
"""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
_END = b"\xc0"
MAX_FRAME = 0x10000  # larger than any request (0x4000 data + headers), escapes included


def slip_encode(packet: bytes) -> bytes:
    """Return `packet` escaped and wrapped in 0xC0 delimiters."""
    return _END + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + _END


def checksum(data: bytes) -> int:
    """The loader's data checksum: 0xEF XOR every byte (notes/esptool-rom-protocol.md §1)."""
    x, width = int.from_bytes(data, "little"), len(data)
    while width > 1:  # fold the halves together, byte-aligned, until one byte remains
        half = (width + 1) // 2
        x = (x & ((1 << (8 * half)) - 1)) ^ (x >> (8 * half))
        width = half
    return 0xEF ^ (x & 0xFF)


def _unescape(raw: bytes) -> tuple[bytes, bool]:
    parts = raw.split(b"\xdb")
    out = bytearray(parts[0])
    ok = True
    for part in parts[1:]:
        if part[:1] == b"\xdc":
            out += b"\xc0"
        elif part[:1] == b"\xdd":
            out += b"\xdb"
        else:  # DB followed by anything else, or DB as the last byte
            ok = False
            out += part
            continue
        out += part[1:]
    return bytes(out), ok


class SlipDecoder:
    """Incremental SLIP decoder.

    `feed` returns the frames completed by `data` as ``(packet, ok)`` pairs; ``ok`` is
    False when the frame held an invalid escape sequence (the packet is then best effort).
    An over-long frame is dropped and reported as ``(b"", False)``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False

    def reset(self) -> None:
        """Forget any partial frame."""
        self._buf.clear()
        self._in_frame = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        frames: list[tuple[bytes, bool]] = []
        pos, n = 0, len(data)
        while pos < n:
            end = data.find(_END, pos)
            if not self._in_frame:
                if end < 0:
                    break  # noise between frames
                self._in_frame, pos = True, end + 1
                continue
            if end < 0:
                self._buf += data[pos:]
                pos = n
            else:
                self._buf += data[pos:end]
                pos = end + 1
                if self._buf:  # C0 C0 is an end and a start; stay in the frame
                    frames.append(_unescape(bytes(self._buf)))
                    self._buf.clear()
                    self._in_frame = False
            if len(self._buf) > MAX_FRAME:
                frames.append((b"", False))
                self.reset()
        return frames
