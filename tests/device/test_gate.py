# The policy gate (device/veil/gate.py) with the stream that feeds it (veil.pipeline):
# the noise scale of every field is fixed by the policy, never chosen by the data. For a
# distinct count that means the same scale below, at and above the bound, and a release
# that is min(exact count, bound) plus noise of scale cap / epsilon.
import struct

from detrand import DetRand
from veil.budget import Budget
from veil.gate import close_window
from veil.keys import Keys
from veil.noise import NoiseError, Sampler, laplace_scale
from veil.pipeline import Stream
from veil.policy import Policy

DEV = b"\x01" * 8
SEEDS = (b"gate-1", b"gate-2", b"gate-3", b"gate-4")


def _mac(i):
    return struct.pack(">HI", 0xC0DE, i)


def _stream(field, seed):
    pol = Policy(
        {
            "v": 1,
            "dev": DEV,
            "period": 86400,
            "eps_period": 10**7,
            "epoch": 86400,
            "streams": {"s": {"window": 60, "k": 1, "fields": {"v": field}}},
        },
        DEV,
    )
    keys = Keys(DEV, b"\x02" * 16, b"\x03" * 13, b"\x04" * 32, b"\x05" * 32)
    budget = Budget("eps", 86400, 10**7)
    return Stream(pol.streams[0], pol, keys, budget, Sampler(DetRand(seed)))


def _window(stream, n_ids):
    """One window with n_ids distinct ids (each seen twice): (released, true result,
    scale of the pool the release was noised from, values left in it after close)."""
    stream.open_window()
    for i in range(n_ids):
        stream.add("ble", _mac(i))
        stream.add("ble", _mac(i))
    _f, agg, pool, _scale = stream.fields[0]
    truth = agg.result()
    before = pool.scale()
    report = close_window(stream, 0, 60)
    assert report is not None and len(report.records) == 1
    held = pool.scale()  # take() keeps the scale: this is the scale of the value used
    assert held == before, (n_ids, before, held)
    return report.records[0][1], truth, held, len(pool)


def _ref_noise(seed, num, den):
    # The first value the stream's sampler draws: the window's only noise value.
    return Sampler(DetRand(seed)).discrete_laplace(num, den)


def test_distinct_noise_scale_is_the_same_below_and_above_the_bound():
    field = {"agg": "distinct", "in": "ble", "bound": 20, "eps": 500, "cap": 3}
    expect = laplace_scale(3, 500)  # sensitivity cap = 3, epsilon 0.5: scale 6
    assert expect == (6, 1)
    for n_ids in (1, 5, 19, 20, 21, 60, 400):
        s = _stream(field, b"scale")
        assert s.fields[0][3] == expect  # fixed when the stream was made
        _v, truth, held, left = _window(s, n_ids)
        assert truth == min(n_ids, 20)
        assert held == expect, (n_ids, held)
        assert left == 0  # the window's noise came from this pool, the field's only one


def test_distinct_release_is_clamped_count_plus_noise_of_scale_cap_over_eps():
    # Same seed, same noise value for every count: the noise does not depend on the data.
    # Below the bound the release is the exact count + that noise; above it, bound + it.
    field = {"agg": "distinct", "in": "ble", "bound": 20, "eps": 500}
    nonzero = 0
    for seed in SEEDS:
        z = _ref_noise(seed, 2, 1)  # cap 1 / epsilon 0.5 = scale 2
        nonzero += z != 0
        for n_ids in (3, 19, 20, 21, 100):
            released, truth, _held, _left = _window(_stream(field, seed), n_ids)
            assert truth == min(n_ids, 20)
            assert released == max(0, truth + z), (seed, n_ids, released, truth, z)
    assert nonzero >= 2  # the seeds exercise real noise, not only zeros


def test_distinct_noise_does_not_widen_across_windows():
    # One stream, windows alternating below and above the bound: each window's pool is
    # refilled at the same scale, and the scale never changes with the data.
    field = {"agg": "distinct", "in": "ble", "bound": 10, "eps": 1000}
    s = _stream(field, b"windows")
    for n_ids in (2, 50, 9, 11, 3, 1000):
        _v, _truth, held, _left = _window(s, n_ids)
        assert held == (1, 1)


def test_sketch_noise_scale_is_fixed_and_release_is_estimate_plus_noise():
    # distinct_sketch: the HLL estimate in every window, even for 2 ids, with the sketch's
    # sensitivity (m = 256: A = 0.7213/(1 + 1.079/256) * 65536 = 47073.7; C = 2000:
    # C^2 / (A - C) = 4e6 / 45073.7 = 88.7 -> 89, + 1 = 90) over epsilon 1.
    field = {"agg": "distinct_sketch", "in": "ble", "bound": 2000, "m": 256, "eps": 1000}
    expect = laplace_scale(90, 1000)
    assert expect == (90, 1)
    for seed in SEEDS[:2]:
        z = _ref_noise(seed, 90, 1)
        for n_ids in (2, 100, 1500, 5000):
            s = _stream(field, seed)
            assert s.fields[0][3] == expect
            released, truth, held, _left = _window(s, n_ids)
            assert held == expect
            assert released == max(0, truth + z), (n_ids, released, truth, z)
            assert truth <= 2000
            if n_ids == 2:
                assert truth > 100  # an estimate (about 0.72 m), never the exact 2


def test_gate_refuses_a_pool_drawn_at_another_scale():
    field = {"agg": "distinct", "in": "ble", "bound": 20, "eps": 500}
    s = _stream(field, b"other")
    s.open_window()
    s.add("ble", _mac(1))
    s.fields[0][2].refill(7, 1)  # as if noise had been drawn at a data-chosen scale
    try:
        close_window(s, 0, 60)
    except NoiseError:
        return
    raise AssertionError("a pool at another scale was used")
