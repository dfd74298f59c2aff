"""The policy gate: the only place a window's aggregates become a releasable Report.

    report = close_window(stream, start, t)   # None when nothing may be released

For each field the policy names, in order (docs/policy.md):
1. suppress: a field backed by fewer than k contributions (k-anonymity) is left out;
2. noise: discrete Laplace noise of scale sensitivity/ε, drawn *before* the window closed
   (veil.noise.NoisePool), is added to every released number. The scale is the field's
   own, fixed by the policy when the stream was made (veil.pipeline.Stream); take()
   checks the pool holds exactly that scale. Nothing here picks a scale from the data;
3. clamp the noised value to the field's valid range, then generalize it to the policy's
   precision (post-processing: costs no privacy);
4. spend: the ε of all released fields is taken from the period budget; if the budget
   cannot cover it, nothing is released.
Raw values, distinct-count registers and per-sample data never reach a Report.
"""

from veil import T0, VeilError
from veil.policy import DISTINCT, HISTS
from veil.privacy import clamp, generalize

_SEAL = object()  # only this module can make a Report egress accepts


class GateError(VeilError):
    pass


class Report:
    def __init__(self, seal, stream, base_name, start, window, k, records):
        if seal is not _SEAL:
            raise GateError("reports are built by the policy gate only")
        self._seal = seal
        self.stream = stream
        self.base_name = base_name
        self.start = start
        self.window = window
        self.k = k
        self.records = records  # [(name, noised generalized int, eps_milli)]


def sealed(report):
    return report._seal is _SEAL


def _release(f, agg, pool, num, den):
    """[(name, value)] for one field, each value noised from `pool` at scale num/den."""
    if f.agg in HISTS:  # hist, dwell: noise on every bin
        out = []
        for i, c in enumerate(agg.result()):
            v = max(0, c + pool.take(num, den))
            out.append(("%s/%d" % (f.name, i), generalize(v, f.prec)))
        return out
    if f.agg == "mean":
        v = clamp(agg.mean() + pool.take(num, den), f.lo, f.hi)
    elif f.agg in ("min", "max"):
        v = clamp(agg.result() + pool.take(num, den), f.lo, f.hi)
    elif f.agg == "sum":
        v = agg.result() + pool.take(num, den)
    else:  # count, distinct, distinct_sketch: never negative
        v = max(0, agg.result() + pool.take(num, den))
    return [(f.name, generalize(v, f.prec))]


def close_window(stream, start, t):
    """Apply the policy to a closed window of `stream` (a veil.pipeline.Stream)."""
    sp = stream.policy
    records = []
    eps = 0
    for f, agg, pool, scale in stream.fields:
        n = agg.result() if f.agg in DISTINCT else agg.n
        if n < sp.k:
            stream.suppressed += 1
            continue
        for name, value in _release(f, agg, pool, scale[0], scale[1]):
            records.append((name, value, f.eps))
        eps += f.eps
    if not records:
        return None
    if not stream.budget.spend(eps, t):
        stream.refused += 1
        print("veil: refusing to send %s: epsilon budget for the period is spent" % sp.name)
        return None
    bn = stream.base_name(start)
    return Report(_SEAL, sp.name, bn, start + T0, sp.window, sp.k, records)
