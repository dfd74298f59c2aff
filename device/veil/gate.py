"""The policy gate: the only place a window's aggregates become a releasable Report.

    report = close_window(stream, start, t)   # None when nothing may be released

For each field the policy names, in order (docs/policy.md):
1. suppress: a field backed by fewer than k contributions (k-anonymity) is left out;
2. noise: discrete Laplace noise of scale sensitivity/ε, drawn *before* the window closed
   (veil.noise.NoisePool), is added to every released number;
3. clamp the noised value to the field's valid range, then generalize it to the policy's
   precision (post-processing: costs no privacy);
4. spend: the ε of all released fields is taken from the period budget; if the budget
   cannot cover it, nothing is released.
Raw values, distinct-count registers and per-sample data never reach a Report.
"""

from veil import T0, VeilError
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


def _release(f, agg, noise):
    """[(name, value)] for one field; `noise()` returns the next pre-drawn noise value."""
    if f.agg == "hist":
        out = []
        for i, c in enumerate(agg.result()):
            out.append(("%s/%d" % (f.name, i), generalize(max(0, c + noise()), f.prec)))
        return out
    if f.agg == "mean":
        v = clamp(agg.mean() + noise(), f.lo, f.hi)
    elif f.agg in ("min", "max"):
        v = clamp(agg.result() + noise(), f.lo, f.hi)
    elif f.agg == "sum":
        v = agg.result() + noise()
    else:  # count, distinct: never negative
        v = max(0, agg.result() + noise())
    return [(f.name, generalize(v, f.prec))]


def close_window(stream, start, t):
    """Apply the policy to a closed window of `stream` (a veil.pipeline.Stream)."""
    sp = stream.policy
    records = []
    eps = 0
    for f, agg, pools in stream.fields:
        n = agg.result() if f.agg == "distinct" else agg.n
        if n < sp.k:
            stream.suppressed += 1
            continue
        pool = pools[1] if f.agg == "distinct" and agg.overflow else pools[0]
        for name, value in _release(f, agg, pool.take):
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
