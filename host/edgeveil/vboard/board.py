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
import os
import selectors
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..boards import Board
from ..mpy import compile_tree
from ..vm import micropython_path
from . import esp32regs, firmware, rawreplay, rom
from .flashfile import FlashFile
from .link import PtyLink, Rfc2217Link
from .vmproc import VMProcess

VMLIB = Path(__file__).parent / "vmlib"
# The prelude prints this once boot.py (and main.py) have run; the board strips it.
READY_MARK = b"\x1b[vboard:ready]"
_SYNC = b"\xc0\x00\x08\x24\x00\x00\x00\x00\x00\x07\x07\x12\x20"
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_PROMPT = b">>> "
_STRAP_WINDOW_S = 0.15
_MAX_BACKLOG = 64 * 1024  # console bytes queued for a slow client before the VM must wait
# On a board, machine/esp32/bluetooth are C modules outside the GC heap; here they are
# MicroPython code inside it. The VM gets this much more heap, and the prelude pins down
# whatever exceeds the board's budget once they are loaded (docs/vboard.md).
_EMULATION_HEAP = 96 * 1024
_BOOTLOOP_PERIOD_S = 1.0
# Reset causes: how the ROM prints them, and what machine.reset_cause() then returns on
# MicroPython's ESP32 port (PWRON_RESET 1, HARD_RESET 2, WDT_RESET 3, DEEPSLEEP_RESET 4,
# SOFT_RESET 5).
_RESET_CAUSES = {
    "power": ("POWERON_RESET", 1),
    "sw": ("SW_CPU_RESET", 5),
    "wdt": ("TG0WDT_SYS_RESET", 3),
    "panic": ("SW_CPU_RESET", 5),
    "deepsleep": ("DEEPSLEEP_RESET", 4),
}


def _partial_suffix(buf: bytes, mark: bytes) -> int:
    """Length of the longest end of `buf` that is a proper beginning of `mark`."""
    for n in range(min(len(buf), len(mark) - 1), 0, -1):
        if buf.endswith(mark[:n]):
            return n
    return 0


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


class VirtualBoard:
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
        self._mode_tail = b""
        # The board's calendar time at the next boot: the replay's start, then whatever
        # the VM reported when it last exited ("clock N" on ctl).
        self._vclock: int | None = None
        self._rtc_mem = b""  # RTC slow memory: kept across resets and deep sleep
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
        """Stop whatever runs: the VM is killed as a power cut would, the loader forgotten."""
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
            name = _RESET_CAUSES[cause][0]
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
        a boot with DEEPSLEEP_RESET. The board's clock moves on by the time slept; any
        reset meanwhile (EN, esptool) wakes it as that reset."""
        self._halt()
        self.state = "sleep"
        self.log("deep sleep for %s" % ("ever" if ms < 0 else "%d ms" % ms))
        if ms < 0:
            return
        if self._vclock is not None:
            self._vclock += ms // 1000
        speed = self.spec.speed

        def wake() -> None:
            if self.state == "sleep":
                self.boot_from_flash("deepsleep", banner=True)

        self._after(ms / 1000 / speed if speed > 0 else 0.0, wake)

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

    # -- the VM ---------------------------------------------------------------------------

    def start_vm(self, cause: str, raw: bool, skip_main: bool = False) -> None:
        target = self.spec.heap_bytes or self.spec.board.vm_app_heap_bytes
        env = {
            "MICROPYPATH": str(self._vmlib_mpy()),
            "EDGEVEIL_VB_HEAP_FREE": str(target),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "EDGEVEIL_VB_FLASH": str(self.spec.flash),
            "EDGEVEIL_VB_FLASH_SIZE": str(self.spec.board.flash_size),
            "EDGEVEIL_VB_MAC": self.spec.mac.hex(),
            # sys.implementation._machine as MicroPython's firmware words it (vmlib/vbsys.py)
            "EDGEVEIL_VB_MACHINE": self._machine_name(),
            "EDGEVEIL_VB_REPLAY": str(self.spec.replay or ""),
            "EDGEVEIL_VB_SPEED": str(self.spec.speed),
            "EDGEVEIL_VB_T0": str(self._vclock if self._vclock is not None else int(time.time())),
            "EDGEVEIL_VB_RESET_CAUSE": str(_RESET_CAUSES[self._hard_cause][1]),
            "EDGEVEIL_VB_MODE": "raw" if raw else "friendly",
            "EDGEVEIL_VB_SKIP_MAIN": "1" if skip_main else "0",
            "EDGEVEIL_VB_RTC_MEM": self._rtc_mem.hex(),
        }
        heap = target + _EMULATION_HEAP
        argv = [micropython_path(), "-X", "heapsize=%d" % heap, "-i", str(VMLIB / "_vboot.py")]
        self.vm = VMProcess(argv, env)
        self.vm.start()
        self.log(
            "VM started (pid %d, %s REPL, heap %d)"
            % (self.vm.pid, "raw" if raw else "friendly", heap)
        )
        self.state = "running"
        self.repl_raw = raw
        self._out_tail = b""
        # Until the prelude is done, pass its output (boot.py, main.py) but not its marker;
        # after a soft reboot in the raw REPL, hide the friendly banner the unix VM prints
        # and put it back into the raw REPL, as a board stays there.
        self._boot_filter = [(READY_MARK, True), (_PROMPT, not raw)]
        # Input waits until the VM can take a Ctrl-C without dying (see _boot_step).
        self._vm_phase = "starting"
        if self._input_hold is None:  # input held for a VM that died starting is kept
            self._input_hold = b""
        self._ctl_seen = []
        self._vm_paused = False
        self.sel.register(self.vm.fd, selectors.EVENT_READ, self._vm_readable)
        self.sel.register(self.vm.ctl_fd, selectors.EVENT_READ, self._ctl_readable)

    def _machine_name(self) -> str:
        """'<board> with <MCU>', as MICROPY_HW_BOARD_NAME and MICROPY_HW_MCU_NAME make it
        on a board (e.g. "edgeveil esp32s3-virtual with ESP32S3"): hosts read the chip
        from it."""
        board = self.spec.board
        return "edgeveil %s with %s" % (board.name, esp32regs.TARGETS[board.chip].MCU_NAME)

    def _vmlib_mpy(self) -> Path:
        """The emulated modules compiled once per board process (compiling costs VM heap)."""
        if self._vmlib_dir is None:
            self._vmlib_dir = Path(tempfile.mkdtemp(prefix="edgeveil-vmlib-"))
            compile_tree(VMLIB, self._vmlib_dir)
            (self._vmlib_dir / "_vboot.mpy").unlink()
        return self._vmlib_dir

    def _ctl_readable(self) -> None:
        if self.vm is None:
            return
        lines = self.vm.ctl_lines()
        self._ctl_seen += lines
        # Input is held from the VM's start to its REPL's first prompt (_boot_step): the
        # unix VM dies of a Ctrl-C that arrives where no code runs. Only while boot.py or
        # main.py runs ("run" .. "idle") may a Ctrl-C through, to interrupt it as on a board.
        for line in lines:
            if line == b"run" and self._vm_phase in ("starting", "prelude"):
                self._vm_phase = "user"
                self._pass_interrupt()
            elif line == b"idle" and self._vm_phase == "user":
                self._vm_phase = "prelude"
            elif line == b"end" and self._vm_phase != "repl":
                self._vm_phase = "repl-wait"

    def _pass_interrupt(self) -> None:
        """While boot.py/main.py runs, let held input through up to its first Ctrl-C."""
        held = self._input_hold
        if self._vm_phase != "user" or not held or b"\x03" not in held or self.vm is None:
            return
        cut = held.index(b"\x03") + 1
        self.log("Ctrl-C passed to the VM (after ctl %r)" % self._ctl_seen[-1:])
        self.vm.write(held[:cut])
        self._input_hold = held[cut:]

    def _flow(self) -> None:
        """UART flow control: pause reading the VM while the pty client is behind."""
        if self.pty is None:
            return
        self.pty.flush()
        behind = self.pty.backlog() > _MAX_BACKLOG
        if self.vm is not None and behind != self._vm_paused:
            self._vm_paused = behind
            if behind:
                self.sel.unregister(self.vm.fd)
            else:
                self.sel.register(self.vm.fd, selectors.EVENT_READ, self._vm_readable)

    def _vm_readable(self) -> None:
        vm = self.vm
        if vm is None:
            return
        data = vm.read()
        if data is None:
            return
        if data == b"":
            self._vm_exited()
            return
        self._vm_output(data)

    def _vm_output(self, data: bytes) -> None:
        buf = self._out_tail + data
        self._out_tail = b""
        out = b""
        while self._boot_filter:
            mark, keep_text = self._boot_filter[0]
            at = buf.find(mark)
            if at < 0 and mark == READY_MARK and _PROMPT in buf:
                # The REPL is up without the prelude's mark (a Ctrl-C cut it short):
                # boot is over all the same; never wait for a mark that will not come.
                self._boot_filter.pop(0)
                self._boot_step(READY_MARK)
                continue
            if at < 0:  # hold back only what could be the start of the mark
                cut = len(buf) - _partial_suffix(buf, mark)
                if keep_text:
                    out += buf[:cut]
                self._out_tail, buf = buf[cut:], b""
                break
            if keep_text:
                out += buf[:at] + (b"" if mark == READY_MARK else mark)
            buf = buf[at + len(mark) :]
            self._boot_filter.pop(0)
            self._boot_step(mark)
        out += buf
        if out:
            self._track_mode(out)
            self.send(out)

    def _boot_step(self, mark: bytes) -> None:
        """The VM passed a point of its start: the prelude's end or its first prompt."""
        if mark == READY_MARK:
            self._vm_phase = "repl-wait"  # input stays held until the prompt
            self.log("VM prelude done")
        elif mark == _PROMPT:
            if self.repl_raw and self.vm:
                self.vm.write(b"\x01")  # back into the raw REPL
                self._boot_filter.append((b"\r\n", False))  # the newline before its banner
            self._vm_phase = "repl"
            self._release_input()

    def _release_input(self) -> None:
        held, self._input_hold = self._input_hold, None
        if held and self.vm:
            self.vm.write(held)

    def _track_mode(self, data: bytes) -> None:
        seen = self._mode_tail = self._mode_tail[-32:] + data
        raw_at = seen.rfind(_RAW_BANNER)
        friendly_at = seen.rfind(_PROMPT)
        if raw_at >= 0 or friendly_at >= 0:
            self.repl_raw = raw_at > friendly_at

    def _vm_exited(self) -> None:
        vm = self.vm
        assert vm is not None
        lines = self._ctl_seen + vm.ctl_lines()
        for fd in (vm.fd, vm.ctl_fd):
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        vm.close()
        status = vm.poll()
        self.vm = None
        self.log("VM exited with %s, ctl %r" % (status, lines))
        sleep_ms = None
        for line in lines:
            if line.startswith(b"clock "):
                self._vclock = int(line[6:])
            elif line.startswith(b"rtcmem "):
                self._rtc_mem = bytes.fromhex(line[7:].decode())
            elif line.startswith(b"deepsleep "):
                sleep_ms = int(line[10:])
        if b"reset" in lines:
            self.boot_from_flash("sw", banner=True)
        elif b"wdt" in lines:
            self.boot_from_flash("wdt", banner=True)
        elif sleep_ms is not None:
            self._deep_sleep(sleep_ms)
        elif status == -signal.SIGINT and self._vm_phase != "repl":
            # A Ctrl-C reached the unix VM where it has no handler (starting up): on a board
            # it would just have interrupted boot, so start again without main.py.
            self.log("Ctrl-C while the VM started; starting it again without main.py")
            self.start_vm("soft", raw=self.repl_raw, skip_main=True)
        elif status == 0 or b"soft" in lines:
            self.send(b"MPY: soft reboot\r\n")
            self.start_vm("soft", raw=self.repl_raw)
        else:
            self.send(
                b"Guru Meditation Error: virtual board: the MicroPython VM exited "
                b"with status %d\r\n\r\nRebooting...\r\n" % (status if status is not None else -1)
            )
            self._after(0.5, lambda: self.boot_from_flash("panic", banner=True))
