# The per-sample path of the whole pipeline allocates nothing (heap_lock), and a closed
# window goes out through egress as one sealed report.
import micropython
from fakes import SinkTransport
from veil.budget import Budget
from veil.egress import Counter, Egress
from veil.keys import Keys
from veil.pipeline import Pipeline
from veil.policy import Policy

DEV = b"\x01" * 8


def _policy():
    return Policy(
        {
            "v": 1,
            "dev": DEV,
            "period": 86400,
            "eps_period": 100000,
            "epoch": 86400,
            "streams": {
                "s": {
                    "window": 60,
                    "k": 2,
                    "fields": {
                        "hr": {"agg": "mean", "in": "hr", "lo": 30, "hi": 220, "eps": 1000},
                        "n": {"agg": "count", "in": "hr", "eps": 1000},
                        "v": {"agg": "distinct", "in": "ble", "bound": 50, "eps": 1000},
                        "u": {
                            "agg": "distinct_sketch",
                            "in": "ble",
                            "bound": 5000,
                            "m": 256,
                            "eps": 1000,
                        },
                    },
                }
            },
        },
        DEV,
    )


def _pipe():
    keys = Keys(DEV, b"\x02" * 16, b"\x03" * 13, b"\x04" * 32, b"\x05" * 32)
    Counter.create("ctr")
    sink = SinkTransport()
    egress = Egress(keys, Counter("ctr"), sink)
    return Pipeline(_policy(), keys, Budget("eps", 86400, 100000), egress), sink


def test_per_sample_path_allocates_nothing():
    pipe, sink = _pipe()
    addr = b"\xaa\xbb\xcc\xdd\xee\x01"
    addrs = [bytes((1, 2, 3, 4, 5, i)) for i in range(60)]  # past the bound of 50
    pipe.feed(100, "hr", 70)  # opens the window (allocates: noise is drawn here)
    micropython.heap_lock()
    try:
        for t in range(101, 119):
            pipe.feed(t, "hr", 60 + t % 7)
            pipe.feed(t, "ble", addr)
            pipe.feed(t, "other", 5)
        for a in addrs:
            pipe.feed(119, "ble", a)
    finally:
        micropython.heap_unlock()
    assert sink.sent == []


def test_window_close_sends_one_report():
    pipe, sink = _pipe()
    for t in range(120, 180, 2):
        pipe.feed(t, "hr", 70)
        pipe.feed(t, "ble", bytes((1, 2, 3, 4, 5, t % 7)))
    assert sink.sent == []
    pipe.feed(180, "hr", 70)  # next window: the first one closes
    assert len(sink.sent) == 1
    msg = sink.sent[0]
    assert msg[0] == 0xD0  # COSE_Encrypt0 tag 16
    for raw in (b"\x01\x02\x03\x04\x05",):
        assert raw not in msg
