"""Starting, finding and stopping virtual boards, each in its own process.

A running board leaves a state file `<state dir>/<name>.json` (pid, serial port, RFC 2217
URL, flash file) so `edgeveil vboard status|stop` and tests can find it. The state dir is
`$EDGEVEIL_STATE_DIR/vboards`, else `~/.local/state/edgeveil/vboards`.

    info = spawn(spec, "jig-1")      # returns once the board's port exists
    ... serial.Serial(info.port) ...
    stop("jig-1")
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..boards import Board, load_board
from ..errors import EdgeveilError
from . import firmware
from .board import BoardSpec, VirtualBoard
from .flashfile import FlashFile


class VBoardError(EdgeveilError):
    """A virtual board could not be started, found or stopped."""


@dataclass(frozen=True)
class BoardInfo:
    name: str
    pid: int
    port: str
    rfc2217: str | None
    flash: str
    board: str


def state_dir() -> Path:
    base = os.environ.get("EDGEVEIL_STATE_DIR")
    root = Path(base) if base else Path.home() / ".local" / "state" / "edgeveil"
    return root / "vboards"


def _state_file(name: str, root: Path | None) -> Path:
    return (root or state_dir()) / ("%s.json" % name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_flash(path: Path, board: Board, with_firmware: bool) -> None:
    """Create a blank (erased) flash file if missing; optionally write the virtual firmware."""
    if not path.exists():
        FlashFile.create_blank(path, board.flash_size)
    if with_firmware:
        image = firmware.build_firmware(board)
        with open(path, "r+b") as f:
            f.seek(board.firmware_offset)
            f.write(image)


def run_foreground(
    spec: BoardSpec,
    name: str,
    root: Path | None = None,
    ready: Callable[[BoardInfo], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Run one board in this process until SIGTERM/SIGINT; its state file lives meanwhile."""
    path = _state_file(name, root)
    if path.exists():
        old = BoardInfo(**json.loads(path.read_text()))
        if _alive(old.pid):
            raise VBoardError(
                "a virtual board named %r is already running (pid %d)" % (name, old.pid)
            )
    vb = VirtualBoard(spec, log=log)
    vb.open()
    assert vb.pty is not None
    info = BoardInfo(
        name=name,
        pid=os.getpid(),
        port=vb.pty.path,
        rfc2217=vb.rfc.url if vb.rfc else None,
        flash=str(spec.flash),
        board=spec.board.name,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(info)))
    os.replace(tmp, path)
    signal.signal(signal.SIGINT, lambda *_: vb.stop())
    try:
        if ready:
            ready(info)
        vb.serve_forever()
    finally:
        try:
            if BoardInfo(**json.loads(path.read_text())).pid == os.getpid():
                path.unlink()
        except (OSError, ValueError, TypeError):
            pass


def spawn(
    spec: BoardSpec,
    name: str,
    root: Path | None = None,
    timeout: float = 15.0,
    log_path: Path | None = None,
) -> BoardInfo:
    """Start a board in a background process; return once its port exists."""
    argv = [
        sys.executable,
        "-m",
        "edgeveil.vboard.runner",
        "--name",
        name,
        "--board",
        spec.board.name,
        "--flash",
        str(spec.flash),
        "--mac",
        spec.mac.hex(),
        "--speed",
        str(spec.speed),
    ]
    if spec.replay:
        argv += ["--replay", str(spec.replay)]
    if spec.rfc2217_port is not None:
        argv += ["--rfc2217-port", str(spec.rfc2217_port)]
    if spec.heap_bytes:
        argv += ["--heap", str(spec.heap_bytes)]
    if root:
        argv += ["--state-dir", str(root)]
    ready_r, ready_w = os.pipe()
    argv += ["--ready-fd", str(ready_w), "--daemon"]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        # The child forks once more and returns at once: the board is a daemon, not ours
        # to wait for; it reports on the pipe when its port exists (or why it failed).
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(ready_w,),
            check=False,
            timeout=timeout,
        )
    finally:
        os.close(ready_w)
        if log_path:
            log.close()  # type: ignore[union-attr]
    try:
        report = _read_line(ready_r, timeout)
    finally:
        os.close(ready_r)
    if report.startswith("{"):
        return BoardInfo(**json.loads(report))
    where = "; log: %s" % log_path if log_path else ""
    raise VBoardError(
        "virtual board %r did not start: %s%s" % (name, report or "no answer", where)
    )


def _read_line(fd: int, timeout: float) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


def list_boards(root: Path | None = None) -> list[BoardInfo]:
    """Running boards; state files of dead ones are removed."""
    out = []
    for path in sorted((root or state_dir()).glob("*.json")):
        try:
            info = BoardInfo(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if _alive(info.pid):
            out.append(info)
        else:
            path.unlink(missing_ok=True)
    return out


def stop(name: str, root: Path | None = None, timeout: float = 10.0) -> BoardInfo:
    """Stop a running board (SIGTERM, then SIGKILL after `timeout`)."""
    path = _state_file(name, root)
    try:
        info = BoardInfo(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise VBoardError("no virtual board named %r is running" % name) from None
    os.kill(info.pid, signal.SIGTERM) if _alive(info.pid) else None
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return info


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m edgeveil.vboard.runner")
    ap.add_argument("--name", required=True)
    ap.add_argument("--board", required=True)
    ap.add_argument("--flash", required=True, type=Path)
    ap.add_argument("--mac", default="")
    ap.add_argument("--replay", type=Path)
    ap.add_argument("--speed", type=int, default=1)
    ap.add_argument("--rfc2217-port", type=int)
    ap.add_argument("--heap", type=int)
    ap.add_argument("--state-dir", type=Path)
    ap.add_argument("--ready-fd", type=int, help="write the board's JSON info here when up")
    ap.add_argument("--daemon", action="store_true", help="fork into the background first")
    a = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where the board is
    if a.daemon:
        if os.fork():
            os._exit(0)
        os.setsid()
    spec = BoardSpec(
        board=load_board(a.board),
        flash=a.flash,
        mac=bytes.fromhex(a.mac),
        replay=a.replay,
        speed=a.speed,
        rfc2217_port=a.rfc2217_port,
        heap_bytes=a.heap,
    )

    def log(msg: str) -> None:
        print("%.3f %s" % (time.monotonic(), msg), file=sys.stderr, flush=True)

    def ready(info: BoardInfo) -> None:
        if a.ready_fd is not None:
            os.write(a.ready_fd, json.dumps(asdict(info)).encode() + b"\n")
            os.close(a.ready_fd)
            a.ready_fd = None

    try:
        run_foreground(spec, a.name, a.state_dir, ready=ready, log=log)
    except Exception as exc:
        if a.ready_fd is not None:
            os.write(a.ready_fd, ("%s\n" % exc).encode())
        raise


if __name__ == "__main__":
    _main()
