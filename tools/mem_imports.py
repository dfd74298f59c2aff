"""Heap cost of importing each veil module as .mpy, in the MicroPython VM at a board's heap.

    .venv/bin/python tools/mem_imports.py [--board B] [--heap BYTES] [--source]
    .venv/bin/python tools/mem_imports.py --app     # the whole application instead

For each module, in a fresh VM: import the veil modules it depends on, gc.collect(), note
gc.mem_alloc(), import the module, gc.collect() again: the difference is the module's own
cost (its bytecode, constants, globals and whatever it builds at import). "with deps" is
the cost of importing it alone into an empty VM. The last line imports every module. The
tree is compiled with mpy-cross as deploy does (`--source` imports the .py files instead,
as the device tests do: the VM then compiles them, which needs far more heap at its peak).
Figures are for the 64-bit unix VM, whose objects are larger than an ESP32's (docs/memory.md).

`--app` runs the whole application (veil.app on the default policy and the default
recording, .mpy) and prints the heap in use after the imports, after start() built the
pipeline and after the replay; then the smallest VM heap in which exactly what `make demo`
runs completes (bisection to 512 B, without the marks: their gc.collect() calls change
the heap's fragmentation, which is what decides it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from edgeveil.boards import load_board  # noqa: E402
from edgeveil.mpy import compile_tree  # noqa: E402
from edgeveil.paths import device_dir  # noqa: E402
from edgeveil.vm import run_code  # noqa: E402

# The whole application, as edgeveil.demo runs it, with the heap noted at each stage.
_APP = """
import gc
gc.collect()
def mark(stage):
    gc.collect()
    print("@@mem", stage, gc.mem_alloc(), gc.mem_alloc() + gc.mem_free())
mark("empty")
from veil import app
from veil.egress import Counter
from veil.sources.replay import replay
mark("imports")
class DictNVS:
    def __init__(self, blobs):
        self.blobs = blobs
    def get_blob(self, key, buf):
        v = self.blobs[key]
        buf[: len(v)] = v
        return len(v)
Counter.create("veil.ctr")
pipe = app.start(DictNVS({blobs}))
mark("started")
with open("rec.jsonl") as f:
    _ok, _bad, last = replay(f, pipe.feed)
pipe.flush(last)
mark("replayed")
"""

# Runs in the VM: import `deps`, then `name`; print the heap in use at each step as JSON.
_PROBE = """
import gc, sys
gc.collect()
base = gc.mem_alloc()
for d in {deps!r}:
    __import__(d)
gc.collect()
mid = gc.mem_alloc()
before = set(sys.modules)
for n in {names!r}:
    __import__(n)
gc.collect()
print({{"base": base, "mid": mid, "after": gc.mem_alloc(),
       "new": sorted(m for m in sys.modules if m not in before and m.startswith("veil"))}})
"""


def modules(root: Path) -> list[str]:
    """Every veil module under `root` (the device tree, .py sources), dotted, sorted."""
    out = []
    for py in sorted((root / "veil").rglob("*.py")):
        parts = py.relative_to(root).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def probe(lib: Path, heap: int, deps: list[str], names: list[str]) -> dict:
    code = _PROBE.format(deps=deps, names=names)
    r = run_code(code, heap, path=[lib], cwd=lib)
    if not r.ok:
        raise SystemExit(f"VM failed for {names}: {r.stdout.decode()}{r.stderr.decode()}")
    text = r.stdout.decode().strip().splitlines()[-1].replace("'", '"')
    return json.loads(text)


def measure(lib: Path, heap: int) -> list[tuple[str, int, int]]:
    rows = []
    for name in modules(device_dir()):
        alone = probe(lib, heap, [], [name])
        deps = [m for m in alone["new"] if m != name]
        own = probe(lib, heap, deps, [name])
        rows.append((name, own["after"] - own["mid"], alone["after"] - alone["base"]))
    return rows


def _secrets_and_blob() -> tuple[Any, bytes]:
    from edgeveil.demo import DeviceSecrets
    from edgeveil.policy import compile_policy, default_policy

    s = DeviceSecrets(b"\x01" * 8, b"\x02" * 16, b"\x03" * 13, b"\x04" * 32, b"\x05" * 32)
    return s, compile_policy(default_policy(), s.dev_id, s.policy_key)


def app_stages(heap: int, workdir: Path) -> dict[str, int]:
    """Heap in use per stage of one whole-app run (the marks collect garbage themselves)."""
    from edgeveil.replaygen import demo_recording, write_jsonl

    s, blob = _secrets_and_blob()
    blobs = {
        "dev_id": s.dev_id,
        "cose_key": s.cose_key,
        "base_iv": s.base_iv,
        "pseudo_key": s.pseudo_key,
        "policy_key": s.policy_key,
        "policy": blob,
    }
    write_jsonl(demo_recording(), workdir / "rec.jsonl")
    compile_tree(device_dir(), workdir / "lib")
    r = run_code(_APP.replace("{blobs}", repr(blobs)), heap, path=[workdir / "lib"], cwd=workdir)
    if not r.ok:
        raise SystemExit(f"the application does not run in {heap} B:\n{r.stderr.decode()}")
    return {m[1].decode(): int(m[2]) for m in re.finditer(rb"@@mem (\w+) (\d+)", r.stdout)}


def demo_runs(heap: int) -> bool:
    """Does exactly what `make demo` runs (edgeveil.demo.run_device) complete at `heap`?"""
    from edgeveil.demo import run_device
    from edgeveil.errors import VMError
    from edgeveil.replaygen import demo_recording

    s, blob = _secrets_and_blob()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_device(s, blob, demo_recording(), heap, Path(tmp))
        except VMError:
            return False
    return True


def app_report(board_heap: int, app_heap: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stages = app_stages(app_heap, Path(tmp))
    lo, hi = 32768, app_heap  # fails at lo (assumed), runs at hi
    while hi - lo > 512:
        mid = (lo + hi) // 2
        if demo_runs(mid):
            hi = mid
        else:
            lo = mid
    print(f"whole application (default policy and recording, .mpy), VM heap {app_heap} B:")
    for stage, used in stages.items():
        print(f"  {stage:<9} {used:>7,} B in use")
    print(f"  smallest VM heap the demo's run completes in: {hi:,} B (fails at {lo:,} B)")
    print(f"  at the board's heap_bytes ({board_heap} B): ", end="")
    print("runs" if demo_runs(board_heap) else "fails")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="esp32-generic")
    ap.add_argument("--heap", type=int, help="VM heap in bytes (default: the board's)")
    ap.add_argument("--source", action="store_true", help="import .py, not .mpy")
    ap.add_argument("--app", action="store_true", help="measure the whole application")
    args = ap.parse_args()
    board = load_board(args.board)
    if args.app:
        app_report(board.heap_bytes, args.heap or board.vm_app_heap_bytes)
        return 0
    heap = args.heap or board.heap_bytes
    with tempfile.TemporaryDirectory() as tmp:
        if args.source:
            lib = device_dir()
        else:
            lib = Path(tmp) / "lib"
            compile_tree(device_dir(), lib)  # bytecode .mpy: what the VM can load
        rows = measure(lib, heap)
        total = probe(lib, heap, [], modules(device_dir()))
    kind = ".py (compiled in the VM)" if args.source else ".mpy"
    print(f"board {board.name}, VM heap {heap} B, modules as {kind}")
    print("| module | own bytes | with deps |\n|---|---:|---:|")
    for name, own, alone in rows:
        print(f"| `{name}` | {own:,} | {alone:,} |")
    print(f"| all of veil | | {total['after'] - total['base']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
