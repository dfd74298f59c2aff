"""`edgeveil capture`: record what boards send, from a serial port, an MQTT broker or a dump.

The work is in `edgeveil.capture` (the file) and `edgeveil.capture_sources` (the sources);
this module parses options, shows progress, and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from .capture_sources import DEFAULT_TOPIC, CaptureStats


class _Progress:
    """A live counter on a terminal (stderr), else a plain line every `every` messages."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.tty = sys.stderr.isatty()
        self._shown_at = 0.0
        self._lines_for = 0

    def __call__(self, s: CaptureStats) -> None:
        if self.tty:
            now = time.monotonic()
            if now - self._shown_at >= 0.1:
                self._shown_at = now
                click.echo(f"\r{_counts(s)}", nl=False, err=True)
        elif self.every and s.messages // self.every > self._lines_for:
            self._lines_for = s.messages // self.every
            click.echo(f"capture: {_counts(s)}", err=True)

    def done(self) -> None:
        if self.tty and self._shown_at:
            click.echo(err=True)


def _counts(s: CaptureStats) -> str:
    return f"{s.messages} messages, {s.records} records, {s.bytes} bytes"


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while inside; the previous handlers come back."""
    stop = threading.Event()

    def handler(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@click.command("capture")
@click.option("--serial", "port", metavar="PORT", help="a serial port or pyserial URL")
@click.option("--baud", default=115200, show_default=True, metavar="BPS", help="serial line speed")
@click.option("--mqtt", "broker", metavar="HOST[:PORT]", help="an MQTT broker (default port 1883)")
@click.option(
    "--topic",
    default=DEFAULT_TOPIC,
    show_default=True,
    help="with --mqtt: the topic filter subscribed to",
)
@click.option(
    "--file",
    "dump",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a raw serial dump to import",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="the capture file to write",
)
@click.option("--force", is_flag=True, help="replace OUT if it exists")
@click.option("--duration", type=click.FloatRange(min=0), metavar="S", help="stop after S seconds")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="stop after N messages")
@click.option(
    "--idle", type=click.FloatRange(min=0), metavar="S", help="stop after S seconds without data"
)
@click.option(
    "--every",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="N",
    help="when stderr is not a terminal: a progress line every N messages (0: none)",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def capture_cmd(
    port: str | None,
    baud: int,
    broker: str | None,
    topic: str,
    dump: Path | None,
    out: Path,
    force: bool,
    duration: float | None,
    count: int | None,
    idle: float | None,
    every: int,
    as_json: bool,
) -> None:
    """Record what boards send: every byte, with its arrival time, in a capture file.

    One source: --serial keeps the raw stream (COBS frames and console text) in chunks as
    read; the port is opened with DTR/RTS released, so the board is not reset. --mqtt
    subscribes (QoS 1) and keeps one record per message with its topic; boards publish to
    edgeveil/<dev_id>/up. --file imports a raw serial dump. A message is an MQTT message,
    or a complete COBS frame holding a COSE message on a serial stream.

    It runs until --duration, --count or --idle says, or until Ctrl-C or SIGTERM; then it
    closes the file cleanly and prints what it captured. Every line is written as it
    arrives and synced to disk each second: a capture killed outright keeps all it wrote.
    The file is JSON Lines (docs/capture.md); `edgeveil verify --capture OUT` checks it.

    \b
    Examples:
      a board on a desk, one minute:
        edgeveil capture --serial /dev/ttyUSB0 -o desk.capture --duration 60
      a virtual board, until it has been quiet for 5 s:
        edgeveil capture --serial rfc2217://127.0.0.1:41231 -o vb.capture --idle 5
      every board's uplink on a broker, 100 messages:
        edgeveil capture --mqtt broker.lan:1883 -o fleet.capture --count 100
      one board only, summary for a script:
        edgeveil capture --mqtt 10.0.0.2 --topic 'edgeveil/3f9a0c12d4e5b6a7/up' \\
            -o one.capture --duration 600 --json
      a dump taken with another tool:
        edgeveil capture --file minicom.bin -o dump.capture
    """
    from .capture import CaptureWriter
    from .capture_sources import Limits, capture_file, capture_mqtt, capture_serial, parse_broker

    if sum(x is not None for x in (port, broker, dump)) != 1:
        raise click.UsageError("give one source: --serial PORT, --mqtt HOST[:PORT] or --file F")
    if dump is not None and (duration, count, idle) != (None, None, None):
        raise click.UsageError("--file imports the whole dump: no --duration/--count/--idle")
    limits = Limits(duration=duration, count=count, idle=idle)
    run: Callable[[CaptureWriter, threading.Event, _Progress], CaptureStats]

    def ready() -> None:
        click.echo(f"capture: recording {what} to {out} (Ctrl-C stops)", err=True)

    if port is not None:
        what = f"serial {port} {baud} baud"

        def run(w: CaptureWriter, stop: threading.Event, p: _Progress) -> CaptureStats:
            assert port is not None
            return capture_serial(w, port, baud, limits, stop, p, ready=ready)

    elif broker is not None:
        try:
            host, mport = parse_broker(broker)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--mqtt") from exc
        what = f"mqtt mqtt://{host}:{mport} topic {topic}"

        def run(w: CaptureWriter, stop: threading.Event, p: _Progress) -> CaptureStats:
            return capture_mqtt(w, host, mport, topic, limits, stop, p, ready=ready)

    else:
        assert dump is not None
        what = f"file {dump}"

        def run(w: CaptureWriter, stop: threading.Event, p: _Progress) -> CaptureStats:
            assert dump is not None
            return capture_file(w, dump, progress=p)

    progress = _Progress(every)
    with _stop_on_signals() as stop, CaptureWriter(out, what, exclusive=not force) as writer:
        try:
            stats = run(writer, stop, progress)
        finally:
            progress.done()
    summary: dict[str, Any] = {"out": str(out), **stats.as_json()}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"captured {_counts(stats)} from {stats.source} to {out} in {stats.seconds:.1f} s"
            f" (stopped: {_STOPPED.get(stats.stopped_by, stats.stopped_by)})"
        )


_STOPPED = {
    "duration": "duration reached",
    "count": "message count reached",
    "idle": "no data for the idle time",
    "signal": "interrupted",
    "end": "end of the dump",
}
