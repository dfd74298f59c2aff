"""The pipeline: samples in, sealed reports out, per the policy's streams.

    pipe = Pipeline(policy, keys, budget, egress)
    pipe.feed(t, "hr", 72)        # per sample: allocation-free unless a window closes
    pipe.tick(t_now)              # a live source: close windows whose end time has come
    pipe.flush(t_end)             # close open windows at the end of a recording

Every stream sees every sample's event time (windows advance on event time only, never
the wall clock), and feeds the sample to the aggregators of its fields whose input
channel matches; "timed" aggregators (veil.dwell) get the event time too. At window
close the gate (veil.gate) decides what may leave. A live source has a clock: tick()
closes a window once its end has passed even when no sample arrives to close it.
"""

import binascii
import os

from veil import T0, aggregate, distinct, noise, privacy
from veil.gate import close_window
from veil.policy import KEYED
from veil.window import CLOSE, LATE, Window


def _make(f, key16, window):
    a = f.agg
    if a == "count":
        return aggregate.Count()
    if a == "sum":
        return aggregate.Sum(f.lo, f.hi)
    if a == "min":
        return aggregate.Min(f.lo, f.hi)
    if a == "max":
        return aggregate.Max(f.lo, f.hi)
    if a == "mean":
        return aggregate.Mean(f.lo, f.hi)
    if a == "hist":
        return aggregate.Histogram(f.edges)
    if a == "distinct_sketch":
        return distinct.DistinctSketch(f.bound, key16, f.m)
    if a == "dwell":
        from veil.dwell import Dwell  # only a policy with a dwell field pays for it

        return Dwell(f.edges, f.bound, key16, window)
    return distinct.Distinct(f.bound, key16)


class Stream:
    """One policy stream: its window, aggregators and pre-drawn noise (all made here).

    `fields` holds (FieldPolicy, aggregator, NoisePool, (num, den)) per field. The noise
    scale num/den = sensitivity / epsilon is computed here, once, from the policy and the
    aggregator's parameters, before any sample exists: it is the same in every window
    whatever the data (a scale chosen by the data would itself leak; docs/policy.md).
    """

    def __init__(self, sp, policy, keys, budget, sampler):
        self.policy = sp
        self._pseudo_key = keys.pseudo_key
        self._dev_id = keys.dev_id
        self._epoch_s = policy.epoch
        self._sampler = sampler
        self.budget = budget
        self.window = Window(sp.window)
        self.fields = []
        self.inputs = {}  # channel -> aggregators taking add(value)
        self.timed = {}  # channel -> aggregators taking add(value, t) (veil.dwell)
        for f in sp.fields:
            agg = _make(f, os.urandom(16), sp.window)
            size = len(f.edges) + 1 if f.edges else 1
            scale = noise.laplace_scale(agg.sensitivity(f.cap), f.eps)
            self.fields.append((f, agg, noise.NoisePool(sampler, size), scale))
            inputs = self.timed if f.agg == "dwell" else self.inputs
            inputs.setdefault(f.input, []).append(agg)
        self.suppressed = 0
        self.refused = 0
        self._open = False

    def base_name(self, start):
        """SenML base name: a per-epoch pseudonym of the device, then the stream."""
        epoch = (start + T0) // self._epoch_s
        p = privacy.pseudonym(self._pseudo_key, epoch, self._dev_id)
        return binascii.hexlify(p).decode() + ":" + self.policy.name + ":"

    def open_window(self):
        """Reset the aggregators and draw this window's noise now, long before it closes.

        Called after the previous report was handed to egress, so the time a report
        takes to leave never depends on noise (veil.noise.NoisePool).
        """
        for f, agg, pool, scale in self.fields:
            if f.agg in KEYED:
                agg.rekey(os.urandom(16))  # hashes unlinkable across windows
            else:
                agg.reset()
            pool.refill(scale[0], scale[1])
        self._open = True

    def feed(self, t, channel, value):
        """Place one sample by its time, and add it unless it closed a window.

        Returns the closed window's Report, if any: the caller sends it, then calls
        open_window() and add(channel, value, t), so noise for the new window is drawn
        only after the report left. Otherwise adds the sample and returns None.
        """
        w = self.window
        r = w.place(t)
        if r == LATE:
            return None
        if r == CLOSE:
            # A window closed by tick() or flush() is not open: never released twice.
            report = close_window(self, w.start, t) if self._open else None
            w.advance(t)
            self._open = False
            if report is not None:
                return report
        if not self._open:
            self.open_window()
        self.add(channel, value, t)
        return None

    def tick(self, t):
        """Close the open window if `t` (veil time, a clock) is at or past its end.

        Returns the closed window's Report, if any (the caller sends it). The next
        sample opens the window that holds it. Allocation-free unless a window closes.
        """
        w = self.window
        if not self._open or t < w.end:
            return None
        report = close_window(self, w.start, t)
        w.advance(t)
        self._open = False
        return report

    def add(self, channel, value, t=None):
        """Hand a sample at event time `t` to the fields reading `channel`; no allocation.

        `t` may be left out only when no timed aggregator reads `channel`.
        """
        aggs = self.inputs.get(channel)
        if aggs is not None:
            for agg in aggs:
                agg.add(value)
        aggs = self.timed.get(channel)
        if aggs is not None:
            for agg in aggs:
                agg.add(value, t)

    def flush(self, t):
        if not self._open:
            return None
        self._open = False
        return close_window(self, self.window.start, t)


class Pipeline:
    def __init__(self, policy, keys, budget, egress, sampler=None):
        self.egress = egress
        sampler = sampler or noise.Sampler()
        self.streams = [Stream(sp, policy, keys, budget, sampler) for sp in policy.streams]

    def feed(self, t, channel, value):
        """One sample at veil time `t` (seconds since veil.T0) on `channel`."""
        for s in self.streams:
            report = s.feed(t, channel, value)
            if report is not None:
                self.egress.send(report)
                s.open_window()
                s.add(channel, value, t)

    def tick(self, t):
        """Veil time `t` has come (a clock, not a sample): close windows that ended."""
        for s in self.streams:
            report = s.tick(t)
            if report is not None:
                self.egress.send(report)

    def flush(self, t):
        for s in self.streams:
            report = s.flush(t)
            if report is not None:
                self.egress.send(report)
