"""The board's littlefs partition from the host (edgeveil.lfs) against the real VM.

The oracle is MicroPython itself: `vfs.VfsLfs2` in the unix VM, with its default geometry,
over a block device on the same flash file (a small class written here, as a board's
`esp32.Partition` would be). What the VM writes reads back on the host byte for byte, and
what the host makes mounts and reads back in the VM.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.errors import ImageError
from edgeveil.lfs import (
    BLOCK_SIZE,
    DISK_VERSION,
    list_files,
    make_vfs_image,
    open_vfs,
    read_file,
    read_tree,
    read_vfs,
    vfs_partition,
)
from edgeveil.vm import run_code

BOARD = load_board("esp32-generic")
PART = vfs_partition(BOARD)

# A block device over the flash file, at the vfs partition's offset (readblocks/
# writeblocks with offsets, ioctl 4/5/6: the extended block protocol littlefs uses).
VM_PRELUDE = """
import vfs, os, hashlib, binascii
class BD:
    def __init__(self, f, base, n):
        self.f = f; self.base = base; self.n = n
    def readblocks(self, b, buf, off=0):
        self.f.seek(self.base + b * 4096 + off); self.f.readinto(buf)
    def writeblocks(self, b, buf, off=None):
        if off is None:
            self.ioctl(6, b); off = 0
        self.f.seek(self.base + b * 4096 + off); self.f.write(buf)
    def ioctl(self, op, arg):
        if op == 4: return self.n
        if op == 5: return 4096
        if op == 6:
            self.f.seek(self.base + arg * 4096); self.f.write(b'\\xff' * 4096); return 0
def pattern(n, k):
    return bytes((i * k + (i >> 8)) & 0xff for i in range(n))
f = open({flash!r}, 'r+b')
bd = BD(f, {base}, {blocks})
"""

# Walk the mounted filesystem: one line per entry, files with size and SHA-256.
VM_WALK = """
def walk(top):
    for name, kind, _, size in sorted(vfs_.ilistdir(top)):
        path = (top + '/' + name).replace('//', '/')
        if kind == 0x4000:
            print('D', path); walk(path)
        else:
            with open('/flash' + path, 'rb') as g:
                digest = hashlib.sha256(g.read()).digest()
            print('F', path, size, binascii.hexlify(digest).decode())
walk('/')
st = os.statvfs('/flash'); print('S', st[0], st[2])
"""


def pattern(n: int, k: int) -> bytes:
    return bytes((i * k + (i >> 8)) & 0xFF for i in range(n))


FILES = {
    "/boot.py": b"# boot.py\n",
    "/main.py": b"import veil\nveil.main()\n",
    "/empty.txt": b"",
    "/block.bin": pattern(BLOCK_SIZE, 7),  # exactly one block
    "/lib/veil/__init__.py": b"VERSION = '0.1'\n",
    "/lib/veil/data.bin": pattern(10000, 13),  # spans blocks, not inlined
    "/lib/deep/a/b/c.txt": b"deep",
    "/\u00fcn\u00ef.txt": "caf\u00e9".encode(),
}
# The same files as VM source: contents built there, so the source stays small.
VM_FILES = {
    "/boot.py": "b'# boot.py\\n'",
    "/main.py": "b'import veil\\nveil.main()\\n'",
    "/empty.txt": "b''",
    "/block.bin": "pattern(4096, 7)",
    "/lib/veil/__init__.py": "b\"VERSION = '0.1'\\n\"",
    "/lib/veil/data.bin": "pattern(10000, 13)",
    "/lib/deep/a/b/c.txt": "b'deep'",
    "/\u00fcn\u00ef.txt": "'caf\u00e9'.encode()",
}


def vm(code: str, flash: Path) -> str:
    prelude = VM_PRELUDE.format(flash=str(flash), base=PART.offset, blocks=PART.size // 4096)
    result = run_code(prelude + code, BOARD.heap_bytes, path=[])
    out = result.stdout.decode()
    assert result.ok, out + result.stderr.decode()
    return out


def blank_flash(tmp_path: Path) -> Path:
    path = tmp_path / "flash.img"
    path.write_bytes(b"\xff" * BOARD.flash_size)
    return path


def vm_make_fs(flash: Path) -> None:
    writes = "\n".join(
        f"mkdirs({path.rsplit('/', 1)[0]!r})\n"
        f"with open('/flash' + {path!r}, 'wb') as g: g.write({expr})"
        for path, expr in VM_FILES.items()
    )
    vm(
        "vfs.VfsLfs2.mkfs(bd)\n"
        "vfs.mount(vfs.VfsLfs2(bd), '/flash')\n"
        "def mkdirs(d):\n"
        "    p = '/flash'\n"
        "    for part in d.split('/')[1:]:\n"
        "        p += '/' + part\n"
        "        try: os.mkdir(p)\n"
        "        except OSError: pass\n" + writes + "\nvfs.umount('/flash')\nf.close()\n",
        flash,
    )


def expected_walk(files: dict[str, bytes]) -> set[str]:
    lines = set()
    for path, data in files.items():
        lines.add(f"F {path} {len(data)} {hashlib.sha256(data).hexdigest()}")
        parts = path.split("/")[1:-1]
        for i in range(len(parts)):
            lines.add("D /" + "/".join(parts[: i + 1]))
    return lines


def vm_walk(flash: Path) -> tuple[set[str], str]:
    out = vm("vfs_ = vfs.VfsLfs2(bd)\nvfs.mount(vfs_, '/flash')\n" + VM_WALK, flash)
    lines = out.splitlines()
    stat = [line for line in lines if line.startswith("S ")]
    return {line for line in lines if not line.startswith("S ")}, stat[0]


def test_vm_made_filesystem_reads_back_on_the_host(tmp_path: Path) -> None:
    flash = blank_flash(tmp_path)
    vm_make_fs(flash)
    assert read_tree(flash, BOARD) == FILES
    assert sorted(list_files(flash, BOARD)) == sorted(FILES)
    assert read_file(flash.read_bytes(), BOARD, "lib/veil/data.bin") == FILES["/lib/veil/data.bin"]
    with open_vfs(flash, BOARD) as fs:
        st = fs.fs.fs_stat()
        assert (st.block_size, st.block_count) == (4096, PART.size // 4096)
        assert st.disk_version == DISK_VERSION  # what the VM's littlefs wrote
        assert fs.listdir("/lib") == ["deep", "veil"]


def test_host_made_image_mounts_in_the_vm(tmp_path: Path) -> None:
    image = make_vfs_image({p.lstrip("/"): d for p, d in FILES.items()}, PART.size)
    assert len(image) == PART.size
    flash = blank_flash(tmp_path)
    with open(flash, "r+b") as f:
        f.seek(PART.offset)
        f.write(image)
    lines, stat = vm_walk(flash)
    assert lines == expected_walk(FILES)
    assert stat == f"S 4096 {PART.size // 4096}"


def test_host_writes_into_a_vm_filesystem(tmp_path: Path) -> None:
    flash = blank_flash(tmp_path)
    vm_make_fs(flash)
    with open_vfs(flash, BOARD, writable=True) as fs:
        fs.write("/lib/veil/__init__.py", b"VERSION = '0.2'\n")
        fs.write("/new/dir/file.bin", pattern(5000, 3))
        fs.remove("/lib/deep")
    files = {p: d for p, d in FILES.items() if not p.startswith("/lib/deep")}
    files["/lib/veil/__init__.py"] = b"VERSION = '0.2'\n"
    files["/new/dir/file.bin"] = pattern(5000, 3)
    lines, _ = vm_walk(flash)
    assert lines == expected_walk(files)
    # And the VM keeps writing to it afterwards; the host sees that too.
    vm(
        "vfs.mount(vfs.VfsLfs2(bd), '/flash')\n"
        "with open('/flash/after.txt', 'w') as g: g.write('after')\n"
        "vfs.umount('/flash')\n",
        flash,
    )
    assert read_tree(flash, BOARD) == {**files, "/after.txt": b"after"}


def test_in_memory_flash_is_changed_in_place() -> None:
    flash = bytearray(b"\xff" * BOARD.flash_size)
    flash[PART.offset : PART.offset + PART.size] = make_vfs_image({}, PART.size)
    with open_vfs(flash, BOARD) as fs:
        fs.write("a.txt", b"x")
        assert fs.image() == bytes(flash[PART.offset : PART.offset + PART.size])
    assert read_tree(bytes(flash), BOARD) == {"/a.txt": b"x"}


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="holds no littlefs filesystem"):
        read_tree(b"\xff" * BOARD.flash_size, BOARD)
    with pytest.raises(ImageError, match="ends before the vfs partition"):
        read_tree(b"\xff" * 0x1000, BOARD)
    with pytest.raises(ImageError, match="whole number of 4 KiB blocks"):
        make_vfs_image({}, 1000)
    with pytest.raises(ImageError, match="do not fit"):
        make_vfs_image({"big.bin": bytes(40000)}, 8 * BLOCK_SIZE)
    with pytest.raises(ImageError, match="bad file path"):
        make_vfs_image({"../x": b""}, PART.size)
    with pytest.raises(ImageError, match="cannot open flash file"):
        read_tree(tmp_path / "missing.img", BOARD)


def test_a_failed_block_read_is_raised_not_read_as_an_empty_filesystem() -> None:
    size = 64 * 4096
    files = {f"/d{i}/f{j}": bytes([i, j]) * 600 for i in range(3) for j in range(3)}
    files.update({"/veil.ctr": b"c" * 16, "/veil.eps": b"e" * 40})
    image = make_vfs_image(files, size)

    class ReadFailed(Exception):
        pass

    def reader(failing: int, calls: list[int]):
        def read(at: int, n: int) -> bytes:
            calls.append(at)
            if len(calls) == failing + 1:
                raise ReadFailed(f"timeout reading {at:#x}")
            return image[at : at + n]

        return read

    clean: list[int] = []
    with read_vfs(reader(-1, clean), size, "vfs") as fs:
        assert fs.files() == files
    assert len(clean) >= 4
    # littlefs-python swallows exceptions in its read callback: whichever read fails,
    # the failure must come out, never a filesystem that looks blank or has fewer files.
    for failing in range(len(clean)):
        with pytest.raises(ReadFailed), read_vfs(reader(failing, []), size, "vfs") as fs:
            fs.files()


def test_read_vfs_reads_only_the_blocks_it_needs() -> None:
    size = 512 * 4096
    image = make_vfs_image({"/veil.ctr": b"c" * 16}, size)
    blocks: set[int] = set()

    def read(at: int, n: int) -> bytes:
        blocks.add(at // 4096)
        return image[at : at + n]

    with read_vfs(read, size, "vfs") as fs:
        assert fs.files() == {"/veil.ctr": b"c" * 16}
    assert 0 < len(blocks) <= 8  # of 512
