# Aggregators (device/veil/aggregate.py), in the MicroPython VM. Expected values are
# computed by hand in the comments.

import micropython
from aggtest import raises as _raises
from veil import VeilError
from veil.aggregate import (
    AggregateError,
    Count,
    Histogram,
    Max,
    Mean,
    Min,
    Sum,
)

# --- Count, Sum, Min, Max, Mean ----------------------------------------------------


def test_error_class():
    assert issubclass(AggregateError, VeilError)


def test_count():
    c = Count()
    for v in (3, 3, 9, None):
        c.add(v)
    assert c.result() == 4 and c.n == 4 and c.clamped == 0
    c.reset()
    assert c.result() == 0
    assert c.sensitivity(7) == 7
    assert _raises(c.sensitivity, 0)


def test_sum_and_clamping():
    s = Sum(0, 100)
    for v in (10, 20, 150, -5):  # 150 -> 100, -5 -> 0
        s.add(v)
    assert s.result() == 130  # 10 + 20 + 100 + 0
    assert s.n == 4 and s.clamped == 2
    s.reset()
    assert (s.result(), s.n, s.clamped) == (0, 0, 0)


def test_sum_sensitivity():
    assert Sum(0, 100).sensitivity(3) == 300  # 3 * 100
    assert Sum(-50, 20).sensitivity(2) == 100  # 2 * |-50|
    assert Sum(-5, 5).sensitivity(1) == 5


def test_sum_beyond_small_ints():
    # 10 * (2**28 - 1) = 2684354550: past 2**30, carried in limbs, exact at result().
    top = (1 << 28) - 1
    s = Sum(-top, top)
    for _ in range(10):
        s.add(top)
    assert s.result() == 2684354550
    for _ in range(25):
        s.add(-top)
    assert s.result() == -15 * top  # 10 - 25 = -15 times top
    s.add(7)
    assert s.result() == -15 * top + 7


def test_sum_range_limits():
    assert _raises(Sum, 0, 1 << 28)
    assert _raises(Sum, -(1 << 28), 0)
    assert _raises(Sum, 5, 4)
    assert _raises(Sum, 0.0, 1)
    s = Sum(0, 10)
    assert _raises(s.add, 1.5)
    assert _raises(s.add, True)
    assert _raises(s.add, "3")


def test_min_max():
    lo = Min(-10, 10)
    hi = Max(-10, 10)
    assert lo.result() is None and hi.result() is None  # empty window
    for v in (5, -3, 7):
        lo.add(v)
        hi.add(v)
    assert lo.result() == -3 and hi.result() == 7
    lo.add(-20)  # clamped to -10
    hi.add(99)  # clamped to 10
    assert lo.result() == -10 and lo.clamped == 1
    assert hi.result() == 10 and hi.clamped == 1
    lo.reset()
    lo.add(4)
    assert lo.result() == 4 and lo.n == 1  # the old minimum is gone
    assert lo.sensitivity(5) == 20 and hi.sensitivity(1) == 20  # hi - lo


def test_mean():
    m = Mean(0, 100)
    assert m.mean() is None and m.result() == (0, 0)
    m.add(1)
    m.add(2)
    assert m.result() == (3, 2)
    assert m.mean() == 2  # 1.5 rounds half up
    m.add(2)
    assert m.mean() == 2  # 5 / 3 = 1.67
    m.reset()
    for v in (1, 1, 2):
        m.add(v)
    assert m.mean() == 1  # 4 / 3 = 1.33
    m.add(500)  # clamped to 100
    assert m.result() == (104, 4) and m.mean() == 26 and m.clamped == 1
    n = Mean(-10, 10)
    n.add(-1)
    n.add(-2)
    assert n.mean() == -1  # -1.5 rounds half up, towards +inf
    n.add(-4)
    assert n.mean() == -2  # -7 / 3 = -2.33
    assert n.sensitivity(9) == 20  # hi - lo


# --- Histogram -----------------------------------------------------------------------


def test_histogram_edge_placement():
    h = Histogram([0, 10, 20])  # bins (-inf,0) [0,10) [10,20) [20,+inf)
    for v in (-5, 0, 9, 10, 19, 20, 1000):
        h.add(v)
    # -5 -> 0; 0, 9 -> 1; 10, 19 -> 2 (an edge value goes up); 20, 1000 -> 3
    assert h.result() == [1, 2, 2, 2]
    assert h.n == 7 and h.clamped == 0
    h.reset()
    assert h.result() == [0, 0, 0, 0] and h.n == 0
    assert h.sensitivity(4) == 4


def test_histogram_one_edge_and_many():
    h = Histogram([5])
    for v in (4, 5, 6):
        h.add(v)
    assert h.result() == [1, 2]
    edges = list(range(0, 100, 10))  # 10 edges, 11 bins
    g = Histogram(edges)
    for v in range(-1, 101):  # -1 -> bin 0; 0..9 -> 1; ...; 90..100 -> 10
        g.add(v)
    assert g.result() == [1] + [10] * 9 + [11]


def test_histogram_invalid():
    assert _raises(Histogram, [])
    assert _raises(Histogram, [1, 1])
    assert _raises(Histogram, [2, 1])
    assert _raises(Histogram, [1.5])
    assert _raises(Histogram, [0, 1 << 28])
    assert _raises(Histogram([0]).add, 0.5)


# --- heap_lock: add() and reset() allocate nothing ----------------------------------


def test_add_allocates_nothing():
    c = Count()
    s = Sum(0, 100)
    lo = Min(0, 100)
    hi = Max(0, 100)
    m = Mean(0, 100)
    h = Histogram([0, 10, 20])
    micropython.heap_lock()
    try:
        c.add(5)
        s.add(150)
        s.add(50)
        lo.add(7)
        lo.add(-3)
        hi.add(7)
        hi.add(300)
        m.add(42)
        m.add(43)
        h.add(10)
        h.add(-1)
    finally:
        micropython.heap_unlock()
    assert c.result() == 1 and s.result() == 150 and lo.result() == 0
    assert hi.result() == 100 and m.result() == (85, 2) and h.result() == [1, 0, 1, 0]


def test_sum_carry_allocates_nothing():
    top = (1 << 28) - 1
    s = Sum(-top, top)
    s.add(top)
    micropython.heap_lock()
    try:
        s.add(top)  # crosses a limb
        s.add(-top)
        s.add(-top)
        s.add(-top)
    finally:
        micropython.heap_unlock()
    assert s.result() == -top


def test_reset_allocates_nothing():
    aggs = [Count(), Sum(0, 9), Min(0, 9), Max(0, 9), Mean(0, 9), Histogram([1, 2])]
    for a in aggs:
        a.add(3)
    a0, a1, a2, a3, a4, a5 = aggs
    micropython.heap_lock()
    try:
        a0.reset()
        a1.reset()
        a2.reset()
        a3.reset()
        a4.reset()
        a5.reset()
    finally:
        micropython.heap_unlock()
    for a in aggs:
        assert a.n == 0
