"""The VM side of a virtual board: MicroPython started on the board's flash, its console
passed through with the prelude's marks stripped, input held until the VM can take a
Ctrl-C, and what the VM's end means (a soft reboot, a reset, the watchdog, deep sleep, a
crash). `VirtualBoard` (board.py) is a `VMHost`; the chip's power, reset, ROM loader and
UART are there. The attributes and board methods this uses are declared below.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..mpy import compile_tree
from ..vm import micropython_path
from . import esp32regs
from .vmproc import VMProcess

if TYPE_CHECKING:
    from .board import BoardSpec
    from .link import PtyLink

VMLIB = Path(__file__).parent / "vmlib"
# The prelude prints this once boot.py (and main.py) have run; the board strips it.
READY_MARK = b"\x1b[vboard:ready]"
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_PROMPT = b">>> "
_NLR_DEATH = b"FATAL: uncaught NLR "
_MAX_BACKLOG = 64 * 1024  # console bytes queued for a slow client before the VM must wait
# On a board, machine/esp32/bluetooth are C modules outside the GC heap; here they are
# MicroPython code inside it. The VM gets this much more heap, and the prelude pins down
# whatever exceeds the board's budget once they are loaded (docs/vboard.md).
_EMULATION_HEAP = 96 * 1024
# Reset causes: how the ROM prints them, and what machine.reset_cause() then returns on
# MicroPython's ESP32 port (PWRON_RESET 1, HARD_RESET 2, WDT_RESET 3, DEEPSLEEP_RESET 4,
# SOFT_RESET 5).
RESET_CAUSES = {
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


class VMHost:
    """The VM half of `VirtualBoard` (a mixin: the board owns the state it reads)."""

    spec: BoardSpec
    sel: selectors.BaseSelector
    vm: VMProcess | None
    pty: PtyLink | None
    log: Callable[[str], None]
    state: str
    repl_raw: bool
    _boot_filter: list[tuple[bytes, bool]]
    _vm_phase: str
    _input_hold: bytes | None
    _ctl_seen: list[bytes]
    _ctrl_c_passed: bool  # this VM was given a Ctrl-C while it started
    _mode_tail: bytes
    _out_tail: bytes
    _vclock: int | None
    _rtc_mem: bytes
    _vm_paused: bool
    _vmlib_dir: Path | None
    _hard_cause: str

    if TYPE_CHECKING:  # the board's methods this calls, defined by VirtualBoard

        def send(self, data: bytes) -> None: ...

        def boot_from_flash(self, cause: str, banner: bool) -> None: ...

        def _deep_sleep(self, ms: int) -> None: ...

        def _after(self, delay: float, fn: Callable[[], None]) -> int: ...

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
            "EDGEVEIL_VB_RESET_CAUSE": str(RESET_CAUSES[self._hard_cause][1]),
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
        self._ctrl_c_passed = False
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
        # The phase is where the VM is now, after every line read: a "run" read together
        # with its "idle" (a short boot.py, a board process that was slow to read) is over.
        for line in lines:
            if line == b"run" and self._vm_phase in ("starting", "prelude"):
                self._vm_phase = "user"
            elif line == b"idle" and self._vm_phase == "user":
                self._vm_phase = "prelude"
            elif line == b"end" and self._vm_phase != "repl":
                self._vm_phase = "repl-wait"
        self._pass_interrupt()

    def _pass_interrupt(self) -> None:
        """While boot.py/main.py runs, let held input through up to its first Ctrl-C."""
        held = self._input_hold
        if self._vm_phase != "user" or not held or b"\x03" not in held or self.vm is None:
            return
        cut = held.index(b"\x03") + 1
        self.log("Ctrl-C passed to the VM (after ctl %r)" % self._ctl_seen[-1:])
        self.vm.write(held[:cut])
        self._input_hold = held[cut:]
        self._ctrl_c_passed = True

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
        if self._vm_phase != "repl" and self._ctrl_c_passed and _NLR_DEATH in out:
            # The unix VM's last words when a late Ctrl-C kills it (see _vm_exited); a
            # board would just have stopped boot.py, silently.
            out = re.sub(rb"FATAL: uncaught NLR [^\n]*\n?", b"", out)
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
        elif self._vm_phase != "repl" and (
            status == -signal.SIGINT or (status == 1 and self._ctrl_c_passed)
        ):
            # A Ctrl-C reached the unix VM where it has no handler (starting up, killed by
            # SIGINT), or landed after boot.py as its prelude ended ("FATAL: uncaught NLR",
            # status 1): on a board it would just have interrupted boot, so start again
            # without main.py.
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
