"""Host toolkit benchmark against virtual boards (issue 4, "Measure").

    make bench-host     # or: .venv/bin/python tools/bench_host.py [-n N] [SECTION ...]

Deploy: the redeploy of an unchanged tree and of a one-file change, `edgeveil deploy`
against `mpremote fs cp -r` of the same compiled tree, in the same run, each on its own
virtual board. Both are timed as a user runs them, one fresh CLI process per run
(interpreter start, connect, soft reset included); edgeveil's figure also includes
compiling (mpy-cross, cached per file) and the on-device verification of every written
file, which mpremote does not do. `mpremote fs cp` skips a file whose SHA-256 on the board
already matches (mpremote 1.29's default); `cp -f` sends everything. Each one-file change
is a new change (a new constant in veil/__init__.py), so nothing is ever already there.
Figures are medians of N runs; the ratio is mpremote's time over edgeveil's.

Flash (`bench_flash`, `tools/bench_host.py flash`): seconds to flash 1, 4 and 8 virtual
boards at once through edgeveil.fleet, and boards per minute.

Provision (`bench_provision`): the same for provisioning, with the scaling over one board;
`bench_factory` for `provision --factory` (firmware, keys and code in one esptool pass).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from edgeveil.boards import load_board  # noqa: E402
from edgeveil.mpy import compile_tree  # noqa: E402
from edgeveil.paths import device_dir  # noqa: E402
from edgeveil.vboard import runner  # noqa: E402
from edgeveil.vboard.board import BoardSpec  # noqa: E402

BIN = Path(sys.executable).parent
BOARD = "esp32-virtual"


def start_board(work: Path, name: str) -> runner.BoardInfo:
    board = load_board(BOARD)
    flash = work / f"{name}.img"
    runner.prepare_flash(flash, board, True)
    spec = BoardSpec(board=board, flash=flash, replay=None, speed=1, rfc2217_port=None)
    return runner.spawn(spec, name, work / "state", log_path=work / f"{name}.log")


def cli(*args: str, cwd: Path | None = None) -> float:
    """Seconds one CLI run takes; fails loudly if the command does."""
    t = time.perf_counter()
    res = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd)
    took = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return took


def median(fn: Callable[[int], float], n: int) -> float:
    return statistics.median(fn(i) for i in range(n))


def change(tree: Path, i: int) -> None:
    init = tree / "veil" / "__init__.py"
    init.write_text(init.read_text().split("\n_BENCH = ")[0] + f"\n_BENCH = {i}\n")


# --- deploy (edgeveil deploy vs mpremote fs cp -r) ---

_BAUD = 115200


class LineCounter:
    """Counts the bytes pyserial moves on the ports opened in this process."""

    def __init__(self) -> None:
        import serial.serialposix as sp

        self.sp, self.sent, self.received = sp, 0, 0
        self.orig = (sp.Serial.read, sp.Serial.write)

    def __enter__(self) -> LineCounter:
        read, write = self.orig

        def counted_read(ser: object, size: int = 1) -> bytes:
            data = read(ser, size)
            self.received += len(data)
            return data

        def counted_write(ser: object, data: bytes) -> int | None:
            self.sent += len(data)
            return write(ser, data)

        self.sp.Serial.read, self.sp.Serial.write = counted_read, counted_write  # type: ignore
        return self

    def __exit__(self, *exc: object) -> None:
        self.sp.Serial.read, self.sp.Serial.write = self.orig  # type: ignore

    @property
    def line_seconds(self) -> float:
        """The bytes' time on a UART at 115200 baud, 8N1 (10 bits a byte)."""
        return (self.sent + self.received) * 10 / _BAUD


def bench_deploy(work: Path, n: int) -> None:
    """Redeploy of the unchanged tree and of a one-file change, and a full copy.

    Per row: the CLI's wall time on a virtual board (median of n fresh processes), and the
    bytes both tools move over the serial line in one in-process run, with what those bytes
    take on a real ESP32's UART at 115200 baud (round trips and flash writes not counted).
    """
    import contextlib
    import io

    from edgeveil.deploy import deploy, remove_deployment
    from edgeveil.link import open_link
    from mpremote import main as mpremote_main

    src = work / "device"
    shutil.copytree(device_dir(), src)
    compiled = work / "compiled"
    ours, theirs = start_board(work, "edgeveil"), start_board(work, "mpremote")
    board = load_board(BOARD)
    cp = ["connect", theirs.port, "fs", "cp"]

    def edgeveil() -> float:
        return cli("edgeveil", "deploy", "--port", ours.port, "--board", BOARD, "--src", str(src))

    def recompile() -> None:
        shutil.rmtree(compiled, ignore_errors=True)
        compile_tree(src, compiled)

    def mpremote(*flags: str) -> float:
        return cli("mpremote", *cp, *flags, "-r", "veil", ":", cwd=compiled)

    def ours_bytes() -> LineCounter:
        with LineCounter() as count, open_link(ours.port) as link:
            deploy(link, board, src)
        return count

    def theirs_bytes(*flags: str) -> LineCounter:
        argv, cwd = sys.argv, os.getcwd()
        sys.argv = ["mpremote", *cp, *flags, "-r", "veil", ":"]
        try:
            os.chdir(compiled)
            with LineCounter() as count, contextlib.redirect_stdout(io.StringIO()):
                if mpremote_main.main() != 0:
                    raise SystemExit("mpremote failed")
        finally:
            sys.argv = argv
            os.chdir(cwd)
        return count

    def wipe_ours() -> None:
        with open_link(ours.port) as link:
            remove_deployment(link)

    rows = []
    try:
        edgeveil()  # first deploy, compiles into a cold cache: not measured
        recompile()
        mpremote()
        rows.append(
            (
                "redeploy, unchanged tree",
                median(lambda i: edgeveil(), n),
                median(lambda i: mpremote(), n),
                ours_bytes(),
                theirs_bytes(),
            )
        )

        def ours_one(i: int) -> float:
            change(src, 1000 + i)
            return edgeveil()

        def theirs_one(i: int) -> float:
            change(src, 2000 + i)
            recompile()
            return mpremote()

        one_ours, one_theirs = median(ours_one, n), median(theirs_one, n)
        change(src, 3000)
        one_ours_bytes = ours_bytes()
        change(src, 3001)
        recompile()
        rows.append(
            ("redeploy, one file changed", one_ours, one_theirs, one_ours_bytes, theirs_bytes())
        )

        def ours_full(i: int) -> float:
            wipe_ours()
            return edgeveil()

        full_ours = median(ours_full, n)
        wipe_ours()
        rows.append(
            (
                "full copy (edgeveil: empty board; mpremote: cp -f)",
                full_ours,
                median(lambda i: mpremote("-f"), n),
                ours_bytes(),
                theirs_bytes("-f"),
            )
        )
    finally:
        for name in ("edgeveil", "mpremote"):
            runner.stop(name, work / "state")
    files = len(list(compiled.rglob("*.mpy")))
    size = sum(f.stat().st_size for f in compiled.rglob("*.mpy"))
    print(f"deploy: {files} compiled files, {size} bytes; virtual boards on ptys; median of {n}")
    print(
        f"{'':<28} {'CLI wall s':>21}  {'bytes on the line':>21}  {'at 115200 baud, s':>21}\n"
        f"{'':<28} {'edgeveil':>7} {'mpremote':>8} {'ratio':>4}  "
        f"{'edgeveil':>8} {'mpremote':>8} {'ratio':>3}  "
        f"{'edgeveil':>7} {'mpremote':>8} {'ratio':>4}"
    )
    for label, a, b, ab, bb in rows:
        ta, tb = ab.sent + ab.received, bb.sent + bb.received
        la, lb = ab.line_seconds, bb.line_seconds
        print(
            f"{label[:28]:<28} {a:7.3f} {b:8.3f} {b / a:4.1f}  {ta:8d} {tb:8d} {tb / ta:3.1f}  "
            f"{la:7.2f} {lb:8.2f} {lb / la:4.1f}"
        )
    print(
        "ratio = mpremote / edgeveil. The virtual board has no baud rate: its wall times are\n"
        "interpreter start, connect and soft reset; the bytes show what a UART would carry.\n"
        "The last row copies everything: edgeveil onto an empty board, mpremote with cp -f."
    )


# --- end deploy ---


# --- flash (edgeveil flash, edgeveil.fleet) ---


def bench_flash(work: Path, n: int) -> None:
    """`edgeveil flash` on 1, 4 and 8 virtual boards at once (edgeveil.fleet.run_many).

    Two images: edgeveil's virtual MicroPython firmware (a combined file; the three regions
    written are 3.9 KiB) and a 1.5 MB app of random bytes, which zlib cannot shrink: the
    worst case for a real firmware's size (MicroPython's ESP32 app is about 1.6 MB and
    compresses to about 60 %). Boards are blank-started once, then reflashed; a run's time
    is the library call's (check, connect, stub, write, MD5 verify, reset), in-process; the
    CLI row adds interpreter start-up. Medians of n runs.
    """
    from edgeveil.esp_image import build_image, target
    from edgeveil.flash import write_firmware
    from edgeveil.fleet import run_many
    from edgeveil.vboard import firmware

    board = load_board(BOARD)
    fw = work / "fw.bin"
    fw.write_bytes(firmware.build_firmware(board))
    t = target(board.chip)
    big = work / "big-app.bin"
    big.write_bytes(
        build_image(
            board.chip,
            [(t.drom[0] + 0x20, os.urandom(1_500_000)), (t.app_iram, t.idle_code)],
            entry=t.app_iram,
            app_desc=firmware.app_desc(),
        )
    )
    boards = [start_board(work, f"flash{i}") for i in range(8)]
    try:
        print(f"flash: board {BOARD}, virtual boards on ptys, median of {n}")
        print(f"{'image':<34} {'boards':>6} {'seconds':>8} {'boards/min':>11}")
        for label, image in (
            ("virtual firmware (3.9 KiB)", fw),
            ("1.5 MB app, incompressible", big),
        ):
            for count in (1, 4, 8):
                ports = [b.port for b in boards[:count]]

                def once(i: int, ports: list[str] = ports, image: Path = image) -> float:
                    res = run_many(
                        ports,
                        lambda p, progress: write_firmware(p, board, image, progress=progress),
                        "flash",
                        quiet=True,
                    )
                    if not res.ok:
                        raise SystemExit(f"flash failed: {res.failed[0].message}")
                    return res.seconds

                once(-1)  # warm: the boards' first VM start after a flash compiles vmlib
                secs = median(once, n)
                print(f"{label:<34} {count:>6} {secs:8.3f} {60 * count / secs:11.0f}")
        one = median(
            lambda i: cli(
                "edgeveil", "flash", "--board", BOARD, "--port", boards[0].port,
                "--firmware", str(fw),
            ),
            n,
        )  # fmt: skip
        print(f"{'CLI, one board, virtual firmware':<34} {1:>6} {one:8.3f} {60 / one:11.0f}")
    finally:
        for i in range(8):
            runner.stop(f"flash{i}", work / "state")


# --- end flash ---

# --- provision ---


def bench_provision(work: Path, n: int) -> None:
    """`provision` (two-phase: registry pending, NVS write, read-back, active) on 1, 4 and
    8 virtual boards at once through edgeveil.fleet, in-process; boards per minute and the
    speed-up over one board. Each run provisions fresh boards' NVS again (--force)."""
    from edgeveil.link import open_link
    from edgeveil.policy import default_policy
    from edgeveil.provision import provision
    from edgeveil.registry import Registry, init_registry

    board = load_board(BOARD)
    policy = default_policy()
    db = init_registry(work / "bench-reg.db")
    boards = [start_board(work, f"prov{i}") for i in range(8)]

    def one(port: str, progress: object) -> None:
        with Registry.open(db) as reg, open_link(port) as link:
            provision(link, board, reg, policy, port, force=True)

    try:
        print(f"provision: board {BOARD}, virtual boards on ptys, median of {n}")
        scaling([b.port for b in boards], one, "provision", n)
    finally:
        for i in range(8):
            runner.stop(f"prov{i}", work / "state")


def scaling(ports: list[str], one: Callable[[str, object], None], label: str, n: int) -> None:
    """Print the seconds `one` takes on 1, 4 and 8 of `ports` at once (edgeveil.fleet),
    boards per minute, and the speed-up over one board."""
    from edgeveil.fleet import run_many

    print(f"{'boards':>6} {'seconds':>8} {'boards/min':>11} {'vs 1 board':>11}")
    base = 0.0
    for count in (1, 4, 8):

        def once(i: int, some: list[str] = ports[:count]) -> float:
            res = run_many(some, one, label, quiet=True)
            if not res.ok:
                raise SystemExit(f"{label} failed: {res.failed[0].message}")
            return res.seconds

        once(-1)  # warm: mpy-cross's cache, the boards' first VM start
        secs = median(once, n)
        rate = 60 * count / secs
        base = base or rate
        print(f"{count:>6} {secs:8.3f} {rate:11.0f} {rate / base:10.1f}x")


def bench_factory(work: Path, n: int) -> None:
    """`provision --factory` (firmware + NVS image + littlefs image of the compiled code in
    one esptool pass, the NVS read back through esptool) on 1, 4 and 8 virtual boards at
    once through edgeveil.fleet, in-process; boards per minute and the speed-up over one
    board. Every run is a new device per board (--force: the whole flash written again)."""
    from edgeveil.factory import provision_factory
    from edgeveil.policy import default_policy
    from edgeveil.registry import Registry, init_registry
    from edgeveil.vboard import firmware

    board = load_board(BOARD)
    policy = default_policy()
    fw = work / "factory-fw.bin"
    fw.write_bytes(firmware.build_firmware(board))
    db = init_registry(work / "factory-reg.db")
    boards = [start_board(work, f"fact{i}") for i in range(8)]

    def one(port: str, progress: object) -> None:
        with Registry.open(db) as reg:
            provision_factory(port, board, reg, policy, fw, force=True)

    try:
        print(f"provision --factory: board {BOARD}, virtual boards on ptys, median of {n}")
        scaling([b.port for b in boards], one, "factory", n)
    finally:
        for i in range(8):
            runner.stop(f"fact{i}", work / "state")


# --- end provision ---

SECTIONS: dict[str, Callable[[Path, int], None]] = {
    "deploy": bench_deploy,
    "flash": bench_flash,
    "provision": bench_provision,
    "factory": bench_factory,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="runs per figure (median)")
    ap.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    args = ap.parse_args()
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    with tempfile.TemporaryDirectory(prefix="edgeveil-bench-") as tmp:
        work = Path(tmp)
        os.environ["EDGEVEIL_CACHE_DIR"] = str(work / "mpy-cache")
        for name in args.sections or SECTIONS:
            SECTIONS[name](work, args.n)


if __name__ == "__main__":
    main()
