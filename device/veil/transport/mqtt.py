"""MQTT transport: each COSE message is one MQTT 3.1.1 PUBLISH at QoS 1.

    t = MqttTransport("192.168.1.10", 1883, keys.dev_id)
    t.send(cose_bytes)   # PUBLISH to edgeveil/<dev_id hex>/up, then wait for its PUBACK
    t.close()            # DISCONNECT

The client is minimal: it connects on first use (clean session, client id "veil-" + the
device id in hex), publishes, and never subscribes. A send that fails on a connection
that was lost (closed by the broker, timed out, refused) closes it, connects once more and
sends the same PUBLISH again, with its DUP flag set if the first one went out (MQTT 3.1.1
§3.3.1.1); if that fails too, `send` raises MqttError, and egress drops and counts the
report. A packet is built whole before it is written, and a connection that failed is
never written to again, so the broker never sees part of a message as a message.

With QoS 1 a resent message may arrive twice (the broker got it, its PUBACK was lost):
the same bytes, the same COSE counter.

Allocates: a packet per send (the message is copied once into it).
"""

import binascii
import errno
import socket
import time

from micropython import const

from veil import VeilError
from veil.transport import register

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH_QOS1 = const(0x32)  # PUBLISH, QoS 1, no retain (§3.3.1)
_DUP = const(0x08)
_PUBACK = const(0x40)
_DISCONNECT = const(0xE0)
_CLEAN_SESSION = const(0x02)
_LEVEL_311 = const(4)


class MqttError(VeilError):
    pass


def _remaining_length(n):
    """MQTT's variable-length integer (§2.2.3): 7 bits a byte, high bit = more follows."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _string(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return bytes(((len(b) >> 8) & 0xFF, len(b) & 0xFF)) + b


class MqttTransport:
    """Publishes to `edgeveil/<dev_id hex>/up` on the broker at host:port."""

    def __init__(self, host, port, dev_id, client_id=None, timeout_s=5, keepalive=60):
        hex_id = dev_id if isinstance(dev_id, str) else binascii.hexlify(dev_id).decode()
        self.host = host
        self.port = port
        self.topic = "edgeveil/%s/up" % hex_id
        self.client_id = client_id or "veil-" + hex_id
        self.timeout_s = timeout_s
        self.keepalive = keepalive
        self.reconnects = 0
        self._sock = None
        self._pid = 0
        self._written = False  # whether the current PUBLISH went out at least once
        self._since = 0  # ticks_ms of the last exchange on the connection

    def send(self, msg):
        """Publish `msg` and wait for the broker's PUBACK; raises MqttError on failure."""
        self._pid = self._pid % 0xFFFF + 1  # packet ids are 1..65535 (§2.3.1)
        packet = self._publish(self._pid, msg)
        if self._sock is not None and self.keepalive:
            idle = time.ticks_diff(time.ticks_ms(), self._since)
            if idle > self.keepalive * 1000:
                self.close()  # the broker drops a client silent for 1.5 keepalives
        self._written = False
        try:
            self._exchange(packet, self._pid)
            return
        except (OSError, MqttError):
            self._drop()
        if self._written:  # the broker may have it: the same message again, marked (§4.3.2)
            packet[0] |= _DUP
        self.reconnects += 1
        try:
            self._exchange(packet, self._pid)
        except (OSError, MqttError) as e:
            self._drop()
            raise MqttError(
                "publish to %s:%d failed after a reconnect: %r" % (self.host, self.port, e)
            )

    def close(self):
        """Disconnect cleanly (best effort)."""
        if self._sock is not None:
            try:
                self._sock.sendall(bytes((_DISCONNECT, 0)))
            except OSError:
                pass
        self._drop()

    # -- packets ------------------------------------------------------------------------

    def _publish(self, pid, msg):
        topic = _string(self.topic)
        n = len(topic) + 2 + len(msg)
        head = _remaining_length(n)
        packet = bytearray(1 + len(head) + n)
        packet[0] = _PUBLISH_QOS1
        at = 1 + len(head)
        packet[1:at] = head
        packet[at : at + len(topic)] = topic
        at += len(topic)
        packet[at] = pid >> 8
        packet[at + 1] = pid & 0xFF
        packet[at + 2 :] = msg
        return packet

    def _exchange(self, packet, pid):
        if self._sock is None:
            self._connect()
        self._sock.sendall(packet)
        self._written = True
        self._await(_PUBACK, pid)

    def _connect(self):
        infos = socket.getaddrinfo(self.host, self.port)
        info = infos[0]
        for ai in infos:
            if ai[1] == socket.SOCK_STREAM:
                info = ai
                break
        self._sock = socket.socket(info[0], socket.SOCK_STREAM)
        self._sock.settimeout(self.timeout_s)
        self._sock.connect(info[-1])
        # CONNECT (§3.1): protocol name and level, flags, keep alive; payload: client id.
        body = (
            _string("MQTT")
            + bytes(
                (_LEVEL_311, _CLEAN_SESSION, (self.keepalive >> 8) & 0xFF, self.keepalive & 0xFF)
            )
            + _string(self.client_id)
        )
        self._sock.sendall(bytes((_CONNECT,)) + _remaining_length(len(body)) + body)
        ack = self._await(_CONNACK, None)
        if len(ack) != 2 or ack[1] != 0:  # §3.2.2.3: 0 = accepted
            code = ack[1] if len(ack) == 2 else -1
            raise MqttError(
                "broker %s:%d refused the connection (code %d)" % (self.host, self.port, code)
            )

    def _await(self, kind, pid):
        """The body of the next packet of type `kind` (and packet id `pid`); others are
        skipped. MqttError when none comes within timeout_s."""
        start = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), start) < self.timeout_s * 1000:
            first, body = self._read_packet()
            if first & 0xF0 != kind:
                continue  # PINGRESP or anything a broker may send unasked
            if pid is not None and (len(body) < 2 or (body[0] << 8 | body[1]) != pid):
                continue  # a late PUBACK for an earlier attempt
            self._since = time.ticks_ms()
            return body
        raise MqttError("no answer from the broker within %s s" % self.timeout_s)

    def _read_packet(self):
        first = self._recv(1)[0]
        n = 0
        shift = 0
        while True:
            b = self._recv(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttError("malformed packet length from the broker")
        return first, self._recv(n) if n else b""

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            try:
                got = self._sock.recv(n - len(buf))
            except OSError as e:
                if e.args and e.args[0] in (errno.EAGAIN, errno.ETIMEDOUT):  # the timeout
                    raise MqttError("no answer from the broker within %s s" % self.timeout_s)
                raise
            if not got:
                raise MqttError("the broker closed the connection")
            buf += got
        return buf

    def _drop(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


register("mqtt", MqttTransport)
