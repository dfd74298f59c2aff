"""Was the declared noise really added? Released values against the replay's ground truth.

    check_statistics(messages, ground_truth(replay, policy), policy, report)

Each released record whose true value is known (edgeveil.verify.truth) is a draw of
R = post(v + X): v the true aggregate, X discrete Laplace noise of the field's declared
scale t = sensitivity / ε (docs/policy.md), post the gate's post-processing (max(0, .)
for counts, clamp to [lo, hi] for mean/min/max, then rounding to the precision). Its law
is computed exactly here (closed-form CDFs of the discrete Laplace distribution, in log
space so far tails do not underflow), and three things are findings (check "statistics"):

- **too little noise**, per (stream, field): (1) more released values equal post(v) than
  chance allows, by the exact Poisson-binomial tail of their count (a Chernoff bound past
  2,000 records); (2) the values fit a smaller noise scale better than the declared one:
  the likelihood ratio of "scale t / c" (an equal mixture over c from 1.5 to 1000)
  against "scale t" has expectation 1 under the declared law, so P(LR >= 1/a) <= a
  (Markov's inequality, no approximation). Threshold: p < 1e-6, Bonferroni over the
  fields and the two tests;
- **an improbable value**: P(|R - post(v)| >= observed) below 1e-9 / (records tested),
  or a value the mechanism cannot produce at all (no noise makes it);
- **a field released although fewer than k contributed** (true n < k).

False positives: an honest device is flagged with probability at most 1e-6 + 1e-9 per
capture (every test above is conservative). What this cannot see: noise of the right
size drawn from a bad random source that an observer can predict, or noise that is
correlated across releases in a way each marginal law hides.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .messages import Message
from .report import Finding, VerifyReport
from .truth import TrueValue, Truth, post, record_field, scale

ALPHA_FIELD = 1e-6  # family-wise, for the "too little noise" tests over all fields
ALPHA_SINGLE = 1e-9  # family-wise, for single values over all records tested
SCALE_FACTORS = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0)  # alternatives: scale / c
_EXACT_DP_MAX = 2000  # Poisson-binomial tail by exact convolution up to this many records
_BASE_NAME = re.compile(r"[0-9a-f]{16}:([A-Za-z0-9_]+):\Z")
_INF = math.inf


def _log_cdf(x: float, la: float, l1a: float) -> float:
    """log P(X <= x) for discrete Laplace with log a = la, l1a = log(1 + a)."""
    if x == _INF:
        return 0.0
    if x == -_INF:
        return -_INF
    if x < 0:
        return -x * la - l1a  # a^-x / (1 + a)
    return math.log1p(-math.exp((x + 1) * la - l1a))  # 1 - a^(x+1) / (1 + a)


def _log_between(x1: float, x2: float, la: float) -> float:
    """log P(x1 <= X <= x2), X discrete Laplace with parameter a = exp(la)."""
    if x1 > x2:
        return -_INF
    l1a = math.log1p(math.exp(la))
    if x1 == -_INF:
        return _log_cdf(x2, la, l1a)
    if x2 == _INF:
        return _log_cdf(-x1, la, l1a)  # symmetric: P(X >= x1) = P(X <= -x1)
    if x1 >= 1 or x2 <= -1:  # one tail: a^m (1 - a^(w+1)) / (1 + a)
        m, w = (x1, x2 - x1) if x1 >= 1 else (-x2, x2 - x1)
        return m * la + math.log(-math.expm1((w + 1) * la)) - l1a
    out = (1 - x1) * la - l1a, (x2 + 1) * la - l1a  # the two tails outside
    return math.log1p(-(math.exp(out[0]) + math.exp(out[1])))


def _gen_min(r: float, prec: int) -> float:
    """The smallest y with generalize(y, prec) >= r (veil.privacy.generalize)."""
    if prec <= 1 or abs(r) == _INF:
        return math.ceil(r) if abs(r) != _INF else r
    half = prec // 2
    m = -(-int(math.ceil(r)) // prec)  # ceil(r / prec)
    if m >= 1:
        return m * prec - half
    return (m - 1) * prec + half + 1


def _gen_max(r: float, prec: int) -> float:
    """The largest y with generalize(y, prec) <= r (generalize is odd: -_gen_min(-r))."""
    return -_gen_min(-r, prec)


class ReleaseLaw:
    """The law of a released value R = post(v + X), X discrete Laplace of scale t.

    Args:
        f: the field's policy (agg, lo, hi, prec).
        v: the true aggregate.
        t: the noise scale (sensitivity / ε).
    """

    def __init__(self, f: dict[str, Any], v: int, t: float) -> None:
        self.f, self.v, self.t = f, v, t
        self.agg = f["agg"]
        self.prec = f.get("prec", 1)
        self.la = -1.0 / t
        self.center = post(f, v)  # what zero noise releases

    def scaled(self, c: float) -> ReleaseLaw:
        """The same release with the noise scale divided by c."""
        return ReleaseLaw(self.f, self.v, self.t / c)

    def log_between(self, r1: float, r2: float) -> float:
        """log P(r1 <= R <= r2); either end may be infinite."""
        y1, y2 = _gen_min(r1, self.prec), _gen_max(r2, self.prec)
        if y1 > y2:
            return -_INF
        v = self.v
        if self.agg in ("mean", "min", "max"):
            lo, hi = self.f["lo"], self.f["hi"]
            if y2 < lo or y1 > hi:
                return -_INF
            x1 = -_INF if y1 <= lo else y1 - v
            x2 = _INF if y2 >= hi else y2 - v
        elif self.agg == "sum":
            x1, x2 = y1 - v, y2 - v
        else:  # never negative: max(0, v + X)
            if y2 < 0:
                return -_INF
            x1, x2 = (-_INF if y1 <= 0 else y1 - v), y2 - v
        return _log_between(x1, x2, self.la)

    def log_eq(self, r: int) -> float:
        return self.log_between(r, r)

    def log_far(self, r: int) -> float:
        """log P(|R - center| >= |r - center|): how far out r lies (a p-value)."""
        d = abs(r - self.center)
        if d == 0:
            return 0.0
        c = self.center
        a, b = self.log_between(-_INF, c - d), self.log_between(c + d, _INF)
        return _logaddexp(a, b)

    def log_near(self, r: int) -> float:
        """log P(|R - center| <= |r - center|): how close in r lies."""
        d = abs(r - self.center)
        return self.log_between(self.center - d, self.center + d)

    def mean_abs(self) -> float:
        """E|R - center| = sum over d >= 1 of P(|R - center| >= d).

        Exact while the scale is below 100 steps of the precision; past that the sum is
        taken in blocks of k steps at their midpoints (the figure is only shown).
        """
        c, p = self.center, max(1, self.prec)
        k = max(1, math.ceil(self.t / (100 * p)))
        total, m = 0.0, 1
        while m < 10**6:
            d = (m * k - k // 2) * p  # the block's midpoint (its only point when k == 1)
            far = _logaddexp(self.log_between(-_INF, c - d), self.log_between(c + d, _INF))
            term = math.exp(far)
            total += k * p * term
            if term < 1e-13:
                break
            m += 1
        return total


def _logaddexp(a: float, b: float) -> float:
    if a == -_INF:
        return b
    if b == -_INF:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


# --- tests over many records ----------------------------------------------------------


def poisson_binomial_tail(ps: list[float], s: int) -> float:
    """P(S >= s) for S the number of successes of independent Bernoulli(ps[i]).

    Exact (convolution) up to _EXACT_DP_MAX trials; past that the Chernoff bound
    exp(s - mu) (mu / s)^s, which is never below the true tail.
    """
    if s <= 0:
        return 1.0
    if s > len(ps):
        return 0.0
    if len(ps) > _EXACT_DP_MAX:
        mu = sum(ps)
        if s <= mu:
            return 1.0
        return min(1.0, math.exp(s - mu + s * math.log(mu / s))) if mu > 0 else 0.0
    dist = [1.0]
    for p in ps:
        nxt = [0.0] * (len(dist) + 1)
        for j, q in enumerate(dist):
            nxt[j] += q * (1 - p)
            nxt[j + 1] += q * p
        dist = nxt
    return min(1.0, sum(dist[s:]))


def log_likelihood_ratio(laws: list[ReleaseLaw], values: list[int]) -> tuple[float, float]:
    """log of the mixture likelihood ratio "noise scale t / c" against "scale t".

    The alternative is an equal mixture over c in SCALE_FACTORS of the joint law of all
    records with every scale divided by c. A likelihood ratio has expectation at most 1
    under the null (the declared law), so by Markov's inequality P(LR >= 1/a) <= a: exp(-
    log LR) is a p-value bound that needs no approximation. Values the declared law cannot
    produce are left out (they are findings of their own). Returns (log LR, the c that
    fits best).
    """
    sums = [0.0] * len(SCALE_FACTORS)
    for law, r in zip(laws, values, strict=True):
        l0 = law.log_eq(r)
        if l0 == -_INF:
            continue
        for i, c in enumerate(SCALE_FACTORS):
            sums[i] += law.scaled(c).log_eq(r) - l0
    top = max(sums)
    best = SCALE_FACTORS[sums.index(top)]
    if top == -_INF:
        return -_INF, best
    mix = top + math.log(sum(math.exp(x - top) for x in sums)) - math.log(len(sums))
    return mix, best


# --- the check ------------------------------------------------------------------------


@dataclass
class _Obs:
    msg: Message
    tv: TrueValue
    f: dict[str, Any]
    value: int
    law: ReleaseLaw


def _observations(messages: list[Message], truth: Truth, policy: dict[str, Any]) -> list[_Obs]:
    out: list[_Obs] = []
    seen: set[tuple[bytes, str, int, str]] = set()
    for msg in messages:
        pack = msg.pack
        if pack is None or msg.kid is None:
            continue
        m = _BASE_NAME.match(pack.base_name)
        sp = policy["streams"].get(m.group(1)) if m else None
        if m is None or sp is None:
            continue  # conformance reports it
        stream = m.group(1)
        for rec in pack.records:
            name = rec.name[len(pack.base_name) :]
            found = record_field(sp, name)
            tv = truth.get(stream, pack.base_time, name)
            key = (msg.kid, stream, pack.base_time, name)
            if found is None or tv is None or key in seen:
                continue
            seen.add(key)
            f = found[1]
            out.append(_Obs(msg, tv, f, rec.value, ReleaseLaw(f, tv.value, scale(f))))
    return out


def _where(o: _Obs) -> str:
    return f"{o.tv.stream}.{o.tv.name} in window {o.tv.start}"


def _single(obs: list[_Obs], report: VerifyReport) -> None:
    limit = math.log(ALPHA_SINGLE / len(obs))
    for o in obs:
        law, r = o.law, o.value
        facts = {"stream": o.tv.stream, "record": o.tv.name, "window": o.tv.start}
        facts |= {"released": r, "true": o.tv.value, "expected": law.center, "scale": law.t}
        if o.tv.n < o.tv.k:
            report.add(
                Finding(
                    "statistics",
                    f"{_where(o)}: released although only {o.tv.n} contributed (k = {o.tv.k})",
                    o.msg.index,
                    o.msg.offset,
                    {**facts, "n": o.tv.n, "k": o.tv.k},
                )
            )
        if law.log_eq(r) == -_INF:
            what = "a value the declared mechanism cannot produce"
        else:
            lp = law.log_far(r)
            if lp >= limit:
                continue
            what = f"p = {math.exp(lp):.2g} < {ALPHA_SINGLE:g} / {len(obs)} records"
            facts["log10_p"] = lp / math.log(10)
        report.add(
            Finding(
                "statistics",
                f"{_where(o)}: released {r}, true {o.tv.value} (zero noise gives "
                f"{law.center}; noise scale {law.t:.3g}): {what}",
                o.msg.index,
                o.msg.offset,
                facts,
            )
        )


def _windows(group: list[_Obs]) -> str:
    starts = sorted({o.tv.start for o in group})
    if len(starts) == 1:
        return f"window {starts[0]}"
    return f"{len(starts)} windows {starts[0]}..{starts[-1]}"


def _too_little(group: list[_Obs], n_tests: int, report: VerifyReport) -> None:
    """The equality-count and likelihood-ratio tests on one field's records."""
    alpha = ALPHA_FIELD / n_tests
    o0 = group[0]
    name = f"{o0.tv.stream}.{o0.tv.field}"
    base = {"stream": o0.tv.stream, "field": o0.tv.field, "records": len(group)}
    ps = [math.exp(o.law.log_eq(o.law.center)) for o in group]
    equal = sum(o.value == o.law.center for o in group)
    p_eq = poisson_binomial_tail(ps, equal)
    if p_eq < alpha:
        report.add(
            Finding(
                "statistics",
                f"{name}: too little noise: {equal} of {len(group)} released values in "
                f"{_windows(group)} equal the true value exactly, expected "
                f"{sum(ps):.1f} (p = {p_eq:.2g})",
                detail={**base, "equal": equal, "expected": sum(ps), "p": p_eq},
            )
        )
        return
    llr, c = log_likelihood_ratio([o.law for o in group], [o.value for o in group])
    if llr > -math.log(alpha):
        seen = sum(abs(o.value - o.law.center) for o in group) / len(group)
        want = sum(o.law.mean_abs() for o in group) / len(group)
        p = math.exp(-llr)
        report.add(
            Finding(
                "statistics",
                f"{name}: too little noise: mean |released - true| {seen:.3g} in "
                f"{_windows(group)}, expected {want:.3g} at the declared scale "
                f"{o0.law.t:.3g}; the values fit about 1/{c:g} of that scale (p <= {p:.2g})",
                detail={**base, "mean_abs": seen, "expected": want, "fits_scale_over": c, "p": p},
            )
        )


def check_statistics(
    messages: list[Message], truth: Truth, policy: dict[str, Any], report: VerifyReport
) -> None:
    """Test the noise on every released record whose true value the replay gives.

    Args:
        messages: the capture's messages, authenticated and decoded (messages.py).
        truth: edgeveil.verify.truth.ground_truth of the replay the device was fed.
        policy: the devices' policy (scales, post-processing, k).
        report: findings are added here; covers "statistics" with the records tested.
    """
    obs = _observations(messages, truth, policy)
    report.cover("statistics", len(obs))
    if not obs:
        return
    _single(obs, report)
    groups: dict[tuple[str, str], list[_Obs]] = defaultdict(list)
    for o in obs:
        groups[(o.tv.stream, o.tv.field)].append(o)
    for key in sorted(groups):
        _too_little(groups[key], 2 * len(groups), report)
