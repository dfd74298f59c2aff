"""The device's discrete Laplace sampler, run in the MicroPython VM, has the exact law.

The VM draws N values per scale with a seeded SHA-256 counter-mode byte source
(tests/device/detrand.py) and prints a histogram; here, on CPython, the histogram is
compared with the closed-form pmf of the discrete Laplace distribution of scale t,

    P(x) = (1 - a) / (1 + a) * a**|x|,   a = exp(-1/t),     Var = 2 a / (1 - a)**2

(Canonne, Kamath, Steinke 2020, Definition 2 and Algorithm 2), by a chi-square
goodness-of-fit test at p = 0.001 and by the sample variance within 5 standard errors.
The pmf, moments and critical values are computed here independently of the device
code. The power tests show the same checks reject a shifted sampler, a wrong scale and
a biased byte source.
"""

from __future__ import annotations

import ast
import math
import time
from pathlib import Path

import pytest
from edgeveil.paths import device_dir
from edgeveil.vm import run_code

DETRAND_DIR = Path(__file__).parents[1] / "device"
N_DRAWS = 200_000
SCALES = [(2, 1), (5, 2)]  # t = 2 and t = 5/2
# Standard normal quantile for upper tail 0.001: Phi^-1(0.999) = 3.090232306167813
# (e.g. NIST/SEMATECH e-Handbook of Statistical Methods, Table 1.3.6.7.1).
Z_999 = 3.090232306167813
MIN_EXPECTED = 5.0

_VM_CODE = """\
import time
from detrand import DetRand
from veil.noise import Sampler

def src(seed, biased):
    r = DetRand(seed)
    if not biased:
        return r
    def stuck(n):  # a broken source: the low bit of every byte is stuck at 0
        return bytes(b & 0xFE for b in r(n))
    return stuck

for num, den, n, seed, biased in {jobs!r}:
    s = Sampler(src(seed, biased))
    h = {{}}
    t0 = time.ticks_ms()
    for _ in range(n):
        x = s.discrete_laplace(num, den)
        h[x] = h.get(x, 0) + 1
    ms = time.ticks_diff(time.ticks_ms(), t0)
    print(repr((num, den, biased, ms, sorted(h.items()))))
"""

Hist = dict[int, int]


def pmf(x: int, t: float) -> float:
    a = math.exp(-1.0 / t)
    return (1.0 - a) / (1.0 + a) * a ** abs(x)


def tail(m: int, t: float) -> float:
    """P(X > m) for m >= 0: sum over x > m of the pmf = a**(m+1) / (1 + a)."""
    a = math.exp(-1.0 / t)
    return a ** (m + 1) / (1.0 + a)


def closed_form_variance(t: float) -> float:
    a = math.exp(-1.0 / t)
    return 2.0 * a / (1.0 - a) ** 2


def fourth_moment(t: float) -> float:
    # E[X^4] by direct summation of the pmf; terms past 60 t are below 1e-20.
    return sum(x**4 * pmf(x, t) for x in range(-int(60 * t) - 1, int(60 * t) + 2))


def wilson_hilferty(df: int, z: float = Z_999) -> float:
    """Upper critical value of chi-square(df) (Wilson and Hilferty, PNAS 17, 1931)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square(hist: Hist, t: float) -> tuple[float, int]:
    """(statistic, degrees of freedom): cells x in [-m, m] plus the two tails.

    m is the largest value with both the cell of x = m and each tail expecting at
    least MIN_EXPECTED draws, so every cell's expected count is >= 5.
    """
    n = sum(hist.values())
    m = 0
    while n * pmf(m + 1, t) >= MIN_EXPECTED and n * tail(m + 1, t) >= MIN_EXPECTED:
        m += 1
    cells = [(hist.get(x, 0), n * pmf(x, t)) for x in range(-m, m + 1)]
    above = sum(c for x, c in hist.items() if x > m)
    below = sum(c for x, c in hist.items() if x < -m)
    cells += [(above, n * tail(m, t)), (below, n * tail(m, t))]
    assert min(e for _, e in cells) >= MIN_EXPECTED
    assert abs(sum(e for _, e in cells) - n) < 1e-6 * n
    stat = sum((o - e) ** 2 / e for o, e in cells)
    return stat, len(cells) - 1


def fits(hist: Hist, t: float) -> bool:
    stat, df = chi_square(hist, t)
    return stat <= wilson_hilferty(df)


def run_vm(jobs: list[tuple[int, int, int, bytes, bool]]) -> tuple[dict, float]:
    code = _VM_CODE.format(jobs=jobs)
    start = time.monotonic()
    result = run_code(code, 102400, path=[DETRAND_DIR, device_dir()], timeout=60)
    wall = time.monotonic() - start
    assert result.ok, result.stdout.decode() + result.stderr.decode()
    out = {}
    for line in result.stdout.decode().splitlines():
        num, den, biased, ms, items = ast.literal_eval(line)
        out[(num, den, biased)] = (dict(items), ms)
    return out, wall


@pytest.fixture(scope="module")
def draws() -> dict:
    jobs = [
        (num, den, N_DRAWS, b"edgeveil-laplace-%d-%d" % (num, den), False) for num, den in SCALES
    ]
    jobs.append((2, 1, N_DRAWS, b"edgeveil-laplace-biased", True))
    out, wall = run_vm(jobs)
    print(f"\nVM wall time for {len(jobs)} x {N_DRAWS} draws: {wall:.2f} s")
    for key, (_, ms) in out.items():
        print(f"  scale {key[0]}/{key[1]} biased={key[2]}: {ms} ms in the VM")
    return out


# -- the reference pieces themselves --------------------------------------------------


def test_pmf_sums_to_one_and_variance_matches_summation() -> None:
    for t in (2.0, 2.5, 0.7):
        total = sum(pmf(x, t) for x in range(-2000, 2001))
        assert total == pytest.approx(1.0, abs=1e-12)
        var = sum(x * x * pmf(x, t) for x in range(-2000, 2001))
        assert var == pytest.approx(closed_form_variance(t), rel=1e-9)


@pytest.mark.parametrize(
    ("df", "table"),
    # Upper critical values at p = 0.001, NIST/SEMATECH e-Handbook of Statistical Methods,
    # section 1.3.6.7.4 "Critical Values of the Chi-Square Distribution". From df = 10 on
    # (the fits below have df >= 20); at df = 5 the approximation is 1.2 % high.
    [(10, 29.588), (20, 45.315), (30, 59.703), (50, 86.661), (100, 149.449)],
)
def test_wilson_hilferty_matches_table(df: int, table: float) -> None:
    assert wilson_hilferty(df) == pytest.approx(table, rel=0.01)


# -- the device sampler ---------------------------------------------------------------


@pytest.mark.parametrize(("num", "den"), SCALES)
def test_chi_square_fits(draws: dict, num: int, den: int) -> None:
    hist, _ = draws[(num, den, False)]
    assert sum(hist.values()) == N_DRAWS
    assert all(type(x) is int for x in hist)
    stat, df = chi_square(hist, num / den)
    assert df >= 20  # tails binned, but the test still sees the shape
    assert stat <= wilson_hilferty(df), (stat, df, wilson_hilferty(df))


@pytest.mark.parametrize(("num", "den"), SCALES)
def test_mean_and_variance(draws: dict, num: int, den: int) -> None:
    hist, _ = draws[(num, den, False)]
    t = num / den
    n = sum(hist.values())
    mean = sum(x * c for x, c in hist.items()) / n
    var = sum(c * (x - mean) ** 2 for x, c in hist.items()) / (n - 1)
    sigma2 = closed_form_variance(t)
    # SE of the mean: sqrt(Var / n); SE of the sample variance: sqrt((mu4 - Var^2) / n).
    assert abs(mean) <= 5 * math.sqrt(sigma2 / n), mean
    se_var = math.sqrt((fourth_moment(t) - sigma2**2) / n)
    assert abs(var - sigma2) <= 5 * se_var, (var, sigma2, se_var)


def test_vm_run_is_fast(draws: dict) -> None:
    for key, (_, ms) in draws.items():
        assert ms < 20_000, (key, ms)


# -- the checks can fail ----------------------------------------------------------------


def _shifted(hist: Hist, by: int) -> Hist:
    return {x + by: c for x, c in hist.items()}


def test_shifted_sampler_is_detected(draws: dict) -> None:
    hist, _ = draws[(2, 1, False)]
    assert fits(hist, 2.0)
    assert not fits(_shifted(hist, 1), 2.0)


def test_wrong_scale_is_detected(draws: dict) -> None:
    # Noise drawn at t = 2 declared as t = 5/2 (epsilon off by 25 %), and the reverse.
    assert not fits(draws[(2, 1, False)][0], 2.5)
    assert not fits(draws[(5, 2, False)][0], 2.0)


def test_biased_byte_source_is_detected(draws: dict) -> None:
    hist, _ = draws[(2, 1, True)]
    assert not fits(hist, 2.0)


def test_symmetric_but_wrong_shape_is_detected(draws: dict) -> None:
    # Moving 2 % of the mass from 0 to +-1 keeps mean and symmetry: chi-square sees it.
    hist = dict(draws[(2, 1, False)][0])
    moved = hist[0] // 50
    hist[0] -= 2 * moved
    hist[1] += moved
    hist[-1] += moved
    assert not fits(hist, 2.0)
