"""edgeveil.verify on captures of the real device pipeline (MicroPython VM), clean and
tampered: authenticity, input handling, conformance and the report formats.

The clean capture comes from the device code itself (edgeveil.demo.run_device), so a pass
is not the verifier agreeing with a host re-implementation of the device. Tampered
captures change one thing each; the test names the finding it expects.
"""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cbor2
import pytest
from edgeveil.boards import load_board
from edgeveil.capture import CaptureWriter
from edgeveil.cli import main
from edgeveil.cose import encrypt0
from edgeveil.demo import DeviceSecrets, run_device
from edgeveil.frames import cobs_encode, split_stream
from edgeveil.policy import compile_policy, default_policy
from edgeveil.replaygen import demo_recording, write_jsonl
from edgeveil.verify import Keyring, VerifyReport, verify
from edgeveil.verify.conformance import pseudonym
from edgeveil.verify.messages import DeviceKeys
from edgeveil.vm import run_code

HEAP = load_board("esp32-generic").vm_app_heap_bytes
T0 = 1699920000


EVENTS = demo_recording(seed=11, minutes=20)


@pytest.fixture(scope="module")
def device_run() -> tuple[DeviceSecrets, bytes]:
    secrets = DeviceSecrets.generate()
    blob = compile_policy(default_policy(), secrets.dev_id, secrets.policy_key)
    with tempfile.TemporaryDirectory() as tmp:
        console = run_device(secrets, blob, EVENTS, HEAP, Path(tmp))
    return secrets, console


@pytest.fixture(scope="module")
def canaries(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "rec.jsonl"
    write_jsonl(EVENTS, path)
    return path


def keyring_of(s: DeviceSecrets, *, with_policy: bool = True) -> Keyring:
    return Keyring([DeviceKeys.from_secrets(s, default_policy() if with_policy else None)])


def write_capture(path: Path, chunks: list[bytes], mqtt: list[tuple[str, bytes]] = ()) -> Path:
    with CaptureWriter(path, source="test") as w:
        for c in chunks:
            w.write("serial", c, "/dev/pts/test")
        for topic, payload in mqtt:
            w.write("mqtt", payload, "mqtt://127.0.0.1:1883", topic=topic)
    return path


def frames_of(console: bytes) -> list[bytes]:
    return [i.data for i in split_stream(console) if i.kind == "frame"]


def checks(report: VerifyReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.check, []).append(f.what)
    return out


def test_clean_device_capture_passes(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    half = len(console) // 2
    cap = write_capture(tmp_path / "c.capture", [console[:half], console[half:]])
    report = verify(cap, keyring=keyring_of(secrets))
    assert report.findings == [] and report.errors == []
    assert report.exit_code == 0 and report.verdict == "pass"
    n = len(frames_of(console))
    assert n >= 4 and report.facts["messages"] == n
    assert report.covered["authenticity"] == n and report.covered["conformance"] == n


def test_clean_capture_passes_the_leak_scan_and_statistics_too(device_run, canaries, tmp_path):
    secrets, console = device_run
    cap = write_capture(tmp_path / "c.capture", [console])
    report = verify(cap, keyring=keyring_of(secrets), canaries=canaries)
    assert report.findings == [] and report.exit_code == 0
    n = len(frames_of(console))
    assert report.covered["leak"] == n + 1  # every plaintext, and the serial stream
    assert report.covered["statistics"] >= n  # every released record with known truth
    assert report.facts["canaries"] > 50


def test_an_address_printed_on_the_console_is_a_leak_with_its_offset(
    device_run, canaries, tmp_path
) -> None:
    secrets, console = device_run
    addr = next(e["addr"] for e in EVENTS if e["kind"] == "ble")
    line = f"debug: saw {addr.upper().replace(':', '-')}\r\n".encode()
    cap = write_capture(tmp_path / "l.capture", [console, line])
    report = verify(cap, keyring=keyring_of(secrets), canaries=canaries)
    leaks = [f for f in report.findings if f.check == "leak"]
    assert report.exit_code == 1 and leaks
    assert all(addr in f.what for f in leaks), [f.what for f in leaks]
    assert min(f.offset for f in leaks) == len(console) + len("debug: saw ")


def test_pseudonym_matches_the_device_code(device_run) -> None:
    # Oracle: veil.privacy.pseudonym run in the MicroPython VM.
    key = bytes(range(32))
    code = (
        "from veil.privacy import pseudonym\n"
        "for e in (0, 1, 19675, 2**32 - 1):\n"
        "    print(pseudonym(%r, e, b'\\x01\\x02\\x03').hex())\n" % key
    )
    from edgeveil.paths import device_dir

    r = run_code(code, HEAP, path=[device_dir()])
    assert r.ok, r.stdout + r.stderr
    want = r.stdout.decode().split()
    got = [pseudonym(key, e, b"\x01\x02\x03").hex() for e in (0, 1, 19675, 2**32 - 1)]
    assert got == want and len(set(got)) == 4


def test_tampered_replayed_reordered_and_unknown_messages(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    frames = frames_of(console)
    bad_tag = bytearray(frames[1])
    bad_tag[-1] ^= 1
    stranger = DeviceSecrets.generate()
    foreign = encrypt0(stranger.cose_key, stranger.base_iv, stranger.dev_id, 0, b"\x80")
    stream = [frames[0], bytes(bad_tag), frames[2], frames[0], frames[3], frames[2], foreign]
    cap = write_capture(
        tmp_path / "t.capture", [b"\x00" + cobs_encode(f) + b"\x00" for f in stream]
    )
    report = verify(cap, keyring=keyring_of(secrets))
    auth = checks(report)["authenticity"]
    assert report.exit_code == 1
    assert len(auth) == 4, auth
    assert "authentication failed" in auth[0]
    assert "seen before in message 0 (an identical copy): a replayed" in auth[1]  # frames[0] again
    assert "seen before" in auth[2]  # frames[2] again, also after frames[3]
    assert auth[3].startswith(f"unknown key id {stranger.dev_id.hex()}")
    by_msg = [f.message for f in report.findings if f.check == "authenticity"]
    assert by_msg == [1, 3, 5, 6]


def test_out_of_order_counter(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    f = frames_of(console)
    cap = write_capture(
        tmp_path / "o.capture", [b"\x00" + cobs_encode(m) + b"\x00" for m in (f[1], f[0])]
    )
    auth = checks(verify(cap, keyring=keyring_of(secrets)))["authenticity"]
    assert len(auth) == 1 and "out of order" in auth[0]


def test_garbage_truncation_and_non_cose_are_input_findings(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    frames = frames_of(console)
    not_cose = cbor2.dumps({"hello": 1})
    garbage = bytes([0x00, 0x05, 0xFF, 0xFE, 0x00])  # COBS code pointing past the end
    pieces = [
        b"boot text\r\n",
        b"\x00" + cobs_encode(frames[0]) + b"\x00",
        garbage,
        b"\x00" + cobs_encode(not_cose) + b"\x00",
        cobs_encode(frames[1]) + b"\x00",  # its leading 0x00 lost: glued to nothing
        b"\x00" + cobs_encode(frames[2])[:20],  # capture ends mid-frame
    ]
    stream = b"".join(pieces)
    cap = write_capture(tmp_path / "g.capture", [stream])
    report = verify(cap, keyring=keyring_of(secrets))
    inputs = [f for f in report.findings if f.check == "input"]
    offsets = [f.offset for f in inputs]
    start_garbage = len(pieces[0]) + len(pieces[1]) + 1
    start_trunc = len(stream) - 20
    assert start_garbage in offsets and start_trunc in offsets
    assert any("not a COSE_Encrypt0" in f.what for f in inputs)
    assert report.covered["authenticity"] == 2  # frames 0 and 1 both read and checked
    assert "authenticity" not in checks(report)


def test_torn_capture_line_is_reported_and_the_rest_kept(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    cap = write_capture(tmp_path / "k.capture", [console])
    with open(cap, "ab") as f:
        f.write(b'{"t": 1.0, "ch": "serial", "src": "/dev/pts/test", "b6')  # killed mid-line
    report = verify(cap, keyring=keyring_of(secrets))
    assert [f.check for f in report.findings] == ["input"]
    assert report.facts["messages"] == len(frames_of(console))


def test_no_keys_and_empty_capture_cannot_verify(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    cap = write_capture(tmp_path / "n.capture", [console])
    report = verify(cap)
    assert report.exit_code == 2 and "no device keys" in report.errors[0]
    empty = write_capture(tmp_path / "e.capture", [b"just console text\r\n"])
    report = verify(empty, keyring=keyring_of(secrets))
    assert report.exit_code == 2 and "no message" in report.errors[0]


def test_policy_the_registry_does_not_confirm_is_an_error(device_run, tmp_path: Path) -> None:
    secrets, console = device_run
    cap = write_capture(tmp_path / "p.capture", [console])
    other = default_policy()
    other["streams"]["footfall"]["k"] = 3
    report = verify(cap, keyring=keyring_of(secrets), policy=other)
    assert report.exit_code == 2 and "not the one provisioned" in report.errors[0]
    # A COSE_Key export carries no policy hash: the given policy is used as it is, and
    # the device's k of 5 is then above it (no finding).
    ring = Keyring([DeviceKeys(secrets.dev_id, secrets.cose_key, secrets.base_iv)])
    assert verify(cap, keyring=ring, policy=other).exit_code == 0


# --- conformance: packs made by hand, each breaking one rule ----------------------------


def _pack(
    s: DeviceSecrets,
    stream: str,
    bt: int,
    w: int,
    recs: list[dict[Any, Any]],
    pseud: str | None = None,
) -> bytes:
    epoch = bt // default_policy()["epoch"]
    p = pseud if pseud is not None else pseudonym(s.pseudo_key, epoch, s.dev_id).hex()
    pack = [dict(r) for r in recs]
    pack[0] = {-2: f"{p}:{stream}:", -3: bt, "w": w, **pack[0]}
    return cbor2.dumps(pack)


def _frame(s: DeviceSecrets, counter: int, plaintext: bytes) -> bytes:
    return (
        b"\x00"
        + cobs_encode(encrypt0(s.cose_key, s.base_iv, s.dev_id, counter, plaintext))
        + b"\x00"
    )


BT = T0 + 300 * 5000  # on a window boundary


def rec(name: str, v: int, k: int = 5, eps: int = 500) -> dict[Any, Any]:
    return {0: name, 2: v, "k": k, "eps": eps}


CASES = [
    ("footfall", BT, 300, [rec("visitors", 40)], None, None),
    ("footfall", BT, 60, [rec("visitors", 40)], None, "window 60 s is shorter than"),
    ("footfall", BT + 7, 300, [rec("visitors", 40)], None, "not on a 300 s boundary"),
    ("footfall", BT, 300, [rec("visitors", 40, k=2)], None, "k 2 below the policy's 5"),
    ("footfall", BT, 300, [rec("visitors", 40, eps=900)], None, "above the field's 500"),
    ("footfall", BT, 300, [rec("phones", 40)], None, "not a field the policy allows"),
    ("footfall", BT, 300, [rec("visitors", -3)], None, "a count released as -3"),
    ("footfall", BT, 300, [rec("visitors", 4), rec("visitors", 5)], None, "released twice in"),
    ("shop", BT, 300, [rec("visitors", 40)], None, "names no stream"),
    ("heart", BT, 300, [rec("hr", 72, k=10, eps=2000)], None, "finer than the precision 5"),
    ("heart", BT, 300, [rec("hr", 250, k=10, eps=2000)], None, "outside [30, 220]"),
    ("heart", BT, 300, [rec("zones/4", 3, k=10, eps=2000)], None, "no such bin of zones"),
    ("heart", BT, 300, [{**rec("zones/1", 3, k=10, eps=2000), 6: 10}], None, "its own time"),
    ("footfall", BT, 300, [rec("visitors", 40)], "00" * 8, "is not the device's for epoch"),
]


@pytest.mark.parametrize("stream,bt,w,recs,pseud,want", CASES)
def test_conformance_finds_each_broken_rule(
    tmp_path: Path, stream, bt, w, recs, pseud, want
) -> None:
    s = DeviceSecrets.generate()
    cap = write_capture(
        tmp_path / "c.capture", [_frame(s, 0, _pack(s, stream, bt, w, recs, pseud))]
    )
    report = verify(cap, keyring=keyring_of(s))
    found = checks(report).get("conformance", [])
    if want is None:
        assert report.exit_code == 0, found
    else:
        assert report.exit_code == 1 and len(found) == 1 and want in found[0], found


def test_window_twice_and_budget_over_the_period(tmp_path: Path) -> None:
    s = DeviceSecrets.generate()
    pol = default_policy()
    pol["eps_period"] = 1200  # two footfall windows of 500 fit, a third does not
    ring = Keyring([DeviceKeys.from_secrets(s, pol)])
    day = T0 + 86400 * 30  # a period and epoch boundary (T0 is whole days)
    frames = [
        _frame(s, 0, _pack(s, "footfall", day, 300, [rec("visitors", 10)])),
        _frame(s, 1, _pack(s, "footfall", day + 300, 300, [rec("visitors", 10)])),
        _frame(s, 2, _pack(s, "footfall", day + 300, 300, [rec("visitors", 10)])),
    ]
    found = checks(verify(write_capture(tmp_path / "b.capture", frames), keyring=ring, policy=pol))
    conf = found["conformance"]
    assert any("released twice" in c for c in conf)
    assert any("spent ε 1500 (milli)" in c for c in conf), conf


def test_pseudonym_repeated_across_epochs_without_registry_keys(tmp_path: Path) -> None:
    s = DeviceSecrets.generate()
    ring = Keyring([DeviceKeys(s.dev_id, s.cose_key, s.base_iv)])  # COSE_Key export only
    day = T0 + 86400 * 40
    p = "ab" * 8
    frames = [
        _frame(s, 0, _pack(s, "footfall", day, 300, [rec("visitors", 10)], p)),
        _frame(s, 1, _pack(s, "footfall", day + 300, 300, [rec("visitors", 10)], "cd" * 8)),
        _frame(s, 2, _pack(s, "footfall", day + 86400, 300, [rec("visitors", 10)], p)),
    ]
    conf = checks(
        verify(
            write_capture(tmp_path / "r.capture", frames), keyring=ring, policy=default_policy()
        )
    )["conformance"]
    assert len(conf) == 2
    assert "differs from" in conf[0] and "repeats: already used in epoch" in conf[1]


# --- report formats and the command ------------------------------------------------------


def test_reports_json_junit_and_exit_codes_from_the_cli(
    device_run, tmp_path: Path, capsys
) -> None:
    secrets, console = device_run
    frames = frames_of(console)
    keys = tmp_path / "keys.cbor"
    keys.write_bytes(
        cbor2.dumps([{1: 4, 2: secrets.dev_id, 3: 10, -1: secrets.cose_key, 5: secrets.base_iv}])
    )
    clean = write_capture(tmp_path / "clean.capture", [console])
    dirty = write_capture(
        tmp_path / "dirty.capture", [console, b"\x00" + cobs_encode(frames[0]) + b"\x00"]
    )
    j, x = tmp_path / "r.json", tmp_path / "r.xml"
    assert main(["verify", "--capture", str(clean), "--keys", str(keys)]) == 0
    assert "PASS" in capsys.readouterr().out
    code = main(
        [
            "verify",
            "--capture",
            str(dirty),
            "--keys",
            str(keys),
            "--json-out",
            str(j),
            "--junit",
            str(x),
        ]
    )
    assert code == 1 and capsys.readouterr().out.rstrip().endswith("FAIL")
    doc = json.loads(j.read_text())
    assert doc["verdict"] == "fail" and doc["counts"] == {"authenticity": 1}
    assert doc["findings"][0]["message"] == len(frames)
    suite = ET.parse(x).getroot()
    assert suite.get("failures") == "1"
    failed = [c.get("name") for c in suite if c.find("failure") is not None]
    assert failed == [f"authenticity: {dirty}"]
    skipped = {c.get("name").split(":")[0] for c in suite if c.find("skipped") is not None}
    assert "conformance" in skipped and "leak" in skipped  # no policy hash, no canaries
    assert main(["verify", "--capture", str(tmp_path / "missing"), "--keys", str(keys)]) == 2
