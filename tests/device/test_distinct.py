# Distinct counts (device/veil/distinct.py), in the MicroPython VM: Distinct releases
# min(exact count, bound) in every window, DistinctSketch a HyperLogLog estimate in every
# window; neither switches between the two with the data.
import gc

import micropython
from aggtest import KEY_A, KEY_B
from aggtest import mac as _mac
from aggtest import raises as _raises
from veil.distinct import Distinct, DistinctSketch


def test_distinct_exact_with_duplicates():
    d = Distinct(100, KEY_A)
    ids = [_mac(1), _mac(2), _mac(1), _mac(3), _mac(2), _mac(1), bytearray(_mac(4))]
    for x in ids:
        d.add(x)
    assert d.result() == 4  # 1, 2, 3, 4
    assert d.n == 7
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


def test_distinct_rekey_and_reset():
    d = Distinct(20, KEY_A)
    for i in range(10):
        d.add(_mac(i))
    d.rekey(KEY_B)
    assert (d.result(), d.n) == (0, 0)
    for i in range(5, 12):
        d.add(_mac(i))
    assert d.result() == 7
    for i in range(30):
        d.add(_mac(i))
    assert d.result() == 20
    d.reset()
    assert (d.result(), d.n) == (0, 0)
    d.add(_mac(1))
    assert d.result() == 1


def test_distinct_is_clamped_at_bound():
    d = Distinct(10, KEY_A)
    for i in range(10):
        d.add(_mac(i))
    for i in range(10):  # duplicates of stored ids
        d.add(_mac(i))
    assert d.result() == 10
    for i in range(10, 500):  # 490 more distinct ids: counted by nothing
        d.add(_mac(i))
    assert d.result() == 10 and d.n == 510
    assert d.sensitivity() == 1  # unchanged: the set being full changes nothing


def test_distinct_result_is_min_of_true_count_and_bound():
    # result() = min(D, bound) for every D across the bound, so adding one id moves it by
    # at most 1 (sensitivity 1) exactly where the old exact-to-sketch switch jumped.
    for bound in (1, 7, 40):
        d = Distinct(bound, KEY_B)
        prev = d.result()
        for i in range(3 * bound + 5):
            d.add(_mac(i))
            d.add(_mac(i // 2))  # a repeat: changes nothing
            r = d.result()
            assert r == min(i + 1, bound), (bound, i, r)
            assert 0 <= r - prev <= 1
            prev = r


def test_distinct_exposes_no_saturation_flag():
    # Whether the set filled must not be observable apart from the (noised) result.
    full = Distinct(3, KEY_A)
    part = Distinct(3, KEY_A)
    for i in range(10):
        full.add(_mac(i))
    part.add(_mac(1))
    pub = [x for x in dir(full) if not x.startswith("_")]
    for name in pub:
        v = getattr(full, name)
        if callable(v) or name in ("n",):
            continue
        assert v == getattr(part, name), name  # bound, clamped: policy data only
    assert "overflow" not in pub


def test_distinct_full_table_probing():
    # bound 1: 2 slots; every new id must find the hole or the stored one.
    d = Distinct(1, KEY_A)
    d.add(b"a")
    d.add(b"a")
    assert d.result() == 1
    d.add(b"b")
    d.add(b"c")
    d.add(b"a")
    assert d.result() == 1 and d.n == 5


def test_sketch_estimate_within_3_se():
    # 5000 distinct ids, m = 1024: standard error 1.04 / sqrt(1024) = 3.25 %,
    # 3 SE = 487.5. Raw estimate (n / m ~ 4.9 is past HLL's small-range zone).
    for key in (KEY_A, KEY_B):
        d = DistinctSketch(100000, key, m=1024)
        for i in range(5000):
            d.add(_mac(i))
        for i in range(0, 5000, 7):  # duplicates change nothing
            d.add(_mac(i))
        e = d.result()
        assert abs(e - 5000) <= 487, e


def test_sketch_is_an_estimate_even_for_few_ids():
    # No exact mode to fall back on: the raw estimate for an empty sketch is alpha_m * m
    # (0.7213 / (1 + 1.079/1024) * 1024 = 738.5 -> 738 or 739), whatever the count.
    d = DistinctSketch(4000, KEY_A, m=1024)
    assert d.result() in (738, 739)
    d.add(_mac(1))
    assert 735 <= d.result() <= 742


def test_sketch_clamps_estimate():
    d = DistinctSketch(1000, KEY_A, m=1024)
    for i in range(2000):
        d.add(_mac(i))
    assert d.result() == 1000  # the estimate (~2000) is clamped to cap_hi


def test_sketch_sensitivity_is_data_independent():
    # m = 1024: A = alpha m^2 = 0.7213 / (1 + 1.079/1024) * 1024^2 = 755541.7.
    # C = 4000: C^2 / (A - C) = 16e6 / 751541.7 = 21.29 -> 22, + 1 for rounding = 23.
    d = DistinctSketch(4000, KEY_A)
    assert d.sensitivity() == 23 and d.sensitivity(3) == 69
    for i in range(5000):
        d.add(_mac(i))
    assert d.sensitivity() == 23 and d.sensitivity(2) == 46
    d.rekey(KEY_B)
    assert d.sensitivity() == 23


def test_sketch_steps_within_sensitivity():
    d = DistinctSketch(5000, KEY_B, m=256)
    s = d.sensitivity()
    prev = d.result()
    for i in range(3000):
        d.add(_mac(i))
        if i % 25 == 24:
            # 25 ids added since the last look: at most 25 single steps.
            r = d.result()
            assert abs(r - prev) <= 25 * s, (r, prev, s)
            prev = r


def test_distinct_invalid():
    assert _raises(Distinct, 0, KEY_A)
    assert _raises(Distinct, (1 << 20) + 1, KEY_A)
    assert _raises(Distinct, 10, b"short")
    assert _raises(Distinct, 10, "0123456789abcdef")
    assert _raises(DistinctSketch, 100, KEY_A, 1000)  # m not a power of two
    assert _raises(DistinctSketch, 100, KEY_A, 8)
    assert _raises(DistinctSketch, 0, KEY_A)
    assert _raises(DistinctSketch, 10, b"short")
    # m = 16: A = 0.673 * 256 = 172.3, so cap_hi must stay below 172.
    assert _raises(DistinctSketch, 173, KEY_A, 16)
    DistinctSketch(172, KEY_A, 16)
    for d in (Distinct(10, KEY_A), DistinctSketch(10, KEY_A, 16)):
        assert _raises(d.add, b"")
        assert _raises(d.add, b"x" * 16)
        assert _raises(d.add, 12345)
        assert _raises(d.add, "abc")
        assert d.n == 0


def test_distinct_exposes_no_state():
    for d in (Distinct(10, KEY_A), DistinctSketch(100, KEY_A, 64)):
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
    # 12 chunks of 1 KiB for 1500 slots, bitmap 188, 2 * 16 buffers, objects.
    assert used < 14 * 1024, used
    d.add(_mac(1))
    assert d.result() == 1


def test_sketch_memory():
    gc.collect()
    before = gc.mem_alloc()
    d = DistinctSketch(50000, KEY_A, m=4096)
    gc.collect()
    used = gc.mem_alloc() - before
    assert used < 4096 + 1024, used  # the registers and a few small objects
    assert d.m == 4096


# --- heap_lock: add() and reset() allocate nothing ----------------------------------


def test_reset_allocates_nothing():
    d = Distinct(100, KEY_A)
    h = DistinctSketch(100, KEY_A, 64)
    d.add(b"abc")
    h.add(b"abc")
    micropython.heap_lock()
    try:
        d.reset()
        h.reset()
    finally:
        micropython.heap_unlock()
    assert d.result() == 0 and d.n == 0 and h.n == 0


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
        d.add(x4)  # a new id past the bound: probes, stores nothing
        d.add(x5)
    finally:
        micropython.heap_unlock()
    assert d.n == 6 and d.result() == 3


def test_sketch_add_allocates_nothing():
    d = DistinctSketch(1000, KEY_A, 64)
    ids = [_mac(i) for i in range(50)]
    d.add(ids[0])
    micropython.heap_lock()
    try:
        for x in ids:
            d.add(x)
    finally:
        micropython.heap_unlock()
    assert d.n == 51
