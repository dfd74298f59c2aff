"""The provisioned privacy policy: what may leave the device, and only after which transform.

    policy = load(cose_mac0_bytes, keys.policy_key, keys.dev_id)
    for stream in policy.streams: ...

The policy is a CBOR map (docs/policy.md) authenticated as COSE_Mac0 (RFC 9052 §6.2,
HMAC 256/256) under the device's policy key and bound to its device id. Deny by default:
only the fields named here are ever released, each with its declared transforms; anything
unknown, missing, mistyped or out of range rejects the whole policy (PolicyError), and a
device without a valid policy sends nothing.
"""

from veil import VeilError
from veil.cbor import CBORError, loads
from veil.cose import mac0_verify
from veil.crypto import CryptoError

AGGS = ("count", "sum", "min", "max", "mean", "hist", "distinct", "distinct_sketch", "dwell")
DISTINCT = ("distinct", "distinct_sketch")
HISTS = ("hist", "dwell")  # released as one number per bin
KEYED = ("distinct", "distinct_sketch", "dwell")  # ids hashed under a key made per window
_RANGED = ("sum", "min", "max", "mean")
_MAX_BOUND = 2000  # distinct-count exact bound: 8-byte hashes in 1.5x slots fit the heap
_MAX_SKETCH_BOUND = 1 << 24  # distinct_sketch: largest estimate released
_MAX_M = 4096  # distinct_sketch registers (bytes of RAM)
_MAX_DWELL_BOUND = 1000  # dwell: 18 bytes of RAM per id (veil.dwell)
_MAX_DWELL_S = 1 << 24  # dwell edges: seconds within a window (windows are shorter)
_MAX_BINS = 32


class PolicyError(VeilError):
    pass


class FieldPolicy:
    def __init__(self, name, d, where):
        _map(d, where)
        self.name = name
        self.agg = _str(d, "agg", where)
        if self.agg not in AGGS:
            raise PolicyError("%s.agg: unknown aggregate %r" % (where, self.agg))
        self.input = _str(d, "in", where)
        self.eps = _int(d, "eps", where, 1, 100000)  # milli-epsilon per window
        self.cap = _int(d, "cap", where, 1, 1000, 1)  # contributions per person per window
        self.prec = _int(d, "prec", where, 1, 1 << 30, 1)  # generalization step
        allowed = ["agg", "in", "eps", "cap", "prec"]
        self.lo = self.hi = 0
        if self.agg in _RANGED:
            self.lo = _int(d, "lo", where, -(1 << 30), 1 << 30)
            self.hi = _int(d, "hi", where, -(1 << 30), 1 << 30)
            if self.lo >= self.hi:
                raise PolicyError("%s: lo must be below hi" % where)
            allowed += ["lo", "hi"]
        self.edges = None
        if self.agg in HISTS:
            edges = d.get("edges")
            if type(edges) is not list or not 1 <= len(edges) < _MAX_BINS:
                raise PolicyError("%s.edges: 1..%d integers required" % (where, _MAX_BINS - 1))
            for i, e in enumerate(edges):
                if type(e) is not int or (i and e <= edges[i - 1]):
                    raise PolicyError("%s.edges: strictly increasing integers required" % where)
            if self.agg == "dwell" and not 0 < edges[0] <= edges[-1] < _MAX_DWELL_S:
                raise PolicyError("%s.edges: seconds 1..%d required" % (where, _MAX_DWELL_S - 1))
            self.edges = edges
            allowed.append("edges")
        self.bound = self.m = 0
        if self.agg == "distinct":  # min(exact count, bound)
            self.bound = _int(d, "bound", where, 1, _MAX_BOUND)
            allowed.append("bound")
        elif self.agg == "dwell":  # dwell histogram of the first `bound` ids of a window
            self.bound = _int(d, "bound", where, 1, _MAX_DWELL_BOUND)
            allowed.append("bound")
        elif self.agg == "distinct_sketch":  # min(HyperLogLog estimate, bound), always
            self.bound = _int(d, "bound", where, 1, _MAX_SKETCH_BOUND)
            self.m = _int(d, "m", where, 16, _MAX_M, 1024)
            if self.m & (self.m - 1):
                raise PolicyError("%s.m: a power of two required" % where)
            # The sketch's sensitivity needs bound < alpha_m m^2; alpha_m >= 0.673 for
            # every m (veil.aggregate.DistinctSketch), so this check is on the safe side.
            if 1000 * self.bound >= 673 * self.m * self.m:
                raise PolicyError("%s.bound: must be below 0.673 * m * m" % where)
            allowed += ["bound", "m"]
        _only(d, allowed, where)


class StreamPolicy:
    def __init__(self, name, d, where):
        _map(d, where)
        self.name = name
        self.window = _int(d, "window", where, 1, 7 * 86400)
        self.k = _int(d, "k", where, 1, 1 << 20)
        fields = d.get("fields")
        if type(fields) is not dict or not fields:
            raise PolicyError("%s.fields: a non-empty map is required" % where)
        _only(d, ("window", "k", "fields"), where)
        self.fields = [FieldPolicy(_name(n, where), f, where + "." + n) for n, f in fields.items()]
        self.eps = sum(f.eps for f in self.fields)  # milli-epsilon spent per released window


class Policy:
    def __init__(self, d, dev_id):
        _map(d, "policy")
        if d.get("v") != 1:
            raise PolicyError("policy.v: unsupported version %r" % d.get("v"))
        if d.get("dev") != dev_id:
            raise PolicyError("policy.dev: made for another device")
        self.period = _int(d, "period", "policy", 60, 366 * 86400)
        self.eps_period = _int(d, "eps_period", "policy", 1, 100000000)
        self.epoch = _int(d, "epoch", "policy", 60, 366 * 86400)
        streams = d.get("streams")
        if type(streams) is not dict or not streams:
            raise PolicyError("policy.streams: a non-empty map is required")
        _only(d, ("v", "dev", "period", "eps_period", "epoch", "streams"), "policy")
        self.streams = [StreamPolicy(_name(n, "policy"), s, n) for n, s in streams.items()]
        for s in self.streams:
            if s.eps > self.eps_period:
                raise PolicyError("%s: one window spends more than the period's epsilon" % s.name)


def load(msg, policy_key, dev_id):
    """Authenticate and parse a provisioned policy; PolicyError says why it is refused."""
    if not msg:
        raise PolicyError("no policy provisioned")
    try:
        _kid, payload = mac0_verify(policy_key, msg)
        d = loads(payload)
    except (CryptoError, CBORError) as e:
        raise PolicyError("policy fails authentication or decoding: %s" % e)
    return Policy(d, dev_id)


def _name(n, where):
    if type(n) is not str or not 0 < len(n) <= 24:
        raise PolicyError("%s: names must be text of 1..24 characters" % where)
    return n


def _str(d, key, where):
    v = d.get(key)
    if type(v) is not str or not v:
        raise PolicyError("%s.%s: text required" % (where, key))
    return v


def _int(d, key, where, lo, hi, default=None):
    v = d.get(key, default)
    if type(v) is not int or not lo <= v <= hi:
        raise PolicyError("%s.%s: integer in %d..%d required, got %r" % (where, key, lo, hi, v))
    return v


def _map(d, where):
    if type(d) is not dict:
        raise PolicyError("%s: a map is required" % where)


def _only(d, allowed, where):
    for key in d:
        if key not in allowed:
            raise PolicyError("%s: unknown entry %r" % (where, key))
