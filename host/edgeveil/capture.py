"""Capture files: the bytes that left a board, exactly as they arrived, with arrival times.

    with CaptureWriter("shop.capture", source="serial /dev/ttyUSB0") as w:
        w.write("serial", chunk, src="/dev/ttyUSB0")          # raw stream bytes
        w.write("mqtt", payload, src="mqtt://10.0.0.2:1883", topic="edgeveil/3f9a.../up")
    cap = read_capture("shop.capture")
    cap.records[0].data        # bytes, as written
    cap.problems               # [(line, byte offset, what is wrong)], nothing raised
    cap.streams()              # {src: the serial/file byte stream, chunks concatenated}

The format is JSON Lines (docs/capture.md): line 1 is a header
``{"edgeveil-capture": 1, "created": ..., "source": ...}``, then one record per line
``{"t", "ch", "src", "topic", "b64"}``. Each line goes to the file in one ``write()`` (the
file is unbuffered), and the file is fsynced at least once a second and on close, so a
capture process killed at any moment leaves every line it wrote before the last one
intact; the reader reports a torn last line or a corrupt line and keeps all the others.
Sources that fill a writer (serial port, MQTT broker, dump file) are in
`edgeveil.capture_sources`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .closing import Closing
from .errors import CaptureError

FORMAT_VERSION = 1
HEADER_KEY = "edgeveil-capture"
CHANNELS = ("serial", "mqtt", "file")
_SYNC_S = 1.0  # the longest a written line waits for fsync


@dataclass(frozen=True)
class CaptureRecord:
    """One captured chunk (serial, file) or message (mqtt).

    Attributes:
        line: its line number in the file (1 is the header).
        offset: byte offset of its line in the file.
        t: arrival time, Unix seconds.
        channel: "serial", "mqtt" or "file".
        source: the port URL, ``mqtt://host:port`` or the dump's path.
        topic: the MQTT topic (mqtt records only).
        data: the bytes as they arrived.
    """

    line: int
    offset: int
    t: float
    channel: str
    source: str
    topic: str | None
    data: bytes


@dataclass
class Capture:
    """A capture file as read: its header, the good records, and what was wrong."""

    path: Path
    header: dict[str, Any]
    records: list[CaptureRecord] = field(default_factory=list)
    problems: list[tuple[int, int, str]] = field(default_factory=list)

    def streams(self) -> dict[str, bytes]:
        """The byte stream of each serial or file source: its chunks concatenated in order.

        Returns:
            source -> bytes, in the order the sources first appear. A record lost to a
            reported problem leaves a gap the stream does not show; check `problems`.
        """
        out: dict[str, bytearray] = {}
        for rec in self.records:
            if rec.channel in ("serial", "file"):
                out.setdefault(rec.source, bytearray()).extend(rec.data)
        return {src: bytes(data) for src, data in out.items()}


class CaptureWriter(Closing):
    """Writes a capture file line by line; a context manager.

    Args:
        path: the file to write (replaced if it exists, unless `exclusive`).
        source: what is captured, for people ("serial /dev/ttyUSB0 115200 baud").
        exclusive: refuse to replace an existing file.

    Raises:
        CaptureError: the file cannot be created (or exists, with `exclusive`).

    `write` may be called from several threads. A daemon thread fsyncs written lines at
    least once a second; `close` fsyncs and stops it.
    """

    def __init__(self, path: str | os.PathLike[str], source: str, exclusive: bool = False):
        self.path = Path(path)
        self.source = source
        self.records = 0
        self.bytes = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= os.O_EXCL if exclusive else os.O_TRUNC
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except FileExistsError as exc:
            raise CaptureError(f"{self.path}: exists (give another name, or --force)") from exc
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot create: {exc.strerror}") from exc
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._put({HEADER_KEY: FORMAT_VERSION, "created": created, "source": source})
        self._fsync()
        _fsync_dir(self.path.parent)
        self._syncer = threading.Thread(target=self._sync_loop, name="capture-fsync", daemon=True)
        self._syncer.start()

    def write(
        self,
        channel: str,
        data: bytes | bytearray | memoryview,
        src: str,
        topic: str | None = None,
        t: float | None = None,
    ) -> None:
        """Append one record: `data` exactly, as base64.

        Args:
            channel: "serial", "mqtt" or "file".
            data: the chunk or message.
            src: where it came from (port URL, ``mqtt://host:port``, path).
            topic: the MQTT topic, for mqtt records.
            t: arrival time in Unix seconds; now if omitted.

        Raises:
            ValueError: an unknown channel, or the writer is closed.
            CaptureError: the line could not be written (disk full, I/O error).
        """
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")
        when = time.time() if t is None else float(t)
        if not math.isfinite(when):
            raise ValueError(f"arrival time must be finite, not {t!r}")
        blob = bytes(data)
        rec = {
            "t": when,
            "ch": channel,
            "src": src,
            "topic": topic,
            "b64": base64.b64encode(blob).decode("ascii"),
        }
        self._put(rec)
        self.records += 1
        self.bytes += len(blob)

    def _put(self, obj: dict[str, Any]) -> None:
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self.path}: capture writer is closed")
            view = memoryview(line)
            try:
                while view:  # one write() for a regular file; the loop is for the odd short one
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:
                raise CaptureError(f"{self.path}: cannot write: {exc.strerror}") from exc
            self._dirty = True

    def _fsync(self) -> None:
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def _sync_loop(self) -> None:
        while not self._stop.wait(_SYNC_S):
            try:
                self._fsync()
            except OSError:  # reported by the next write or by close
                pass

    def close(self) -> None:
        """Fsync and close the file; further writes raise. Closing twice is harmless."""
        self._stop.set()
        if self._syncer.is_alive() and self._syncer is not threading.current_thread():
            self._syncer.join()
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make the new file's directory entry durable (best effort: not every FS allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_capture(path: str | os.PathLike[str]) -> Capture:
    """Read a capture file, keeping every good record and reporting every bad line.

    Args:
        path: the capture file.

    Returns:
        The header, the records in file order, and `problems`: (line number, byte
        offset of the line, what is wrong) for each line that is not a record, among them
        a last line torn by a capture that was killed while writing it.

    Raises:
        CaptureError: the file is missing or unreadable, or line 1 is not a capture header
            of a version this edgeveil reads.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise CaptureError(f"{p}: no such capture file") from exc
    except OSError as exc:
        raise CaptureError(f"{p}: cannot read: {exc.strerror}") from exc
    lines = raw.split(b"\n")
    header = _header(p, lines[0])
    cap = Capture(path=p, header=header)
    offset = len(lines[0]) + 1
    last = len(lines) - 1  # lines[last] is b"" when the file ends with a newline
    for i in range(1, len(lines)):
        line = lines[i]
        if i == last and not line:
            break
        rec_or_why = _record(line, i + 1, offset)
        if isinstance(rec_or_why, CaptureRecord):
            cap.records.append(rec_or_why)
        elif i == last:
            cap.problems.append(
                (
                    i + 1,
                    offset,
                    f"torn last line ({len(line)} bytes, no newline): the capture stopped "
                    f"while writing it ({rec_or_why}); the {len(cap.records)} records "
                    "before it are kept",
                )
            )
        else:
            cap.problems.append((i + 1, offset, rec_or_why))
        offset += len(line) + 1
    return cap


def _header(p: Path, line: bytes) -> dict[str, Any]:
    if not line:
        raise CaptureError(f"{p}: not a capture file: line 1 is empty, no header")
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise CaptureError(f"{p}: not a capture file: line 1 is not JSON ({exc})") from exc
    if not isinstance(obj, dict) or HEADER_KEY not in obj:
        raise CaptureError(f"{p}: not a capture file: line 1 has no {HEADER_KEY!r} header")
    if obj[HEADER_KEY] != FORMAT_VERSION:
        raise CaptureError(
            f"{p}: capture format version {obj[HEADER_KEY]!r}; this edgeveil reads "
            f"{FORMAT_VERSION}"
        )
    return obj


def _record(line: bytes, number: int, offset: int) -> CaptureRecord | str:
    """The record on one line, or why it is not one."""
    if not line:
        return "empty line"
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "not a record: a JSON %s, not an object" % type(obj).__name__
    t: Any = obj.get("t")
    ch, src, topic, b64 = (obj.get(k) for k in ("ch", "src", "topic", "b64"))
    if type(t) not in (int, float) or not math.isfinite(t):
        return f"record without a valid arrival time 't': {t!r}"
    if ch not in CHANNELS:
        return f"record with unknown channel 'ch': {ch!r}"
    if not isinstance(src, str):
        return f"record without a source 'src': {src!r}"
    if not (topic is None or isinstance(topic, str)) or (ch == "mqtt" and topic is None):
        return f"{ch} record with a bad 'topic': {topic!r}"
    if not isinstance(b64, str):
        return f"record without data 'b64': {b64!r}"
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"record whose 'b64' is not base64: {exc}"
    return CaptureRecord(number, offset, float(t), ch, src, topic, data)
