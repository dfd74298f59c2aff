"""The board process's deep sleep (vboard.board.VirtualBoard._deep_sleep), without a VM:
a reset while asleep cancels the wake, and the board's clock moves on by the time slept."""

from __future__ import annotations

from pathlib import Path

from edgeveil.boards import load_board
from edgeveil.vboard.board import BoardSpec, VirtualBoard

T0 = 1_700_000_000


def _board(tmp_path: Path, speed: int) -> VirtualBoard:
    vb = VirtualBoard(BoardSpec(board=load_board("esp32-virtual"), flash=tmp_path / "f.img"))
    vb.spec.speed = speed
    vb._vclock = T0
    return vb


def _wakes(vb: VirtualBoard) -> int:
    return sum(1 for *_, fn in vb._timers if fn == vb._wake)


def test_a_reset_while_asleep_cancels_the_wake(tmp_path: Path) -> None:
    vb = _board(tmp_path, speed=1)
    vb._deep_sleep(10_000)
    assert vb.state == "sleep" and _wakes(vb) == 1
    vb._halt()  # what a reset (EN, esptool's SYNC) does first
    assert _wakes(vb) == 0 and vb.state != "sleep"
    assert vb._vclock == T0  # next to no board time passed
    vb._deep_sleep(10_000)  # the app sleeps again: one wake, its own
    assert _wakes(vb) == 1


def test_the_clock_moves_on_by_the_time_slept_to_the_millisecond(tmp_path: Path) -> None:
    vb = _board(tmp_path, speed=0)  # speed 0: the wake is due at once
    for _ in range(3):
        vb._deep_sleep(600)
        vb._wake_seq = None  # as _wake() marks a sleep that ran its course
        vb._halt()  # what the wake's boot does first
    assert (vb._vclock, vb._vclock_ms) == (T0 + 1, 800)  # 1.8 s slept, nothing dropped
