"""Capture files (edgeveil.capture) and the sources that need no board or broker.

Expected values come from what each test writes (bytes, JSON written by hand, planted
frames), never from the reader under test. The MQTT and serial sources against a real
broker and virtual boards are in tests/e2e/test_mqtt.py and test_capture_serial.py.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edgeveil import capture as capture_mod
from edgeveil.capture import CaptureWriter, read_capture
from edgeveil.capture_sources import (
    FrameCounter,
    capture_file,
    capture_mqtt,
    open_serial,
    parse_broker,
)
from edgeveil.cli import main
from edgeveil.errors import CaptureError
from edgeveil.frames import cobs_encode

# Chunks chosen to break a careless encoder: empty, every byte value, newlines and quotes,
# NULs, and one chunk larger than any pipe or write buffer.
CHUNKS = [
    ("serial", b"", "/dev/ttyUSB0", None),
    ("serial", bytes(range(256)), "/dev/ttyUSB0", None),
    ("mqtt", b'\n"}\r\n\x00{', "mqtt://127.0.0.1:1883", "edgeveil/0011223344556677/up"),
    ("serial", b"\x00" * 7 + b"tick\n", "rfc2217://127.0.0.1:4000", None),
    ("file", os.urandom(200_000), "/tmp/dump.bin", None),
    ("serial", b"\xd0\x83\x43", "/dev/ttyUSB0", None),
]


def fake_cose(i: int) -> bytes:
    """Bytes shaped like a COSE_Encrypt0 message (tag 16, array of 3) with awkward content."""
    return b"\xd0\x83" + bytes([i, 0, 10, 0]) + bytes(range(1, 255)) * (i % 2 + 1)


def write_sample(path: Path) -> list[float]:
    times = [1_700_000_000.25 + i for i in range(len(CHUNKS))]
    with CaptureWriter(path, source="unit test") as w:
        for (ch, data, src, topic), t in zip(CHUNKS, times, strict=True):
            w.write(ch, data, src=src, topic=topic, t=t)
    return times


def test_what_is_written_is_what_is_read_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "a.capture"
    before = datetime.now(UTC)
    times = write_sample(path)
    cap = read_capture(path)

    assert cap.problems == []
    assert [(r.channel, r.data, r.source, r.topic) for r in cap.records] == CHUNKS
    assert [r.t for r in cap.records] == times
    assert [r.line for r in cap.records] == list(range(2, 2 + len(CHUNKS)))
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1 + len(CHUNKS)  # one line each
    for rec, (_, data, _, _) in zip(cap.records, CHUNKS, strict=True):
        line = json.loads(raw[rec.offset :].split(b"\n", 1)[0])  # the offset is the line's
        assert set(line) == {"t", "ch", "src", "topic", "b64"}
        assert base64.b64decode(line["b64"]) == data
    head = json.loads(raw.split(b"\n", 1)[0])
    assert head["edgeveil-capture"] == 1 and head["source"] == "unit test"
    assert head["created"].endswith("Z")
    created = datetime.fromisoformat(head["created"].replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= created <= datetime.now(UTC)
    assert cap.header == head
    assert cap.streams() == {
        "/dev/ttyUSB0": bytes(range(256)) + b"\xd0\x83\x43",
        "rfc2217://127.0.0.1:4000": b"\x00" * 7 + b"tick\n",
        "/tmp/dump.bin": CHUNKS[4][1],
    }


def test_a_torn_last_line_is_reported_wherever_it_was_cut(tmp_path: Path) -> None:
    path = tmp_path / "a.capture"
    write_sample(path)
    raw = path.read_bytes()
    last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    last_line_no = 1 + len(CHUNKS)
    for cut in range(last_start, len(raw) + 1):
        path.write_bytes(raw[:cut])
        cap = read_capture(path)
        if cut == last_start:  # the whole last line lost, cleanly
            assert (len(cap.records), cap.problems) == (len(CHUNKS) - 1, [])
        elif cut >= len(raw) - 1:  # complete, at most its newline lost
            assert (len(cap.records), cap.problems) == (len(CHUNKS), [])
        else:
            assert len(cap.records) == len(CHUNKS) - 1, cut
            assert [r.data for r in cap.records] == [c[1] for c in CHUNKS[:-1]]
            [(line, offset, what)] = cap.problems
            assert (line, offset) == (last_line_no, last_start)
            assert "torn last line" in what


def test_corrupt_middle_lines_are_reported_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.capture"
    good = {"t": 1.0, "ch": "serial", "src": "/dev/ttyUSB0", "topic": None}
    lines = [
        json.dumps({"edgeveil-capture": 1, "created": "2025-01-01T00:00:00Z", "source": "x"}),
        json.dumps({**good, "b64": base64.b64encode(b"one").decode()}),
        '{"t": 2.0, "ch": "serial", "src": "/dev/tt',  # torn by a crash, then appended to
        json.dumps({**good, "b64": "not base64!"}),
        json.dumps({**good, "ch": "carrier-pigeon", "b64": ""}),
        json.dumps({**good, "ch": "mqtt", "b64": ""}),  # mqtt without a topic
        json.dumps({**good, "t": True, "b64": ""}),  # a boolean is not a time
        "[1, 2]",
        "",
        json.dumps({**good, "b64": base64.b64encode(b"two").decode()}),
    ]
    path.write_text("\n".join(lines) + "\n")
    cap = read_capture(path)
    assert [r.data for r in cap.records] == [b"one", b"two"]
    assert [r.line for r in cap.records] == [2, 10]
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    assert [(line, off) for line, off, _ in cap.problems] == [
        (n, starts[n - 1]) for n in range(3, 10)
    ]
    whys = [what for _, _, what in cap.problems]
    assert whys[0].startswith("not JSON") and "base64" in whys[1]
    assert "carrier-pigeon" in whys[2] and "topic" in whys[3] and "'t'" in whys[4]
    assert "not an object" in whys[5] and whys[6] == "empty line"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "no such capture file"),
        (b"", "line 1 is empty"),
        (b"hello\n", "line 1 is not JSON"),
        (b'{"source": "x"}\n', "no 'edgeveil-capture' header"),
        (b'{"edgeveil-capture": 2}\n', "version 2"),
    ],
)
def test_only_a_missing_file_or_a_bad_header_raises(
    tmp_path: Path, content: bytes | None, why: str
) -> None:
    path = tmp_path / "a.capture"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=why):
        read_capture(path)


def test_writer_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "a.capture"
    path.write_text("precious")
    with pytest.raises(CaptureError, match="exists"):
        CaptureWriter(path, "x", exclusive=True)
    assert path.read_text() == "precious"
    with pytest.raises(CaptureError, match="cannot create"):
        CaptureWriter(tmp_path / "no" / "dir.capture", "x")
    w = CaptureWriter(path, "x")  # replaces it
    with pytest.raises(ValueError, match="channel"):
        w.write("usb", b"x", src="y")
    with pytest.raises(ValueError, match="finite"):
        w.write("serial", b"x", src="y", t=float("nan"))
    w.write("serial", b"x", src="y")
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write("serial", b"x", src="y")
    assert [r.data for r in read_capture(path).records] == [b"x"]


def test_lines_are_synced_within_a_second_without_further_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[int, float]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append((fd, time.monotonic()))
        real_fsync(fd)

    monkeypatch.setattr(capture_mod.os, "fsync", spy)
    with CaptureWriter(tmp_path / "a.capture", "x") as w:
        fd = w._fd
        time.sleep(0.2)
        synced.clear()
        written = time.monotonic()
        w.write("serial", b"late line", src="y")
        time.sleep(1.4)  # no write, no close: only the writer's own timer can sync
        assert any(f == fd and at > written for f, at in synced), synced
        at_close = len(synced)
    assert len(synced) > at_close and synced[-1][0] == fd  # close syncs too


def test_file_source_imports_a_dump_and_counts_its_frames(tmp_path: Path) -> None:
    frames = [fake_cose(i) for i in range(5)]
    dump = b"boot text\r\n"
    for i, f in enumerate(frames):
        dump += b"\x00" + cobs_encode(f) + b"\x00" + b"tick %d\n" % i
    dump += b"x" * 10_000  # a long tail: several chunks
    src = tmp_path / "dump.bin"
    src.write_bytes(dump)
    os.utime(src, (1_600_000_000.5, 1_600_000_000.5))
    with CaptureWriter(tmp_path / "a.capture", "file") as w:
        stats = capture_file(w, src)
    assert (stats.messages, stats.bytes, stats.stopped_by) == (5, len(dump), "end")
    cap = read_capture(tmp_path / "a.capture")
    assert stats.records == len(cap.records) == -(-len(dump) // 4096)  # 4 KiB records
    assert b"".join(r.data for r in cap.records) == dump
    assert {(r.channel, r.source, r.t, r.topic) for r in cap.records} == {
        ("file", str(src), 1_600_000_000.5, None)
    }
    with CaptureWriter(tmp_path / "b.capture", "file") as w, pytest.raises(CaptureError):
        capture_file(w, tmp_path / "missing.bin")


def test_frame_counter_counts_frames_however_the_stream_is_chunked() -> None:
    frames = [fake_cose(i) for i in range(4)]
    stream = (
        b"\x00" + cobs_encode(frames[0]) + b"\x00"
        b"console text between frames\r\n"
        + cobs_encode(frames[1])  # its leading 0x00 lost: glued to the text
        + b"\x00\x00"
        + cobs_encode(b"\x01\x02 not COSE")  # a frame, but not a message: not counted
        + b"\x00\x00"
        + cobs_encode(frames[2])
        + b"\x00\x00"
        + cobs_encode(frames[3])  # no closing 0x00 yet: not complete
    )
    whole = FrameCounter()
    assert whole.feed(stream) == 3
    assert whole.feed(b"\x00") == 1
    bytewise = FrameCounter()
    assert sum(bytewise.feed(stream[i : i + 1]) for i in range(len(stream))) == 3
    assert bytewise.feed(b"text\x00") == 0  # "text" glued to frame 3's end: not a message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("broker.lan", ("broker.lan", 1883)),
        ("10.0.0.2:8883", ("10.0.0.2", 8883)),
        ("mqtt://h:1", ("h", 1)),
        ("[::1]:1884", ("::1", 1884)),
        ("[::1]", ("::1", 1883)),
    ],
)
def test_parse_broker(spec: str, expected: tuple[str, int]) -> None:
    assert parse_broker(spec) == expected


@pytest.mark.parametrize("spec", ["", ":1883", "h:0", "h:65536", "h:x"])
def test_parse_broker_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_broker(spec)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_and_missing_port_are_clean_errors(tmp_path: Path) -> None:
    port = _closed_port()
    with CaptureWriter(tmp_path / "a.capture", "x") as w:
        with pytest.raises(CaptureError, match="cannot reach the MQTT broker"):
            capture_mqtt(w, "127.0.0.1", port, connect_timeout=2)
    with pytest.raises(CaptureError, match="no such port"):
        open_serial(str(tmp_path / "ttyUSB9"))


def test_cli_imports_a_dump_and_refuses_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "dump.bin"
    dump.write_bytes(b"hello\n\x00" + cobs_encode(fake_cose(1)) + b"\x00")
    out = tmp_path / "out.capture"
    assert main(["capture", "--file", str(dump), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 1 and summary["messages"] == 1
    assert summary["bytes"] == dump.stat().st_size and summary["stopped_by"] == "end"
    assert read_capture(out).streams() == {str(dump): dump.read_bytes()}

    assert main(["capture", "--file", str(dump), "-o", str(out)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert main(["capture", "--file", str(dump), "-o", str(out), "--force"]) == 0
    assert "captured 1 messages, 1 records" in capsys.readouterr().out
    assert main(["capture", "-o", str(out)]) == 2
    assert "give one source" in capsys.readouterr().err
    assert main(["capture", "--file", str(dump), "--mqtt", "h", "-o", str(out)]) == 2
    assert main(["capture", "--file", str(dump), "--count", "3", "-o", str(out)]) == 2
    assert main(["capture", "--mqtt", "h:99999", "-o", str(tmp_path / "n.capture")]) == 2
    assert "bad broker port" in capsys.readouterr().err
    port = _closed_port()
    bad = ["capture", "--mqtt", "127.0.0.1:%d" % port, "-o", str(tmp_path / "m.capture")]
    assert main(bad) == 2
    assert "edgeveil: mqtt://127.0.0.1:%d: cannot reach" % port in capsys.readouterr().err
