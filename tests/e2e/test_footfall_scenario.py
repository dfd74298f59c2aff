"""The footfall scenario end to end (edgeveil.scenario: what `make demo` runs): a virtual
board flashed with esptool, deployed, provisioned, run on a crowd replay, captured over
serial and over a real Mosquitto, and verified; then the same with a leaky device build
made here, which verify must catch, naming the value, its encoding and the message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeveil.capture import read_capture
from edgeveil.paths import device_dir
from edgeveil.scenario import CANARY, run_footfall
from edgeveil.vboard.rawreplay import ble_footfall

PHONES, MINUTES, SEED = 40, 30, 5


def _addresses(replay: Path) -> set[str]:  # the replay's, made again from its seed
    crowd = ble_footfall(SEED, PHONES, MINUTES, canary=CANARY)
    return {e["addr"] for e in crowd}


def test_footfall_over_serial_passes_and_draws_the_picture(tmp_path: Path) -> None:
    r = run_footfall(tmp_path, seed=SEED, phones=PHONES, minutes=MINUTES)
    assert r.report.verdict == "pass", r.report.summary()
    sent = [row for row in r.rows if row[2] is not None]
    assert len(sent) >= 3, r.rows
    assert r.report.covered["statistics"] >= len(sent)
    assert r.report.facts["canaries"] >= len(_addresses(r.replay))
    assert r.picture is not None and r.picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(r.steps) == {"flash", "deploy", "provision", "run+capture"}


def test_footfall_over_mqtt_through_mosquitto_passes(tmp_path: Path, mosquitto) -> None:
    r = run_footfall(
        tmp_path,
        seed=SEED,
        phones=PHONES,
        minutes=MINUTES,
        picture=False,
        broker=f"127.0.0.1:{mosquitto.port}",
    )
    assert r.report.verdict == "pass", r.report.summary()
    records = read_capture(r.capture).records
    mqtt = [rec for rec in records if rec.channel == "mqtt"]
    assert {rec.channel for rec in records} == {"mqtt", "serial"}  # the console, too
    assert len(mqtt) == r.report.facts["messages"] >= 3
    assert all(rec.topic and rec.topic.startswith("edgeveil/") for rec in mqtt)
    console = b"".join(rec.data for rec in records if rec.channel == "serial")
    assert b"reports over mqtt" in console and b"\x00" not in console  # no serial frames


LEAK_IN_DRAIN = (
    '                feed(t, "ble", addr)\n',
    "                if not LEAKED[0]:\n"
    "                    LEAKED[:] = addr\n"
    '                feed(t, "ble", addr)\n',
)
LEAK_IN_SENML = (
    "    return pack\n",
    "    from veil.sources.ble_live import LEAKED\n\n"
    '    pack.append({_N: "dbg", _V: 0, 8: bytes(LEAKED)})\n'
    "    return pack\n",
)


def _leaky_tree(tmp_path: Path) -> Path:
    """device/ with one change: the first address heard rides in every report."""
    tree = tmp_path / "leaky-device"
    shutil.copytree(device_dir(), tree)
    for rel, (old, new), head in (
        ("veil/sources/ble_live.py", LEAK_IN_DRAIN, "LEAKED = bytearray(6)\n"),
        ("veil/egress.py", LEAK_IN_SENML, ""),
    ):
        p = tree / rel
        text = p.read_text()
        assert text.count(old) == 1, (rel, old)
        p.write_text(head + text.replace(old, new))
    return tree


def test_a_leaky_build_fails_naming_the_value_encoding_and_message(tmp_path: Path) -> None:
    r = run_footfall(
        tmp_path / "run",
        seed=SEED,
        phones=PHONES,
        minutes=MINUTES,
        picture=False,
        tree=_leaky_tree(tmp_path),
    )
    assert r.report.exit_code == 1
    leaks = [f for f in r.report.findings if f.check == "leak"]
    assert leaks, r.report.summary()
    addrs = _addresses(r.replay)
    for f in leaks:
        assert f.message is not None
        assert any(a in f.detail["canary"] for a in addrs), f.what  # the value, named
        assert f.detail["encoding"] and f.detail["encoding"] in f.what
        assert f"message {f.message}" in f.what
    # Every report carried the address: every message is named.
    assert {f.message for f in leaks} == set(range(r.report.facts["messages"]))


NO_NOISE = (
    "    def discrete_laplace(self, num, den):\n",
    "    def discrete_laplace(self, num, den):\n        return 0\n\n"
    "    def _discrete_laplace_unused(self, num, den):\n",
)


def test_without_noise_the_board_reports_exactly_the_truth_and_verify_says_so(
    tmp_path: Path,
) -> None:
    # The board's whole path (radio replay, IRQ ring, windows on the clock, distinct ids)
    # must lose no phone: with a sampler that draws no noise, every window it sends holds
    # the true count computed from the replay, and the statistics check flags the device.
    tree = tmp_path / "no-noise-device"
    shutil.copytree(device_dir(), tree)
    noise = tree / "veil" / "noise.py"
    text = noise.read_text()
    assert text.count(NO_NOISE[0]) == 1
    noise.write_text(text.replace(*NO_NOISE))
    r = run_footfall(
        tmp_path / "run", seed=SEED, phones=PHONES, minutes=MINUTES, picture=False, tree=tree
    )
    sent = [(t, v) for _, t, v in r.rows if v is not None]
    assert len(sent) >= 3 and all(v == t for t, v in sent), r.rows
    stats = [f for f in r.report.findings if f.check == "statistics"]
    assert r.report.exit_code == 1 and stats, r.report.summary()
    assert {f.check for f in r.report.findings} == {"statistics"}
    # Six visitors windows alone cannot show it (each is exact with p = tanh(1/4) under
    # noise of scale 2: 0.245**6 = 2e-4); the dwell bins, four a window, can.
    assert any("too little noise" in f.what and f.what.startswith("footfall.") for f in stats)
