"""Capture sources: fill a `CaptureWriter` from a serial port, an MQTT broker or a dump.

    with CaptureWriter("out.capture", "serial /dev/ttyUSB0") as w:
        stats = capture_serial(w, "/dev/ttyUSB0", limits=Limits(duration=60))
    stats.records, stats.messages, stats.stopped_by

Each source runs until a limit is reached (`Limits`: duration, message count, idle time),
`stop` is set (the CLI sets it on SIGINT/SIGTERM), or the source ends; it wakes at least
every `_TICK_S` to check. A lost port or broker raises `CaptureError`; what was captured
until then is already in the file.

- serial: any pyserial URL (/dev/ttyUSB0, /dev/pts/N, rfc2217://host:port), opened with
  DTR and RTS released, so that opening it does not reset an ESP32 through the usual
  auto-reset circuit (EN on RTS, IO0 on DTR). Records are raw chunks as read; messages
  are complete COBS frames holding a COSE_Encrypt0 message (edgeveil.frames).
- mqtt: paho-mqtt, MQTT 3.1.1, a clean session subscribed at QoS 1 to a topic filter
  (default ``edgeveil/+/up``, every board's uplink); one record per message.
- file: a raw serial dump imported as "file" records of `_FILE_CHUNK` bytes.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .capture import CaptureWriter
from .errors import CaptureError
from .frames import split_stream

DEFAULT_TOPIC = "edgeveil/+/up"
DEFAULT_MQTT_PORT = 1883
_TICK_S = 0.1  # how often a source checks its limits and `stop` while the line is quiet
_FILE_CHUNK = 4096
_PIECE_KEEP = 8192  # console text kept while looking for a frame glued to its end


@dataclass(frozen=True)
class Limits:
    """When a capture stops by itself (None: never).

    Attributes:
        duration: seconds after the start.
        count: messages (MQTT messages; complete COBS frames on a serial stream).
        idle: seconds without any data (counted from the start until data arrives).
    """

    duration: float | None = None
    count: int | None = None
    idle: float | None = None


@dataclass
class CaptureStats:
    """What a source captured. `stopped_by`: duration, count, idle, signal or end."""

    source: str
    records: int = 0
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    _start: float = field(default_factory=time.monotonic, repr=False)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["_start"]
        return out


Progress = Callable[[CaptureStats], None]


class _Run:
    """Limits, stop and progress shared by the sources."""

    def __init__(
        self,
        stats: CaptureStats,
        limits: Limits,
        stop: threading.Event | None,
        progress: Progress | None,
    ) -> None:
        self.stats, self.limits, self.stop, self.progress = stats, limits, stop, progress
        self.last_data = stats._start

    def got(self, nbytes: int, messages: int) -> None:
        s = self.stats
        s.records += 1
        s.bytes += nbytes
        s.messages += messages
        self.last_data = time.monotonic()
        s.seconds = self.last_data - s._start
        if self.progress is not None:
            self.progress(s)

    def full(self) -> bool:
        return self.limits.count is not None and self.stats.messages >= self.limits.count

    def why_stop(self) -> str | None:
        lim, now = self.limits, time.monotonic()
        if self.stop is not None and self.stop.is_set():
            return "signal"
        if self.full():
            return "count"
        if lim.duration is not None and now - self.stats._start >= lim.duration:
            return "duration"
        if lim.idle is not None and now - self.last_data >= lim.idle:
            return "idle"
        return None

    def finish(self, why: str) -> CaptureStats:
        self.stats.stopped_by = why
        self.stats.seconds = time.monotonic() - self.stats._start
        return self.stats


class FrameCounter:
    """Counts complete COBS frames holding a COSE message in a stream fed chunk by chunk.

    A frame is complete when the 0x00 after it has arrived; each piece between 0x00 bytes
    is judged by `edgeveil.frames.split_stream` (a frame glued to console text counts).
    """

    def __init__(self) -> None:
        self._piece = bytearray()

    def feed(self, data: bytes) -> int:
        parts = data.split(b"\x00")
        self._piece += parts[0]
        found = 0
        for part in parts[1:]:
            if self._piece:
                found += sum(1 for it in split_stream(bytes(self._piece)) if it.kind == "frame")
            self._piece = bytearray(part)
        if len(self._piece) > _PIECE_KEEP:
            del self._piece[:-_PIECE_KEEP]
        return found


# --- serial ----------------------------------------------------------------------------------


def open_serial(url: str, baudrate: int = 115200, timeout: float = _TICK_S) -> Any:
    """Open a port for reading without resetting the board on it.

    pyserial raises DTR and RTS when it opens a port; on an ESP32's auto-reset circuit (and
    on a virtual board over RFC 2217) the lines drive EN and IO0. Both are set released
    before the port opens, as mpremote does. Local device paths are locked exclusively, so
    no other program takes bytes from the capture.

    Raises:
        CaptureError: the port is missing, busy or not accessible.
    """
    import serial

    local = "://" not in url
    try:
        ser = serial.serial_for_url(
            url, do_not_open=True, baudrate=baudrate, timeout=timeout, exclusive=local or None
        )
        ser.dtr = False  # IO0 high: normal boot
        ser.rts = False  # EN high: the chip keeps running
        ser.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise CaptureError(f"{url}: {_open_reason(exc)}") from exc
    return ser


def _open_reason(exc: BaseException) -> str:
    code, text = getattr(exc, "errno", None), str(exc)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        return "port busy: another program holds it open (mpremote, a serial monitor?)"
    if code == errno.ENOENT or "No such file" in text:
        return "no such port (is the board plugged in? virtual ones: `edgeveil vboard status`)"
    if code == errno.EACCES or "Permission denied" in text:
        return "permission denied (add yourself to the port's group, e.g. dialout)"
    return f"cannot open port: {text}"


def capture_serial(
    writer: CaptureWriter,
    url: str,
    baudrate: int = 115200,
    limits: Limits | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    ready: Callable[[], None] | None = None,
) -> CaptureStats:
    """Record a serial port's byte stream (frames and console text) as it arrives.

    Args:
        writer: where the records go ("serial", src = `url`).
        url: /dev/ttyUSB0, /dev/pts/N, rfc2217://host:port, or any pyserial URL.
        baudrate: the line speed (a pty and RFC 2217 loopback ignore it).
        limits: when to stop by itself (default: never).
        stop: set it to stop (from a signal handler or another thread).
        progress: called after each record.
        ready: called once the port is open.

    Raises:
        CaptureError: the port cannot be opened or is lost mid-capture.
    """
    import serial

    ser = open_serial(url, baudrate)
    run = _Run(CaptureStats(source=url), limits or Limits(), stop, progress)
    frames = FrameCounter()
    try:
        if ready is not None:
            ready()
        while (why := run.why_stop()) is None:
            try:
                data = ser.read(1)
                arrived = time.time()
                if data:
                    data += ser.read(ser.in_waiting)
            except (serial.SerialException, OSError) as exc:
                raise CaptureError(
                    f"{url}: lost the port after {run.stats.records} records "
                    f"({run.stats.bytes} bytes, all kept): {exc}"
                ) from exc
            if data:
                writer.write("serial", data, src=url, t=arrived)
                run.got(len(data), frames.feed(data))
    finally:
        ser.close()
    return run.finish(why)


# --- mqtt ------------------------------------------------------------------------------------


def parse_broker(spec: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6ADDR]:PORT`` or ``mqtt://HOST:PORT`` -> (host, port).

    Raises:
        ValueError: an empty host or a port that is not 1-65535.
    """
    rest = spec.removeprefix("mqtt://").rstrip("/")
    port_text = ""
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail.removeprefix(":")
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host = rest
    if not host:
        raise ValueError(f"no broker host in {spec!r}")
    if not port_text:
        return host, DEFAULT_MQTT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad broker port in {spec!r}")
    return host, int(port_text)


def capture_mqtt(
    writer: CaptureWriter,
    host: str,
    port: int = DEFAULT_MQTT_PORT,
    topic: str = DEFAULT_TOPIC,
    limits: Limits | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    connect_timeout: float = 5.0,
    ready: Callable[[], None] | None = None,
) -> CaptureStats:
    """Subscribe to `topic` (QoS 1, clean session) and record one record per message.

    Args:
        writer: where the records go ("mqtt", src = ``mqtt://host:port``, the topic kept).
        host: the broker's host name or address.
        port: its MQTT port.
        topic: an MQTT topic filter; the default takes every board's uplink.
        limits: when to stop by itself (default: never); `count` counts messages.
        stop: set it to stop.
        progress: called after each record.
        connect_timeout: seconds to wait for the broker to accept and subscribe.
        ready: called once the broker has acknowledged the subscription.

    Raises:
        CaptureError: the broker is unreachable, refuses the connection or the
            subscription, or the connection is lost mid-capture.
    """
    import paho.mqtt.client as mqtt

    src = f"mqtt://{host}:{port}"
    run = _Run(CaptureStats(source=src), limits or Limits(), stop, progress)
    state: dict[str, Any] = {"subscribed": False, "refused": None}
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="edgeveil-capture-%d-%s" % (os.getpid(), os.urandom(3).hex()),
        clean_session=True,
        reconnect_on_failure=False,
    )
    client.connect_timeout = connect_timeout

    def on_connect(c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            state["refused"] = f"the broker refused the connection: {reason}"
        else:
            c.subscribe(topic, qos=1)

    def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: Any, _props: Any) -> None:
        if any(r.is_failure for r in reasons):
            state["refused"] = f"the broker refused the subscription to {topic!r}"
        else:
            state["subscribed"] = True
            run.last_data = time.monotonic()  # idle counts from the subscription

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if not run.full():  # past the count (same read): not recorded
            writer.write("mqtt", msg.payload, src=src, topic=msg.topic)
            run.got(len(msg.payload), 1)

    client.on_connect, client.on_subscribe, client.on_message = (
        on_connect,
        on_subscribe,
        on_message,
    )
    try:
        try:
            client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise CaptureError(f"{src}: cannot reach the MQTT broker: {exc}") from exc
        _await_subscription(client, state, src, connect_timeout, run)
        if ready is not None and state["subscribed"]:
            ready()
        while (why := run.why_stop()) is None:
            if client.loop(timeout=_TICK_S) != mqtt.MQTT_ERR_SUCCESS:
                raise CaptureError(
                    f"{src}: lost the connection to the broker after {run.stats.messages} "
                    "messages (all kept)"
                )
    finally:
        if client.is_connected():
            client.disconnect()
        # paho 2.2 has no public close; this is what its __del__ does (the socket and
        # the wake-up socket pair), done now rather than whenever the client is collected.
        client._reset_sockets()
    return run.finish(why)


def _await_subscription(
    client: Any, state: dict[str, Any], src: str, timeout: float, run: _Run
) -> None:
    import paho.mqtt.client as mqtt

    deadline = time.monotonic() + timeout
    while not state["subscribed"]:
        rc = client.loop(timeout=_TICK_S)
        if state["refused"]:
            raise CaptureError(f"{src}: {state['refused']}")
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise CaptureError(f"{src}: the broker closed the connection ({rc.name})")
        if time.monotonic() >= deadline:
            raise CaptureError(f"{src}: no answer from the MQTT broker within {timeout:g} s")
        if run.stop is not None and run.stop.is_set():
            return


# --- file ------------------------------------------------------------------------------------


def capture_file(
    writer: CaptureWriter,
    dump: str | os.PathLike[str],
    t: float | None = None,
    progress: Progress | None = None,
) -> CaptureStats:
    """Import a raw serial dump: "file" records of up to 4 KiB, in order.

    Args:
        writer: where the records go (src = the dump's path as given).
        dump: the file of raw bytes (frames and console text, as a serial port gave them).
        t: the arrival time to record; default the dump's modification time.
        progress: called after each record.

    Raises:
        CaptureError: the dump cannot be read.
    """
    path = Path(dump)
    src = str(dump)
    run = _Run(CaptureStats(source=src), Limits(), None, progress)
    frames = FrameCounter()
    try:
        with open(path, "rb") as f:
            when = os.fstat(f.fileno()).st_mtime if t is None else t
            while chunk := f.read(_FILE_CHUNK):
                writer.write("file", chunk, src=src, t=when)
                run.got(len(chunk), frames.feed(chunk))
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read the dump: {exc.strerror or exc}") from exc
    return run.finish("end")
