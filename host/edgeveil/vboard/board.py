"""One virtual ESP32, -S3 or -C3: power, reset and boot logic around the VM, the ROM loader
and the UART. The board file's chip picks the ROM loader's model (`esp32regs.TARGETS`).

    vb = VirtualBoard(BoardSpec(board=load_board("esp32s3-virtual"), flash=Path("board.img")))
    vb.open(); print(vb.pty.path); vb.serve_forever()

States, as a real chip goes through them:

- ``reset``: EN held low (RFC 2217 only); nothing runs.
- ``download``: the ROM's serial loader (`rom.RomLoader`) answers esptool.
- ``bootloop``: the app partition holds no valid image; the ROM prints its invalid-header
  loop, as a blank ESP32 does, until esptool puts the chip into download mode.
- ``running``: the MicroPython VM runs with the board's heap on the board's flash.

Getting into download mode: over RFC 2217 the DTR/RTS lines drive EN and IO0 through the
usual auto-reset circuit, and IO0 is sampled over a 150 ms strapping window after EN rises
(pyserial's client takes 50 ms per line change, so a single instant would miss it). A pty
has no lines, so there the board infers intent: a SLIP SYNC request means esptool wants
the ROM loader, and the port closing after a loader session means "reset and run the app"
(notes/esptool-rom-protocol.md, section 7).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import selectors
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..boards import Board
from . import firmware, rawreplay, rom
from .flashfile import FlashFile
from .link import PtyLink, Rfc2217Link
from .vmhost import RESET_CAUSES, VMHost
from .vmproc import VMProcess

_SYNC = b"\xc0\x00\x08\x24\x00\x00\x00\x00\x00\x07\x07\x12\x20"
_STRAP_WINDOW_S = 0.15
_BOOTLOOP_PERIOD_S = 1.0


@dataclass
class BoardSpec:
    """What one virtual board is made of.

    Attributes:
        board: the board data (flash size, partitions, heap).
        flash: the flash image file; created blank (0xFF) if missing.
        mac: the chip's base MAC (6 bytes), what `machine.unique_id()` returns; empty:
            `default_mac(flash)`, so boards on different flash files differ, as chips do.
        replay: a raw-event replay (docs/vboard-replay.md) fed to the emulated peripherals.
        speed: replay speed factor; 0 replays as fast as the VM can take it.
        rfc2217_port: TCP port for RFC 2217 (0 picks a free one; None: no RFC 2217).
        heap_bytes: the VM's GC heap; defaults to the board's `vm_app_heap_bytes`.
    """

    board: Board
    flash: Path
    mac: bytes = b""
    replay: Path | None = None
    speed: int = 1
    rfc2217_port: int | None = 0
    heap_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.mac:
            self.mac = default_mac(self.flash)


def default_mac(flash: Path) -> bytes:
    """A virtual chip's MAC when none is given: Espressif's OUI 24:0a:c4 and three bytes
    of a hash of the flash file's absolute path. Stable across restarts of the same board,
    different between boards, so tools that tell chips apart by MAC (provision's resume,
    the registry) see each virtual board as its own chip."""
    digest = hashlib.sha256(str(Path(flash).resolve()).encode()).digest()
    return bytes.fromhex("240ac4") + digest[:3]


class VirtualBoard(VMHost):
    """The board process: call `open()`, then `serve_forever()` until `stop()`."""

    def __init__(self, spec: BoardSpec, log: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.log = log or (lambda msg: None)
        self.state = "reset"
        self.sel = selectors.DefaultSelector()
        self.vm: VMProcess | None = None
        self.loader: rom.RomLoader | None = None
        self.flash: FlashFile | None = None
        self.pty: PtyLink | None = None
        self.rfc: Rfc2217Link | None = None
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stop = False
        self._en_low = False
        self._io0_low_seen = False
        self._strap_timer = -1
        self._sync_tail = b""
        self._out_tail = b""
        self.repl_raw = False  # the REPL mode the VM was last seen in
        self._boot_filter: list[tuple[bytes, bool]] = []  # (marker, pass the text) at boot
        self._vm_phase = "starting"
        self._input_hold: bytes | None = None  # host input held while the VM cannot take it
        self._ctl_seen: list[bytes] = []
        self._ctrl_c_passed = False
        self._mode_tail = b""
        # The board's calendar time at the next boot: the replay's start, then whatever
        # the VM reported when it last exited ("clock N" on ctl).
        self._vclock: int | None = None
        self._rtc_mem = b""  # RTC slow memory: kept across resets and deep sleep
        self._vclock_ms = 0  # board time slept in deep sleep, below a whole second
        self._sleep = (0.0, -1)  # deep sleep: (when it began, its length in ms; -1: for ever)
        self._wake_seq: int | None = None  # the timer that ends it
        self._vm_paused = False
        self.boots = 0
        self._vmlib_dir: Path | None = None
        self._hard_cause = "power"

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        if not self.spec.flash.exists():
            FlashFile.create_blank(self.spec.flash, self.spec.board.flash_size)
        if self.spec.replay:
            first = rawreplay.first_time(self.spec.replay)
            self._vclock = int(first) if first is not None else None
        # The pty master is watched only while a client holds the port: with none, it
        # reads as EIO at once, and selecting on it would spin.
        self.pty = PtyLink(self._from_pty, self._pty_open_close)
        if self.spec.rfc2217_port is not None:
            self.rfc = Rfc2217Link(self._from_rfc, self._lines, self.spec.rfc2217_port)
            self.sel.register(self.rfc.server, selectors.EVENT_READ, self._rfc_accept)
        self._every(0.02, self._poll_pty)
        self.power_on("power")

    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        try:
            while not self._stop:
                self.step()
        finally:
            self.close()

    def step(self, max_wait: float = 0.05) -> None:
        wait = max_wait
        if self._timers:
            wait = max(0.0, min(wait, self._timers[0][0] - time.monotonic()))
        for key, _ in self.sel.select(wait):
            key.data()
        self._flow()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        self._halt()
        if self.pty:
            self.pty.close()
        if self.rfc:
            self.rfc.close()
        self.sel.close()
        if self._vmlib_dir:
            shutil.rmtree(self._vmlib_dir, ignore_errors=True)

    # -- timers ---------------------------------------------------------------------------

    def _after(self, delay: float, fn: Callable[[], None]) -> int:
        seq = next(self._seq)
        heapq.heappush(self._timers, (time.monotonic() + delay, seq, fn))
        return seq

    def _cancel(self, seq: int) -> None:
        self._timers = [t for t in self._timers if t[1] != seq]
        heapq.heapify(self._timers)

    def _every(self, period: float, fn: Callable[[], None]) -> None:
        def tick() -> None:
            fn()
            self._after(period, tick)

        self._after(period, tick)

    # -- the UART -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Console output: what the chip puts on its UART reaches every attached client."""
        if self.pty:
            self.pty.send(data)
        if self.rfc:
            self.rfc.send(data)

    def _poll_pty(self) -> None:
        if self.pty:
            self.pty.check_open()

    def _pty_open_close(self, is_open: bool) -> None:
        self.log("pty %s" % ("opened" if is_open else "closed"))
        assert self.pty is not None
        if is_open:
            self.sel.register(self.pty.fileno(), selectors.EVENT_READ, self.pty.on_readable)
        else:
            self.sel.unregister(self.pty.fileno())
        loader = self.loader
        if not is_open and self.state == "download" and loader and loader.session_active:
            if loader.stay_in_loader:  # esptool --after no-reset: the chip stays in the ROM
                loader.reset()
                return
            # esptool's hard reset cannot reach a pty: the port closing ends the session.
            self.power_on("power")

    def _from_pty(self, data: bytes) -> None:
        if self.state != "download":
            seen = self._sync_tail + data
            at = seen.find(_SYNC)
            if at >= 0:
                self.log("SLIP SYNC on the pty: entering the ROM loader")
                self.enter_download(banner=False)
                data = seen[at:]
            else:
                self._sync_tail = seen[-(len(_SYNC) - 1) :]
        self._receive(data)

    def _from_rfc(self, data: bytes) -> None:
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        if self.state == "download" and self.loader:
            reply = self.loader.feed(data)
            if reply:
                self.send(reply)
            if self.loader.run_user_code:
                self.log("loader asked to run the app")
                self.boot_from_flash("power", banner=False)
        elif self.state == "running" and self.vm:
            if self._input_hold is not None:
                self._input_hold += data
                self._pass_interrupt()
            else:
                self.vm.write(data)

    def _rfc_accept(self) -> None:
        assert self.rfc is not None
        conn = self.rfc.accept()
        if conn is not None:
            self.log("rfc2217 client attached")
            self.sel.register(conn, selectors.EVENT_READ, self._rfc_readable)

    def _rfc_readable(self) -> None:
        assert self.rfc is not None
        client = self.rfc.client
        if not self.rfc.on_readable() and client is not None:
            self.log("rfc2217 client gone")
            self.sel.unregister(client)

    # -- reset circuit (RFC 2217) ---------------------------------------------------------

    def _lines(self, dtr: bool, rts: bool) -> None:
        en_low = rts and not dtr
        io0_low = dtr and not rts
        if io0_low:
            self._io0_low_seen = True
        if en_low and not self._en_low:
            self._en_low = True
            self._cancel(self._strap_timer)
            self._halt()
            self.state = "reset"
        elif not en_low and self._en_low:
            self._en_low = False
            self._io0_low_seen = io0_low
            self._strap_timer = self._after(_STRAP_WINDOW_S, self._strapped)

    def _strapped(self) -> None:
        if self._en_low:
            return
        if self._io0_low_seen:
            self.enter_download(banner=True)
        else:
            self.power_on("power")

    # -- boot -----------------------------------------------------------------------------

    def _halt(self) -> None:
        """Stop whatever runs: the VM is killed as a power cut would, the loader forgotten,
        a deep sleep ended."""
        if self.state == "sleep":
            self._end_sleep()
        if self.vm:
            for fd in (self.vm.fd, self.vm.ctl_fd):
                try:
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
            self.vm.kill()
            self.vm = None
        if self.flash:
            self.flash.close()
            self.flash = None
        self.loader = None
        self._timers = [t for t in self._timers if getattr(t[2], "_bootloop", False) is False]
        heapq.heapify(self._timers)

    def enter_download(self, banner: bool) -> None:
        self._halt()
        self.state = "download"
        self._sync_tail = b""
        self.flash = FlashFile(self.spec.flash, self.spec.board.flash_size)
        self.loader = rom.RomLoader(self.flash, self.spec.mac, chip=self.spec.board.chip)
        if banner:
            self.send(rom.rom_banner(download=True, chip=self.spec.board.chip))

    def power_on(self, cause: str) -> None:
        self.boot_from_flash(cause, banner=True)

    def boot_from_flash(self, cause: str, banner: bool) -> None:
        """What the ROM and the second-stage bootloader do after a reset in SPI boot mode."""
        self._halt()
        self.boots += 1
        self._hard_cause = cause  # a soft reboot keeps reporting the last hard reset's cause
        if banner:
            name = RESET_CAUSES[cause][0]
            self.send(rom.rom_banner(download=False, reset_cause=name, chip=self.spec.board.chip))
        with open(self.spec.flash, "rb") as f:

            def read(off: int, n: int) -> bytes:
                f.seek(off)
                return f.read(n)

            decision = firmware.boot_check(read, self.spec.board)
        if not decision.ok or not decision.virtual_micropython:
            self.log("no bootable app: %s" % decision.message)
            self.state = "bootloop"
            self._bootloop(decision)
            return
        self.send(decision.console)
        self.start_vm(cause, raw=False)

    def _deep_sleep(self, ms: int) -> None:
        """machine.deepsleep(ms): silent for `ms` of board time (forever if negative), then
        a boot with DEEPSLEEP_RESET. Any reset meanwhile (EN, esptool) wakes it as that
        reset instead; either way the board's clock moves on by the time slept."""
        self._halt()
        self.state = "sleep"
        self._sleep = (time.monotonic(), ms)
        self.log("deep sleep for %s" % ("ever" if ms < 0 else "%d ms" % ms))
        if ms >= 0:
            speed = self.spec.speed
            self._wake_seq = self._after(ms / 1000 / speed if speed > 0 else 0.0, self._wake)

    def _wake(self) -> None:
        self._wake_seq = None  # the timer ran out: the whole time was slept
        if self.state == "sleep":
            self.boot_from_flash("deepsleep", banner=True)

    def _end_sleep(self) -> None:
        started, ms = self._sleep
        if self._wake_seq is None and ms >= 0:
            slept = ms
        else:  # woken early by a reset (or asleep for ever): the board time that passed
            if self._wake_seq is not None:
                self._cancel(self._wake_seq)
                self._wake_seq = None
            passed = int((time.monotonic() - started) * 1000 * self.spec.speed)
            slept = passed if ms < 0 else min(ms, passed)
        self.state = "reset"
        if self._vclock is not None:  # whole seconds for the VM; the rest is carried
            self._vclock_ms += slept
            self._vclock += self._vclock_ms // 1000
            self._vclock_ms %= 1000

    def _bootloop(self, decision: firmware.BootDecision) -> None:
        self.send(decision.console)

        cause = decision.reboot_cause or "RTCWDT_RTC_RESET"

        def again() -> None:
            if self.state == "bootloop":
                chip = self.spec.board.chip
                self.send(rom.rom_banner(download=False, reset_cause=cause, chip=chip))
                self._bootloop(decision)

        again._bootloop = True  # type: ignore[attr-defined]
        self._after(_BOOTLOOP_PERIOD_S, again)
