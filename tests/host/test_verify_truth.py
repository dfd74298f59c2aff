"""edgeveil.verify.truth against the device code itself: the oracle is veil run in the
MicroPython VM with a noise sampler that draws 0, so every release is post(true value).

The replays are generated (edgeveil.replaygen) plus hand-made lines that hit the edges:
late samples, rejected lines, a co2 line whose temp is bad, values on histogram edges and
outside clamp ranges, a distinct count and a dwell set that fill their bound, windows with
too few contributions for k. A few pure host tests check the arithmetic on figures worked
out by hand or taken from docs/policy.md.
"""

from __future__ import annotations

import random
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from edgeveil.boards import load_board
from edgeveil.cose import decrypt0
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.frames import split_stream
from edgeveil.policy import compile_policy
from edgeveil.replaygen import footfall, heart, merge
from edgeveil.senml import decode_pack
from edgeveil.verify.truth import (
    generalize,
    ground_truth,
    post,
    read_events,
    sensitivity,
)

HEAP = load_board("esp32-generic").vm_app_heap_bytes
T0 = 1699920000
START = 1_700_000_100  # on a 300 s boundary of veil time, not on a 120 s one

# Runs in the VM before veil.app: no noise at all, and each scale asked for is printed once.
ZERO_SAMPLER = """
class ZeroSampler:
    def __init__(self):
        self.seen = set()
    def discrete_laplace(self, num, den):
        if (num, den) not in self.seen:
            self.seen.add((num, den))
            print("scale %d/%d" % (num, den))
        return 0
sampler = ZeroSampler()
"""

POLICY: dict[str, Any] = {
    "period": 86400,
    "eps_period": 100_000_000,
    "epoch": 86400,
    "streams": {
        "shop": {
            "window": 300,
            "k": 2,
            "fields": {
                "visitors": {"agg": "distinct", "in": "ble", "bound": 600, "eps": 500},
                "few": {"agg": "distinct", "in": "ble", "bound": 7, "eps": 700},
                "seen": {"agg": "count", "in": "rssi", "cap": 3, "eps": 900},
                "rsum": {"agg": "sum", "in": "rssi", "lo": -90, "hi": -60, "eps": 1100},
                "rmin": {"agg": "min", "in": "rssi", "lo": -80, "hi": -50, "eps": 1300, "prec": 3},
                "rmax": {"agg": "max", "in": "rssi", "lo": -80, "hi": -62, "eps": 1700},
                "rmean": {
                    "agg": "mean",
                    "in": "rssi",
                    "lo": -100,
                    "hi": 0,
                    "eps": 1900,
                    "prec": 4,
                },
                "rhist": {"agg": "hist", "in": "rssi", "edges": [-80, -70, -65], "eps": 2300},
                "dwell": {
                    "agg": "dwell",
                    "in": "ble",
                    "edges": [30, 120, 240],
                    "bound": 25,
                    "eps": 2900,
                },
            },
        },
        "wear": {
            "window": 120,
            "k": 20,
            "fields": {
                "hr": {"agg": "mean", "in": "hr", "lo": 50, "hi": 150, "prec": 5, "eps": 3100},
                "zones": {"agg": "hist", "in": "hr", "edges": [100, 140], "cap": 60, "eps": 3700},
                "peak": {"agg": "max", "in": "hr", "lo": 30, "hi": 220, "eps": 4100},
            },
        },
        "air": {
            "window": 600,
            "k": 6,
            "fields": {
                "co2": {"agg": "mean", "in": "co2", "lo": 400, "hi": 2000, "eps": 4300},
                "tlo": {
                    "agg": "min",
                    "in": "temp",
                    "lo": -1000,
                    "hi": 4000,
                    "prec": 10,
                    "eps": 4700,
                },
                "tsum": {"agg": "sum", "in": "temp", "lo": -1000, "hi": 4000, "eps": 5300},
            },
        },
    },
}


def air(seed: int, minutes: int) -> list[dict[str, Any]]:
    """CO2 and temperature once a minute, with gaps (some windows fall below k)."""
    rng = random.Random(seed)
    out = []
    for i in range(minutes):
        if rng.random() < 0.25:
            continue
        e: dict[str, Any] = {"t": START + 60 * i + 7, "kind": "co2", "ppm": rng.randint(300, 2600)}
        r = rng.random()
        if r < 0.75:
            e["temp"] = f"{rng.uniform(-12, 45):.3f}"  # three places: truncated to two
        elif r < 0.9:
            e["temp"] = rng.randint(-5, 30)  # an int: whole degrees
        elif r < 0.95:
            e["temp"] = "21,5"  # bad: the co2 sample is fed, the line rejected
        out.append(e)
    return out


def nasty(minutes: int) -> list[dict[str, Any]]:
    """Lines that hit the edges, placed in time order among the generated ones."""
    a = "c0:ff:ee:00:00:01"
    t = START + 30 * 60 + 5
    return [
        {"t": t, "kind": "ble", "addr": a, "rssi": -80},  # on a histogram edge
        {"t": t + 1, "kind": "ble", "addr": a, "rssi": -65},
        {"t": t + 2, "kind": "ble", "addr": a, "rssi": 20},  # clamped by every range
        {"t": t + 3, "kind": "ble", "addr": a, "rssi": -127},
        {"t": t + 4, "kind": "ble", "addr": a, "rssi": 21},  # rejected: rssi out of range
        {"t": t + 5, "kind": "ble", "addr": "zz:ff:ee:00:00:01", "rssi": -70},  # bad addr
        {"t": t + 6.5, "kind": "ble", "addr": a, "rssi": -70},  # float t: rejected
        {"t": T0 - 1, "kind": "hr", "bpm": 80},  # before veil time: rejected
        {"t": t + 7, "kind": "hr", "bpm": 300},  # rejected
        {"t": t + 8, "kind": "gps", "lat": "1.0"},  # no such source
        {"t": t + 9, "kind": "hr", "bpm": 100},  # on an edge
        {"t": t + 10, "kind": "hr", "bpm": 299},
    ]


def late(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert samples a window or more before the current one (dropped as late)."""
    out = list(events)
    for i in (len(out) // 3, len(out) // 2, 2 * len(out) // 3):
        t = out[i]["t"] - 700
        out.insert(i, {"t": t, "kind": "ble", "addr": "0a:0b:0c:0d:0e:0f", "rssi": -66})
        out.insert(i, {"t": t, "kind": "hr", "bpm": 140})
    return out


def recording(seed: int, minutes: int) -> list[dict[str, Any]]:
    ev = merge(
        footfall(seed, START, minutes, rate_per_min=4.0),
        heart(seed + 1, START, minutes),
        air(seed + 2, minutes),
        nasty(minutes),
    )
    return late(ev)


def run_zero_noise(events: list[dict[str, Any]], policy: dict[str, Any]) -> bytes:
    s = DeviceSecrets.generate()
    blob = compile_policy(policy, s.dev_id, s.policy_key)
    with tempfile.TemporaryDirectory() as tmp:
        console = run_device(s, blob, events, HEAP, Path(tmp), sampler=ZERO_SAMPLER)
    out = bytearray()
    for item in split_stream(console):
        if item.kind == "frame":
            pack = decode_pack(decrypt0(s.cose_key, s.base_iv, item.data, kid=s.dev_id).plaintext)
            for r in pack.records:
                out += repr((pack.base_time, r.name.split(":", 2)[1:], r.value)).encode() + b"\n"
        elif item.kind == "text":
            out += item.data
    return bytes(out)


def device_releases(lines: bytes) -> tuple[dict[tuple[str, int, str], int], set[Fraction]]:
    import ast

    got: dict[tuple[str, int, str], int] = {}
    scales = set()
    for line in lines.decode().splitlines():
        if line.startswith("scale "):
            num, den = line[6:].split("/")
            scales.add(Fraction(int(num), int(den)))
        elif line.startswith("("):
            bt, (stream, name), v = ast.literal_eval(line)
            got[(stream, bt, name)] = v
    return got, scales


@pytest.fixture(scope="module", params=[3, 8])
def oracle(request: pytest.FixtureRequest, tmp_path_factory) -> tuple[Path, bytes]:
    events = recording(request.param, minutes=90)
    path = tmp_path_factory.mktemp("truth") / "rec.jsonl"
    import json

    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path, run_zero_noise(events, POLICY)


def test_truth_equals_the_device_with_zero_noise(oracle) -> None:
    path, lines = oracle
    got, _ = device_releases(lines)
    truth = ground_truth(path, POLICY)
    want = {}
    for key, tv in truth.values.items():
        if tv.released:
            f = POLICY["streams"][tv.stream]["fields"][tv.field]
            want[key] = post(f, tv.value)
    assert len(got) > 300
    assert got == want
    # The replay exercised what it is meant to: saturation, suppression, rejections.
    fields = {(k[0], k[2]) for k in got}
    assert ("shop", "dwell/3") in fields and ("air", "tlo") in fields
    assert any(v.n < v.k for v in truth.values.values() if v.stream == "air")
    assert any(v == 7 for (s, _, n), v in got.items() if n == "few")
    dwell_n = [v.n for v in truth.values.values() if v.name == "dwell/0"]
    assert max(dwell_n) == 25  # the dwell set filled
    assert truth.rejected >= 8


def test_scales_equal_the_device_scales(oracle) -> None:
    _, lines = oracle
    _, scales = device_releases(lines)
    want = set()
    for sp in POLICY["streams"].values():
        for f in sp["fields"].values():
            want.add(Fraction(sensitivity(f) * 1000, f["eps"]))
    assert scales == want


# --- host arithmetic on figures worked out by hand ------------------------------------


def test_generalize_rounds_half_away_from_zero() -> None:
    cases = [(1234, 50, 1250), (1224, 50, 1200), (-7, 5, -5), (-8, 5, -10), (2, 4, 4)]
    cases += [(-2, 4, -4), (1, 4, 0), (-1, 4, 0), (7, 1, 7), (3, 2, 4), (-3, 2, -4)]
    for v, p, want in cases:
        assert generalize(v, p) == want, (v, p)


def test_post_processing_per_aggregate() -> None:
    assert post({"agg": "count"}, -3) == 0
    assert post({"agg": "hist", "prec": 5}, 12) == 10
    assert post({"agg": "mean", "lo": 30, "hi": 220, "prec": 5}, 228) == 220
    assert post({"agg": "min", "lo": 30, "hi": 220}, 12) == 30
    assert post({"agg": "sum", "lo": 0, "hi": 9, "prec": 10}, -26) == -30


def test_sketch_sensitivity_matches_the_policy_table() -> None:
    # docs/policy.md, "distinct_sketch": m, bound -> sensitivity (cap 1).
    table = [(256, 2000, 90), (1024, 4000, 23), (1024, 10000, 136), (4096, 10000, 10)]
    table.append((4096, 50000, 209))
    for m, bound, want in table:
        f = {"agg": "distinct_sketch", "bound": bound, "m": m}
        assert sensitivity(f) == want, (m, bound)
        assert sensitivity({**f, "cap": 2}) == 2 * want


def test_raw_replay_by_hand(tmp_path: Path) -> None:
    # A raw-event replay: float times (the board's clock reads whole seconds), a SCAN_RSP
    # a passive scan never sees, I2C and pin events no source turns into samples.
    w0 = T0 + 3000  # a 60 s window starts here
    lines = [
        {
            "t": w0 + 0.5,
            "kind": "ble",
            "addr": "4f:00:00:00:00:01",
            "rssi": -60,
            "addr_type": 1,
            "adv_type": 0,
            "adv_data": "0201",
        },
        {"t": w0 + 1, "kind": "i2c", "addr": 98, "data": "01f4"},
        {"t": w0 + 20.9, "kind": "ble", "addr": "4f:00:00:00:00:01", "rssi": -70},
        {"t": w0 + 30, "kind": "ble", "addr": "4f:00:00:00:00:02", "rssi": -50, "adv_type": 4},
        {"t": w0 + 59.99, "kind": "ble", "addr": "4F:00:00:00:00:03", "rssi": -90},
        {"t": w0 + 60, "kind": "pin", "pin": 4, "value": 1},
        {"t": w0 + 61, "kind": "ble", "addr": "4f:00:00:00:00:01", "rssi": -40},
    ]
    import json

    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + "not json\n")
    pol = {
        "streams": {
            "s": {
                "window": 60,
                "k": 1,
                "fields": {
                    "n": {"agg": "distinct", "in": "ble", "bound": 10, "eps": 1},
                    "c": {"agg": "count", "in": "rssi", "eps": 1},
                    "m": {"agg": "mean", "in": "rssi", "lo": -100, "hi": 0, "eps": 1},
                    "d": {"agg": "dwell", "in": "ble", "edges": [10, 30], "bound": 10, "eps": 1},
                },
            }
        }
    }
    truth = ground_truth(path, pol)
    vals = {(k[1] - w0, k[2]): (v.value, v.n) for k, v in truth.values.items()}
    assert vals == {
        (0, "n"): (2, 2),  # ...01 and ...03 (upper-case hex is the same address)
        (0, "c"): (3, 3),
        (0, "m"): (-73, 3),  # (-60 - 70 - 90) / 3 = -73.3 -> -73
        (0, "d/0"): (1, 2),  # ...03 seen once: dwell 0
        (0, "d/1"): (1, 2),  # ...01 at 0 and 20: dwell 20
        (0, "d/2"): (0, 2),
        (60, "n"): (1, 1),
        (60, "c"): (1, 1),
        (60, "m"): (-40, 1),
        (60, "d/0"): (1, 1),
        (60, "d/1"): (0, 1),
        (60, "d/2"): (0, 1),
    }
    assert truth.events == 4 and truth.rejected == 4  # i2c, SCAN_RSP, pin, not JSON
    assert read_events(["", '{"t": 1}', "x"]) == [{"t": 1}, None]
