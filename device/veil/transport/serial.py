"""Serial transport: COSE messages as COBS frames on the console UART.

    t = SerialTransport()        # writes to sys.stdout.buffer (the REPL UART on a board)
    t.send(cose_bytes)           # -> 0x00 || COBS(cose_bytes) || 0x00

COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", 1999) removes every 0x00
from the message, so a 0x00 on each side delimits the frame and console text (which never
contains 0x00) printed between frames is never glued to one. This encoder never emits the
trailing 0x01 code byte after a final run of 254 non-zero bytes (notes/library-pitfalls.md).
The device only encodes; readers (edgeveil.frames on the host) decode.
"""

import sys

from micropython import const

from veil import VeilError
from veil.transport import register

_MAX = const(1024)  # largest message; a report is a few hundred bytes


class FrameError(VeilError):
    pass


def cobs_encode_into(data, out):
    """COBS-encode `data` into bytearray `out`; returns the encoded length. Allocates nothing."""
    n = len(data)
    if len(out) < n + n // 254 + 1:
        raise FrameError("frame buffer too small")
    code_at = 0
    o = 1
    code = 1
    for i in range(n):
        b = data[i]
        if b:
            out[o] = b
            o += 1
            code += 1
        if not b or code == 0xFF:
            if not b or i + 1 < n:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
            # A full run that ends the data gets no extra 0x01 code byte.
    out[code_at] = code
    return o


class SerialTransport:
    """Writes frames to a stream (default the console); buffers are made once."""

    def __init__(self, stream=None, max_message=_MAX):
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._buf = bytearray(max_message + max_message // 254 + 3)

    def send(self, msg):
        buf = self._buf
        if len(msg) > len(buf) - 3 - len(msg) // 254:
            raise FrameError("message of %d bytes exceeds the frame buffer" % len(msg))
        buf[0] = 0
        n = cobs_encode_into(msg, memoryview(buf)[1:])
        buf[n + 1] = 0
        self._stream.write(memoryview(buf)[: n + 2])
        if hasattr(self._stream, "flush"):
            self._stream.flush()


register("serial", SerialTransport)
