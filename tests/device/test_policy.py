# Device policy parsing (device/veil/policy.py): the distinct-count mode is the policy's
# choice, with its parameters checked; anything else is refused (deny by default).
from veil.policy import Policy, PolicyError

DEV = b"\x01" * 8


def _policy(field):
    return Policy(
        {
            "v": 1,
            "dev": DEV,
            "period": 86400,
            "eps_period": 100000,
            "epoch": 86400,
            "streams": {"s": {"window": 60, "k": 2, "fields": {"v": field}}},
        },
        DEV,
    )


def _refused(field):
    try:
        _policy(field)
    except PolicyError:
        return True
    return False


def _field(**kw):
    d = {"agg": "distinct", "in": "ble", "bound": 50, "eps": 1000}
    d.update(kw)
    return d


def test_distinct_exact_bound():
    f = _policy(_field()).streams[0].fields[0]
    assert (f.agg, f.bound, f.cap) == ("distinct", 50, 1)
    assert _policy(_field(bound=2000)).streams[0].fields[0].bound == 2000
    assert _refused(_field(bound=2001))  # the exact set would not fit the heap
    assert _refused(_field(bound=0))
    assert _refused(_field(m=1024))  # m belongs to the sketch only


def test_distinct_sketch_fields():
    f = _policy(_field(agg="distinct_sketch", bound=100000)).streams[0].fields[0]
    assert (f.agg, f.bound, f.m) == ("distinct_sketch", 100000, 1024)  # default m
    f = _policy(_field(agg="distinct_sketch", bound=100, m=16)).streams[0].fields[0]
    assert f.m == 16
    assert _refused(_field(agg="distinct_sketch", m=1000))  # not a power of two
    assert _refused(_field(agg="distinct_sketch", m=8))
    assert _refused(_field(agg="distinct_sketch", m=8192))
    # bound must stay below 0.673 m^2 (m = 16: 172.288): the sensitivity is finite there.
    assert not _refused(_field(agg="distinct_sketch", bound=172, m=16))
    assert _refused(_field(agg="distinct_sketch", bound=173, m=16))
    assert _refused(_field(agg="distinct_sketch", bound=(1 << 24) + 1, m=4096))
    assert not _refused(_field(agg="distinct_sketch"))


def test_unknown_agg_and_entries_refused():
    assert _refused(_field(agg="distinct_auto"))
    assert _refused(_field(agg="count", m=16))
    assert _refused(_field(mode="sketch"))
