# Event-time tumbling windows (device/veil/window.py), in the MicroPython VM.
import micropython
from veil import VeilError
from veil.window import CLOSE, LATE, SAME, Window, WindowError


def _raises(fn, *args):
    try:
        fn(*args)
    except WindowError:
        return True
    return False


def test_constants():
    assert (SAME, CLOSE, LATE) == (0, 1, 2)
    assert issubclass(WindowError, VeilError)


def test_first_sample_opens_aligned_window():
    w = Window(60)
    assert not w.opened
    assert w.place(125) == SAME
    assert w.opened
    assert (w.start, w.end) == (120, 180)


def test_first_sample_on_a_boundary():
    w = Window(60)
    assert w.place(180) == SAME
    assert (w.start, w.end) == (180, 240)


def test_boundaries_exactly_at_start_and_end():
    w = Window(60)
    w.place(150)
    assert w.place(120) == SAME  # start is inside: [start, end)
    assert w.place(179) == SAME
    assert w.place(180) == CLOSE  # end is outside
    assert w.place(119) == LATE  # just before start
    assert w.late == 1
    # Classifying does not move the window; only advance() does.
    assert (w.start, w.end) == (120, 180)


def test_close_then_advance_to_next_window():
    w = Window(60)
    w.place(130)
    assert w.place(180) == CLOSE
    assert w.advance(180) == 0  # the very next window: none skipped
    assert (w.start, w.end) == (180, 240)
    assert w.place(180) == SAME
    assert w.place(179) == LATE  # the old window is closed: late now
    assert w.late == 1


def test_gap_skips_empty_windows():
    w = Window(60)
    w.place(130)  # [120, 180)
    assert w.place(500) == CLOSE
    # 500 is in [480, 540); [180,240) [240,300) [300,360) [360,420) [420,480) are empty.
    assert w.advance(500) == 5
    assert (w.start, w.end) == (480, 540)


def test_late_samples_are_counted():
    w = Window(10)
    w.place(100)
    w.place(120)
    w.advance(120)
    for t in (99, 100, 119):
        assert w.place(t) == LATE
    assert w.place(120) == SAME
    assert w.late == 3


def test_pipeline_counts_per_window():
    # Hand-computed: windows of 10 s; [0,10): 3 samples, [10,20): 1, [30,40): 2; two late.
    w = Window(10)
    out = []
    n = 0
    for t in (3, 0, 9, 12, 5, 31, 35, 29):
        r = w.place(t)
        if r == LATE:
            continue
        if r == CLOSE:
            out.append((w.start, n))
            n = 0
            w.advance(t)
        n += 1
    out.append((w.start, n))
    assert out == [(0, 3), (10, 1), (30, 2)]
    assert w.late == 2


def test_length_one_and_large_timestamps():
    w = Window(1)
    assert w.place(7) == SAME
    assert (w.start, w.end) == (7, 8)
    big = Window(86400)
    t = 0x3FFFFFFF - 86400  # largest accepted: the end stays below 2**30
    assert big.place(t) == SAME
    assert big.end <= 0x3FFFFFFF


def test_invalid_input():
    assert _raises(Window, 0)
    assert _raises(Window, -60)
    assert _raises(Window, 1.5)
    assert _raises(Window, True)
    assert _raises(Window, (1 << 24) + 1)
    w = Window(60)
    assert _raises(w.place, -1)
    assert _raises(w.place, 1.0)
    assert _raises(w.place, "60")
    assert _raises(w.place, 1 << 30)
    w.place(100)
    assert _raises(w.advance, 110)  # before the end (120): not a close
    assert (w.start, w.end) == (60, 120)


def test_place_allocates_nothing():
    w = Window(60)
    w.place(100)
    micropython.heap_lock()
    try:
        a = w.place(61)
        b = w.place(10)
        c = w.place(120)
    finally:
        micropython.heap_unlock()
    assert (a, b, c) == (SAME, LATE, CLOSE)


def test_first_place_and_advance_allocate_nothing():
    w = Window(60)
    micropython.heap_lock()
    try:
        a = w.place(100)
        b = w.place(400)
        skipped = w.advance(400)
    finally:
        micropython.heap_unlock()
    assert (a, b, skipped) == (SAME, CLOSE, 4)
    assert (w.start, w.end) == (360, 420)
