"""edgeveil.fleet: many ports in parallel, one failing does not stop the others.

The work functions here are plain functions (no boards): what is tested is the runner's
contract, which flash, deploy and provision share. tests/e2e/test_flash.py runs it on
virtual boards.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from edgeveil.errors import EdgeveilError, FleetError
from edgeveil.fleet import Progress, resolve_ports, run_many


@dataclass(frozen=True)
class Done:
    port: str
    blob: bytes

    def summary(self) -> str:
        return f"did {self.port}"


def test_all_ok_in_parallel_in_port_order() -> None:
    ports = [f"p{i}" for i in range(6)]
    running, peak, lock = [0], [0], threading.Lock()

    def work(port: str, progress: Progress) -> Done:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2 if port == "p0" else 0.05)  # p0 finishes last
        with lock:
            running[0] -= 1
        return Done(port, b"\x01\x02")

    out, err = io.StringIO(), io.StringIO()
    res = run_many(ports, work, "job", progress_stream=err, summary_stream=out)
    assert res.ok and res.exit_code == 0 and res.failed == []
    assert peak[0] == len(ports)  # every board at once, not one after another
    assert res.seconds < 0.5
    assert [b.port for b in res.boards] == ports  # order of the ports, not of finishing
    assert [b.message for b in res.boards] == [f"did {p}" for p in ports]
    assert res.boards[0].value == Done("p0", b"\x01\x02")
    table = out.getvalue().splitlines()
    assert table[0].split() == ["port", "result", "seconds", "message"]
    assert table[1].split()[:2] == ["p0", "ok"] and table[1].endswith("did p0")
    assert table[-1].startswith("job: 6 boards, 6 ok, 0 failed")
    res.raise_for_failures()  # nothing failed: no error


def test_one_failing_does_not_stop_the_others() -> None:
    def work(port: str, progress: Progress) -> Done:
        if port == "bad":
            raise EdgeveilError("bad: port busy")
        if port == "bug":
            raise KeyError("oops")  # a bug in the work: still only this board fails
        time.sleep(0.1)  # the others are still running when "bad" fails
        return Done(port, b"")

    out, err = io.StringIO(), io.StringIO()
    res = run_many(
        ["a", "bad", "b", "bug"], work, "flash", progress_stream=err, summary_stream=out
    )
    assert not res.ok and res.exit_code == 2
    assert [b.port for b in res.failed] == ["bad", "bug"]
    assert [b.ok for b in res.boards] == [True, False, True, False]
    assert res.boards[1].message == "bad: port busy"
    assert isinstance(res.boards[1].error, EdgeveilError)
    assert res.boards[3].message == "internal error: KeyError: 'oops'"
    assert "Traceback" in err.getvalue() and "KeyError" in err.getvalue()
    rows = {line.split()[0]: line for line in out.getvalue().splitlines()[1:-1]}
    assert rows["bad"].split()[1] == "FAILED" and rows["bad"].endswith("port busy")
    assert "bad: bad:" not in out.getvalue()  # the port column is not repeated in the message
    assert out.getvalue().splitlines()[-1].startswith("flash: 4 boards, 2 ok, 2 failed")
    with pytest.raises(FleetError, match=r"^2 of 4 boards failed \(flash\): bad, bug$"):
        res.raise_for_failures()


def test_json_of_the_result() -> None:
    def work(port: str, progress: Progress) -> Done:
        if port == "x":
            raise EdgeveilError("x: nope")
        return Done(port, b"\xab")

    res = run_many(["x", "y"], work, "flash", quiet=True)
    data = json.loads(json.dumps(res.as_json()))
    assert data["ok"] is False and data["exit_code"] == 2 and data["label"] == "flash"
    x, y = data["boards"]
    assert x == {"port": "x", "ok": False, "seconds": x["seconds"], "message": "x: nope",
                 "result": None}  # fmt: skip
    assert y["ok"] is True and y["result"] == {"port": "y", "blob": "ab"}


def test_plain_progress_lines_when_not_a_terminal() -> None:
    def work(port: str, progress: Progress) -> int:
        for done in range(0, 101, 10):
            progress(done, 100)
        return 1

    err = io.StringIO()
    run_many(["a"], work, "deploy", progress_stream=err, summary=False)
    lines = err.getvalue().splitlines()
    assert lines[0] == "deploy a: started"
    assert lines[1:4] == ["deploy a: 25%", "deploy a: 50%", "deploy a: 75%"]
    assert lines[4].startswith("deploy a: ok ") and len(lines) == 5
    assert "\x1b" not in err.getvalue()  # no cursor movement or colour in a log


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    run_many(["a", "b"], lambda port, progress: port, "x", quiet=True)
    assert capsys.readouterr() == ("", "")


def test_ports_are_checked_before_any_work() -> None:
    called: list[str] = []

    def work(port: str, progress: Progress) -> None:
        called.append(port)

    with pytest.raises(EdgeveilError, match="more than once"):
        run_many(["a", "b", "a"], work, "x", quiet=True)
    with pytest.raises(EdgeveilError, match="no ports"):
        run_many([], work, "x", quiet=True)
    assert called == []


def test_resolve_ports_list() -> None:
    assert resolve_ports("/dev/ttyUSB0, /dev/ttyUSB1") == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    assert resolve_ports("rfc2217://h:1") == ["rfc2217://h:1"]
    for bad in ("", "a,,b", "a,"):
        with pytest.raises(EdgeveilError, match="empty port name"):
            resolve_ports(bad)
    with pytest.raises(EdgeveilError, match="names a more than once"):
        resolve_ports("a,b,a")


def test_resolve_ports_auto_without_boards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("edgeveil.fleet._REAL_PORT_GLOBS", (str(tmp_path / "ttyUSB*"),))
    with pytest.raises(EdgeveilError, match="auto found no ports"):
        resolve_ports("auto", state_root=tmp_path / "state")
    (tmp_path / "ttyUSB1").touch()
    (tmp_path / "ttyUSB0").touch()
    assert resolve_ports("auto", state_root=tmp_path / "state") == [
        str(tmp_path / "ttyUSB0"),
        str(tmp_path / "ttyUSB1"),
    ]


def test_on_a_terminal_only_finished_lines_are_coloured() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def work(port: str, progress: Progress) -> int:
        progress(50, 100)
        if port == "bad":
            raise EdgeveilError("bad: nope")
        return 1

    out = Terminal()
    run_many(["good", "bad"], work, "flash", progress_stream=out, summary=False)
    lines = out.getvalue().split("\n")
    assert any("\x1b[32m" in ln and "good" in ln for ln in lines)  # ok: green
    assert any("\x1b[31m" in ln and "bad" in ln for ln in lines)  # FAILED: red
    for ln in lines:  # a line still running carries no colour, not even a stray reset
        if "\x1b[0m" in ln:
            assert "\x1b[32m" in ln or "\x1b[31m" in ln, repr(ln)
