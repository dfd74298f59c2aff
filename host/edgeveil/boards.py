"""Boards are data: one TOML file per board under `boards/`.

    board = load_board("esp32-generic")
    board.heap_bytes   # the GC heap the device code must fit in
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BoardError
from .partitions import Partition
from .paths import boards_dir

_CHIPS = ("esp32", "esp32s3", "esp32c3")


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
    path: Path | None = None


def _get(data: dict, key: str, kind: type, where: str) -> object:
    if key not in data:
        raise BoardError(f"{where}: missing field '{key}'")
    value = data[key]
    if kind is int and (type(value) is not int or value < 0):
        raise BoardError(f"{where}: field '{key}' must be a non-negative integer, got {value!r}")
    if kind is str and (not isinstance(value, str) or not value):
        raise BoardError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    if kind is list and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise BoardError(f"{where}: field '{key}' must be a list of strings, got {value!r}")
    return value


def parse_board(data: dict, where: str) -> Board:
    """Validate a board's parsed TOML.

    Raises:
        BoardError: naming `where` and the field that is wrong.
    """
    chip = _get(data, "chip", str, where)
    if chip not in _CHIPS:
        raise BoardError(f"{where}: field 'chip' must be one of {', '.join(_CHIPS)}, got {chip!r}")
    flash_size = _get(data, "flash_size", int, where)
    parts = []
    for i, p in enumerate(data.get("partitions", [])):
        pw = f"{where}: partitions[{i}]"
        part = Partition(
            name=_get(p, "name", str, pw),  # type: ignore[arg-type]
            type=_get(p, "type", str, pw),  # type: ignore[arg-type]
            subtype=_get(p, "subtype", str, pw),  # type: ignore[arg-type]
            offset=_get(p, "offset", int, pw),  # type: ignore[arg-type]
            size=_get(p, "size", int, pw),  # type: ignore[arg-type]
        )
        if part.offset + part.size > flash_size:  # type: ignore[operator]
            raise BoardError(f"{pw}: ends past the flash size {flash_size:#x}")
        parts.append(part)
    return Board(
        name=_get(data, "name", str, where),  # type: ignore[arg-type]
        description=str(data.get("description", "")),
        chip=chip,  # type: ignore[arg-type]
        flash_size=flash_size,  # type: ignore[arg-type]
        firmware_offset=_get(data, "firmware_offset", int, where),  # type: ignore[arg-type]
        mpy_arch=_get(data, "mpy_arch", str, where),  # type: ignore[arg-type]
        heap_bytes=_get(data, "heap_bytes", int, where),  # type: ignore[arg-type]
        vm_app_heap_bytes=int(data.get("vm_app_heap_bytes", data.get("heap_bytes", 0))),
        sources=tuple(_get(data, "sources", list, where)),  # type: ignore[arg-type]
        transports=tuple(_get(data, "transports", list, where)),  # type: ignore[arg-type]
        partitions=tuple(parts),
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
    return Board(**{**board.__dict__, "path": path})
