"""Board files (edgeveil.boards): the shipped ones load and agree with the chip table, and a
malformed one is refused naming the file and the field.

Each malformed case starts from a valid board file (esp32-generic's text) and breaks one
thing, so a test fails only if that one check is missing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from edgeveil.boards import MPY_ARCHS, list_boards, load_board
from edgeveil.cli import main
from edgeveil.errors import BoardError
from edgeveil.esp_image import TARGETS
from edgeveil.partitions import table_for_board
from edgeveil.paths import boards_dir, device_dir
from edgeveil.vboard.firmware import build_firmware

GENERIC = (boards_dir() / "esp32-generic.toml").read_text()


def test_shipped_boards() -> None:
    boards = {b.name: b for b in list_boards()}
    assert set(boards) >= {
        "esp32-generic", "esp32s3-generic", "esp32c3-generic",
        "esp32-virtual", "esp32s3-virtual", "esp32c3-virtual",
    }  # fmt: skip
    assert {b.chip for b in boards.values()} == set(TARGETS)  # every chip has a board
    for b in boards.values():
        assert b.path == boards_dir() / f"{b.name}.toml"
        assert b.firmware_offset == TARGETS[b.chip].bootloader_offset
        assert b.mpy_arch in MPY_ARCHS
        assert b.heap_bytes <= b.vm_app_heap_bytes
        assert len(build_firmware(b)) > 0  # the table encodes, the app partition exists
    s3, c3 = boards["esp32s3-generic"], boards["esp32c3-generic"]
    assert (s3.firmware_offset, s3.mpy_arch, s3.flash_size) == (0x0, "xtensawin", 8 << 20)
    assert (c3.firmware_offset, c3.mpy_arch, c3.flash_size) == (0x0, "rv32imc", 4 << 20)


@pytest.mark.parametrize(
    ("name", "chip", "offset"),
    [
        ("esp32-virtual", "esp32", 0x1000),
        ("esp32s3-virtual", "esp32s3", 0x0),
        ("esp32c3-virtual", "esp32c3", 0x0),
    ],
)
def test_virtual_board_is_its_generic_board_with_the_vm_arch(
    name: str, chip: str, offset: int
) -> None:
    virtual, generic = load_board(name), load_board(name.replace("-virtual", "-generic"))
    assert virtual.virtual and not generic.virtual
    assert virtual.mpy_arch == "x64"  # what the VM's sys.implementation._mpy (2822) says
    assert virtual.chip == generic.chip == chip
    assert (virtual.flash_size, virtual.firmware_offset) == (
        generic.flash_size,
        generic.firmware_offset,
    )
    assert virtual.firmware_offset == offset
    assert table_for_board(virtual) == table_for_board(generic)
    assert virtual.heap_bytes == generic.heap_bytes == 102400
    assert virtual.vm_app_heap_bytes == load_board("esp32-virtual").vm_app_heap_bytes


def test_sources_and_transports_name_device_modules() -> None:
    sources = {p.stem for p in (device_dir() / "veil" / "sources").glob("*.py")}
    transports = {p.stem for p in (device_dir() / "veil" / "transport").glob("*.py")}
    for b in list_boards():
        assert set(b.sources) <= sources and set(b.transports) <= transports, b.name


def _write(tmp_path: Path, text: str, name: str = "esp32-generic") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _sub(old: str, new: str, text: str = GENERIC) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


VFS = 'name = "vfs"\ntype = "data"\nsubtype = "fat"\noffset = 0x200000'

BROKEN = {
    "missing field": (_sub('chip = "esp32"\n', ""), "missing field 'chip'"),
    "wrong type": (_sub("heap_bytes = 102400", 'heap_bytes = "100k"'), "field 'heap_bytes'"),
    "bool for int": (_sub("flash_size = 4194304", "flash_size = true"), "field 'flash_size'"),
    "list of str": (_sub('transports = ["serial"]', "transports = [1]"), "field 'transports'"),
    "unknown chip": (_sub('chip = "esp32"', 'chip = "esp8266"'), "field 'chip'"),
    "bad offset": (_sub("firmware_offset = 0x1000", "firmware_offset = 0x0"), "firmware_offset"),
    "odd flash size": (_sub("flash_size = 4194304", "flash_size = 3000000"), "'flash_size'"),
    "unknown field": (GENERIC + 'flash_mode = "qio"\n', "unknown field 'flash_mode'"),
    "arch of another chip": (_sub('mpy_arch = "xtensawin"', 'mpy_arch = "rv32imc"'), "mpy_arch"),
    "arch mpy-cross lacks": (_sub('mpy_arch = "xtensawin"', 'mpy_arch = "arm64"'), "mpy_arch"),
    "unknown source": (_sub('"replay", "ble"', '"replay", "ble_presence"'), "field 'sources'"),
    "overlapping partitions": (
        _sub(VFS, VFS.replace("0x200000", "0x1f0000")),
        "field 'partitions': .*'vfs'.* overlaps .*'factory'",
    ),
    "misaligned partition": (
        _sub("offset = 0x9000", "offset = 0x9800"),
        "field 'partitions': .*'nvs'.*not aligned",
    ),
    "partition past the flash": (
        _sub("size = 0x200000\n", "size = 0x300000\n"),
        r"partitions\[3\]: ends at 0x500000, past the flash size",
    ),
    "partition without offset": (
        _sub(VFS, 'name = "vfs"\ntype = "data"\nsubtype = "fat"'),
        r"partitions\[3\]: missing field 'offset'",
    ),
    "unknown partition type": (
        _sub('type = "data"\nsubtype = "fat"', 'type = "dat"\nsubtype = "fat"'),
        "field 'partitions': unknown partition type 'dat'",
    ),
    "vm heap below heap": (
        _sub("vm_app_heap_bytes = 131072", "vm_app_heap_bytes = 65536"),
        "vm_app_heap_bytes",
    ),
    "not TOML": (GENERIC + "[[partitions]\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_malformed_board_names_file_and_field(case: str, tmp_path: Path) -> None:
    text, field = BROKEN[case]
    path = _write(tmp_path, text)
    with pytest.raises(BoardError) as info:
        load_board(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(field, message), message


def test_the_unbroken_text_loads(tmp_path: Path) -> None:
    # The cases above fail for the one change each makes, not for the copy itself.
    copy, generic = load_board(_write(tmp_path, GENERIC)), load_board("esp32-generic")
    assert copy.__dict__ == {**generic.__dict__, "path": tmp_path / "esp32-generic.toml"}


def test_name_must_match_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GENERIC, name="my-board")
    with pytest.raises(BoardError, match=f"^{re.escape(str(path))}: field 'name' must be"):
        load_board(path)


def test_unknown_board_lists_the_known_ones() -> None:
    with pytest.raises(BoardError, match="unknown board 'esp33'.*esp32s3-generic"):
        load_board("esp33")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with a copy of boards/ (and the real device/) for the CLI."""
    root = tmp_path / "root"
    shutil.copytree(boards_dir(), root / "boards")
    (root / "device").symlink_to(device_dir())
    monkeypatch.setenv("EDGEVEIL_ROOT", str(root))
    return root


def test_boards_cli_lists_every_board(project: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["boards"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(b.name for b in list_boards())
    assert main(["boards", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    s3 = next(b for b in data if b["name"] == "esp32s3-generic")
    assert s3["chip"] == "esp32s3" and s3["firmware_offset"] == 0 and s3["virtual"] is False
    assert [p["name"] for p in s3["partitions"]] == ["nvs", "phy_init", "factory", "vfs"]
    virtual = {b["name"]: b for b in data if b["virtual"]}
    assert {n: (b["chip"], b["firmware_offset"]) for n, b in virtual.items()} == {
        "esp32-virtual": ("esp32", 0x1000),
        "esp32s3-virtual": ("esp32s3", 0x0),
        "esp32c3-virtual": ("esp32c3", 0x0),
    }


def test_boards_cli_refuses_a_malformed_file(project: Path, capsys: pytest.CaptureFixture) -> None:
    bad = project / "boards" / "esp32c3-generic.toml"
    bad.write_text(bad.read_text().replace("firmware_offset = 0x0", "firmware_offset = 0x1000"))
    assert main(["boards"]) == 2
    err = capsys.readouterr().err
    assert f"edgeveil: {bad}: field 'firmware_offset' must be 0x0 on esp32c3" in err
