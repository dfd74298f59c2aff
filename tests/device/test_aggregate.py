# Aggregators (device/veil/aggregate.py), in the MicroPython VM. Expected values are
# computed by hand in the comments.
import gc
import struct

import micropython
from veil import VeilError
from veil.aggregate import (
    AggregateError,
    Count,
    Distinct,
    Histogram,
    Max,
    Mean,
    Min,
    Sum,
)

KEY_A = b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
KEY_B = b"edgeveil-test-kB"


def _raises(fn, *args):
    try:
        fn(*args)
    except AggregateError:
        return True
    return False


def _mac(i):
    # A 6-byte BLE-address-like id.
    return struct.pack(">HI", 0xC0DE, i)


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


# --- Distinct ------------------------------------------------------------------------


def test_distinct_exact_with_duplicates():
    d = Distinct(100, KEY_A)
    ids = [_mac(1), _mac(2), _mac(1), _mac(3), _mac(2), _mac(1), bytearray(_mac(4))]
    for x in ids:
        d.add(x)
    assert d.result() == 4  # 1, 2, 3, 4
    assert d.n == 7 and not d.overflow
    d.add(memoryview(_mac(3)))  # same id through a memoryview
    assert d.result() == 4 and d.n == 8
    assert d.sensitivity() == 1 and d.sensitivity(3) == 3


def test_distinct_padding_is_unambiguous():
    d = Distinct(10, KEY_A)
    for x in (b"\x01", b"\x01\x00", b"\x01\x00\x00", b"\x00\x01", b"\x00"):
        d.add(x)
    assert d.result() == 5


def test_distinct_two_keys_both_count_right():
    ids = [_mac(i % 37) for i in range(200)]  # 37 distinct ids
    for key in (KEY_A, KEY_B):
        d = Distinct(50, key)
        for x in ids:
            d.add(x)
        assert d.result() == 37
        assert not d.overflow


def test_distinct_rekey_and_reset():
    d = Distinct(20, KEY_A)
    for i in range(10):
        d.add(_mac(i))
    d.rekey(KEY_B)
    assert (d.result(), d.n, d.overflow) == (0, 0, False)
    for i in range(5, 12):
        d.add(_mac(i))
    assert d.result() == 7
    for i in range(30):
        d.add(_mac(i))
    assert d.overflow
    d.reset()
    assert (d.result(), d.n, d.overflow) == (0, 0, False)
    d.add(_mac(1))
    assert d.result() == 1


def test_distinct_exact_up_to_bound_then_overflow():
    d = Distinct(10, KEY_A)
    for i in range(10):
        d.add(_mac(i))
    for i in range(10):  # duplicates of stored ids never overflow
        d.add(_mac(i))
    assert d.result() == 10 and not d.overflow
    d.add(_mac(10))  # the 11th distinct id
    assert d.overflow
    r = d.result()
    assert 10 <= r <= 40  # clamped to [bound, 4 * bound]


def test_distinct_full_table_probing():
    # bound 1: 2 slots; every new id must find the hole or detect overflow.
    d = Distinct(1, KEY_A)
    d.add(b"a")
    d.add(b"a")
    assert d.result() == 1 and not d.overflow
    d.add(b"b")
    assert d.overflow


def test_distinct_hll_estimate_within_3_se():
    # 5000 distinct ids, m = 1024: standard error 1.04 / sqrt(1024) = 3.25 %,
    # 3 SE = 487.5. Raw estimate (n / m ~ 4.9 is past HLL's small-range zone).
    for key in (KEY_A, KEY_B):
        d = Distinct(100, key, m=1024, cap_hi=100000)
        for i in range(5000):
            d.add(_mac(i))
        for i in range(0, 5000, 7):  # duplicates change nothing
            d.add(_mac(i))
        assert d.overflow
        e = d.result()
        assert abs(e - 5000) <= 487, e


def test_distinct_clamps_estimate():
    d = Distinct(100, KEY_A, m=1024)  # cap_hi = 400
    for i in range(2000):
        d.add(_mac(i))
    assert d.result() == 400  # the estimate (~2000) is clamped to 4 * bound


def test_distinct_sensitivity_sketch_mode():
    # m = 1024: A = alpha m^2 = 0.7213 / (1 + 1.079/1024) * 1024^2 = 755541.7.
    # C = 4000: C^2 / (A - C) = 16e6 / 751541.7 = 21.29 -> 22, + 1 for rounding = 23.
    d = Distinct(1000, KEY_A)
    assert d.sensitivity() == 1
    assert d.sketch_sensitivity() == 23  # known before any data arrives
    assert d.sketch_sensitivity(3) == 69
    for i in range(1001):
        d.add(_mac(i))
    assert d.overflow
    assert d.sensitivity() == 23
    assert d.sensitivity(2) == 46
    # Across the mode switch: exact 1000 -> estimate up to 4000: 3000 (cap 1).
    assert d.sensitivity_bound() == 3000
    assert d.sensitivity_bound(2) == 3001


def test_distinct_sketch_steps_within_sensitivity():
    d = Distinct(50, KEY_B, m=256, cap_hi=5000)
    for i in range(51):
        d.add(_mac(i))
    s = d.sensitivity()
    prev = d.result()
    for i in range(51, 3000):
        d.add(_mac(i))
        r = d.result() if i % 25 == 0 else None
        if r is not None:
            # 25 ids added since the last look: at most 25 single steps.
            assert abs(r - prev) <= 25 * s, (r, prev, s)
            prev = r


def test_distinct_invalid():
    assert _raises(Distinct, 0, KEY_A)
    assert _raises(Distinct, 10, b"short")
    assert _raises(Distinct, 10, "0123456789abcdef")
    assert _raises(Distinct, 10, KEY_A, 1000)  # m not a power of two
    assert _raises(Distinct, 10, KEY_A, 8)
    assert _raises(Distinct, 10, KEY_A, 1024, 5)  # cap_hi < bound
    # m = 16: A = 0.673 * 256 = 172.3, so cap_hi must stay below 172.
    assert _raises(Distinct, 50, KEY_A, 16, 200)
    Distinct(50, KEY_A, 16, 172)
    d = Distinct(10, KEY_A)
    assert _raises(d.add, b"")
    assert _raises(d.add, b"x" * 16)
    assert _raises(d.add, 12345)
    assert _raises(d.add, "abc")
    assert d.n == 0


def test_distinct_exposes_no_state():
    d = Distinct(10, KEY_A)
    d.add(_mac(1))
    for name in dir(d):
        if name.startswith("_"):
            continue
        v = getattr(d, name)
        assert type(v) not in (bytes, bytearray, memoryview), name


def test_distinct_1000_memory():
    gc.collect()
    before = gc.mem_alloc()
    d = Distinct(1000, KEY_A)
    gc.collect()
    used = gc.mem_alloc() - before
    print("Distinct(1000) heap bytes:", used)
    # 1500 slots * 8 = 12000, bitmap 188, registers 1024, 2 * 16 buffers, objects.
    assert used < 16 * 1024, used
    d.add(_mac(1))
    assert d.result() == 1


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
    d = Distinct(100, KEY_A)
    for a in aggs:
        a.add(3)
    d.add(b"abc")
    a0, a1, a2, a3, a4, a5 = aggs
    micropython.heap_lock()
    try:
        a0.reset()
        a1.reset()
        a2.reset()
        a3.reset()
        a4.reset()
        a5.reset()
        d.reset()
    finally:
        micropython.heap_unlock()
    for a in aggs:
        assert a.n == 0
    assert d.result() == 0 and d.n == 0


def test_distinct_add_allocates_nothing():
    d = Distinct(3, KEY_A)
    x1 = _mac(1)
    x2 = bytearray(_mac(2))
    x3 = memoryview(_mac(3))
    x4 = _mac(4)
    x5 = b"\x01"
    d.add(x1)
    micropython.heap_lock()
    try:
        d.add(x1)  # duplicate: probe and match
        d.add(x2)  # insert
        d.add(x3)  # insert: the set is full (3)
        d.add(x4)  # a new id: overflow, sketch only
        d.add(x5)  # sketch mode
    finally:
        micropython.heap_unlock()
    assert d.overflow and d.n == 6
    assert 3 <= d.result() <= 12
