"""The virtual board's SPI flash: a file the size of the chip, read and written in place.

    f = open('board.img', 'r+b')
    flash = Flash(f, 4 * 1024 * 1024)
    flash.erase(0x9000, 0x1000)         # sector aligned; fills with 0xFF as NOR flash does
    flash.write(0x9000, b'...')         # the caller erased first (no NOR AND-ing here)
    flash.readinto(0x9000, buf)

MicroPython code that runs inside the VM (the unix port, whose `open()` returns an
unbuffered FileIO). Nothing is cached on the Python side, so a SIGKILL at any point leaves
the file exactly as the writes so far made it. A file shorter than `size` reads as erased
(0xFF) past its end, as a freshly created sparse image would after `erase`. An access
outside the flash raises OSError(EINVAL).

Allocation: none per call, apart from the memoryview `readinto` makes for a short read.
"""

from errno import EINVAL

_SECTOR = const(4096)
_FILL = const(512)  # bytes of 0xFF written per step of an erase

_ff = b"\xff" * _FILL


class Flash:
    def __init__(self, f, size):
        self._f = f
        self.size = size

    def _check(self, off, n):
        if off < 0 or n < 0 or off + n > self.size:
            raise OSError(EINVAL)

    def readinto(self, off, buf):
        n = len(buf)
        self._check(off, n)
        f = self._f
        f.seek(off)
        got = f.readinto(buf) or 0
        if got < n:
            # Past the end of a short image file: erased flash.
            mv = memoryview(buf)
            for i in range(got, n):
                mv[i] = 0xFF

    def write(self, off, data):
        self._check(off, len(data))
        f = self._f
        f.seek(off)
        f.write(data)

    def erase(self, off, length):
        if off % _SECTOR or length % _SECTOR:
            raise OSError(EINVAL)
        self._check(off, length)
        f = self._f
        f.seek(off)
        while length > 0:
            f.write(_ff)
            length -= _FILL
