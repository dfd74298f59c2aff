"""The virtual board's UART as the host sees it: a pseudo-terminal and an RFC 2217 port.

- `PtyLink`: a pty whose slave (`/dev/pts/N`) a client opens like `/dev/ttyUSB0`. A pty
  has no DTR/RTS, so the link reports when a client opens and closes it (the master sees
  POLLHUP while no one holds the slave), and the board infers intent from that.
- `Rfc2217Link`: `rfc2217://127.0.0.1:PORT` served with pyserial's `PortManager`; the
  client's DTR/RTS changes reach the board exactly, as an auto-reset circuit sees them.

Both are driven by the board's selector loop: `fileno()`s to watch, `on_readable()` to
call, and `send()` for console output. Output written while no client is attached is
dropped, as a UART's is; while one is attached, the board stops reading the VM's output
when the client falls behind, so the VM blocks in its write as on a UART's full buffer.
"""

from __future__ import annotations

import os
import pty
import select
import socket
import tty
from collections.abc import Callable

import serial.rfc2217

Receive = Callable[[bytes], None]


class PtyLink:
    """The board's UART on a pseudo-terminal."""

    def __init__(self, receive: Receive, on_open_close: Callable[[bool], None]) -> None:
        self.receive = receive
        self.on_open_close = on_open_close
        self.master, slave = pty.openpty()
        tty.setraw(slave)  # before anything is written: no echo, no \n -> \r\n
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self.client_open = False
        self._pending = bytearray()

    def fileno(self) -> int:
        return self.master

    def hung_up(self) -> bool:
        """True while no process holds the slave open."""
        p = select.poll()
        p.register(self.master, select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in p.poll(0))

    def check_open(self) -> None:
        """Notice a client opening or closing the port (call it periodically)."""
        now_open = not self.hung_up()
        if now_open != self.client_open:
            self.client_open = now_open
            if not now_open:
                self._pending.clear()
            self.on_open_close(now_open)

    def on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the last client closed the slave
            self.check_open()
            return
        if data:
            self.receive(data)

    def send(self, data: bytes) -> None:
        """Queue console output for the client; nothing is kept while no client is attached."""
        if not self.client_open:
            return
        self._pending += data
        self.flush()

    def flush(self) -> None:
        """Write what the pty takes now; the rest waits (see `backlog`)."""
        while self._pending and self.client_open:
            try:
                n = os.write(self.master, self._pending[:65536])
            except BlockingIOError:
                return
            except OSError:  # the client went away
                self._pending.clear()
                return
            del self._pending[:n]

    def backlog(self) -> int:
        """Bytes written by the chip that the client has not taken yet (flow control)."""
        return len(self._pending)

    def close(self) -> None:
        os.close(self.master)


class _Lines:
    """What pyserial's PortManager drives: a serial port's control lines and settings."""

    def __init__(self, on_lines: Callable[[bool, bool], None]) -> None:
        self._on_lines = on_lines
        self._dtr = False
        self._rts = False
        self.baudrate = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._on_lines(self._dtr, self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._on_lines(self._dtr, self._rts)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class Rfc2217Link:
    """The board's UART on an RFC 2217 (telnet COM-port control) TCP port, one client at a time."""

    def __init__(
        self, receive: Receive, on_lines: Callable[[bool, bool], None], port: int = 0
    ) -> None:
        self.receive = receive
        self.on_lines = on_lines
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.url = "rfc2217://127.0.0.1:%d" % self.port
        self.client: socket.socket | None = None
        self.manager: serial.rfc2217.PortManager | None = None

    def accept(self) -> socket.socket | None:
        """Take a new client; a second client is turned away while one is attached."""
        try:
            conn, _ = self.server.accept()
        except BlockingIOError:
            return None
        if self.client is not None:
            conn.close()
            return None
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = conn
        lines = _Lines(self.on_lines)
        self.manager = serial.rfc2217.PortManager(lines, _SocketWriter(conn))
        return conn

    def on_readable(self) -> bool:
        """Read from the client; False when it has gone."""
        assert self.client is not None and self.manager is not None
        try:
            data = self.client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop_client()
            return False
        plain = b"".join(self.manager.filter(data))
        if plain:
            self.receive(plain)
        return True

    def drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.manager = None
        self.on_lines(False, False)  # a USB-serial adapter releases both lines

    def send(self, data: bytes) -> None:
        if self.client is None or self.manager is None:
            return
        try:
            self.client.sendall(b"".join(self.manager.escape(data)))
        except OSError:
            self.drop_client()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.server.close()


class _SocketWriter:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass
