"""The MicroPython VM as the virtual board's CPU: one process per boot.

The VM runs on its own (inner) pseudo-terminal, so its REPL behaves as on a board:

- the terminal is raw but keeps ISIG with only VINTR (Ctrl-C) enabled; the unix port
  switches ISIG off while its REPL reads a line and back on while code runs, so a 0x03
  byte interrupts running code and is plain input at a prompt, as on hardware;
- Ctrl-\\ and Ctrl-Z are disabled, so no byte from the host can kill or stop the VM;
- the prelude (`vmlib/_vboot.py`) talks to the board process over a pipe (`ctl`), e.g.
  `machine.reset()` writes `reset` there before the VM exits.

    vm = VMProcess(argv, env)
    vm.start(); os.write(vm.fd, b"\\x03"); vm.kill()
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import termios
import tty

from ..errors import VMError

_VDISABLE = 0  # Linux: a c_cc entry of 0 disables that special character


def _vm_termios(fd: int) -> None:
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] |= termios.ISIG  # lflag: Ctrl-C raises SIGINT while code runs
    cc = attrs[6]
    cc[termios.VINTR] = 3
    for name in ("VQUIT", "VSUSP"):
        cc[getattr(termios, name)] = _VDISABLE
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class VMProcess:
    """One run of the VM, from power-on (or soft reboot) to exit.

    Attributes:
        fd: the inner pty's master; read it for console output, write it for input.
        ctl_fd: read end of the control pipe (lines such as b"reset\\n").
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd = -1
        self.ctl_fd = -1
        self._ctl_buf = b""

    def start(self) -> None:
        master, slave = pty.openpty()
        _vm_termios(slave)
        ctl_r, ctl_w = os.pipe()
        env = dict(self.env)
        env["EDGEVEIL_VB_CTL"] = "/dev/fd/%d" % ctl_w

        def child_setup() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # SIGINT from the tty reaches the VM

        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                pass_fds=(ctl_w,),
                start_new_session=True,
                preexec_fn=child_setup,
            )
        except OSError as exc:
            os.close(master)
            raise VMError("cannot start the MicroPython VM: %s" % exc) from exc
        finally:
            os.close(slave)
            os.close(ctl_w)
        os.set_blocking(master, False)
        os.set_blocking(ctl_r, False)
        self.fd, self.ctl_fd = master, ctl_r

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def read(self) -> bytes | None:
        """Console output available now: None if there is none yet, b"" once the VM is gone."""
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return None
        except OSError:  # EIO: every slave fd closed, the VM is gone
            return b""

    def write(self, data: bytes) -> None:
        """Input to the VM. Bytes the tty cannot take now are dropped, as a UART's would be."""
        try:
            os.write(self.fd, data)
        except (BlockingIOError, OSError):
            pass

    def ctl_lines(self) -> list[bytes]:
        """Complete lines the prelude wrote to the control pipe since the last call."""
        try:
            while True:
                chunk = os.read(self.ctl_fd, 4096)
                if not chunk:
                    break
                self._ctl_buf += chunk
        except BlockingIOError:
            pass
        except OSError:
            pass
        *lines, self._ctl_buf = self._ctl_buf.split(b"\n")
        return lines

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else 0

    def kill(self) -> None:
        """Power cut: SIGKILL, no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close()

    def close(self) -> None:
        if self.proc:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self.fd, self.ctl_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self.ctl_fd = -1
