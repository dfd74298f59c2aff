# Pipeline.tick (windows close on a clock, with no sample to close them) and a dwell field
# in a whole pipeline: event times reach it, reports carry one record per bin, and the
# per-sample path still allocates nothing.
import gc

import micropython
from detrand import DetRand
from fakes import SinkTransport
from veil.budget import Budget
from veil.cbor import loads
from veil.cose import decrypt0
from veil.egress import Counter, Egress
from veil.keys import Keys
from veil.noise import Sampler
from veil.pipeline import Pipeline
from veil.policy import Policy

DEV = b"\x01" * 8
KEY = b"\x02" * 16
IV = b"\x03" * 13


def _pipe(fields, eps_period=10**7):
    gc.collect()  # Pipeline compiles veil.dwell from source here (a board loads .mpy)
    pol = Policy(
        {
            "v": 1,
            "dev": DEV,
            "period": 86400,
            "eps_period": eps_period,
            "epoch": 86400,
            "streams": {"s": {"window": 60, "k": 2, "fields": fields}},
        },
        DEV,
    )
    keys = Keys(DEV, KEY, IV, b"\x04" * 32, b"\x05" * 32)
    Counter.create("ctr")
    sink = SinkTransport()
    egress = Egress(keys, Counter("ctr"), sink)
    budget = Budget("eps", 86400, eps_period)
    return Pipeline(pol, keys, budget, egress, Sampler(DetRand(b"tick"))), sink


def _records(msg):
    """{short name: value} of one sent report, and its base time."""
    _kid, _ctr, pt = decrypt0(KEY, IV, msg)
    pack = loads(pt)
    names = {}
    for r in pack:
        names[r[0].split(":")[-1]] = r[2]
    return names, pack[0][-3]


def _mac(i):
    return bytes((0xC0, 0xDE, 0, 0, 0, i))


COUNT = {"n": {"agg": "count", "in": "x", "eps": 1000}}


def test_tick_closes_a_window_no_sample_closed():
    pipe, sink = _pipe(COUNT)
    for t in (61, 70, 80):
        pipe.feed(t, "x", 1)
    pipe.tick(119)
    assert sink.sent == []  # the window [60, 120) is still open at 119
    pipe.tick(120)
    assert len(sink.sent) == 1
    names, bt = _records(sink.sent[0])
    assert set(names) == {"n"} and bt == 60 + 1699920000
    pipe.tick(500)  # nothing open: nothing more
    assert len(sink.sent) == 1


def test_a_window_closed_by_tick_is_never_released_again():
    pipe, sink = _pipe(COUNT)
    for t in (61, 70, 80):
        pipe.feed(t, "x", 1)
    pipe.tick(130)  # closes [60, 120); the window moves to [120, 180), not opened
    assert len(sink.sent) == 1
    pipe.feed(400, "x", 1)  # past [120, 180)'s end: nothing to release for it
    pipe.feed(401, "x", 1)
    assert len(sink.sent) == 1
    pipe.feed(420, "x", 1)  # closes [360, 420): two samples, k = 2
    assert len(sink.sent) == 2
    assert _records(sink.sent[1])[1] == 360 + 1699920000


def test_tick_without_a_close_allocates_nothing():
    pipe, _sink = _pipe(COUNT)
    pipe.feed(61, "x", 1)
    micropython.heap_lock()
    try:
        for t in range(61, 120):
            pipe.tick(t)
    finally:
        micropython.heap_unlock()


DWELL = {
    # 100 epsilon: noise of scale 2/100 is 0 but with probability ~2 e**-50.
    "dw": {"agg": "dwell", "in": "ble", "edges": [10, 30], "bound": 20, "eps": 100000},
    "v": {"agg": "distinct", "in": "ble", "bound": 20, "eps": 100000},
}


def test_dwell_field_in_a_pipeline_gets_event_times():
    pipe, sink = _pipe(DWELL)
    # window [120, 180): id 1 stays 40 s, id 2 15 s, id 3 once, id 4 5 s
    for t, i in ((121, 1), (122, 2), (125, 3), (130, 4), (135, 4), (137, 2), (161, 1)):
        pipe.feed(t, "ble", _mac(i))
        pipe.feed(t, "rssi", -60)
    pipe.tick(180)
    assert len(sink.sent) == 1
    names, _bt = _records(sink.sent[0])
    assert names == {"dw/0": 2, "dw/1": 1, "dw/2": 1, "v": 4}


def test_dwell_below_k_is_suppressed_and_per_sample_path_allocates_nothing():
    pipe, sink = _pipe(DWELL)
    pipe.feed(121, "ble", _mac(1))  # opens the window (allocates)
    addr = bytearray(_mac(9))
    micropython.heap_lock()
    try:
        for t in range(122, 179):
            pipe.feed(t, "ble", addr)
            pipe.feed(t, "rssi", -70)
            pipe.tick(t)
    finally:
        micropython.heap_unlock()
    pipe.tick(180)
    names, _bt = _records(sink.sent[0])
    assert names == {"dw/0": 1, "dw/1": 0, "dw/2": 1, "v": 2}
    pipe.feed(200, "ble", addr)  # one id only: below k = 2, nothing leaves
    pipe.tick(240)
    assert len(sink.sent) == 1
