"""`edgeveil demo`: the device pipeline in the MicroPython VM on the embedded defaults."""

from __future__ import annotations

from typing import TextIO

from .boards import load_board
from .errors import VMError
from .vm import run_code


def run_demo(board_name: str, out: TextIO) -> None:
    board = load_board(board_name)
    result = run_code("import veil, gc; print(veil.VERSION, gc.mem_free())", board.heap_bytes)
    if not result.ok:
        raise VMError(result.stdout.decode() + result.stderr.decode())
    out.write(f"veil {result.stdout.decode().strip()} on {board.name}\n")
