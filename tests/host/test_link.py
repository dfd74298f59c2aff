"""`edgeveil.link` without a board: the device code it generates (run in the real
MicroPython VM), its error mapping, and how it fails on ports where nothing answers.

The e2e tests (tests/e2e/test_deploy.py) drive the same code against virtual boards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import serial
from edgeveil.errors import LinkError
from edgeveil.link import (
    CHUNK,
    Link,
    decode_mpy,
    decode_read,
    hash_code,
    open_link,
    read_code,
    write_code,
)
from edgeveil.link_serial import _WRITE_S, _read_until, _set_write_timeout
from edgeveil.vm import run_code

ODD_NAMES = [
    "plain.bin",
    'it\'s "quoted".bin',
    "back\\slash.bin",
    "new\nline.bin",
    "日本語.txt",
    "sp ace';import os;os.remove('x').bin",
]
PAYLOAD = bytes(range(256)) * 3 + b"\x03\x04\r\n\x00'\"\\" + os.urandom(2 * CHUNK + 17)


def vm(code: str, cwd: Path) -> str:
    res = run_code(code, 256 * 1024, path=[], cwd=cwd)
    assert res.ok, res.stdout.decode() + res.stderr.decode()
    return res.stdout.decode()


class VMLink(Link):
    """A fake transport: each exec runs in a fresh MicroPython VM (so no state is kept
    between execs); enough to test exec/eval/device_info over the real interpreter."""

    via = "vm"

    def __init__(self, cwd: Path) -> None:
        super().__init__("vm:" + str(cwd))
        self.cwd = cwd

    def _run(self, code: bytes, timeout: float) -> tuple[bytes, bytes]:
        # As the raw REPL does: output on one channel, the traceback on the other.
        wrapped = (
            "import sys\ntry:\n exec(%r)\nexcept Exception as e:\n"
            " sys.print_exception(e, sys.stderr)" % code.decode()
        )
        res = run_code(wrapped, 256 * 1024, path=[], cwd=self.cwd, timeout=timeout)
        return res.stdout, res.stderr

    def _close_transport(self) -> None:
        pass


def test_decode_mpy() -> None:
    assert decode_mpy(2822) == (6, 3, "x64")  # the unix VM (library-pitfalls.md)
    assert decode_mpy(6 | 3 << 8 | 10 << 10) == (6, 3, "xtensawin")
    assert decode_mpy(6) == (6, 0, None)  # a port without native code


@pytest.mark.parametrize("b64", [True, False], ids=["base64", "repr"])
@pytest.mark.parametrize("name", ODD_NAMES)
def test_files_with_odd_names_round_trip_through_the_generated_code(
    tmp_path: Path, name: str, b64: bool
) -> None:
    starts = range(0, len(PAYLOAD), CHUNK)
    parts = [
        write_code(name, PAYLOAD[i : i + CHUNK], i == 0, i == starts[-1], b64) for i in starts
    ]
    assert len(parts) == 3
    vm("\n".join(parts), tmp_path)
    assert (tmp_path / name).read_bytes() == PAYLOAD  # exactly that name, those bytes
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert decode_read(vm(read_code(name, b64), tmp_path), b64) == PAYLOAD
    assert vm(hash_code(name), tmp_path).strip() == hashlib.sha256(PAYLOAD).hexdigest()


def test_an_empty_file_is_written(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"old")
    vm(write_code("e", b"", True, True), tmp_path)
    assert (tmp_path / "e").read_bytes() == b""


def test_exec_eval_and_device_info_over_the_vm(tmp_path: Path) -> None:
    with VMLink(tmp_path) as link:
        assert link.exec("print('a'); print(1 + 1)") == "a\n2\n"
        assert link.eval("{'k': [1, b'\\x00', None]}") == {"k": [1, b"\x00", None]}
        info = link.device_info()
        assert info["implementation"] == "micropython" and info["arch"] == "x64"
        assert info["mpy_version"] == "6.3" and info["version"].count(".") == 2
        with pytest.raises(LinkError, match="not a literal"):
            link.eval("object()")
        with pytest.raises(LinkError, match="ZeroDivisionError") as err:
            link.exec("def f():\n    1 // 0\nf()")
        assert err.value.traceback and "in f" in err.value.traceback
        assert err.value.port == link.port and str(link.port) in str(err.value)
    with pytest.raises(LinkError, match="closed"):
        link.exec("pass")


def test_repr_quotes_the_port() -> None:
    link = VMLink(Path("/tmp/it's"))
    assert repr(link) == """<VMLink "vm:/tmp/it's" via vm>"""


class FakeBootLoop:
    """A fake serial port that prints without pause, like a board in a boot loop."""

    def __init__(self) -> None:
        self.n = 0

    def read(self, size: int = 1) -> bytes:
        self.n += 1
        return b"invalid header: 0xffffffff\r\n"[self.n % 28 : self.n % 28 + 1]


def test_a_port_that_never_stops_printing_still_times_out() -> None:
    port = FakeBootLoop()
    got = _read_until(port, b"raw REPL; CTRL-B to exit\r\n>", timeout=1.0, overall=0.3)
    assert port.n > 100 and b"invalid header" in got  # gave up after 0.3 s, not never


@pytest.fixture
def pty_port() -> tuple[int, str]:
    """A serial port where nothing answers: the slave end of a fresh pseudo-terminal."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    yield master, name
    os.close(master)


@pytest.mark.parametrize("via", ["mpremote", "ampy"])
def test_a_silent_port_gives_no_repl_answer(pty_port: tuple[int, str], via: str) -> None:
    _, name = pty_port
    with pytest.raises(LinkError, match="no MicroPython REPL answered within 1 s") as err:
        open_link(name, via, connect_timeout=1)
    assert err.value.port == name


@pytest.mark.parametrize("via", ["mpremote", "ampy"])
def test_a_port_held_open_is_busy(pty_port: tuple[int, str], via: str) -> None:
    _, name = pty_port
    with serial.Serial(name, exclusive=True):
        with pytest.raises(LinkError, match="port busy") as err:
            open_link(name, via, connect_timeout=1)
    assert name in str(err.value)


def test_a_missing_port_and_an_unknown_via(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="no such port"):
        open_link(str(tmp_path / "ttyUSB0"))
    with pytest.raises(LinkError, match="ampy opens device paths only"):
        open_link("rfc2217://127.0.0.1:1", via="ampy")
    with pytest.raises(ValueError, match="unknown link 'webrepl'"):
        open_link(str(tmp_path / "ttyUSB0"), via="webrepl")


def test_write_timeout_is_set_on_local_ports_and_left_alone_over_rfc2217() -> None:
    local = serial.serial_for_url("loop://", do_not_open=True)
    _set_write_timeout(local)
    assert local.write_timeout == _WRITE_S
    # pyserial's RFC 2217 client raises on any reconfiguration once a write timeout is
    # stored: none may be left behind, or a later baud rate change would fail.
    remote = serial.serial_for_url("rfc2217://127.0.0.1:1", do_not_open=True)
    _set_write_timeout(remote)
    assert remote.write_timeout is None
