# veil.noise in the MicroPython VM: exact samplers, integer outputs, the noise pool.
# Frequencies are checked against 5 standard deviations of a binomial count, with a
# seeded SHA-256 counter-mode byte source (detrand), so a failure reproduces.
import micropython
from detrand import DetRand
from veil import VeilError
from veil.noise import NoiseError, NoisePool, Sampler, laplace_scale


def _sampler(seed=b"noise-test"):
    return Sampler(DetRand(seed))


def _isqrt(n):
    x = n
    y = (x + 1) // 2
    while y < x:
        x = y
        y = (x + n // x) // 2
    return x


def _within(count, n, p_num, p_den, sigmas=5):
    # |count - n p| <= sigmas * sqrt(n p (1 - p)), in integers (rounded up by one).
    mean_num = n * p_num
    var = n * p_num * (p_den - p_num) // (p_den * p_den)
    return abs(count * p_den - mean_num) <= (sigmas * _isqrt(var) + 1) * p_den


def test_uniform_three_unbiased():
    s = _sampler()
    counts = [0, 0, 0]
    n = 30000
    for _ in range(n):
        counts[s.uniform(3)] += 1
    for c in counts:
        assert _within(c, n, 1, 3), counts


def test_uniform_ranges_and_types():
    s = _sampler()
    for n in (1, 2, 255, 256, 257, 1 << 22, (1 << 22) + 1, 1 << 40, 3**30):
        for _ in range(200):
            x = s.uniform(n)
            assert type(x) is int and 0 <= x < n, (n, x)
    # Large n reaches the top of its range (not stuck in the low chunk).
    assert max(s.uniform(1 << 40) for _ in range(50)) > 1 << 38


def test_uniform_rejects_bad_n():
    s = _sampler()
    for bad in (0, -1, 2.0, True, None):
        try:
            s.uniform(bad)
        except NoiseError:
            pass
        else:
            raise AssertionError(bad)
    assert issubclass(NoiseError, VeilError)


def test_bernoulli_frequency():
    s = _sampler()
    n = 20000
    ones = sum(s.bernoulli(1, 3) for _ in range(n))
    assert _within(ones, n, 1, 3), ones
    assert all(s.bernoulli(0, 7) == 0 for _ in range(100))
    assert all(s.bernoulli(7, 7) == 1 for _ in range(100))
    for num, den in ((-1, 2), (3, 2), (1, 0)):
        try:
            s.bernoulli(num, den)
        except NoiseError:
            pass
        else:
            raise AssertionError((num, den))


def test_bernoulli_exp_zero_is_always_one():
    s = _sampler()
    for d in (1, 2, 7, 1000):
        assert all(s.bernoulli_exp(0, d) == 1 for _ in range(500))


def test_bernoulli_exp_one():
    # exp(-1) = 0.36787944117144233 (to 17 digits); 10**8 * exp(-1) rounded below.
    s = _sampler()
    n = 20000
    ones = sum(s.bernoulli_exp(1, 1) for _ in range(n))
    assert _within(ones, n, 36787944, 100000000), ones
    # gamma = 3/2 through the gamma > 1 branch: exp(-1.5) = 0.22313016014842982.
    ones = sum(s.bernoulli_exp(3, 2) for _ in range(n))
    assert _within(ones, n, 22313016, 100000000), ones
    # gamma = 1/4 in the gamma <= 1 loop: exp(-0.25) = 0.7788007830714049.
    ones = sum(s.bernoulli_exp(1, 4) for _ in range(n))
    assert _within(ones, n, 77880078, 100000000), ones


def test_bernoulli_exp_large_gamma_is_rare():
    # exp(-10) = 4.54e-5: 5000 draws expect 0.23 ones; P(>= 4) < 2e-4.
    s = _sampler()
    assert sum(s.bernoulli_exp(10, 1) for _ in range(5000)) <= 3
    # exp(-1000) is never seen, and the loop ends quickly.
    assert sum(s.bernoulli_exp(100000, 100) for _ in range(1000)) == 0


def test_geometric_exp_mean():
    # Scale t = 1 (num = den = 1): P(y) = (1 - 1/e) e**-y, P(y = 0) = 1 - 1/e.
    s = _sampler()
    n = 20000
    zeros = 0
    for _ in range(n):
        y = s.geometric_exp(1, 1)
        assert type(y) is int and y >= 0
        zeros += y == 0
    assert _within(zeros, n, 100000000 - 36787944, 100000000), zeros


def test_discrete_laplace_symmetric():
    s = _sampler()
    n = 20000
    pos = neg = zero = 0
    for _ in range(n):
        x = s.discrete_laplace(2, 1)
        if x > 0:
            pos += 1
        elif x < 0:
            neg += 1
        else:
            zero += 1
    # P(x > 0) = e^-1/2 / (1 + e^-1/2) = 0.37754066879814546 for t = 2, same for x < 0.
    assert _within(pos, n, 37754067, 100000000), (pos, neg)
    assert _within(neg, n, 37754067, 100000000), (pos, neg)
    # P(0) = (1 - e^-1/2) / (1 + e^-1/2) = 0.24491866240370913.
    assert _within(zero, n, 24491866, 100000000), zero
    # pos - neg has variance n * (2 p) when the signs are fair.
    assert abs(pos - neg) <= 5 * _isqrt(n * 2 * 37754067 // 100000000) + 1


def test_outputs_are_ints_no_float():
    # Every public sampler returns an exact int for inputs that are ints.
    s = _sampler(b"types")
    for _ in range(300):
        for x in (
            s.uniform(10),
            s.bernoulli(2, 5),
            s.bernoulli_exp(7, 3),
            s.geometric_exp(5, 2),
            s.discrete_laplace(5, 2),
            s.discrete_laplace(1000, 1),
            s.discrete_laplace(1, 1000),
            s.laplace_for(3, 250),
        ):
            assert type(x) is int, x


def test_tiny_scale_is_almost_always_zero():
    # Scale 1/1000: P(x != 0) = 2 e^-1000 / (1 + e^-1000), i.e. never.
    s = _sampler()
    assert all(s.discrete_laplace(1, 1000) == 0 for _ in range(500))


def test_laplace_scale():
    assert laplace_scale(1, 500) == (2, 1)
    assert laplace_scale(1, 1000) == (1, 1)
    assert laplace_scale(3, 2000) == (3, 2)
    assert laplace_scale(5, 400) == (25, 2)
    for sens, eps in ((0, 100), (1, 0), (1, -5), (1.0, 100), (1, 0.5)):
        try:
            laplace_scale(sens, eps)
        except NoiseError:
            pass
        else:
            raise AssertionError((sens, eps))


def test_bad_byte_source():
    s = Sampler(lambda n: b"\x00" * (n - 1))
    try:
        s.uniform(5)
    except NoiseError:
        pass
    else:
        raise AssertionError("short read accepted")


def test_default_source_is_urandom():
    s = Sampler()
    xs = [s.uniform(1 << 20) for _ in range(8)]
    assert len(set(xs)) > 1


def test_pool_empty_raises():
    pool = NoisePool(_sampler(), 4)
    try:
        pool.take()
    except NoiseError:
        pass
    else:
        raise AssertionError("empty pool gave a value")


def test_pool_refill_and_take():
    pool = NoisePool(_sampler(), 8)
    pool.refill(2, 1)
    assert len(pool) == 8
    assert pool.scale() == (2, 1)
    vals = [pool.take() for _ in range(8)]
    assert all(type(v) is int for v in vals)
    assert len(set(vals)) > 1  # 8 draws at scale 2 are not all equal (P < 1e-4)
    assert len(pool) == 0
    try:
        pool.take()
    except NoiseError:
        pass
    else:
        raise AssertionError("drained pool gave a value")
    # Top up a partly used pool.
    pool.refill(4, 2)  # same scale, reduced
    pool.take()
    pool.take()
    assert len(pool) == 6
    pool.refill(2, 1)
    assert len(pool) == 8


def test_pool_scale_change_discards_and_checks():
    pool = NoisePool(_sampler(), 4)
    pool.refill(1, 1000)  # scale 1/1000: every value is 0
    pool.take()
    pool.refill(1000, 1)  # another scale: the three old values are dropped
    assert len(pool) == 4 and pool.scale() == (1000, 1)
    vals = [pool.take(2000, 2) for _ in range(3)]
    assert any(v != 0 for v in vals)  # P(all 0 at scale 1000) ~ 1e-9
    try:
        pool.take(2, 1)
    except NoiseError:
        pass
    else:
        raise AssertionError("scale mismatch not caught")
    assert len(pool) == 1  # the refused take popped nothing


def test_pool_take_does_not_allocate():
    pool = NoisePool(_sampler(), 4)
    pool.refill(5, 2)
    out = [0, 0, 0, 0]
    micropython.heap_lock()
    try:
        for i in range(4):
            out[i] = pool.take(5, 2)
    finally:
        micropython.heap_unlock()
    assert all(type(v) is int for v in out)


def test_pool_bad_size():
    for bad in (0, -3, 2.5):
        try:
            NoisePool(_sampler(), bad)
        except NoiseError:
            pass
        else:
            raise AssertionError(bad)
