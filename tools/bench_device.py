"""Device pipeline benchmark, in the MicroPython VM at the board's heap.

    make bench-device          # or: .venv/bin/python tools/bench_device.py [--board B] [-n N]

Prints samples per second through the pipeline (windows closing, reports encrypted and
framed), bytes allocated per sample after warm-up on the per-sample path (goal 0), peak
heap, bytes per report on the wire, and the ratio of the pipeline's cost per sample to a
loop that only reads the same samples (the floor), measured in the same VM run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from edgeveil.boards import load_board  # noqa: E402
from edgeveil.mpy import compile_tree  # noqa: E402
from edgeveil.paths import device_dir  # noqa: E402
from edgeveil.vm import run_code  # noqa: E402

_CODE = """
import gc, micropython, time
from veil.budget import Budget
from veil.egress import Counter, Egress
from veil.keys import Keys
from veil.pipeline import Pipeline
from veil.policy import Policy
DEV = b"\\x01" * 8
pol = Policy({"v": 1, "dev": DEV, "period": 86400, "eps_period": 10**7, "epoch": 86400,
  "streams": {"s": {"window": 60, "k": 2, "fields": {
    "hr": {"agg": "mean", "in": "hr", "lo": 30, "hi": 220, "eps": 1000},
    "z": {"agg": "hist", "in": "hr", "edges": [100, 140, 170], "cap": 60, "eps": 1000},
    "v": {"agg": "distinct", "in": "ble", "bound": 300, "eps": 1000}}}}}, DEV)
class Sink:
    def __init__(self): self.n = 0; self.bytes = 0
    def send(self, m): self.n += 1; self.bytes += len(m)
keys = Keys(DEV, b"\\x02" * 16, b"\\x03" * 13, b"\\x04" * 32, b"\\x05" * 32)
Counter.create("ctr")
sink = Sink()
pipe = Pipeline(pol, keys, Budget("eps", 86400, 10**7), Egress(keys, Counter("ctr"), sink))
N = {n}
addrs = [bytes((i & 255, 7, 7, 7, 7, (i >> 8) & 255)) for i in range(64)]
def read_only(n):
    # The floor: produce the same samples, feed them nowhere.
    for i in range(n):
        if i & 1:
            t, ch, v = i // 4, "ble", addrs[i % 64]
        else:
            t, ch, v = i // 4, "hr", 60 + i % 90
def run(n, feed):
    for i in range(n):
        if i & 1:
            t, ch, v = i // 4, "ble", addrs[i % 64]
        else:
            t, ch, v = i // 4, "hr", 60 + i % 90
        feed(t, ch, v)
gc.collect()
t0 = time.ticks_us()
read_only(N)
floor = time.ticks_diff(time.ticks_us(), t0)
# Allocation on the per-sample path: samples inside one window, after warm-up.
def inside_one_window(feed):
    for i in range(100):
        if i & 1:
            feed(1, "ble", addrs[i % 64])
        else:
            feed(1, "hr", 70)
pipe.feed(0, "hr", 70)
inside_one_window(pipe.feed)  # warm-up
def locked_run(feed):
    micropython.heap_lock()
    try:
        inside_one_window(feed)
    except MemoryError:
        micropython.heap_unlock()
        return "ALLOCATES"
    micropython.heap_unlock()
    return "none: 100 samples ran under heap_lock"
locked = locked_run(pipe.feed)
gc.collect()
t0 = time.ticks_us()
run(N, pipe.feed)
took = time.ticks_diff(time.ticks_us(), t0)
print("samples", N)
print("samples_per_s", int(N * 1000000 / took))
print("ratio_to_read_loop", took / max(1, floor))
print("alloc_per_sample_after_warmup", locked)
gc.collect()
print("heap_in_use_after_run_bytes", gc.mem_alloc(), "of", gc.mem_alloc() + gc.mem_free())
print("reports", sink.n, "bytes_per_report", sink.bytes // max(1, sink.n))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="esp32-generic")
    ap.add_argument("-n", type=int, default=20000, help="samples to feed")
    args = ap.parse_args()
    board = load_board(args.board)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        compile_tree(device_dir(), lib)  # .mpy, as deployed: compiling on the board costs heap
        code = _CODE.replace("{n}", str(args.n))
        r = run_code(code, board.heap_bytes, path=[lib], cwd=Path(tmp))
    out = r.stdout.decode()
    if not r.ok:
        print(out, r.stderr.decode(), file=sys.stderr)
        return 1
    print(f"board {board.name}, VM heap {board.heap_bytes} B (MicroPython unix VM, x64)")
    print(out, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
