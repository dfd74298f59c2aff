"""The board's littlefs `vfs` partition, read and written from the host (littlefs-python).

MicroPython on ESP32 mounts the partition labelled `vfs` at `/` as `vfs.VfsLfs2` with its
default geometry; these functions use the same, so what the board wrote reads back here
and what is made here mounts on the board.

    with open_vfs("board.img", board) as fs:          # a flash file (or its bytes)
        fs.files()                                     # {'/boot.py': b'...', ...}
    image = make_vfs_image({"main.py": b"print(1)"}, size=0x200000)   # factory image
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from littlefs import LFSStat, LittleFS, LittleFSError, UserContext

from .boards import Board, Partition
from .closing import Closing
from .errors import ImageError

# vfs.VfsLfs2's defaults (MicroPython extmod/vfs_lfs.c: readsize=32, progsize=32,
# lookahead=32) and what extmod/vfs_lfsx.c derives from them for littlefs 2.
BLOCK_SIZE = 4096  # the ESP32 flash sector; esp32.Partition reports it as the block size
READ_SIZE = 32
PROG_SIZE = 32
LOOKAHEAD_SIZE = 32
BLOCK_CYCLES = 100
CACHE_SIZE = 4 * max(READ_SIZE, PROG_SIZE)
DISK_VERSION = 0x00020001  # what MicroPython 1.29's littlefs writes (on-disk format 2.1)
VFS_LABEL = "vfs"


def new_littlefs(context: UserContext, block_count: int) -> LittleFS:
    """An unmounted littlefs-python filesystem with MicroPython's VfsLfs2 geometry."""
    return LittleFS(
        context=context,
        mount=False,
        block_size=BLOCK_SIZE,
        block_count=block_count,
        read_size=READ_SIZE,
        prog_size=PROG_SIZE,
        cache_size=CACHE_SIZE,
        lookahead_size=LOOKAHEAD_SIZE,
        block_cycles=BLOCK_CYCLES,
        disk_version=DISK_VERSION,
    )


def vfs_partition(board: Board) -> Partition:
    """The board's `vfs` partition.

    Raises:
        ImageError: the board has none, or its size is not a whole number of blocks.
    """
    for p in board.partitions:
        if p.name == VFS_LABEL:
            if p.size % BLOCK_SIZE or p.offset % BLOCK_SIZE:
                raise ImageError(f"board {board.name}: vfs partition is not 4 KiB aligned")
            return p
    raise ImageError(f"board {board.name} has no '{VFS_LABEL}' partition")


class _BufferRegion(UserContext):  # type: ignore[misc]
    """A window of a bytearray (a flash image in memory) as littlefs's block device."""

    def __init__(self, buffer: bytearray, base: int, size: int) -> None:
        self.buffer, self.base, self.in_size = buffer, base, size

    def read(self, cfg: Any, block: int, off: int, size: int) -> bytearray:
        start = self.base + block * BLOCK_SIZE + off
        return self.buffer[start : start + size]

    def prog(self, cfg: Any, block: int, off: int, data: bytes) -> int:
        start = self.base + block * BLOCK_SIZE + off
        self.buffer[start : start + len(data)] = data
        return 0

    def erase(self, cfg: Any, block: int) -> int:
        start = self.base + block * BLOCK_SIZE
        self.buffer[start : start + BLOCK_SIZE] = b"\xff" * BLOCK_SIZE
        return 0

    def sync(self, cfg: Any) -> int:
        return 0


class _FileRegion(UserContext):  # type: ignore[misc]
    """A window of a flash file. Every write goes straight to the file (no cache here)."""

    def __init__(self, fd: int, base: int, size: int) -> None:
        self.fd, self.base, self.in_size = fd, base, size

    def read(self, cfg: Any, block: int, off: int, size: int) -> bytearray:
        return bytearray(os.pread(self.fd, size, self.base + block * BLOCK_SIZE + off))

    def prog(self, cfg: Any, block: int, off: int, data: bytes) -> int:
        os.pwrite(self.fd, data, self.base + block * BLOCK_SIZE + off)
        return 0

    def erase(self, cfg: Any, block: int) -> int:
        os.pwrite(self.fd, b"\xff" * BLOCK_SIZE, self.base + block * BLOCK_SIZE)
        return 0

    def sync(self, cfg: Any) -> int:
        os.fsync(self.fd)
        return 0


class _ReadRegion(UserContext):  # type: ignore[misc]
    """A partition read a block at a time through `read(offset, length)` (a chip's flash
    through esptool), each block once; writes are refused.

    littlefs-python prints and ignores an exception raised in this callback, and goes on
    with whatever the buffer held: a failed read is therefore kept in `error` (and answered
    with erased bytes), and `BoardVfs` raises it after the operation that met it.
    """

    def __init__(self, read: Callable[[int, int], bytes], size: int) -> None:
        self.fetch, self.in_size = read, size
        self.blocks: dict[int, bytes] = {}
        self.error: Exception | None = None

    def read(self, cfg: Any, block: int, off: int, size: int) -> bytearray:
        if block not in self.blocks:
            try:
                self.blocks[block] = self.fetch(block * BLOCK_SIZE, BLOCK_SIZE)
            except Exception as exc:  # noqa: BLE001 - kept, and raised by BoardVfs
                self.error = self.error or exc
                return bytearray(b"\xff" * size)
        return bytearray(self.blocks[block][off : off + size])

    def prog(self, cfg: Any, block: int, off: int, data: bytes) -> int:
        return -30  # LFS_ERR_ROFS

    def erase(self, cfg: Any, block: int) -> int:
        return -30

    def sync(self, cfg: Any) -> int:
        return 0


_Region = _BufferRegion | _FileRegion | _ReadRegion


def _norm(path: str) -> str:
    """An absolute littlefs path; refuses paths that climb out of the root."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise ImageError(f"bad file path {path!r}")
    return "/" + "/".join(parts)


class BoardVfs(Closing):
    """A mounted littlefs (the board's `vfs` partition). Use as a context manager."""

    def __init__(self, fs: LittleFS, region: _Region, fd: int = -1) -> None:
        self.fs = fs  # the littlefs-python object, for anything not wrapped here
        self._region = region
        self._fd = fd

    def listdir(self, path: str = "/") -> list[str]:
        names = sorted(self.fs.listdir(path))
        self._check_reads()
        return names

    def walk(self) -> Iterator[tuple[str, bool]]:
        """Every entry below `/` as (absolute path, is_dir), parents before children."""
        stack = ["/"]
        while stack:
            top = stack.pop()
            for name in self.listdir(top):
                path = posixpath.join(top, name)
                is_dir = self.fs.stat(path).type == LFSStat.TYPE_DIR
                yield path, is_dir
                if is_dir:
                    stack.append(path)

    def read(self, path: str) -> bytes:
        with self.fs.open(_norm(path), "rb") as f:
            data: bytes = f.read()
        self._check_reads()
        return data

    def _check_reads(self) -> None:
        """Raise the first read of the partition that failed (see `_ReadRegion`): what
        littlefs made of the stand-in bytes is not to be trusted."""
        error = getattr(self._region, "error", None)
        if error is not None:
            raise error

    def files(self) -> dict[str, bytes]:
        """Every regular file, by absolute path."""
        return {p: self.read(p) for p, is_dir in self.walk() if not is_dir}

    def write(self, path: str, data: bytes) -> None:
        """Write a file, making its parent directories."""
        path = _norm(path)
        parent = posixpath.dirname(path)
        if parent != "/":
            self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def mkdir(self, path: str) -> None:
        self.fs.makedirs(_norm(path), exist_ok=True)

    def remove(self, path: str) -> None:
        self.fs.remove(_norm(path), recursive=True)

    def image(self) -> bytes:
        """The partition's bytes (for a filesystem opened from bytes)."""
        r = self._region
        if isinstance(r, _BufferRegion):
            return bytes(r.buffer[r.base : r.base + r.in_size])
        if isinstance(r, _ReadRegion):
            return b"".join(r.fetch(at, BLOCK_SIZE) for at in range(0, r.in_size, BLOCK_SIZE))
        return os.pread(r.fd, r.in_size, r.base)

    def close(self) -> None:
        try:
            self.fs.unmount()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _mount(region: _Region, where: str, fd: int = -1) -> BoardVfs:
    fs = new_littlefs(region, region.in_size // BLOCK_SIZE)
    vfs = BoardVfs(fs, region, fd)
    try:
        try:
            fs.mount()
        finally:
            vfs._check_reads()  # a failed read, not a blank partition, if one failed
    except LittleFSError as exc:
        if fd >= 0:
            os.close(fd)
        raise ImageError(
            f"{where} holds no littlefs filesystem (blank or corrupt): {exc}"
        ) from exc
    return vfs


def open_vfs(
    flash: bytes | bytearray | str | Path, board: Board, writable: bool = False
) -> BoardVfs:
    """Mount `board`'s vfs partition from a whole flash image.

    Args:
        flash: the flash file's path, or its bytes. A `bytearray` is changed in place by
            writes; `bytes` are copied first.
        board: gives the partition's offset and size.
        writable: open a flash file for writing (bytes are always writable).

    Raises:
        ImageError: no vfs partition, the flash is too small, or no filesystem is there.
    """
    part = vfs_partition(board)
    where = f"vfs partition at {part.offset:#x}"
    if isinstance(flash, bytes | bytearray):
        buf = flash if isinstance(flash, bytearray) else bytearray(flash)
        if len(buf) < part.offset + part.size:
            raise ImageError(f"flash image of {len(buf)} bytes ends before the {where}")
        return _mount(_BufferRegion(buf, part.offset, part.size), where)
    try:
        fd = os.open(flash, os.O_RDWR if writable else os.O_RDONLY)
    except OSError as exc:
        raise ImageError(f"cannot open flash file {flash}: {exc.strerror}") from exc
    if os.fstat(fd).st_size < part.offset + part.size:
        os.close(fd)
        raise ImageError(f"flash file {flash} ends before the {where}")
    return _mount(_FileRegion(fd, part.offset, part.size), f"{flash}: {where}", fd)


def read_vfs(read: Callable[[int, int], bytes], size: int, where: str) -> BoardVfs:
    """Mount, read-only, a vfs partition of `size` bytes read on demand through
    `read(offset in the partition, length)`: only the blocks littlefs asks for are read
    (a board's flash through `edgeveil.flash.Chip.read`, without reading megabytes).

    Raises:
        ImageError: no filesystem is there (naming `where`).
    """
    return _mount(_ReadRegion(read, size), where)


def list_files(flash: bytes | bytearray | str | Path, board: Board) -> list[str]:
    """Absolute paths of every regular file on the board's filesystem."""
    with open_vfs(flash, board) as fs:
        return [p for p, is_dir in fs.walk() if not is_dir]


def read_file(flash: bytes | bytearray | str | Path, board: Board, path: str) -> bytes:
    """One file's contents.

    Raises:
        ImageError: no filesystem; FileNotFoundError: no such file.
    """
    with open_vfs(flash, board) as fs:
        return fs.read(path)


def read_tree(flash: bytes | bytearray | str | Path, board: Board) -> dict[str, bytes]:
    """Every file on the board's filesystem, by absolute path."""
    with open_vfs(flash, board) as fs:
        return fs.files()


def make_vfs_image(files: Mapping[str, bytes], size: int) -> bytes:
    """A littlefs image of `size` bytes holding `files` (path -> contents), for a vfs
    partition; parent directories are made as needed.

    Raises:
        ImageError: size is not a whole number of blocks, a path is bad, or the files
            do not fit.
    """
    if size <= 0 or size % BLOCK_SIZE:
        raise ImageError(f"filesystem size {size:#x} is not a whole number of 4 KiB blocks")
    region = _BufferRegion(bytearray(b"\xff" * size), 0, size)
    fs = new_littlefs(region, size // BLOCK_SIZE)
    fs.format()
    fs.mount()
    vfs = BoardVfs(fs, region)
    try:
        for path in sorted(files):
            vfs.write(path, files[path])
    except LittleFSError as exc:
        raise ImageError(f"files do not fit a {size:#x}-byte filesystem: {exc}") from exc
    finally:
        vfs.close()
    return bytes(region.buffer)
