"""`edgeveil capture --serial` from a virtual board, on its pty and over RFC 2217.

The board runs the device's own serial transport (device/veil/transport/serial.py, copied
with mpremote) from a small script that prints console text between COBS frames. The test
starts the capture, then types `import emit` at the board's REPL through the pty (write
only: the capture alone reads the board's output), and compares the captured stream with
the frames and lines the script was written to send.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from capturetest import BIN, Cli
from edgeveil.capture import read_capture
from edgeveil.frames import split_stream
from edgeveil.paths import device_dir
from vbtest import VBoard, tool

N = 6
EMIT = """\
from veil.transport.serial import SerialTransport
t = SerialTransport()
def msg(i):
    return b"\\xd0\\x83" + bytes([i, 0, 10, 0]) + bytes(range(1, 255)) * (i % 2 + 1)
for i in range(N_FRAMES):
    print("tick %d" % i)
    t.send(msg(i))
print("emit done")
""".replace("N_FRAMES", str(N))


def msg(i: int) -> bytes:
    """What EMIT sends as frame i (COSE-shaped: tag 16, array of 3; NULs, a newline, and a
    254-byte non-zero run, COBS's edge case)."""
    return b"\xd0\x83" + bytes([i, 0, 10, 0]) + bytes(range(1, 255)) * (i % 2 + 1)


@pytest.mark.parametrize("via", ["pty", "rfc2217"])
def test_capture_from_a_virtual_board(
    make_vboard: Callable[..., VBoard], tmp_path: Path, via: str
) -> None:
    vb = make_vboard(rfc2217=True)
    (tmp_path / "emit.py").write_text(EMIT)
    veil = device_dir() / "veil"
    tool(
        "mpremote", "connect", vb.port,
        "fs", "mkdir", ":veil", "+", "fs", "mkdir", ":veil/transport",
        "+", "fs", "cp", str(veil / "__init__.py"), ":veil/__init__.py",
        "+", "fs", "cp", str(veil / "transport" / "__init__.py"), ":veil/transport/__init__.py",
        "+", "fs", "cp", str(veil / "transport" / "serial.py"), ":veil/transport/serial.py",
        "+", "fs", "cp", str(tmp_path / "emit.py"), ":emit.py",
    )  # fmt: skip
    url = vb.port if via == "pty" else vb.rfc2217
    out = tmp_path / "vb.capture"
    with Cli(
        "--serial", url, "-o", str(out), "--count", str(N), "--duration", "60", "--json"
    ) as cli:
        type_at_the_repl(vb.port, b"import emit\r")
        assert cli.wait() == 0, cli.stderr()
        summary = cli.json()
    assert (summary["stopped_by"], summary["messages"]) == ("count", N), summary

    cap = read_capture(out)
    assert cap.problems == []
    assert {(r.channel, r.source) for r in cap.records} == {("serial", url)}
    assert [r.t for r in cap.records] == sorted(r.t for r in cap.records)
    assert summary["records"] == len(cap.records) and summary["bytes"] == sum(
        len(r.data) for r in cap.records
    )
    stream = cap.streams()[url]
    items = list(split_stream(stream))
    assert [it.kind for it in items if it.kind == "bad"] == []
    assert [it.data for it in items if it.kind == "frame"] == [msg(i) for i in range(N)]
    text = b"".join(it.data for it in items if it.kind == "text")
    at = [text.index(b"tick %d\n" % i) for i in range(N)]
    assert at == sorted(at) and text.index(b"import emit") < at[0]
    # Opening the port did not reset the board: no ROM banner, the REPL session went on.
    assert b"rst:" not in stream and b"ets " not in stream


def test_capture_of_a_port_that_goes_away_keeps_what_it_had(
    make_vboard: Callable[..., VBoard], tmp_path: Path
) -> None:
    vb = make_vboard()
    out = tmp_path / "gone.capture"
    with Cli("--serial", vb.port, "-o", str(out)) as cli:
        type_at_the_repl(vb.port, b"print('still here')\r")
        _wait_text(out, vb.port, b"still here")
        vb.kill()  # the board loses power; its pty disappears
        assert cli.wait() == 2
        assert "lost the port" in cli.stderr()
    assert b"still here" in read_capture(out).streams()[vb.port]


def test_busy_port_is_a_clean_error(vboard: VBoard, tmp_path: Path) -> None:
    with Cli("--serial", vboard.port, "-o", str(tmp_path / "a.capture")):
        res = subprocess.run(
            [str(BIN / "edgeveil"), "capture", "--serial", vboard.port, "-o",
             str(tmp_path / "b.capture"), "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert res.returncode == 2 and "port busy" in res.stderr, res.stderr
    assert json.loads(res.stdout or "null") is None


def type_at_the_repl(pty: str, keys: bytes) -> None:
    """Type on the board's pty, write only and unlocked: the capture alone reads its output.

    The board reads its pty only while it sees a client holding it (it polls for that),
    so the port is held a little before and after the keys."""
    fd = os.open(pty, os.O_WRONLY | os.O_NOCTTY)
    try:
        time.sleep(0.3)
        os.write(fd, keys)
        time.sleep(0.3)
    finally:
        os.close(fd)


def _wait_text(path: Path, src: str, text: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in read_capture(path).streams().get(src, b""):
        assert time.monotonic() < deadline, "no %r in the capture" % text
        time.sleep(0.05)
