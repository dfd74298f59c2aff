"""The footfall scenario end to end on a virtual board: what `make demo` runs.

    result = run_footfall(workdir, out=sys.stdout)
    result.report.verdict      # "pass": nothing raw left the board
    result.picture             # PNG: true versus reported visitors per window

A shop's BLE scanner counts phones without ever sending an address. The run is the one a
hardware team and QA do with a real board, every step through edgeveil's library and the
unmodified tools under it:

1. replay: a crowd of phones with randomized private addresses, dwell times and RSSI
   (edgeveil.vboard.rawreplay.ble_footfall), plus one canary address that stays;
2. a virtual ESP32 with blank flash; `flash` writes the virtual MicroPython firmware with
   esptool through the ROM loader; `deploy` the device code; `provision` keys and the
   footfall stream of the embedded default policy into NVS and a fresh registry;
3. run: a soft reset starts device/main.py (the footfall profile); the board hears the
   crowd (as fast as the VM goes) and reports per window over serial (or MQTT);
4. capture the serial port (edgeveil.capture), then `verify` the capture with the
   registry's keys, the default policy and the replay as canaries;
5. a picture of true versus reported visitors per window.

`tree` runs another device tree instead of device/ (the e2e test's deliberately leaky
build); `broker` ("host:port") switches the board to MQTT and captures the broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import serial

from .boards import Board, load_board
from .capture import CaptureWriter
from .capture_sources import Limits, capture_mqtt, capture_serial, parse_broker
from .deploy import deploy
from .flash import write_firmware
from .link import open_link
from .policy import default_policy
from .provision import provision
from .registry import Registry, init_registry
from .vboard import firmware, runner
from .vboard.board import BoardSpec
from .vboard.rawreplay import ble_footfall, pin_event, write_raw_replay
from .verify import Keyring, VerifyReport, verify
from .verify.messages import Message
from .verify.truth import ground_truth

START = 1_700_000_100  # the crowd's first second; a window boundary (veil.T0 + k * 300)
CANARY = "c0:ff:ee:00:00:01"  # a made-up address: one more phone that never rotates
_LEAD_IN = 900  # quiet board time before the crowd: flashing and deploying use some
_SETTLE_S = 4.0  # a capture ends after this long without a byte from the board


@dataclass
class ScenarioResult:
    report: VerifyReport
    rows: list[tuple[int, int, int | None]]  # (window start, true visitors, reported)
    capture: Path
    replay: Path
    registry: Path
    picture: Path | None = None
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step


def shop_policy() -> dict[str, Any]:
    """The embedded default policy's footfall stream alone: what a shop's scanner needs.

    A scanner has no heart-rate sensor; leaving the heart stream out keeps its buffers
    off the board's heap. The period budget covers every window of the day.
    """
    pol = default_policy()
    foot = pol["streams"]["footfall"]
    pol["streams"] = {"footfall": foot}
    per_window = sum(f["eps"] for f in foot["fields"].values())
    pol["eps_period"] = pol["period"] // foot["window"] * per_window
    return pol


def crowd_replay(path: Path, seed: int, phones: int, minutes: int, window: int = 300) -> None:
    """The raw replay: a quiet lead-in, the crowd with its canary, then one event a window
    after the end, so the board's clock passes the last window's end and closes it."""
    crowd = ble_footfall(seed, phones, minutes, start=START, canary=CANARY)
    end = START + minutes * 60
    write_raw_replay(
        path, [pin_event(START - _LEAD_IN, 4, 0), *crowd, pin_event(end + window + 1, 4, 0)]
    )


def run_footfall(
    workdir: Path,
    *,
    seed: int = 7,
    phones: int = 60,
    minutes: int = 60,
    tree: Path | None = None,
    broker: str | None = None,
    picture: bool = True,
    speed: int = 0,
    board_config: dict[str, Any] | None = None,
    out: TextIO | None = None,
) -> ScenarioResult:
    """Run the scenario in `workdir` (which keeps every file it made); see the module doc.

    Raises:
        EdgeveilError: a step failed (flash, deploy, provision, capture); the message says
            which. Verification findings are not errors: they are in the report.
    """
    say: Callable[[str], None] = (
        (lambda s: print(s, file=out, flush=True)) if out else (lambda s: None)
    )
    workdir.mkdir(parents=True, exist_ok=True)
    _clear(workdir)
    board = load_board("esp32-virtual")
    policy = shop_policy()
    replay, cap = workdir / "crowd.jsonl", workdir / "footfall.capture"
    crowd_replay(replay, seed, phones, minutes)
    say(f"replay: {phones} phones over {minutes} min, canary {CANARY} -> {replay}")
    steps: dict[str, float] = {}
    info = _start_board(board, workdir, replay, speed)
    try:
        say(f"board: {board.name} on {info.port} (blank flash)")
        port = info.port
        fw = workdir / "firmware.bin"
        fw.write_bytes(firmware.build_firmware(board))
        t = time.monotonic()
        flashed = write_firmware(port, board, fw)
        steps["flash"] = time.monotonic() - t
        say(f"flash: {flashed.project} {flashed.version} at 0x{flashed.offset:x}, verified")
        db = init_registry(workdir / "registry.db")
        with Registry.open(db) as reg, open_link(port) as link:
            t = time.monotonic()
            dep = deploy(link, board, src=tree, cache=workdir / "mpy")
            steps["deploy"] = time.monotonic() - t
            say(f"deploy: code {dep.code_hash[:16]} ({'a patched tree' if tree else 'device/'})")
            t = time.monotonic()
            prov = provision(link, board, reg, policy, port)
            steps["provision"] = time.monotonic() - t
            say(f"provision: device {prov.dev_id}, footfall policy, registry {db}")
            cfg = dict(board_config or {})
            if broker is not None:
                host, bport = parse_broker(broker)
                cfg.update(transport="mqtt", mqtt={"host": host, "port": bport})
            if cfg:
                link.write_file("/veil.json", json.dumps(cfg).encode())
        t = time.monotonic()
        # As fast as the VM goes: quiet for a few seconds means the board is done. At a
        # fixed speed: the replay's board time, in real seconds, and a little more.
        board_s = _LEAD_IN + minutes * 60 + 2 * 300
        limits = (
            Limits(duration=board_s / speed + 10)
            if speed
            else Limits(duration=600, idle=_SETTLE_S if broker is None else 10)
        )
        _run_and_capture(port, cap, broker, limits)
        steps["run+capture"] = time.monotonic() - t
    finally:
        runner.stop(info.name, workdir / "state")
    say(f"capture: {cap}")
    with Registry.open(db) as reg:
        keyring = Keyring.from_registry(reg)
    report = verify(cap, keyring=keyring, policy=policy, canaries=replay)
    rows = visitors_rows(report.messages, replay, policy)
    result = ScenarioResult(report, rows, cap, replay, db, steps=steps)
    if picture:
        from .plot import plot_windows

        result.picture = plot_windows(
            rows,
            workdir / "footfall.png",
            title=f"Footfall: visitors per 5-minute window, {phones} phones over {minutes} min "
            "(true vs. what the board sent)",
        )
    return result


_MADE = (
    "crowd.jsonl",
    "board.img",
    "firmware.bin",
    "footfall.capture",
    "footfall.png",
    "vboard.log",
    "verify.json",
    "verify.xml",
    "registry.db*",
)


def _clear(workdir: Path) -> None:
    """Remove what an earlier run left in `workdir` (only the files a run makes)."""
    import shutil

    for pattern in _MADE:
        for p in workdir.glob(pattern):
            p.unlink()
    for d in ("mpy", "state"):
        shutil.rmtree(workdir / d, ignore_errors=True)


def _start_board(board: Board, workdir: Path, replay: Path, speed: int) -> runner.BoardInfo:
    flash = workdir / "board.img"
    runner.prepare_flash(flash, board, with_firmware=False)
    spec = BoardSpec(
        board=board,
        flash=flash,
        replay=replay,
        speed=speed,
        mac=bytes.fromhex("240ac4f00d01"),
        rfc2217_port=None,
    )
    return runner.spawn(spec, "demo", workdir / "state", log_path=workdir / "vboard.log")


def _run_and_capture(port: str, cap: Path, broker: str | None, limits: Limits) -> None:
    """Soft-reset the board into main.py and record what it sends until it goes quiet.

    Over MQTT the console is captured too (into the same file): console text is wire
    bytes a leak could take, whatever the transport.
    """
    workers = []
    with CaptureWriter(cap, source=f"mqtt://{broker} and {port}" if broker else port) as w:
        if broker is not None:
            host, bport = parse_broker(broker)
            ready = threading.Event()
            workers.append(
                threading.Thread(
                    target=capture_mqtt,
                    kwargs=dict(writer=w, host=host, port=bport, limits=limits, ready=ready.set),
                )
            )
            workers[0].start()
            ready.wait(10)
        _soft_reset(port)
        serial_limits = Limits(duration=limits.duration, idle=limits.idle if not broker else None)
        console = threading.Thread(
            target=capture_serial,
            kwargs=dict(writer=w, url=port, limits=serial_limits, stop=_stop_with(workers)),
        )
        console.start()
        for t in workers:
            t.join()
        console.join()


def _stop_with(workers: list[threading.Thread]) -> threading.Event | None:
    """An event set once every worker has ended (None: nothing to wait for)."""
    if not workers:
        return None
    done = threading.Event()

    def watch() -> None:
        for t in workers:
            t.join()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    return done


def _soft_reset(port: str) -> None:
    # Ctrl-C stops whatever runs, Ctrl-B is the friendly REPL, Ctrl-D its soft reboot:
    # boot.py, then main.py, as on a board. The board holds its output for the capture.
    with serial.Serial(port, 115200, timeout=0.5) as s:
        s.write(b"\r\x03\x03\x02\x04")
        s.flush()


def visitors_rows(
    messages: list[Message],
    replay: Path,
    policy: dict[str, Any],
    stream: str = "footfall",
    field_: str = "visitors",
) -> list[tuple[int, int, int | None]]:
    """(window start, true value, reported value or None) for one field, window by window,
    from the messages verify decoded (VerifyReport.messages)."""
    reported: dict[int, int] = {}
    for m in messages:
        if m.pack is not None and m.pack.base_name.endswith(f":{stream}:"):
            for r in m.pack.records:
                if r.name.endswith(f":{stream}:{field_}"):
                    reported[m.pack.base_time] = r.value
    truth = ground_truth(replay, policy)
    rows = []
    for (s, start, name), tv in sorted(truth.values.items(), key=lambda kv: kv[0][1]):
        if s == stream and name == field_ and start >= START:
            rows.append((start, tv.value, reported.get(start)))
    return rows
