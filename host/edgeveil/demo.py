"""`edgeveil demo`: the device pipeline in the MicroPython VM on the embedded defaults.

Generates a device's secrets and the default policy, replays the default recording (a
shop's footfall and a wearer's heart rate) through `veil.app` in the MicroPython VM at the
board's heap, then decodes what the device sent: COBS frames from its console, COSE
decrypted with the device's key, SenML decoded with cbor2.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .boards import load_board
from .cose import decrypt0
from .errors import VMError
from .frames import split_stream
from .mpy import compile_tree
from .paths import device_dir
from .policy import compile_policy, default_policy
from .replaygen import demo_recording, write_jsonl
from .senml import decode_pack
from .vm import run_code


@dataclass(frozen=True)
class DeviceSecrets:
    """A device's provisioned secrets (DESIGN.md "Keys and policy"); repr() shows no key."""

    dev_id: bytes
    cose_key: bytes = field(repr=False)
    base_iv: bytes = field(repr=False)
    pseudo_key: bytes = field(repr=False)
    policy_key: bytes = field(repr=False)

    def nvs_values(self, policy_blob: bytes) -> dict[str, bytes]:
        """What the device's NVS namespace "veil" holds (device/veil/keys.py), by name."""
        return {
            "dev_id": self.dev_id,
            "cose_key": self.cose_key,
            "base_iv": self.base_iv,
            "pseudo_key": self.pseudo_key,
            "policy_key": self.policy_key,
            "policy": policy_blob,
        }

    @classmethod
    def generate(cls) -> DeviceSecrets:
        base_iv = os.urandom(13)
        while base_iv[0] == 0:  # keep pycose-based backends working (library-pitfalls.md)
            base_iv = os.urandom(13)
        return cls(os.urandom(8), os.urandom(16), base_iv, os.urandom(32), os.urandom(32))


# Runs inside MicroPython. DictNVS is a fake of esp32.NVS (get_blob), used because the
# plain unix VM has no `esp32` module; the virtual board provides the real interface.
_DEVICE_CODE = """
from veil import app
from veil.egress import Counter

class DictNVS:
    def __init__(self, blobs):
        self.blobs = blobs
    def get_blob(self, key, buf):
        if key not in self.blobs:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        v = self.blobs[key]
        buf[: len(v)] = v
        return len(v)

sampler = None
{sampler}
Counter.create("veil.ctr")
with open("rec.jsonl") as f:
    app.run(DictNVS({blobs}), f, sampler=sampler)
"""


def run_device(
    secrets: DeviceSecrets,
    policy_blob: bytes,
    events: list[dict[str, Any]],
    heap_bytes: int,
    workdir: Path,
    *,
    tree: Path | None = None,
    sampler: str = "",
) -> bytes:
    """Run `veil.app` on `events` in the VM; returns everything it wrote to its console.

    `tree` is the device code directory to run (default: the project's device/, a test
    may pass a patched copy); `sampler` is MicroPython code run before the app that may
    bind `sampler` to a noise sampler replacing veil.noise.Sampler (e.g. one that draws
    no noise, for a test oracle).
    """
    write_jsonl(events, workdir / "rec.jsonl")
    lib = workdir / "lib"
    compile_tree(tree if tree is not None else device_dir(), lib)
    code = _DEVICE_CODE.replace("{sampler}", sampler)
    code = code.replace("{blobs}", repr(secrets.nvs_values(policy_blob)))
    result = run_code(code, heap_bytes, path=[lib], cwd=workdir)
    if not result.ok:
        raise VMError(
            "device code failed in the VM:\n"
            + result.stdout.decode("utf-8", "replace")[-2000:]
            + result.stderr.decode("utf-8", "replace")
        )
    return result.stdout


def run_demo(board_name: str, out: TextIO) -> None:
    board = load_board(board_name)
    secrets = DeviceSecrets.generate()
    policy = default_policy()
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    events = demo_recording()
    out.write(
        f"device {secrets.dev_id.hex()} on {board.name} "
        f"(VM heap {board.vm_app_heap_bytes} B, board heap {board.heap_bytes} B): "
        f"replaying {len(events)} raw events\n"
    )
    with tempfile.TemporaryDirectory(prefix="edgeveil-demo-") as tmp:
        console = run_device(secrets, blob, events, board.vm_app_heap_bytes, Path(tmp))
    frames = 0
    # Every raw BLE address that went in, as bytes and as text in both cases.
    raw = {bytes.fromhex(e["addr"].replace(":", "")) for e in events if e["kind"] == "ble"}
    needles = [n for a in raw for n in (a, a.hex().encode(), a.hex().upper().encode())]
    leaks = [n for n in needles if n in console]
    for item in split_stream(console):
        if item.kind == "text":
            out.write("console: " + item.data.decode("utf-8", "replace").rstrip() + "\n")
            continue
        if item.kind == "bad":
            out.write(f"bad frame at byte {item.offset}: {item.error}\n")
            continue
        frames += 1
        msg = decrypt0(secrets.cose_key, secrets.base_iv, item.data, kid=secrets.dev_id)
        pack = decode_pack(msg.plaintext)
        leaks += [n for n in needles if n in msg.plaintext]
        values = ", ".join(f"{r.name[len(pack.base_name) :]}={r.value}" for r in pack.records)
        out.write(
            f"#{msg.counter:<3} {len(item.data):>4} B  t={pack.base_time} "
            f"{pack.base_name}  {values}\n"
        )
    out.write(f"{frames} reports sent and decoded\n")
    if leaks:
        raise VMError(f"raw BLE addresses found in the device output: {len(leaks)}")
    out.write(
        f"none of the {len(raw)} raw BLE addresses appears in the wire bytes or the "
        "decrypted reports (bytes, hex); the full leak scan is `edgeveil verify` (issue 5)\n"
    )
