"""edgeveil.verify.differential: the device code run twice in the MicroPython VM, on a
replay and on it without one person. The real device/ passes; copies of device/ patched
here to leak (an exact distinct count as an extra record; a value derived from the first
BLE address added to a released count) fail with a finding naming the record.

False-positive rate: the noise test flags an honest device with probability at most 1e-6
per run (Bonferroni over the records compared, differential.py), so the clean test fails
by chance with probability below 1e-6.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.cli import main
from edgeveil.demo import DeviceSecrets
from edgeveil.errors import EdgeveilError
from edgeveil.paths import device_dir
from edgeveil.policy import default_policy
from edgeveil.replaygen import demo_recording, footfall
from edgeveil.verify.differential import log_diff_tail, run_differential, without_person
from edgeveil.verify.report import VerifyReport

HEAP = load_board("esp32-generic").vm_app_heap_bytes
START = 1_700_000_100
EVENTS = demo_recording(seed=31, start=START, minutes=60)


def patched(tmp: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of device/ with each file's (old, new) text replaced (old must be there)."""
    tree = tmp / "device"
    shutil.copytree(device_dir(), tree)
    for rel, pairs in edits.items():
        path = tree / rel
        text = path.read_text()
        for old, new in pairs:
            assert old in text, f"{rel}: the patch's anchor is gone: {old!r}"
            text = text.replace(old, new, 1)
        path.write_text(text)
    return tree


# An extra record with the exact distinct count: no noise, not in the policy.
EXACT = {
    "veil/gate.py": [
        (
            "    if not records:\n        return None\n",
            "    for f, agg, pool, scale in stream.fields:\n"
            "        if f.agg == 'distinct':\n"
            "            records.append(('exact', agg.result(), 0))\n"
            "    if not records:\n        return None\n",
        )
    ]
}

# Two bytes of the first BLE address seen, added to the noised visitors count.
FIRST_ADDRESS = {
    "veil/sources/ble.py": [
        (
            '    emit("ble", parse_addr(event.get("addr")))\n',
            '    a = parse_addr(event.get("addr"))\n'
            "    if not FIRST:\n"
            "        FIRST.append(a[3] * 256 + a[4])\n"
            '    emit("ble", a)\n',
        ),
        ("def normalize(", "FIRST = []\n\n\ndef normalize("),
    ],
    "veil/gate.py": [
        (
            "    else:  # count, distinct, distinct_sketch: never negative\n"
            "        v = max(0, agg.result() + pool.take(num, den))\n",
            "    else:  # count, distinct, distinct_sketch: never negative\n"
            "        v = max(0, agg.result() + pool.take(num, den))\n"
            "        if f.agg == 'distinct':\n"
            "            from veil.sources.ble import FIRST\n"
            "            v += FIRST[0]\n",
        )
    ],
}


def run(tree: Path, person: str | None = None) -> VerifyReport:
    events_b, _ = without_person(EVENTS, person)
    report = VerifyReport(capture="differential")
    run_differential(
        tree, EVENTS, events_b, DeviceSecrets.generate(), default_policy(), HEAP, report
    )
    return report


def test_the_real_device_passes() -> None:
    report = run(device_dir())
    assert [f.what for f in report.findings] == []
    assert report.covered["differential"] >= 60  # 12 windows of 2 streams, 5 records each


def test_a_leak_from_the_first_address_is_found(tmp_path: Path) -> None:
    report = run(patched(tmp_path, FIRST_ADDRESS))
    found = [f for f in report.findings if f.check == "differential"]
    assert found, "the leak went unnoticed"
    assert all(f.what.startswith("footfall.visitors in window ") for f in found), found
    assert all(f.detail["record"] == "visitors" and f.message is not None for f in found)


def test_cli_differential_names_the_undeclared_record(tmp_path: Path, capsys) -> None:
    replay = tmp_path / "crowd.jsonl"
    replay.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    out = tmp_path / "r.json"
    tree = patched(tmp_path, EXACT)
    argv = ["verify", "--differential", "--canaries", str(replay), "--tree", str(tree)]
    assert main([*argv, "--json-out", str(out)]) == 1
    assert capsys.readouterr().out.rstrip().endswith("FAIL")
    doc = json.loads(out.read_text())
    whats = [f["what"] for f in doc["findings"]]
    assert whats and all(w.startswith("footfall.exact in window ") for w in whats), whats
    assert "the policy declares no noise for this record" in whats[0]
    # --capture is required only without --differential.
    assert main(["verify", "--canaries", str(replay)]) == 2
    assert "--capture is required" in capsys.readouterr().err


def test_without_person() -> None:
    ev = footfall(3, START, 20)
    first = ev[0]["addr"]
    b, who = without_person(ev)
    assert who == first and all(e["addr"] != first for e in b)
    assert len(b) == len(ev) - sum(e["addr"] == first for e in ev)
    other = ev[-1]["addr"]
    b, _ = without_person(ev, other.upper())
    assert other not in {e["addr"] for e in b} and first in {e["addr"] for e in b}
    hr = [{"t": START, "kind": "hr", "bpm": 70}, *ev]
    assert without_person(hr, "hr")[0] == ev
    with pytest.raises(EdgeveilError, match="not in the replay"):
        without_person(ev, "00:00:00:00:00:00")


@pytest.mark.parametrize("t", [0.5, 2.0, 20.0])
def test_difference_tail_against_convolution(t: float) -> None:
    a = math.exp(-1 / t)
    c = (1 - a) / (1 + a)
    span = int(40 * t) + 10
    pmf: dict[int, float] = {}
    for x in range(-span, span + 1):
        for y in range(-span, span + 1):
            if abs(x - y) <= span:
                pmf[x - y] = pmf.get(x - y, 0.0) + c * c * a ** (abs(x) + abs(y))
    for m in [1, 2, 5, int(3 * t) + 1, int(10 * t) + 1]:
        want = sum(p for w, p in pmf.items() if abs(w) >= m)
        assert math.exp(log_diff_tail(m, t)) == pytest.approx(want, rel=1e-6), m
    assert log_diff_tail(0, t) == 0.0 and log_diff_tail(-3, t) == 0.0
