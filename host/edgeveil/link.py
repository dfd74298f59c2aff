"""The one seam to a board: run code on it, read and write its files, over a serial port.

    with open_link("/dev/ttyUSB0") as link:            # or via="ampy"
        link.exec("import machine")
        link.eval("1 + 1")                             # 2 (the device's repr, parsed)
        link.write_file("/data/x.bin", payload)
        link.read_file("/data/x.bin") == payload
        link.device_info()["arch"]                     # 'xtensawin' ('x64' on a virtual board)

Opening a link interrupts whatever runs on the board (Ctrl-C), enters the raw REPL and
soft-resets it, so every session starts on a fresh heap (main.py does not run in the raw
REPL; boot.py does). Closing leaves the board at its friendly REPL.

Everything else is built on `exec`, as mpremote's `Transport` builds its file commands:
file contents travel as base64 (`binascii`; `repr` on a port without it) in chunks of
2 KiB, one exec each, and every value put into device code passes through `repr()`.

Two transports, the same behaviour:

- ``via="mpremote"`` (default): `mpremote.transport_serial.SerialTransport`, raw-paste
  mode with the device's flow control; the port is opened exclusively (pyserial's lock).
- ``via="ampy"``: adafruit-ampy's `Pyboard`, the plain raw REPL (ampy writes 256 bytes
  per 10 ms); the port gets the same exclusive lock. ampy's `Files` is not used: its
  `put` sends 32 bytes per exec.

Both libraries wait without limit for a board that keeps printing (a boot loop) and print
to stdout when they give up; their subclasses in `edgeveil.link_serial` bound every wait
and raise instead.

Errors are `LinkError`s naming the port: no such port, port busy (another program holds
it), no MicroPython REPL answering, the connection lost, a timeout, or an exception on the
device (its traceback in the message and in `LinkError.traceback`).
"""

from __future__ import annotations

import ast
import base64
from abc import abstractmethod
from typing import Any

from .closing import Closing
from .errors import LinkError

VIAS = ("mpremote", "ampy")

CHUNK = 2048
"""File bytes per exec: 2.7 KiB of base64, a few KiB of heap on the device to compile."""


# MicroPython's native architectures, in the order of its MP_NATIVE_ARCH_* enum
# (py/persistentcode.h); sys.implementation._mpy carries the index in bits 10 and up.
MPY_ARCHS = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)

_INFO = (
    "import sys\n_i=sys.implementation\n"
    "print(repr((_i.name,tuple(_i.version),getattr(_i,'_mpy',None),sys.platform,"
    "getattr(_i,'_machine',None))))"
)
_HAS_B64 = "try:\n import binascii\n print(1)\nexcept ImportError:\n print(0)"


def decode_mpy(value: int) -> tuple[int, int, str | None]:
    """`sys.implementation._mpy` as (mpy version, sub-version, native arch or None).

    >>> decode_mpy(2822)
    (6, 3, 'x64')
    """
    major, sub, arch = value & 0xFF, (value >> 8) & 3, value >> 10
    return major, sub, MPY_ARCHS[arch] if arch < len(MPY_ARCHS) else f"arch{arch}"


def write_code(path: str, chunk: bytes, first: bool, last: bool, b64: bool = True) -> str:
    """Device code that writes `chunk` to `path`: opens it if `first`, closes it if `last`.

    Between the first and the last chunk the open file is the device global `_f`.
    """
    if b64:
        lines = ["from binascii import a2b_base64 as _d"]
        data = "_d(%r)" % base64.b64encode(chunk)
    else:
        lines, data = [], repr(chunk)
    if first:
        lines.append("_f=open(%r,'wb')" % path)
    lines.append("_f.write(%s)" % data)
    if last:
        lines.append("_f.close()")
    return "\n".join(lines)


def read_code(path: str, b64: bool = True) -> str:
    """Device code that prints the file at `path`, one encoded chunk per line."""
    enc = "_e(_b).decode()" if b64 else "repr(_b)+'\\n'"
    head = "from binascii import b2a_base64 as _e\n" if b64 else ""
    return head + (
        "with open(%r,'rb') as _f:\n"
        " while 1:\n"
        "  _b=_f.read(%d)\n"
        "  if not _b:\n"
        "   break\n"
        "  print(%s,end='')"
    ) % (path, CHUNK, enc)


def decode_read(text: str, b64: bool = True) -> bytes:
    """The file bytes from what `read_code` printed."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if b64:
        return b"".join(base64.b64decode(ln) for ln in lines)
    return b"".join(ast.literal_eval(ln) for ln in lines)


def hash_code(path: str) -> str:
    """Device code that prints the SHA-256 of the file at `path` in hex."""
    return (
        "import hashlib,binascii\n_h=hashlib.sha256()\n_b=bytearray(512)\n"
        "with open(%r,'rb') as _f:\n"
        " while 1:\n"
        "  _n=_f.readinto(_b)\n"
        "  if not _n:\n"
        "   break\n"
        "  _h.update(_b if _n==512 else _b[:_n])\n"
        "print(binascii.hexlify(_h.digest()).decode())"
    ) % path


class Link(Closing):
    """A session with one board's MicroPython REPL. Use `open_link` to make one."""

    via = ""

    def __init__(self, port: str) -> None:
        self.port = port
        self._b64: bool | None = None
        self._closed = False

    # --- what a transport provides -------------------------------------------------------

    @abstractmethod
    def _run(self, code: bytes, timeout: float) -> tuple[bytes, bytes]:
        """Run `code` in the raw REPL; (stdout, stderr). Raises LinkError."""

    @abstractmethod
    def _close_transport(self) -> None:
        """Leave the raw REPL and close the port; never raises."""

    # --- the interface -------------------------------------------------------------------

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run `code` on the board; returns what it printed.

        Args:
            code: MicroPython source. Put values in with `repr()`, never by pasting text.
            timeout: the longest the board may stay silent before the result arrives.

        Raises:
            LinkError: the code raised (the device traceback is in the message), the
                board did not answer in time, or the connection was lost.
        """
        if self._closed:
            raise LinkError(f"{self.port}: the link is closed", self.port)
        out, err = self._run(code.encode("utf-8"), timeout)
        if err:
            tb = err.decode("utf-8", "replace").strip()
            raise LinkError(f"{self.port}: code on the device raised:\n{tb}", self.port, tb)
        return out.decode("utf-8", "replace")

    def eval(self, expr: str, secret: bool = False) -> object:
        """The value of `expr` on the board: its `repr` parsed with `ast.literal_eval`.

        Args:
            secret: the answer may hold keys: an answer that does not parse is not quoted
                in the error.

        Raises:
            LinkError: as `exec`, or the repr is not a Python literal.
        """
        text = self.exec("print(repr(%s))" % expr).strip()
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            shown = (
                f"{len(text)} characters (not shown: they may hold keys)"
                if secret
                else (repr(text[:200]))
            )
            raise LinkError(
                f"{self.port}: {expr!r} gave {shown}, which is not a literal", self.port
            ) from exc

    def _has_b64(self) -> bool:
        if self._b64 is None:
            self._b64 = self.exec(_HAS_B64).strip() == "1"
        return self._b64

    def read_file(self, path: str) -> bytes:
        """The contents of the file at `path` on the board.

        Raises:
            LinkError: no such file (the device's OSError), or as `exec`.
        """
        b64 = self._has_b64()
        return decode_read(self.exec(read_code(path, b64), timeout=30.0), b64)

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace the file at `path` with `data` (binary-safe, chunked).

        The directory must exist. A failure part-way leaves a partial file.

        Raises:
            LinkError: as `exec`.
        """
        b64 = self._has_b64()
        starts = range(0, max(len(data), 1), CHUNK)
        try:
            for i in starts:
                chunk = data[i : i + CHUNK]
                self.exec(write_code(path, chunk, i == 0, i == starts[-1], b64), timeout=30.0)
        except LinkError:
            if not self._closed:
                try:  # do not leave the file open on the device
                    self._run(b"try:\n _f.close()\nexcept Exception:\n pass", 5.0)
                except LinkError:
                    pass
            raise

    def sha256(self, path: str) -> str:
        """The SHA-256 (hex) of the file at `path`, computed on the board."""
        return self.exec(hash_code(path), timeout=30.0).strip()

    def device_info(self) -> dict[str, Any]:
        """What the board's MicroPython says about itself (`device_info`)."""
        return device_info(self, self.port)

    def close(self) -> None:
        """Leave the raw REPL and close the port (never raises)."""
        if self._closed:
            return
        self._closed = True
        self._close_transport()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.port!r} via {self.via}>"


def device_info(link: Any, port: str) -> dict[str, Any]:
    """What the MicroPython on `link` (anything with `exec(code) -> output`) says about
    itself.

    Returns:
        {"implementation": "micropython", "version": "1.24.1", "platform": "esp32",
        "machine": "Generic ESP32 module with ESP32" or None, "mpy": 2822 or None,
        "mpy_version": "6.3" or None, "arch": "xtensawin"/"x64"/None (bytecode only)}

    Raises:
        LinkError: the answer is not what the code prints.
    """
    out = link.exec(_INFO).strip()
    try:
        got = ast.literal_eval(out)
        name, version, mpy, platform, machine = got
    except (ValueError, SyntaxError, TypeError) as exc:
        raise LinkError(f"{port}: unexpected answer {out[:200]!r}", port) from exc
    info: dict[str, Any] = {
        "implementation": name,
        "version": ".".join(str(v) for v in version[:3]),
        "platform": platform,
        "machine": machine,
        "mpy": mpy,
        "mpy_version": None,
        "arch": None,
    }
    if isinstance(mpy, int):
        major, sub, arch = decode_mpy(mpy)
        info.update(mpy_version=f"{major}.{sub}", arch=arch)
    return info


def open_link(port: str, via: str = "mpremote", *, connect_timeout: float = 10.0) -> Link:
    """Open a session with the MicroPython board on `port` (a context manager).

    Args:
        port: a serial device (/dev/ttyUSB0, /dev/pts/3) or a pyserial URL (rfc2217://...).
        via: "mpremote" (default) or "ampy": which library speaks the raw REPL.
        connect_timeout: seconds for the board to answer at the raw REPL.

    Raises:
        LinkError: naming the port: no such port, port busy, no REPL answering.
        ValueError: an unknown `via`.
    """
    from .link_serial import AmpyLink, SerialLink

    if via == "mpremote":
        return SerialLink(port, connect_timeout)
    if via == "ampy":
        return AmpyLink(port, connect_timeout)
    raise ValueError(f"unknown link {via!r} (one of {', '.join(VIAS)})")
