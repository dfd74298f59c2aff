"""The virtual board's SPI NOR flash, kept in a plain file of the flash's size.

The ROM loader writes through `FlashFile`; the MicroPython VM opens the same file when the
app runs (never both at once). NOR semantics: erase sets whole 4 KiB sectors to 0xFF,
programming can only clear bits (new = old AND data). Every write goes straight to the file
with `os.pwrite`, so another process (or a crash) sees exactly the writes made so far.

    FlashFile.create_blank(path, 4 * 1024 * 1024)
    flash = FlashFile(path, 4 * 1024 * 1024)
    flash.erase(0x10000, 0x2000)
    flash.program(0x10000, image)
    flash.close()
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edgeveil.closing import Closing
from edgeveil.errors import VBoardError

SECTOR_SIZE = 0x1000
_CHUNK = 0x10000


class FlashFile(Closing):
    """NOR flash model over an existing file of exactly `size` bytes.

    Args:
        path: the board's flash file.
        size: the flash size in bytes (a whole number of sectors).

    Raises:
        VBoardError: the file is missing or its size is not `size`.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = Path(path)
        self.size = size
        if size <= 0 or size % SECTOR_SIZE:
            raise VBoardError(f"flash size {size:#x} is not a whole number of 4 KiB sectors")
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise VBoardError(f"cannot open flash file {self.path}: {exc.strerror}") from exc
        actual = os.fstat(self._fd).st_size
        if actual != size:
            os.close(self._fd)
            self._fd = -1
            raise VBoardError(
                f"flash file {self.path} holds {actual:#x} bytes, expected {size:#x}"
            )

    @staticmethod
    def create_blank(path: Path, size: int) -> None:
        """Create (or overwrite) `path` as an erased flash of `size` bytes (not opened)."""
        if size <= 0 or size % SECTOR_SIZE:
            raise VBoardError(f"flash size {size:#x} is not a whole number of 4 KiB sectors")
        with open(path, "wb") as f:
            f.write(b"\xff" * size)

    def _check(self, off: int, n: int, what: str) -> None:
        if self._fd < 0:
            raise VBoardError(f"flash file {self.path} is closed")
        if off < 0 or n < 0 or off + n > self.size:
            raise VBoardError(
                f"flash {what} {off:#x}+{n:#x} is outside the {self.size:#x}-byte flash"
            )

    def read(self, off: int, n: int) -> bytes:
        """Return `n` bytes from `off`."""
        self._check(off, n, "read")
        data = os.pread(self._fd, n, off)
        if len(data) != n:
            raise VBoardError(f"flash file {self.path} is shorter than {self.size:#x} bytes")
        return data

    def _write(self, off: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self._fd, view, off)
            view, off = view[done:], off + done

    def erase(self, off: int, length: int) -> None:
        """Set whole sectors to 0xFF; `off` and `length` must be sector aligned."""
        if off % SECTOR_SIZE or length % SECTOR_SIZE:
            raise VBoardError(f"flash erase {off:#x}+{length:#x} is not 4 KiB aligned")
        self._check(off, length, "erase")
        for pos in range(off, off + length, _CHUNK):
            self._write(pos, b"\xff" * min(_CHUNK, off + length - pos))

    def erase_all(self) -> None:
        """Erase the whole chip."""
        self.erase(0, self.size)

    def program(self, off: int, data: bytes) -> None:
        """Program `data` at `off` with NOR semantics: each byte becomes old AND new."""
        n = len(data)
        old = self.read(off, n)
        if old != b"\xff" * n:
            data = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(
                n, "little"
            )
        self._write(off, data)

    def md5(self, off: int, n: int) -> bytes:
        """Return the raw 16-byte MD5 of `n` bytes from `off`."""
        self._check(off, n, "read")
        digest = hashlib.md5()
        for pos in range(off, off + n, _CHUNK):
            digest.update(self.read(pos, min(_CHUNK, off + n - pos)))
        return digest.digest()

    def flush(self) -> None:
        """Push the file's pages to storage (writes are already visible to other readers)."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close; further access raises `VBoardError`."""
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1
