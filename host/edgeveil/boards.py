"""Boards are data: one TOML file per board under `boards/`.

    board = load_board("esp32-generic")
    board.heap_bytes   # the GC heap the device code must fit in
    [b.name for b in list_boards()]

A board file names its chip, flash size, where the firmware goes, its partition table,
the mpy-cross architecture, the GC heap budget, and which device sources and transports
exist on it. A file that is malformed is refused with `BoardError` naming the file and
the field (`boards/x.toml: field 'partitions[2].offset': ...`).

Fields (all required unless a default is given):

| field | type | meaning |
|---|---|---|
| name | str | the file's stem (`esp32s3-generic` in `esp32s3-generic.toml`) |
| description | str, "" | one line for `edgeveil boards` |
| chip | str | esp32, esp32s3 or esp32c3 (`edgeveil.esp_image.TARGETS`) |
| virtual | bool, false | an edgeveil virtual board (the MicroPython unix VM) |
| flash_size | int | bytes: 1, 2, 4, 8, 16, 32, 64 or 128 MiB |
| firmware_offset | int | where a combined firmware file goes: the chip's bootloader offset |
| mpy_arch | str | `mpy-cross -march=`: the chip's (xtensawin, rv32imc), a virtual board's VM's |
| heap_bytes | int | the GC heap budget device code is tested against |
| vm_app_heap_bytes | int, heap_bytes | heap for whole-app runs in the 64-bit VM (demo, vboard) |
| sources | [str] | modules of `device/veil/sources/` the board can feed |
| transports | [str] | modules of `device/veil/transport/` the board has |
| partitions | [[partitions]], [] | name, type, subtype, offset, size, as ESP-IDF's CSV |
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BoardError, ImageError
from .partitions import Partition, boot_app_partition, encode_table
from .paths import boards_dir, device_dir

# The native architecture MicroPython's firmware for each chip reports (and mpy-cross's
# -march for native code on it). A virtual board runs the unix VM, whose arch is the host's.
_CHIP_MPY_ARCH = {"esp32": "xtensawin", "esp32s3": "xtensawin", "esp32c3": "rv32imc"}
_CHIPS = tuple(_CHIP_MPY_ARCH)
# What `mpy-cross -march=` accepts (mpy-cross 1.29 --help).
MPY_ARCHS = (
    "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
    "xtensa", "xtensawin", "rv32imc", "rv64imc", "host", "debug",
)  # fmt: skip
_FLASH_SIZES = tuple(n << 20 for n in (1, 2, 4, 8, 16, 32, 64, 128))
_FIELDS = {
    "name", "description", "chip", "virtual", "flash_size", "firmware_offset", "mpy_arch",
    "heap_bytes", "vm_app_heap_bytes", "sources", "transports", "partitions",
}  # fmt: skip
_PARTITION_FIELDS = ("name", "type", "subtype", "offset", "size")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    chip: str
    flash_size: int
    firmware_offset: int
    mpy_arch: str
    heap_bytes: int
    vm_app_heap_bytes: int
    sources: tuple[str, ...]
    transports: tuple[str, ...]
    partitions: tuple[Partition, ...] = field(default=())
    virtual: bool = False
    path: Path | None = None

    def as_json(self) -> dict[str, object]:
        """The board as JSON-ready data (what `edgeveil boards --json` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "chip": self.chip,
            "virtual": self.virtual,
            "flash_size": self.flash_size,
            "firmware_offset": self.firmware_offset,
            "mpy_arch": self.mpy_arch,
            "heap_bytes": self.heap_bytes,
            "vm_app_heap_bytes": self.vm_app_heap_bytes,
            "sources": list(self.sources),
            "transports": list(self.transports),
            "partitions": [{k: getattr(p, k) for k in _PARTITION_FIELDS} for p in self.partitions],
            "path": str(self.path) if self.path else None,
        }


def _get(data: dict, key: str, kind: type, where: str, default: object = None) -> object:
    """`data[key]` checked against `kind`; `default` (if not None) when it is absent."""
    if key not in data:
        if default is not None:
            return default
        raise BoardError(f"{where}: missing field '{key}'")
    value = data[key]
    if kind is int and (type(value) is not int or value < 0):
        raise BoardError(f"{where}: field '{key}' must be a non-negative integer, got {value!r}")
    if kind is str and (not isinstance(value, str) or not value):
        raise BoardError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    if kind is bool and type(value) is not bool:
        raise BoardError(f"{where}: field '{key}' must be true or false, got {value!r}")
    if kind is list and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise BoardError(f"{where}: field '{key}' must be a list of strings, got {value!r}")
    return value


def _modules(package: str) -> set[str]:
    """Module names under device/veil/<package>/ (what sources/transports may name)."""
    return {p.stem for p in (device_dir() / "veil" / package).glob("*.py")} - {"__init__"}


def _names(data: dict, key: str, package: str, where: str) -> tuple[str, ...]:
    names: list[str] = _get(data, key, list, where)  # type: ignore[assignment]
    known = _modules(package)
    for n in names:
        if known and n not in known:
            raise BoardError(
                f"{where}: field '{key}' names {n!r}, which is not a module of "
                f"device/veil/{package}/ (known: {', '.join(sorted(known))})"
            )
    return tuple(names)


def _partitions(data: dict, flash_size: int, where: str) -> tuple[Partition, ...]:
    raw = data.get("partitions", [])
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise BoardError(f"{where}: field 'partitions' must be a list of [[partitions]] tables")
    parts = []
    for i, p in enumerate(raw):
        pw = f"{where}: partitions[{i}]"
        extra = sorted(set(p) - set(_PARTITION_FIELDS))
        if extra:
            raise BoardError(f"{pw}: unknown field '{extra[0]}'")
        part = Partition(
            name=_get(p, "name", str, pw),  # type: ignore[arg-type]
            type=_get(p, "type", str, pw),  # type: ignore[arg-type]
            subtype=_get(p, "subtype", str, pw),  # type: ignore[arg-type]
            offset=_get(p, "offset", int, pw),  # type: ignore[arg-type]
            size=_get(p, "size", int, pw),  # type: ignore[arg-type]
        )
        if part.end > flash_size:
            raise BoardError(f"{pw}: ends at {part.end:#x}, past the flash size {flash_size:#x}")
        parts.append(part)
    if parts:
        try:  # names, types, alignment, overlaps: as ESP-IDF's gen_esp32part.py checks
            encode_table(parts)
        except ImageError as exc:
            raise BoardError(f"{where}: field 'partitions': {exc}") from None
        if boot_app_partition(parts) is None:
            raise BoardError(f"{where}: field 'partitions': no app partition to boot")
    return tuple(parts)


def parse_board(data: dict, where: str) -> Board:
    """Validate a board's parsed TOML.

    Raises:
        BoardError: naming `where` and the field that is wrong.
    """
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise BoardError(f"{where}: unknown field '{unknown[0]}'")
    chip: str = _get(data, "chip", str, where)  # type: ignore[assignment]
    if chip not in _CHIPS:
        raise BoardError(f"{where}: field 'chip' must be one of {', '.join(_CHIPS)}, got {chip!r}")
    virtual: bool = _get(data, "virtual", bool, where, False)  # type: ignore[assignment]
    flash_size: int = _get(data, "flash_size", int, where)  # type: ignore[assignment]
    if flash_size not in _FLASH_SIZES:
        raise BoardError(
            f"{where}: field 'flash_size' must be 1, 2, 4, 8, 16, 32, 64 or 128 MiB in "
            f"bytes, got {flash_size!r}"
        )
    offset: int = _get(data, "firmware_offset", int, where)  # type: ignore[assignment]
    from .esp_image import target  # esp_image imports this module

    expect = target(chip).bootloader_offset
    if offset != expect:
        raise BoardError(
            f"{where}: field 'firmware_offset' must be {expect:#x} on {chip} (where its "
            f"ROM reads the second-stage bootloader), got {offset:#x}"
        )
    arch: str = _get(data, "mpy_arch", str, where)  # type: ignore[assignment]
    if arch not in MPY_ARCHS:
        raise BoardError(
            f"{where}: field 'mpy_arch' must be one mpy-cross accepts "
            f"({', '.join(MPY_ARCHS)}), got {arch!r}"
        )
    if not virtual and arch != _CHIP_MPY_ARCH[chip]:
        raise BoardError(
            f"{where}: field 'mpy_arch' must be {_CHIP_MPY_ARCH[chip]!r} on {chip}, got "
            f"{arch!r} (only a virtual board runs another architecture)"
        )
    heap: int = _get(data, "heap_bytes", int, where)  # type: ignore[assignment]
    if heap == 0:
        raise BoardError(f"{where}: field 'heap_bytes' must be positive")
    vm_heap: int = _get(data, "vm_app_heap_bytes", int, where, heap)  # type: ignore[assignment]
    if vm_heap < heap:
        raise BoardError(
            f"{where}: field 'vm_app_heap_bytes' ({vm_heap}) is below heap_bytes ({heap})"
        )
    return Board(
        name=_get(data, "name", str, where),  # type: ignore[arg-type]
        description=_get(data, "description", str, where, ""),  # type: ignore[arg-type]
        chip=chip,
        flash_size=flash_size,
        firmware_offset=offset,
        mpy_arch=arch,
        heap_bytes=heap,
        vm_app_heap_bytes=vm_heap,
        sources=_names(data, "sources", "sources", where),
        transports=_names(data, "transports", "transport", where),
        partitions=_partitions(data, flash_size, where),
        virtual=virtual,
    )


def load_board(name_or_path: str | Path) -> Board:
    """Load a board by name (from `boards/`) or by path to its TOML file.

    Raises:
        BoardError: the board is unknown or its file is malformed.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = boards_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in boards_dir().glob("*.toml")))
        raise BoardError(f"unknown board '{name_or_path}' (known: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"{path}: not valid TOML: {exc}") from exc
    board = parse_board(data, str(path))
    if board.name != path.stem:
        raise BoardError(
            f"{path}: field 'name' must be the file's name {path.stem!r}, got {board.name!r}"
        )
    return Board(**{**board.__dict__, "path": path})


def list_boards() -> list[Board]:
    """Every board in `boards/`, by name.

    Raises:
        BoardError: a board file is malformed (the first one found, by name).
    """
    return [load_board(p) for p in sorted(boards_dir().glob("*.toml"))]
