"""edgeveil.verify.statistics: captures of the real device code (MicroPython VM) with its
real noise pass; the same code with a noise sampler that draws nothing, or draws at a
tenth of the declared scale, fails; so does one record moved far (re-encrypted, so only
the statistics can tell), and a field released although fewer than k contributed.

False-positive rate of the thresholds (statistics.py): at most 1e-6 (the per-field "too
little noise" tests, family-wise) + 1e-9 (single values, Bonferroni over records) per
clean capture, so test_clean_device_captures_pass fails by chance with probability below
4e-6 over its three seeds.

The law of a released value is checked against a brute-force convolution written here,
and the combining tests against closed forms and simulated noise.
"""

from __future__ import annotations

import math
import random
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import cbor2
import pytest
from edgeveil.boards import load_board
from edgeveil.capture import CaptureWriter, read_capture
from edgeveil.cose import decrypt0, encrypt0
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.frames import cobs_encode, split_stream
from edgeveil.policy import compile_policy, default_policy
from edgeveil.replaygen import demo_recording, write_jsonl
from edgeveil.verify.messages import (
    DeviceKeys,
    Keyring,
    authenticate,
    decode_plaintexts,
    extract,
)
from edgeveil.verify.report import VerifyReport
from edgeveil.verify.statistics import (
    ReleaseLaw,
    check_statistics,
    log_likelihood_ratio,
    poisson_binomial_tail,
)
from edgeveil.verify.truth import ground_truth

HEAP = load_board("esp32-generic").vm_app_heap_bytes
T0 = 1699920000
START = 1_700_000_100  # a 300 s window boundary of veil time
MINUTES = 120

ZERO = """
class ZeroSampler:
    def discrete_laplace(self, num, den):
        return 0
sampler = ZeroSampler()
"""
TENTH = """
from veil.noise import Sampler
class TenthSampler(Sampler):
    def discrete_laplace(self, num, den):
        return Sampler.discrete_laplace(self, num, den * 10)
sampler = TenthSampler()
"""


def recording(seed: int) -> list[dict[str, Any]]:
    # Two phones in the window before the crowd: fewer than the footfall stream's k of 5.
    early = [
        {"t": START - 250 + i * 30, "kind": "ble", "addr": f"5a:00:00:00:00:0{i % 2}", "rssi": -70}
        for i in range(6)
    ]
    return early + demo_recording(seed=seed, start=START, minutes=MINUTES)


class Run:
    """One device run: its secrets, replay and what it sent."""

    def __init__(self, seed: int, sampler: str, workdir: Path) -> None:
        self.policy = default_policy()
        self.secrets = s = DeviceSecrets.generate()
        self.events = recording(seed)
        self.replay = workdir / "rec.jsonl"
        write_jsonl(self.events, self.replay)
        blob = compile_policy(self.policy, s.dev_id, s.policy_key)
        with tempfile.TemporaryDirectory() as tmp:
            console = run_device(s, blob, self.events, HEAP, Path(tmp), sampler=sampler)
        self.frames = [i.data for i in split_stream(console) if i.kind == "frame"]
        self.workdir = workdir

    def check(self, frames: list[bytes] | None = None) -> VerifyReport:
        """The statistics check on these frames (default: what the device sent)."""
        s = self.secrets
        path = self.workdir / f"c{random.randrange(1 << 30)}.capture"
        with CaptureWriter(path, source="test") as w:
            for f in self.frames if frames is None else frames:
                w.write("serial", b"\x00" + cobs_encode(f) + b"\x00", "/dev/pts/test")
        report = VerifyReport(capture=str(path))
        traffic = extract(read_capture(path), report)
        authenticate(
            traffic.messages, Keyring([DeviceKeys(s.dev_id, s.cose_key, s.base_iv)]), report
        )
        decode_plaintexts(traffic.messages, report)
        assert report.findings == [], report.findings
        check_statistics(
            traffic.messages, ground_truth(self.replay, self.policy), self.policy, report
        )
        return report

    def reseal(self, frame: bytes, pack: list[dict[Any, Any]]) -> bytes:
        s = self.secrets
        ctr = decrypt0(s.cose_key, s.base_iv, frame, kid=s.dev_id).counter
        return encrypt0(s.cose_key, s.base_iv, s.dev_id, ctr, cbor2.dumps(pack))


RUNS = {
    "clean1": (21, ""),
    "clean2": (22, ""),
    "clean3": (23, ""),
    "zero": (24, ZERO),
    "tenth": (25, TENTH),
}


class Runs:
    """Device runs made on first use (a pytest-xdist worker makes only those it needs)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.made: dict[str, Run] = {}

    def __getitem__(self, name: str) -> Run:
        if name not in self.made:
            seed, sampler = RUNS[name]
            self.made[name] = Run(seed, sampler, self.factory.mktemp(name))
        return self.made[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory)


def stats_findings(report: VerifyReport) -> list[str]:
    return [f.what for f in report.findings if f.check == "statistics"]


def test_clean_device_captures_pass(runs) -> None:
    for name in ("clean1", "clean2", "clean3"):
        report = runs[name].check()
        assert stats_findings(report) == [], name
        # 24 windows of footfall (visitors + 4 dwell bins) and of heart (hr + 4 zones).
        assert report.covered["statistics"] >= 200


@pytest.mark.parametrize("run", ["zero", "tenth"])
def test_too_little_noise_is_found(runs, run: str) -> None:
    found = stats_findings(runs[run].check())
    fields = {w.split(":")[0] for w in found}
    assert all("too little noise" in w for w in found), found
    assert {"heart.hr", "heart.zones", "footfall.visitors"} <= fields, found


def _first(run: Run, name: str) -> tuple[int, list[dict[Any, Any]]]:
    s = run.secrets
    for i, f in enumerate(run.frames):
        pack = cbor2.loads(decrypt0(s.cose_key, s.base_iv, f, kid=s.dev_id).plaintext)
        if any(r.get(0) == name for r in pack):
            return i, pack
    raise AssertionError(f"no {name} record")


def test_a_value_moved_far_is_found(runs) -> None:
    run = runs["clean1"]
    i, pack = _first(run, "visitors")
    rec = next(r for r in pack if r.get(0) == "visitors")
    before = rec[2]
    rec[2] = before + 120  # scale 2: a jump this far has probability about e^-60
    frames = list(run.frames)
    frames[i] = run.reseal(frames[i], pack)
    found = stats_findings(run.check(frames))
    assert len(found) == 1, found
    bt = pack[0][-3]
    assert found[0].startswith(f"footfall.visitors in window {bt}: released {before + 120}")


def test_release_below_k_is_found(runs) -> None:
    run = runs["clean2"]
    _, pack = _first(run, "visitors")
    bt = START - 300  # two phones only: the device suppressed this window
    forged = [{**pack[0], -3: bt, 0: "visitors", 2: 2}]
    forged[0].pop(6, None)
    s = run.secrets
    last = decrypt0(s.cose_key, s.base_iv, run.frames[-1], kid=s.dev_id).counter
    frames = [
        *run.frames,
        encrypt0(s.cose_key, s.base_iv, s.dev_id, last + 1, cbor2.dumps(forged)),
    ]
    found = stats_findings(run.check(frames))
    assert found == [
        f"footfall.visitors in window {bt}: released although only 2 contributed (k = 5)"
    ]


# --- the law of a released value, against brute force ---------------------------------


def _gen(y: int, p: int) -> int:
    # Nearest multiple of p, halves away from zero (veil.privacy.generalize), by fractions.
    q = Fraction(abs(y), p) + Fraction(1, 2)
    return (1 if y >= 0 else -1) * math.floor(q) * p


def brute_pmf(f: dict[str, Any], v: int, t: float) -> dict[int, float]:
    a = math.exp(-1 / t)
    c = (1 - a) / (1 + a)
    out: dict[int, float] = {}
    span = int(60 * t) + 20
    for x in range(-span, span + 1):
        y = v + x
        if f["agg"] in ("count", "hist", "distinct", "dwell"):
            y = max(0, y)
        elif f["agg"] in ("mean", "min", "max"):
            y = min(max(y, f["lo"]), f["hi"])
        r = _gen(y, f.get("prec", 1))
        out[r] = out.get(r, 0.0) + c * a ** abs(x)
    return out


LAWS = [
    ({"agg": "count"}, 3, 2.0),
    ({"agg": "hist"}, 0, 75.0),
    ({"agg": "dwell", "prec": 2}, 1, 0.5),
    ({"agg": "mean", "lo": 30, "hi": 220, "prec": 5}, 215, 95.0),
    ({"agg": "min", "lo": -80, "hi": -50, "prec": 3}, -79, 7.0),
    ({"agg": "sum", "lo": -90, "hi": -60, "prec": 10}, -3724, 3.0),
    ({"agg": "max", "lo": 0, "hi": 4, "prec": 4}, 2, 1.5),
]


@pytest.mark.parametrize("f,v,t", LAWS)
def test_release_law_equals_brute_force(f: dict[str, Any], v: int, t: float) -> None:
    want = brute_pmf(f, v, t)
    law = ReleaseLaw(f, v, t)
    assert sum(want.values()) == pytest.approx(1.0, abs=1e-9)
    # Away from the brute force's truncated ends it is exact, for every integer: also
    # those no release can take (not a multiple of prec, below 0, outside [lo, hi]).
    for r in range(law.center - int(40 * t) - 9, law.center + int(40 * t) + 10):
        got = math.exp(law.log_eq(r))
        assert got == pytest.approx(want.get(r, 0.0), rel=1e-7, abs=1e-300), r
        assert (law.log_eq(r) == -math.inf) == (r not in want), r
    c = law.center
    for r in sorted(want)[:: max(1, len(want) // 25)]:
        d = abs(r - c)
        far = sum(p for x, p in want.items() if abs(x - c) >= d)
        near = sum(p for x, p in want.items() if abs(x - c) <= d)
        assert math.exp(law.log_far(r)) == pytest.approx(far, rel=1e-6, abs=1e-15), r
        assert math.exp(law.log_near(r)) == pytest.approx(near, rel=1e-6, abs=1e-15), r
    mean_abs = sum(p * abs(x - c) for x, p in want.items())
    assert law.mean_abs() == pytest.approx(mean_abs, rel=1e-6)


def test_far_tail_does_not_underflow() -> None:
    law = ReleaseLaw({"agg": "count"}, 40, 2.0)
    # P(X >= 2000) = a^2000 / (1 + a), a = e^-0.5: log = -1000 - log(1 + e^-0.5).
    assert law.log_far(2040) == pytest.approx(
        -1000 - math.log1p(math.exp(-0.5)) + math.log(2), rel=1e-3
    )
    assert law.log_eq(-1) == -math.inf  # a count is never released negative


def test_poisson_binomial_tail() -> None:
    ps = [0.3] * 40
    exact = sum(math.comb(40, j) * 0.3**j * 0.7 ** (40 - j) for j in range(25, 41))
    assert poisson_binomial_tail(ps, 25) == pytest.approx(exact, rel=1e-9)
    assert poisson_binomial_tail(ps, 0) == 1.0 and poisson_binomial_tail(ps, 41) == 0.0
    mixed = [0.1, 0.5, 0.9]
    assert poisson_binomial_tail(mixed, 3) == pytest.approx(0.1 * 0.5 * 0.9)
    # Past the exact limit: a Chernoff bound, never below the binomial tail.
    big = [0.25] * 3000
    s = 900
    lg = [
        math.lgamma(3001)
        - math.lgamma(j + 1)
        - math.lgamma(3001 - j)
        + j * math.log(0.25)
        + (3000 - j) * math.log(0.75)
        for j in range(s, 3001)
    ]
    tail = sum(math.exp(x) for x in lg)
    bound = poisson_binomial_tail(big, s)
    assert tail <= bound < 1e-6


def _dlap(rng: random.Random, t: float) -> int:
    # The difference of two geometric variables on {0, 1, ...} with P(k) ~ a^k is
    # discrete Laplace with parameter a (an independent way to draw it).
    a = math.exp(-1 / t)

    def geo() -> int:
        return int(math.floor(math.log(1 - rng.random()) / math.log(a)))

    return geo() - geo()


def test_likelihood_ratio_on_simulated_noise() -> None:
    rng = random.Random(5)
    f = {"agg": "mean", "lo": 30, "hi": 220, "prec": 5}
    vs = [rng.randint(60, 180) for _ in range(150)]
    laws = [ReleaseLaw(f, v, 95.0) for v in vs]

    def release(v: int, t: float) -> int:
        return _gen(min(max(v + _dlap(rng, t), 30), 220), 5)

    honest = [release(v, 95.0) for v in vs]
    llr, _ = log_likelihood_ratio(laws, honest)
    assert llr < math.log(1e4)  # would need p <= 1e-4 under the declared law
    third = [release(v, 95.0 / 3) for v in vs]
    llr, c = log_likelihood_ratio(laws, third)
    assert llr > math.log(1e8) and c in (2.0, 3.0, 5.0)
