"""The serial transports behind `edgeveil.link.open_link`: mpremote's and ampy's.

Both libraries speak the raw REPL; the subclasses here only bound their waits (they read
byte by byte until a marker, and check a time limit only while the line is silent, so a
board that keeps printing, such as one in a boot loop, held them forever), give the
port a read buffer, and turn their errors into `LinkError`s that name the port.
"""

from __future__ import annotations

import errno
import fcntl
import struct
import time
from collections.abc import Callable
from typing import Any

import serial
from ampy.pyboard import Pyboard, PyboardError
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport
from serial import rfc2217

from .errors import LinkError
from .link import Link

_READ_S = 0.5  # the serial read timeout: how often a silent line is re-checked
_WRITE_S = 10.0  # a board that stops reading makes writes fail after this long
_REPLY_S = 10.0  # the longest wait for a protocol reply ("OK", raw-paste window size)
_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_BUSY = "port busy: another program holds it open (mpremote, a serial monitor, esptool?)"


class _Buffered:
    """A serial port with a read buffer. Both libraries read one byte per call (so as not
    to read past a prompt), which costs a system call per byte; this takes whatever has
    arrived in one call and serves those bytes from memory. Everything else is the port's."""

    def __init__(self, ser: Any) -> None:
        object.__setattr__(self, "_ser", ser)
        object.__setattr__(self, "_buf", bytearray())

    def read(self, size: int = 1) -> bytes:
        buf = self._buf
        deadline = time.monotonic() + _REPLY_S
        while len(buf) < size:
            got = self._ser.read(max(size - len(buf), self._ser.in_waiting))
            buf += got
            # One byte: the caller's loop keeps time. More: a protocol reply ("OK", the
            # raw-paste window), which a busy board may send late; wait for it, boundedly.
            if not got and (size == 1 or time.monotonic() >= deadline):
                break
        out = bytes(buf[:size])
        del buf[:size]
        return out

    def inWaiting(self) -> int:  # noqa: N802 - pyserial 2's name, which the libraries use
        return len(self._buf) + self._ser.in_waiting

    @property
    def in_waiting(self) -> int:
        return self.inWaiting()

    def reset_input_buffer(self) -> None:
        self._buf.clear()
        self._ser.reset_input_buffer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ser, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ser, name, value)


# --- bounded waits, shared by both transports ----------------------------------------------


def _read_until(
    ser: Any,
    ending: bytes,
    timeout: float | None,
    consumer: Callable[[bytes], None] | None = None,
    overall: float | None = None,
) -> bytes:
    """Read byte by byte until `ending`, or until the line was silent for `timeout` or
    `overall` seconds passed, whichever comes first (the libraries check `overall` only
    while the line is silent, so a board that never stops printing kept them forever).
    One byte at a time, so nothing after `ending` is consumed."""
    data = bytearray()
    start = last = time.monotonic()
    while not data.endswith(ending):
        b = ser.read(1)
        now = time.monotonic()
        if b:
            last = now
            if consumer is not None:
                consumer(b)
                data[:] = b  # as the libraries do: with a consumer only the last byte
            else:
                data += b
        elif timeout is not None and now - last >= timeout:
            break
        if overall is not None and now - start >= overall:
            break
    return bytes(data)


def _enter_raw_repl(ser: Any, port: str, timeout: float) -> None:
    """Interrupt the program, enter the raw REPL and soft-reset, within `timeout` seconds.

    Raises:
        LinkError: no MicroPython raw REPL answered (quoting what the port said instead).
    """
    deadline = time.monotonic() + timeout
    seen = bytearray()

    def until(ending: bytes, limit: float | None = None) -> bool:
        left = max(deadline - time.monotonic(), 0.0)
        got = _read_until(ser, ending, None, overall=min(left, limit or left))
        seen[:] = (seen + got)[-400:]
        return got.endswith(ending)

    def fail() -> LinkError:
        lines = seen.decode("ascii", "replace").split("\n")
        said = " | ".join(ln.strip() for ln in lines[-3:] if ln.strip()) or "nothing"
        return LinkError(
            f"{port}: no MicroPython REPL answered within {timeout:g} s (is MicroPython "
            f"flashed and the board out of download mode?); it said: {said!r}",
            port,
        )

    ser.write(b"\r\x03\x03")  # Ctrl-C twice: interrupt a program, even one that catches one
    ser.reset_input_buffer()  # what it printed before; the rest is skipped below
    # Ctrl-A: the raw REPL. A board still booting may miss it: ask again each second (in
    # the raw REPL a repeated Ctrl-A only prints the banner again).
    while True:
        ser.write(b"\r\x01")
        if until(_BANNER + b">", 1.0):
            break
        if time.monotonic() >= deadline:
            raise fail()
    ser.write(b"\x04")  # Ctrl-D in the raw REPL: soft reset (boot.py runs, main.py not)
    if not (until(b"soft reboot\r\n") and until(_BANNER)):
        raise fail()


def _open_error(port: str, exc: BaseException) -> LinkError:
    """Why `port` could not be opened: probe it as pyserial's exclusive open does."""
    why = f"cannot open port: {exc}"
    try:
        probe = serial.serial_for_url(port, do_not_open=True, exclusive=True)
        probe.open()
    except serial.SerialException as probe_exc:
        code = getattr(probe_exc, "errno", None)
        text = str(probe_exc)
        if code in (errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text:
            why = _BUSY
        elif code == errno.ENOENT or "No such file" in text:
            why = "no such port (is the board plugged in? virtual ones: `edgeveil vboard status`)"
        elif code == errno.EACCES:
            why = "permission denied (add yourself to the port's group, e.g. dialout)"
        else:
            why = f"cannot open port: {text}"
    else:
        probe.close()
    return LinkError(f"{port}: {why}", port)


def _lost(port: str, exc: BaseException) -> LinkError:
    return LinkError(f"{port}: lost the board: {exc}", port)


def _flock(ser: Any, port: str) -> None:
    """Take the exclusive lock pyserial's `exclusive=True` takes (ampy opens without it)."""
    try:
        fcntl.flock(ser.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise LinkError(f"{port}: {_BUSY}", port) from exc
        # not a local device (rfc2217://, socket://): nothing to lock


def _set_write_timeout(ser: Any) -> None:
    """Bound each write on a local port. pyserial 3.5's RFC 2217 client has no write
    timeout: its setter stores the value, then raises, and every later reconfiguration
    of the port would raise again; so it is left unset there."""
    if isinstance(ser, rfc2217.Serial):
        return
    ser.write_timeout = _WRITE_S


def _resync(ser: Any) -> None:
    """After a timeout: interrupt the code still running and get back to the raw prompt."""
    try:
        ser.write(b"\r\x03\x03")
        time.sleep(0.05)
        ser.reset_input_buffer()
        ser.write(b"\r\x01")
        _read_until(ser, _BANNER, None, overall=3.0)  # the ">" is left for the next exec
    except (serial.SerialException, OSError):
        pass


# --- mpremote --------------------------------------------------------------------------------


class _MpremoteTransport(SerialTransport):
    def read_until(  # type: ignore[override]
        self,
        min_num_bytes: int,
        ending: bytes,
        timeout: float | None = 10,
        data_consumer: Callable[[bytes], None] | None = None,
        timeout_overall: float | None = None,
    ) -> bytes:
        return _read_until(self.serial, ending, timeout, data_consumer, timeout_overall)


class _RawReplLink(Link):
    """What both transports share once open: `self._board` is the library's object (it has
    `.serial`, `exec_raw`, `exit_raw_repl`, `close`); subclasses name the errors it raises."""

    _board: Any
    _timeout_error: type[Exception]
    _lost_errors: tuple[type[Exception], ...] = (serial.SerialException, OSError)

    def _enter(self, port: str, connect_timeout: float) -> None:
        """Buffer the opened port and get the board to its raw REPL prompt."""
        try:
            self._prepare(port)
            self._board.serial = _Buffered(self._board.serial)
            _enter_raw_repl(self._board.serial, port, connect_timeout)
        except (serial.SerialException, OSError) as exc:
            self._drop()
            raise _lost(port, exc) from exc
        except LinkError:
            self._drop()
            raise

    def _prepare(self, port: str) -> None:
        """Settings on the raw port before it is buffered."""
        _set_write_timeout(self._board.serial)

    def _run(self, code: bytes, timeout: float) -> tuple[bytes, bytes]:
        try:
            out, err = self._board.exec_raw(code, timeout=timeout)
        except self._timeout_error as exc:
            _resync(self._board.serial)
            raise LinkError(
                f"{self.port}: the board did not answer within {timeout:g} s ({exc})", self.port
            ) from exc
        except self._lost_errors as exc:
            raise _lost(self.port, exc) from exc
        return bytes(out), bytes(err)

    def _drop(self) -> None:
        try:
            self._board.serial.close()
        except (serial.SerialException, OSError):
            pass

    def _close_transport(self) -> None:
        try:
            self._board.exit_raw_repl()
            self._board.close()
        except (serial.SerialException, OSError):
            self._drop()


class SerialLink(_RawReplLink):
    """A link through mpremote's `SerialTransport` (raw-paste mode)."""

    via = "mpremote"
    _timeout_error = TransportError
    _lost_errors = (serial.SerialException, OSError, struct.error)

    def __init__(self, port: str, connect_timeout: float = 10.0) -> None:
        super().__init__(port)
        try:
            self._board = _MpremoteTransport(
                port, baudrate=115200, exclusive=True, timeout=_READ_S
            )
        except (TransportError, serial.SerialException, OSError) as exc:
            raise _open_error(port, exc) from exc
        self._enter(port, connect_timeout)
        self._board.in_raw_repl = True


# --- ampy ------------------------------------------------------------------------------------


class _AmpyBoard(Pyboard):
    def read_until(  # type: ignore[override]
        self,
        min_num_bytes: int,
        ending: bytes,
        timeout: float | None = 10,
        data_consumer: Callable[[bytes], None] | None = None,
    ) -> bytes:
        return _read_until(self.serial, ending, timeout, data_consumer)


class AmpyLink(_RawReplLink):
    """A link through adafruit-ampy's `Pyboard` (plain raw REPL)."""

    via = "ampy"
    _timeout_error = PyboardError

    def __init__(self, port: str, connect_timeout: float = 10.0) -> None:
        super().__init__(port)
        if "://" in port:
            raise LinkError(f"{port}: ampy opens device paths only; use --via mpremote", port)
        try:
            self._board = _AmpyBoard(port)
        except (PyboardError, serial.SerialException, OSError) as exc:
            raise _open_error(port, exc) from exc
        self._enter(port, connect_timeout)

    def _prepare(self, port: str) -> None:
        self._board.serial.timeout = _READ_S
        super()._prepare(port)
        _flock(self._board.serial, port)  # ampy opens without pyserial's exclusive lock
