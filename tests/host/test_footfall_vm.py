"""The board's footfall entry (veil.footfall.main) in the MicroPython VM, as .mpy: a fake
radio and ESP32 clock feed it a crowd, Ctrl-C stops it, and what it printed is decrypted
and checked here; without keys or counter it refuses and sends nothing.

It runs at the board's `vm_app_heap_bytes`, as every whole-application run does
(docs/memory.md): in the 64-bit VM the footfall app needs about 119 KB (104 KB in use
after the run), more than `heap_bytes`. The whole loop on the virtual board (the real
emulated `bluetooth`, deploy, provision) is tests/e2e/test_footfall_board.py.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.cose import decrypt0
from edgeveil.demo import DeviceSecrets
from edgeveil.frames import split_stream
from edgeveil.mpy import compile_tree
from edgeveil.paths import device_dir
from edgeveil.policy import compile_policy, default_policy
from edgeveil.senml import decode_pack
from edgeveil.vboard.rawreplay import ble_footfall
from edgeveil.vm import run_code

BOARD = load_board("esp32-generic")
EPOCH_2000 = 946684800
T0 = 1699920000  # veil.T0
START = 1_700_000_100  # a multiple of 300 s after T0: windows start with the crowd

# Runs in the VM. The fake `time` is the ESP32 port's (int seconds since 2000); each
# sleep moves it and lets the fake radio hand the scan's IRQ handler what it heard.
_CODE = """
import gc, sys

class FakeBLE:
    handler = None
    def active(self, on=None):
        pass
    def irq(self, h):
        self.handler = h
    def gap_scan(self, *a):
        pass

class FakeTime:
    def __init__(self, t, end, ble):
        self.ms = t * 1000
        self.end = end
        self.ble = ble
        self.f = open("radio.bin", "rb")
        self.rec = self.f.read(11)
        self.addr = bytearray(6)
    def gmtime(self, s=0):
        return (2000, 1, 1, 0, 0, 0, 5, 1)
    def time(self):
        return self.ms // 1000
    def ticks_ms(self):
        return self.ms
    def ticks_diff(self, a, b):
        return a - b
    def sleep_ms(self, ms):
        until = self.ms + ms
        while self.rec and int.from_bytes(self.rec[:4], "big") * 1000 <= until:
            r = self.rec
            self.ms = max(self.ms, int.from_bytes(r[:4], "big") * 1000)
            self.addr[:] = r[4:10]
            if self.ble.handler:
                self.ble.handler(5, (1, memoryview(self.addr), 0, r[10] - 256, b""))
            self.rec = self.f.read(11)
        self.ms = until
        if self.ms // 1000 >= self.end:
            raise KeyboardInterrupt

ble = FakeBLE()
sys.modules["time"] = FakeTime({t}, {end}, ble)

class DictNVS:
    def __init__(self, blobs):
        self.blobs = blobs
    def get_blob(self, key, buf):
        if key not in self.blobs:
            raise OSError(-4354)
        v = self.blobs[key]
        buf[: len(v)] = v
        return len(v)

from veil.egress import Counter
if {counter}:
    Counter.create("./veil.ctr")
from veil import footfall
gc.collect()
pipe = footfall.main("nothing.json", DictNVS({blobs}), ble, ".")
gc.collect()
print("@@heap", gc.mem_alloc(), gc.mem_free(), pipe is not None)
gone = [m for m in ("veil.boardcfg", "veil.sources") if m not in sys.modules]
print("@@unloaded", gone, hasattr(sys.modules["veil"], "boardcfg"))
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lib")
    compile_tree(device_dir(), out)
    return out


def _run(lib: Path, cwd: Path, events: list[dict], blobs: dict, counter: bool = True) -> bytes:
    radio = b"".join(
        struct.pack(">I6sB", int(e["t"]) - EPOCH_2000, bytes.fromhex(e["addr"].replace(":", "")),
                    e["rssi"] & 0xFF)
        for e in events
    )  # fmt: skip
    (cwd / "radio.bin").write_bytes(radio)
    end = int(events[-1]["t"]) - EPOCH_2000 + 600
    code = _CODE.format(t=START - EPOCH_2000 - 2, end=end, blobs=repr(blobs), counter=counter)
    r = run_code(code, BOARD.vm_app_heap_bytes, path=[lib], cwd=cwd)
    assert r.ok, (r.stdout[-3000:] + r.stderr).decode("utf-8", "replace")
    return r.stdout


def _truth(events: list[dict]) -> dict[int, int]:
    """Distinct addresses per 300-s window (window start in Unix seconds)."""
    seen: dict[int, set[str]] = {}
    for e in events:
        t = int(e["t"])
        seen.setdefault(t - (t - T0) % 300, set()).add(e["addr"])
    return {w: len(a) for w, a in seen.items()}


def test_main_runs_a_crowd_and_stops_on_ctrl_c(lib: Path, tmp_path: Path) -> None:
    s = DeviceSecrets.generate()
    events = ble_footfall(seed=21, n_phones=30, minutes=20, start=START)
    blob = compile_policy(default_policy(), s.dev_id, s.policy_key)
    out = _run(lib, tmp_path, events, s.nvs_values(blob))
    assert b"veil: footfall: scanning" in out and b"veil: stopped" in out
    # code the counting board does not need left the heap
    assert b"@@unloaded ['veil.boardcfg', 'veil.sources'] False" in out
    heap = re.search(rb"@@heap (\d+) (\d+) True", out)
    assert heap, out[-2000:]
    print(f"after the run: {int(heap[1]):,} B in use, {int(heap[2]):,} B free")
    truth = _truth(events)
    got = {}
    for item in split_stream(out):
        assert item.kind != "bad", item
        if item.kind == "frame":
            pack = decode_pack(decrypt0(s.cose_key, s.base_iv, item.data).plaintext)
            got[pack.base_time] = {r.name.split(":")[-1]: r.value for r in pack.records}
    expect = {w for w, n in truth.items() if n >= 8}  # k = 5, with room for the noise
    assert expect and expect <= set(got), (truth, got)
    for w, fields in got.items():
        assert set(fields) == {"visitors", "dwell/0", "dwell/1", "dwell/2", "dwell/3"}
        assert abs(fields["visitors"] - truth[w]) <= 20  # noise scale 2: P(> 20) ~ e**-10
    for a in {bytes.fromhex(e["addr"].replace(":", "")) for e in events}:
        assert a not in out and a.hex().encode() not in out


def test_main_without_keys_or_counter_refuses_and_sends_nothing(lib: Path, tmp_path: Path) -> None:
    events = ble_footfall(seed=22, n_phones=5, minutes=6, start=START)
    out = _run(lib, tmp_path, events, {}, counter=False)
    assert b"refusing to send anything: key dev_id is not provisioned" in out
    assert re.search(rb"@@heap \d+ \d+ False", out)
    assert not [i for i in split_stream(out) if i.kind == "frame"]
    s = DeviceSecrets.generate()
    blob = compile_policy(default_policy(), s.dev_id, s.policy_key)
    out = _run(lib, tmp_path, events, s.nvs_values(blob), counter=False)
    assert b"message counter not provisioned" in out
    assert not [i for i in split_stream(out) if i.kind == "frame"]
