"""Virtual boards for end-to-end tests: each test gets boards of its own, in tmp_path.

def test_x(vboard):                 # one board with the virtual firmware, on a pty
    run(["mpremote", "connect", vboard.port, "fs", "ls"])

def test_y(make_vboard):            # several, or with options
    a = make_vboard(rfc2217=True); b = make_vboard(firmware=False)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.vboard import runner
from edgeveil.vboard.board import BoardSpec
from vbtest import VBoard

_names = itertools.count()


@pytest.fixture
def make_vboard(tmp_path: Path) -> Iterator[Callable[..., VBoard]]:
    made: list[VBoard] = []
    root = tmp_path / "state"

    def make(
        firmware: bool = True,
        rfc2217: bool = False,
        board: str = "esp32-generic",
        replay: Path | None = None,
        speed: int = 1,
        flash: Path | None = None,
    ) -> VBoard:
        n = next(_names)
        b = load_board(board)
        flash = flash or tmp_path / ("board%d.img" % n)
        runner.prepare_flash(flash, b, firmware)
        spec = BoardSpec(
            board=b,
            flash=flash,
            replay=replay,
            speed=speed,
            mac=bytes.fromhex("240ac40000%02x" % (n % 256)),
            rfc2217_port=0 if rfc2217 else None,
        )
        log = tmp_path / ("vboard%d.log" % n)
        name = "t%d" % n
        vb = VBoard(runner.spawn(spec, name, root, log_path=log), spec, root, log)
        made.append(vb)
        return vb

    yield make
    for vb in made:
        try:
            vb.stop()
        except Exception:  # noqa: BLE001 - already stopped or killed by the test
            pass


@pytest.fixture
def vboard(make_vboard: Callable[..., VBoard]) -> VBoard:
    return make_vboard()
