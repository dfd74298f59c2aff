# Dwell-time histograms (device/veil/dwell.py) in the MicroPython VM, against an oracle
# written here: per id, last minus first sighting in the window, binned by a linear scan.
import micropython
from aggtest import KEY_A, KEY_B
from aggtest import mac as _mac
from aggtest import raises as _raises
from detrand import DetRand
from veil.dwell import Dwell

W = 300  # window length (s)
START = 81000  # a window start: a multiple of W, in veil time


def _oracle(samples, edges, bound):
    """Expected bins for [(id, t)]: the first `bound` ids by first arrival kept."""
    first = {}
    last = {}
    for ident, t in samples:
        if ident not in first:
            if len(first) >= bound:
                continue
            first[ident] = last[ident] = t
        else:
            first[ident] = min(first[ident], t)
            last[ident] = max(last[ident], t)
    bins = [0] * (len(edges) + 1)
    for ident in first:
        d = last[ident] - first[ident]
        i = 0
        for e in edges:  # linear: the number of edges at or below d
            if d >= e:
                i += 1
        bins[i] += 1
    return bins


def _crowd(seed, n_ids, n_samples):
    """Deterministic sightings (id number, t) inside one window; times may go back."""
    rnd = DetRand(seed)
    for _ in range(n_samples):
        b = rnd(3)
        yield b[0] % n_ids, START + (b[1] << 8 | b[2]) % W


def _fed(d, samples):
    for i, t in samples:
        d.add(_mac(i), t)
    return d


def test_matches_the_oracle_on_a_crowd():
    edges = [30, 120, 240]
    for seed in (b"a", b"b", b"c"):
        d = _fed(Dwell(edges, 100, KEY_A, W), _crowd(seed, 40, 400))
        assert d.result() == _oracle(_crowd(seed, 40, 400), edges, 100)
        assert d.n == len({i for i, _ in _crowd(seed, 40, 400)})


def test_dwell_is_last_minus_first_and_an_edge_goes_up():
    d = Dwell([60, 120], 10, KEY_A, W)
    d.add(_mac(1), START + 100)
    d.add(_mac(1), START + 40)  # earlier, same window: first moves back
    d.add(_mac(1), START + 160)  # dwell 120: exactly an edge -> the bin above it
    d.add(_mac(2), START + 5)
    d.add(_mac(2), START + 64)  # dwell 59
    d.add(_mac(3), START + 299)  # seen once: dwell 0
    d.add(bytearray(_mac(4)), START)
    d.add(memoryview(_mac(4)), START + 60)  # the same id as bytes-like: dwell 60
    assert d.result() == [2, 1, 1]
    assert d.n == 4


def test_offsets_follow_the_window_not_the_first_sample():
    # A later window of the same length: only offsets inside the window count.
    d = Dwell([100], 10, KEY_A, W)
    d.add(_mac(7), START + 7 * W + 250)
    d.add(_mac(7), START + 7 * W + 10)
    assert d.result() == [0, 1]  # dwell 240


def test_bound_keeps_the_first_ids_and_drops_the_rest_silently():
    edges = [10]
    samples = [(i, START + i) for i in range(25)]
    samples += [(i, START + 100 + i) for i in range(25)]  # every id stays 100 s
    d = _fed(Dwell(edges, 10, KEY_A, W), samples)
    assert d.n == 10
    assert d.result() == _oracle(samples, edges, 10) == [0, 10]


def test_neighbouring_data_sets_differ_by_at_most_two_per_id():
    # Remove one person (one id, cap 1): L1 distance <= 2 = sensitivity(1), and a full
    # set reaches 2 (one bin loses the person, another gains the id it kept out).
    edges = [20, 100]
    worst = 0
    a = Dwell(edges, 8, KEY_A, W)
    b = Dwell(edges, 8, KEY_B, W)
    for seed in (b"s1", b"s2", b"s3"):
        samples = list(_crowd(seed, 30, 150))
        ids = []
        for i, _ in samples:
            if i not in ids:
                ids.append(i)
        for bound in (8, 30):
            a = Dwell(edges, bound, KEY_A, W)
            b = Dwell(edges, bound, KEY_B, W)
            for gone in ids[:5]:
                rest = [s for s in samples if s[0] != gone]
                a.reset()
                b.reset()
                ha = _fed(a, samples).result()
                hb = _fed(b, rest).result()
                assert ha == _oracle(samples, edges, bound)
                assert hb == _oracle(rest, edges, bound)
                worst = max(worst, sum(abs(x - y) for x, y in zip(ha, hb)))
    assert worst == 2 == a.sensitivity(1)


def test_rekey_and_reset_empty_the_set():
    d = Dwell([60], 20, KEY_A, W)
    for i in range(12):
        d.add(_mac(i), START + i * 10)
    d.rekey(KEY_B)
    assert (d.result(), d.n) == ([0, 0], 0)
    assert all(not any(c) for c in d._tbl) and not any(d._occ)
    d.add(_mac(1), START)
    d.add(_mac(1), START + 90)
    assert d.result() == [0, 1]
    d.reset()
    assert (d.result(), d.n) == ([0, 0], 0)
    assert not any(d._in) and not any(d._out)  # no id, no hash left in the buffers


def test_add_and_reset_allocate_nothing():
    d = Dwell([30, 120, 240], 50, KEY_A, W)
    ids = [_mac(i) for i in range(70)]  # past the bound of 50
    buf = bytearray(6)
    view = memoryview(buf)
    d.add(ids[0], START)  # warm up
    micropython.heap_lock()
    try:
        for rep in range(3):
            for i in range(len(ids)):
                d.add(ids[i], START + rep * 100 + i)
        for i in range(6):
            buf[i] = 0xA0 + i
        d.add(buf, START + 3)
        d.add(view, START + 200)
        d.reset()
        d.add(ids[3], START + 1)
    finally:
        micropython.heap_unlock()
    assert d.n == 1


def test_sensitivity_and_bad_parameters():
    assert Dwell([1], 1, KEY_A, 1).sensitivity() == 2
    assert Dwell([1], 1, KEY_A, 1).sensitivity(3) == 6
    assert _raises(Dwell([1], 1, KEY_A, 1).sensitivity, 0)
    assert _raises(Dwell, [], 10, KEY_A, W)
    assert _raises(Dwell, [60, 60], 10, KEY_A, W)
    assert _raises(Dwell, [0, 60], 10, KEY_A, W)  # a dwell is >= 0 s: edges from 1
    assert _raises(Dwell, [60], 0, KEY_A, W)
    assert _raises(Dwell, [60], 10, KEY_A, 0)
    assert _raises(Dwell, [60], 10, b"short", W)
    d = Dwell([60], 10, KEY_A, W)
    assert _raises(d.add, _mac(1), -1)
    assert _raises(d.add, _mac(1), 1.5)
    assert _raises(d.add, b"", 1)
    assert _raises(d.add, bytes(16), 1)
    assert _raises(d.add, "text", 1)
    assert d.n == 0
