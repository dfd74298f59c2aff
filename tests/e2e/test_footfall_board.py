"""The footfall profile end to end on a virtual board: deploy and provision through the
library, reset, and read what the board sends while a crowd of phones passes its scanner.

The replay (edgeveil.vboard.rawreplay.ble_footfall, speed 0: as fast as the VM goes) is
the ground truth: the test counts the distinct addresses per window itself and checks
the decrypted reports against it, and searches the whole serial stream for every
address that went in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import serial
from edgeveil.boards import load_board
from edgeveil.cose import decrypt0
from edgeveil.deploy import deploy
from edgeveil.frames import split_stream
from edgeveil.link import open_link
from edgeveil.policy import default_policy
from edgeveil.provision import provision
from edgeveil.registry import Registry, init_registry
from edgeveil.senml import decode_pack
from edgeveil.vboard.rawreplay import ble_footfall, pin_event, write_raw_replay
from vbtest import VBoard

BOARD = load_board("esp32-virtual")
T0 = 1699920000  # veil.T0: windows are aligned to it
START = 1_700_000_100  # the crowd's first minute; (START - T0) % 300 == 0
WINDOW = 300
CANARY = "c0:ff:ee:00:00:01"
FIELDS = {"visitors", "dwell/0", "dwell/1", "dwell/2", "dwell/3"}  # default-policy.toml


def _read_until(port: serial.Serial, marker: bytes, timeout: float = 15) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while marker not in buf:
        assert time.monotonic() < end, "no %r on the console: %r" % (marker, buf[-600:])
        buf += port.read(4096)
    return buf


def _footfall_policy() -> dict:
    """The default policy's footfall stream alone: a shop's board has no heart-rate
    sensor, and its heap (docs/footfall.md, "Memory") has no room to spare for one."""
    policy = default_policy()
    del policy["streams"]["heart"]
    return policy


def _truth(events: list[dict]) -> dict[int, int]:
    """Distinct addresses heard per window (its start, Unix seconds), from the replay."""
    seen: dict[int, set[str]] = {}
    for e in events:
        if e["kind"] == "ble":
            t = int(e["t"])  # the board stamps an advertisement with its whole second
            seen.setdefault(t - (t - T0) % WINDOW, set()).add(e["addr"])
    return {w: len(a) for w, a in seen.items()}


def _needles(events: list[dict]) -> set[bytes]:
    """Every address that went in, as bytes (both orders) and as text."""
    out: set[bytes] = set()
    for addr in {e["addr"] for e in events if e["kind"] == "ble"}:
        raw = bytes.fromhex(addr.replace(":", ""))
        out |= {raw, raw[::-1], raw.hex().encode(), raw.hex().upper().encode()}
        out |= {addr.encode(), addr.upper().encode()}
    return out


def test_footfall_board_reports_counts_per_window_and_no_address(
    make_vboard: Callable[..., VBoard], tmp_path: Path
) -> None:
    crowd = ble_footfall(seed=5, n_phones=30, minutes=30, start=START, canary=CANARY)
    # A quiet lead-in: the board boots at the replay's first event (t0), and deploying and
    # provisioning take board time (speed 0 runs the clock at real time outside sleeps).
    events = [pin_event(START - 900, 4, 0), *crowd]
    replay = tmp_path / "crowd.jsonl"
    write_raw_replay(replay, events)
    vb = make_vboard(board="esp32-virtual", replay=replay, speed=0)

    db = init_registry(tmp_path / "reg.db")
    with Registry.open(db) as reg, open_link(vb.port) as link:
        deploy(link, BOARD, cache=tmp_path / "mpy")
        report = provision(link, BOARD, reg, _footfall_policy(), vb.port)
        secrets = reg.secrets(report.dev_id)
    assert report.counter == "created"
    kid = bytes.fromhex(report.dev_id)

    truth = _truth(crowd)
    expect = {w for w, n in truth.items() if n >= 8}  # k = 5, with room for window edges
    assert len(expect) >= 4, truth
    got: dict[int, dict[str, int]] = {}
    stream = b""
    with serial.Serial(vb.port, 115200, timeout=0.1) as port:
        port.write(b"\r\x03\r\x01")  # raw REPL, then a hard reset: boot.py, main.py
        _read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"import machine; machine.reset()\x04")
        deadline = time.monotonic() + 25
        while not expect <= set(got) and time.monotonic() < deadline:
            stream += port.read(65536)
            assert b"Traceback" not in stream, stream[-3000:]
            for item in split_stream(stream):
                if item.kind == "frame":
                    msg = decrypt0(secrets.cose_key, secrets.base_iv, item.data, kid=kid)
                    pack = decode_pack(msg.plaintext)
                    got[pack.base_time] = {r.name.split(":")[-1]: r.value for r in pack.records}
        time.sleep(0.5)
        stream += port.read(65536)
        # Ctrl-C stops the board's loop cleanly and leaves the REPL answering.
        port.write(b"\x03")
        stream += _read_until(port, b"veil: stopped")
    with open_link(vb.port) as link:
        assert link.eval("1 + 1") == 2

    # From the reset on (before it: the raw REPL's own bytes, \x04 included).
    stream = stream[stream.index(b"rst:0xc (SW_CPU_RESET)") :]
    assert b"veil: footfall: scanning, reports over serial" in stream
    frames = [i for i in split_stream(stream) if i.kind == "frame"]
    assert not [i for i in split_stream(stream) if i.kind == "bad"]
    assert len(frames) == len(got), "two reports for one window"
    assert expect <= set(got), (sorted(expect), sorted(got))
    for w, fields in got.items():
        assert truth.get(w, 0) > 2, (w, truth.get(w))  # below k never leaves
        assert set(fields) == FIELDS, fields
        assert abs(fields["visitors"] - truth[w]) <= 20, (w, fields, truth[w])  # scale 2
        assert all(v >= 0 for v in fields.values())
    plaintexts = b"".join(
        decrypt0(secrets.cose_key, secrets.base_iv, f.data).plaintext for f in frames
    )
    for needle in _needles(crowd):
        assert needle not in stream and needle not in plaintexts, needle
