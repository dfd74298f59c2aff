"""A `provision --factory` run cut off mid-write, settled by `--factory --resume` through
the chip's ROM loader: completed when any of the keys reached the board, rolled back when
none did; never a board holding keys the registry lacks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.demo import DeviceSecrets
from edgeveil.factory import provision_factory, resume_factory
from edgeveil.flash import load_firmware
from edgeveil.lfs import vfs_partition
from edgeveil.partitions import boot_app_partition, find_partition
from edgeveil.policy import default_policy
from edgeveil.provision import ProvisionError
from edgeveil.registry import Registry, init_registry
from edgeveil.vboard import firmware
from vbtest import VBoard, edgeveil, nvs_blob, on_board

BOARD = load_board("esp32-generic")
NVS = find_partition(BOARD.partitions, "nvs")
VFS = vfs_partition(BOARD)

# Run in a process of its own, which SIGKILLs itself once the pass has written `cut` bytes.
_KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from edgeveil.boards import load_board
    from edgeveil.factory import provision_factory
    from edgeveil.policy import default_policy
    from edgeveil.registry import Registry

    db, port, fw = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    cut, out = int(sys.argv[4]), sys.argv[5]

    def progress(done, total):
        if done >= cut:
            os.kill(os.getpid(), signal.SIGKILL)

    with Registry.open(db) as reg:
        provision_factory(port, load_board("esp32-generic"), reg, default_policy(), fw,
                          write_progress=progress, out_dir=out)
    print("not killed")
    """
)


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(firmware.build_firmware(BOARD))
    return path


def _secret_values(s: DeviceSecrets) -> list[bytes]:
    return [s.dev_id, s.cose_key, s.base_iv, s.pseudo_key, s.policy_key]


def _cut_at(fw: Path, where: str) -> int:
    """Bytes into the pass at which to die: the regions go down in flash order
    (bootloader, partition table, nvs, app, vfs)."""
    sizes = {at: len(data) for at, data in load_firmware(fw, BOARD).regions(BOARD)}
    sizes[NVS.offset] = NVS.size
    sizes[VFS.offset] = VFS.size
    order = sorted(sizes)
    before = {at: sum(sizes[o] for o in order[: order.index(at)]) for at in order}
    app = max(at for at in sizes if at < VFS.offset)
    return {
        "bootloader": 1,
        "app": before[app] + sizes[app] // 2,
        "vfs": before[VFS.offset] + sizes[VFS.offset] // 2,
    }[where]


@pytest.mark.parametrize(
    "where, outcome",
    [("bootloader", "rolled back"), ("app", "completed"), ("vfs", "completed")],
)
def test_factory_killed_mid_write_is_settled_by_resume(
    make_vboard, fw: Path, tmp_path: Path, where: str, outcome: str
) -> None:
    vb = make_vboard(firmware=False)
    db = init_registry(tmp_path / "reg.db")
    cut = _cut_at(fw, where)
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(db), vb.port, str(fw), str(cut),
         str(tmp_path / "images")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == -9, run.stdout + run.stderr
    # --out keeps images of active devices only: none of a device that may be rolled back.
    assert list((tmp_path / "images").iterdir()) == []
    with Registry.open(db) as reg:
        (pending,) = reg.pending()
        secrets = reg.secrets(pending.dev_id)
    flash = vb.flash.read_bytes()
    nvs_now = flash[NVS.offset : NVS.offset + NVS.size]
    keys_there = any(v in nvs_now for v in _secret_values(secrets))
    assert keys_there == (where != "bootloader")  # the cut fell where the test meant

    res = edgeveil(
        tmp_path, "provision", "--factory", "--firmware", str(fw), "--port", vb.port,
        "--resume", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "port": vb.port,
        "resumed": {pending.dev_id.hex(): outcome},
    }
    flash = vb.flash.read_bytes()
    with Registry.open(db) as reg:
        if outcome == "rolled back":
            assert reg.list() == []
            assert not any(v in flash for v in _secret_values(secrets))
            return
        rec = reg.get(pending.dev_id)
        assert rec.status == "active" and rec.code_hash
    # Completed: the board boots MicroPython with the registry's keys and a fresh counter.
    assert nvs_blob(vb, "cose_key") == secrets.cose_key.hex()
    counter = bytes(8) + hashlib.sha256(bytes(8)).digest()[:8]
    assert on_board(vb, "print(open('/veil.ctr', 'rb').read().hex())") == counter.hex()
    assert on_board(vb, "import veil\nprint(veil.__file__)") == "/app/a/veil/__init__.mpy"


class _DiesBeforeActivating:
    """A registry whose process dies after the pass and the read-back, before `activate`."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    def __getattr__(self, name: str) -> object:
        return getattr(self.reg, name)

    def activate(self, dev_id: bytes) -> None:
        raise KeyboardInterrupt


def _written_but_pending(vb: VBoard, fw: Path, db: Path) -> bytes:
    with Registry.open(db) as reg, pytest.raises(KeyboardInterrupt):
        provision_factory(vb.port, BOARD, _DiesBeforeActivating(reg), default_policy(), fw)
    with Registry.open(db) as reg:
        (pending,) = reg.pending()
    return pending.dev_id


def test_a_forced_run_cut_off_is_completed_and_the_old_device_wiped(
    make_vboard, fw: Path, tmp_path: Path
) -> None:
    """`--factory --force` replaces a board's keys; cut off before it could mark the old
    device wiped, the resume that completes it does so: the chip holds one device."""
    vb = make_vboard(firmware=False)
    db = init_registry(tmp_path / "reg.db")
    with Registry.open(db) as reg:
        old = provision_factory(vb.port, BOARD, reg, default_policy(), fw).dev_id
    with Registry.open(db) as reg, pytest.raises(KeyboardInterrupt):
        provision_factory(
            vb.port, BOARD, _DiesBeforeActivating(reg), default_policy(), fw, force=True
        )
    with Registry.open(db) as reg:
        (new,) = reg.pending()
        assert reg.get(old).status == "active"  # the cut run never said otherwise
    res = edgeveil(
        tmp_path, "provision", "--factory", "--firmware", str(fw), "--port", vb.port,
        "--resume", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["resumed"] == {new.dev_id.hex(): "completed", old: "wiped"}
    with Registry.open(db) as reg:
        assert reg.get(new.dev_id).status == "active"
        assert reg.get(old).status == "wiped"
    assert nvs_blob(vb, "dev_id") == new.dev_id.hex()


@pytest.fixture
def pending(make_vboard, fw: Path, tmp_path: Path) -> tuple[VBoard, Path, bytes]:
    """A blank board the factory wrote completely, its entry left pending."""
    vb = make_vboard(firmware=False)
    db = init_registry(tmp_path / "reg.db")
    return vb, db, _written_but_pending(vb, fw, db)


def test_resume_keeps_the_counter_and_budget_a_running_board_wrote(
    pending: tuple[VBoard, Path, bytes], fw: Path
) -> None:
    vb, db, dev_id = pending
    # The board booted with its keys and sent 41 messages before anyone resumed.
    at41 = (41).to_bytes(8, "big")
    record = at41 + hashlib.sha256(at41).digest()[:8]
    on_board(
        vb,
        "f = open('/veil.ctr', 'wb'); f.write(%r); f.close()\n"
        "f = open('/veil.eps', 'wb'); f.write(b'spent'); f.close()" % record,
    )
    vb.restart()
    with Registry.open(db) as reg:
        assert resume_factory(vb.port, BOARD, reg, default_policy(), fw) == {
            dev_id.hex(): "completed"
        }
        assert reg.get(dev_id).status == "active"
    assert on_board(vb, "print(open('/veil.ctr', 'rb').read().hex())") == record.hex()
    assert on_board(vb, "print(open('/veil.eps', 'rb').read())") == "b'spent'"


def test_resume_refuses_another_policy_and_leaves_the_board(
    pending: tuple[VBoard, Path, bytes], fw: Path
) -> None:
    vb, db, dev_id = pending
    vb.stop()
    # What a resume would write again; the filesystem is left out (the board's own app may
    # write there while it runs).
    below_vfs = vb.flash.read_bytes()[: VFS.offset]
    vb.restart()
    other = default_policy()
    other["streams"] = dict(list(other["streams"].items())[:1])
    assert other != default_policy()
    with Registry.open(db) as reg:
        with pytest.raises(ProvisionError, match="same --policy"):
            resume_factory(vb.port, BOARD, reg, other, fw)
        assert reg.get(dev_id).status == "pending"
    vb.stop()
    assert vb.flash.read_bytes()[: VFS.offset] == below_vfs


def test_resume_leaves_pending_entries_of_other_boards(
    make_vboard, fw: Path, tmp_path: Path
) -> None:
    vb = make_vboard(firmware=False)
    db = init_registry(tmp_path / "reg.db")
    elsewhere = DeviceSecrets.generate()
    with Registry.open(db) as reg:
        reg.add_pending(
            elsewhere.dev_id, BOARD.name, elsewhere, "0" * 64, vb.port,
            mac=bytes.fromhex("240ac4ffffff"),
        )  # fmt: skip
        # Same port, another chip: not this board's to settle.
        assert resume_factory(vb.port, BOARD, reg, default_policy(), fw) == {}
        assert reg.get(elsewhere.dev_id).status == "pending"


def test_resume_completes_when_a_torn_nvs_page_still_holds_a_key(
    pending: tuple[VBoard, Path, bytes], fw: Path
) -> None:
    vb, db, dev_id = pending
    vb.stop()
    with Registry.open(db) as reg:
        secrets = reg.secrets(dev_id)
    flash = bytearray(vb.flash.read_bytes())
    # Tear the first NVS page's header (state and CRC, ESP-IDF's page layout: bytes 0-31):
    # the partition no longer parses, but the key bytes are still on the chip. And the app's
    # header, as a pass cut off there leaves it, so that the board cannot boot (and let
    # ESP-IDF's nvs_flash_init erase the torn page) before the resume reads it.
    flash[NVS.offset : NVS.offset + 32] = b"\x00" * 32
    app = boot_app_partition(BOARD.partitions)
    assert app is not None
    flash[app.offset : app.offset + 32] = b"\x00" * 32
    vb.flash.write_bytes(bytes(flash))
    assert secrets.cose_key in flash[NVS.offset : NVS.offset + NVS.size]
    vb.restart()
    with Registry.open(db) as reg:
        assert resume_factory(vb.port, BOARD, reg, default_policy(), fw) == {
            dev_id.hex(): "completed"
        }
    assert nvs_blob(vb, "dev_id") == dev_id.hex()


def test_resume_after_a_resume_cut_off_in_the_filesystem_refuses_to_restart_the_counter(
    pending: tuple[VBoard, Path, bytes], fw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vb, db, dev_id = pending
    at41 = (41).to_bytes(8, "big")
    on_board(vb, "f = open('/veil.ctr', 'wb'); f.write(%r); f.close()" % (
        at41 + hashlib.sha256(at41).digest()[:8]))  # fmt: skip
    vb.restart()

    def cut_off(*args: object) -> None:
        raise KeyboardInterrupt  # the host dies as the pass begins

    with Registry.open(db) as reg, monkeypatch.context() as m:
        m.setattr("edgeveil.factory._write_and_activate", cut_off)
        with pytest.raises(KeyboardInterrupt):
            resume_factory(vb.port, BOARD, reg, default_policy(), fw)
    # ... and the pass had torn the filesystem and the app when it died.
    vb.stop()
    flash = bytearray(vb.flash.read_bytes())
    flash[VFS.offset : VFS.offset + 2 * 4096] = bytes(2 * 4096)
    app = boot_app_partition(BOARD.partitions)
    assert app is not None
    flash[app.offset : app.offset + 32] = bytes(32)
    vb.flash.write_bytes(bytes(flash))
    vb.restart()
    with Registry.open(db) as reg:
        with pytest.raises(ProvisionError, match="sent messages under its keys"):
            resume_factory(vb.port, BOARD, reg, default_policy(), fw)
        rec = reg.get(dev_id)
    # Left pending, with the floor the first resume recorded (messages 0..40 were sent).
    assert (rec.status, rec.last_counter) == ("pending", 40)


def test_a_failed_flash_read_fails_the_resume_and_keeps_the_board(
    pending: tuple[VBoard, Path, bytes], fw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vb, db, dev_id = pending
    from edgeveil.errors import FlashError
    from edgeveil.flash import Chip

    real = Chip.read
    seen: list[int] = []

    def flaky(self: Chip, offset: int, length: int) -> bytes:
        if offset >= VFS.offset:
            seen.append(offset)
            if len(seen) == 2:  # one read of the filesystem times out
                raise FlashError(f"{self.port}: reading {length} bytes at {offset:#x}: timeout")
        return real(self, offset, length)

    vb.stop()
    before = vb.flash.read_bytes()
    vb.restart()
    with Registry.open(db) as reg, monkeypatch.context() as m:
        m.setattr(Chip, "read", flaky)
        with pytest.raises(FlashError, match="timeout"):
            resume_factory(vb.port, BOARD, reg, default_policy(), fw)
        assert reg.get(dev_id).status == "pending"
    assert len(seen) >= 2  # the failing read was made
    vb.stop()
    assert vb.flash.read_bytes()[: VFS.offset] == before[: VFS.offset]  # nothing written
