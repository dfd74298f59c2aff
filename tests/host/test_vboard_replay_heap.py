"""The virtual board's replay reader (vmlib/replayio.py) and the board heap it shares.

On an ESP32 the radio and the buses cost MicroPython's heap nothing; on the virtual board
the replay is read by Python code in the same VM heap as the board code. A board program
that has used most of its heap, in many small pieces (docs/memory.md: a fragmented heap
has many small holes and few large ones), must not be stopped by a MemoryError from the
emulation: the reader needs no block larger than one event's parsed form. Its one line
buffer is allocated at import, on the emulation's allowance, before board code runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import edgeveil
import pytest
from edgeveil.mpy import compile_tree
from edgeveil.vboard.rawreplay import ble_footfall, uart_event, write_raw_replay
from edgeveil.vm import run_code

VMLIB = Path(edgeveil.__file__).parent / "vboard" / "vmlib"
HEAP = 131072
T0 = 1_700_000_000
HOLE = 400  # bytes: every free block left to the reader is about this size


@pytest.fixture(scope="module")
def vmlib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The emulated modules compiled to .mpy, as the board process loads them: compiling
    their source in the VM would leave the parser's garbage in the heap under test."""
    out = tmp_path_factory.mktemp("vmlib")
    compile_tree(VMLIB, out)
    return out


# The board's prelude, a scan of the whole replay, and before it a heap cut into holes:
# pairs of HOLE-byte blocks fill the heap, then one of each pair is freed.
_CODE = """
import gc, sys, json
import vbclock
cfg = {'mac': bytes(6), 'replay': open(%r), 'speed': 0, 't0': %d}
vbclock._init(cfg)
sys.modules['time'] = vbclock
import bluetooth, replayio
bluetooth._init(cfg)
ble = bluetooth.BLE()
ble.active(True)
seen = [0]
def irq(event, data):
    if event == 5:
        seen[0] += 1
ble.irq(irq)
ble.gap_scan(0)
gc.collect()
k = gc.mem_free() // %d + 8
keep = [None] * k
free = [None] * k
i = 0
try:
    while i < k:
        keep[i] = bytearray(%d)
        free[i] = bytearray(%d)
        i += 1
except MemoryError:
    pass
for j in range(k):
    free[j] = None
gc.collect()
holes = gc.mem_free()
vbclock.sleep(%d)
r = replayio.replay
print('R', json.dumps([seen[0], r.delivered, r.rejected, holes]))
"""


def _scan(replay: Path, seconds: int, vmlib: Path) -> list[int]:
    code = _CODE % (str(replay), T0, 2 * HOLE + 32, HOLE, HOLE, seconds)
    r = run_code(code, heap_bytes=HEAP, path=[vmlib])
    assert r.ok, (r.stdout + r.stderr).decode()[-2000:]
    line = [s for s in r.stdout.decode().splitlines() if s.startswith("R ")]
    return json.loads(line[-1][2:])


def test_the_replay_reads_through_a_heap_of_small_holes(tmp_path: Path, vmlib: Path) -> None:
    events = ble_footfall(seed=4, n_phones=30, minutes=30, start=T0 + 1)
    replay = tmp_path / "crowd.jsonl"
    write_raw_replay(replay, events)
    seen, delivered, rejected, holes = _scan(replay, 31 * 60, vmlib)
    assert holes > 20 * HOLE  # plenty of heap free, none of it in one large piece
    assert (seen, delivered, rejected) == (len(events), len(events), 0)


def test_lines_longer_than_the_buffer_are_read_whole(tmp_path: Path, vmlib: Path) -> None:
    # UART text in lines of 3,000 and 5,000 bytes (longer than the reader's 2 KB buffer),
    # with advertisements after them: every byte and every advertisement arrives.
    lines = [uart_event(T0 + 1, "A" * 3000), uart_event(T0 + 2, "B" * 5000)]
    events = ble_footfall(seed=5, n_phones=3, minutes=2, start=T0 + 3)
    replay = tmp_path / "long.jsonl"
    write_raw_replay(replay, [*lines, *events])
    code = """
import sys, json
import vbclock
cfg = {'mac': bytes(6), 'replay': open(%r), 'speed': 0, 't0': %d, 'reset_cause': 1}
vbclock._init(cfg)
sys.modules['time'] = vbclock
import machine, bluetooth, replayio
machine._init(cfg)
bluetooth._init(cfg)
u = machine.UART(1, 9600, rxbuf=8192)
ble = bluetooth.BLE()
ble.active(True)
seen = [0]
def irq(event, data):
    if event == 5:
        seen[0] += 1
ble.irq(irq)
ble.gap_scan(0)
vbclock.sleep(200)
got = u.read() or b''
r = replayio.replay
print('R', json.dumps([len(got), got.count(b'A'), got.count(b'B'), seen[0], r.rejected]))
""" % (str(replay), T0)
    r = run_code(code, heap_bytes=HEAP, path=[vmlib])
    assert r.ok, (r.stdout + r.stderr).decode()[-2000:]
    line = [s for s in r.stdout.decode().splitlines() if s.startswith("R ")][-1]
    assert json.loads(line[2:]) == [8000, 3000, 5000, len(events), 0]
