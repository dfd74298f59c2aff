"""`edgeveil flash` against virtual boards: writes, verifies and boots, and refuses what it
must before anything is written.

The virtual board answers esptool as an ESP32-D0WD-V3 on a pty (esptool used as a library
inside edgeveil, unmodified). "Nothing written" is checked on the flash file itself: it
must be byte-identical after a refusal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import termios
import time
from pathlib import Path

import pytest
import serial
from edgeveil import lfs
from edgeveil.boards import load_board
from edgeveil.errors import FlashError, ImageError
from edgeveil.esp_image import build_image, target
from edgeveil.flash import write_firmware
from edgeveil.nvs import read_nvs
from edgeveil.partitions import Partition, find_partition
from edgeveil.vboard import firmware
from vbtest import BIN, VBoard, tool

BOARD = load_board("esp32-generic")
S3 = load_board("esp32s3-generic")


def flash(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgeveil"), "flash", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def exec_on(vb: VBoard, code: str) -> str:
    return tool("mpremote", "connect", vb.port, "exec", code).stdout.strip()


def booted(vb: VBoard, timeout: float = 15) -> None:
    """Wait for the REPL prompt after a flash, before mpremote connects.

    A board process's first VM start after a flash takes ~0.25 s; a client whose Ctrl-C
    lands in that window can make the vboard's VM exit (seen with plain esptool +
    mpremote too; reported, not this module's to fix). Enter keys are safe there.
    """
    with serial.Serial(vb.port, 115200, timeout=0.1) as p:
        end, buf = time.monotonic() + timeout, b""
        while b">>> " not in buf:
            assert time.monotonic() < end, "no REPL prompt after flashing: %r" % buf[-300:]
            p.write(b"\r\n")
            buf += p.read(4096)


def digest(vb: VBoard) -> str:
    """The flash file's hash, once the board has settled (formatted its filesystem)."""
    exec_on(vb, "pass")
    return hashlib.sha256(vb.flash.read_bytes()).hexdigest()


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(firmware.build_firmware(BOARD))
    return path


def s3_app(tmp_path: Path) -> Path:
    """A bare ESP32-S3 app image (chip id 9) with a MicroPython app descriptor."""
    t = target("esp32s3")
    image = build_image(
        "esp32s3",
        [(t.drom[0] + 0x20, b"not for an ESP32"), (t.app_iram, t.idle_code)],
        entry=t.app_iram,
        app_desc=firmware.app_desc(),
    )
    path = tmp_path / "s3-app.bin"
    path.write_bytes(image)
    return path


def test_flash_a_blank_board_then_it_runs_micropython(make_vboard, fw: Path) -> None:
    vb = make_vboard(firmware=False)
    res = flash("--board", "esp32-generic", "--port", vb.port, "--firmware", str(fw))
    assert res.returncode == 0, res.stderr
    mac = ":".join("%02x" % b for b in vb.spec.mac)
    assert res.stdout.startswith(f"{vb.port}: ESP32-D0WD-V3 (revision v3.1) {mac}: ")
    assert "micropython v1.29.0-edgeveil-virtual at 0x1000" in res.stdout
    assert "verified" in res.stdout
    data = fw.read_bytes()
    assert vb.flash.read_bytes()[0x1000 : 0x1000 + len(data)] == data
    booted(vb)
    assert exec_on(vb, "print(6*7)") == "42"  # the board reset and booted what was written


def test_reflash_keeps_files_and_keys_and_erase_removes_them(make_vboard, fw: Path) -> None:
    vb = make_vboard()
    exec_on(
        vb,
        "import esp32\n"
        "with open('marker.txt','w') as f: f.write('before')\n"
        "n = esp32.NVS('veil'); n.set_blob('dev_id', b'12345678'); n.commit()",
    )
    nvs = find_partition(BOARD.partitions, "nvs")

    def keys() -> dict:
        image = vb.flash.read_bytes()[nvs.offset : nvs.end]
        return read_nvs(image).get("veil", {})

    res = flash("--board", "esp32-generic", "--port", vb.port, "--firmware", str(fw))
    assert res.returncode == 0, res.stderr
    booted(vb)
    assert exec_on(vb, "print(open('marker.txt').read())") == "before"
    assert keys() == {"dev_id": b"12345678"}  # provisioned keys survive a reflash

    res = flash("--board", "esp32-generic", "--port", vb.port, "--firmware", str(fw), "--erase")
    assert res.returncode == 0, res.stderr
    assert "chip erased first" in res.stdout
    booted(vb)
    assert "marker.txt" not in exec_on(vb, "import os; print(os.listdir('/'))")
    assert keys() == {}
    with lfs.open_vfs(vb.flash, BOARD) as fs:  # the board formatted a fresh filesystem
        assert "/marker.txt" not in fs.files()


def test_wrong_chip_image_is_refused_before_the_board_is_touched(
    make_vboard, tmp_path: Path
) -> None:
    vb = make_vboard()
    before = digest(vb)
    app = s3_app(tmp_path)
    res = flash("--board", "esp32-generic", "--port", vb.port, "--firmware", str(app), "--erase")
    assert res.returncode == 2
    assert res.stderr.startswith(f"edgeveil: {app}: ")
    assert "image is for esp32s3 (chip id 9), board is esp32" in res.stderr
    assert digest(vb) == before  # --erase did not run either
    s3_combined = tmp_path / "s3.bin"
    s3_combined.write_bytes(firmware.build_firmware(S3))
    with pytest.raises(ImageError, match="image is for esp32s3"):
        write_firmware(vb.port, BOARD, s3_combined, erase=True)
    assert digest(vb) == before
    assert exec_on(vb, "print('untouched')") == "untouched"


def test_a_chip_that_is_not_the_board_files_is_refused(make_vboard, tmp_path: Path) -> None:
    vb = make_vboard()  # answers as an ESP32
    before = digest(vb)
    s3_fw = tmp_path / "s3.bin"
    s3_fw.write_bytes(firmware.build_firmware(S3))  # a valid image for the board file
    args = ("--board", "esp32s3-generic", "--port", vb.port, "--firmware", str(s3_fw))
    res = flash(*args, "--erase")
    assert res.returncode == 2
    assert (
        f"edgeveil: {vb.port}: wrong chip: an ESP32 answered, board esp32s3-generic is "
        "esp32s3; nothing was written" in res.stderr
    )
    assert digest(vb) == before
    assert exec_on(vb, "print('still running')") == "still running"


def test_a_port_held_by_another_program_is_busy(make_vboard, fw: Path) -> None:
    vb = make_vboard(firmware=False)  # blank: nothing on the board writes to its flash
    before = vb.flash.read_bytes()
    args = ("--board", "esp32-generic", "--port", vb.port, "--firmware", str(fw))
    with serial.Serial(vb.port, 115200, exclusive=True):
        res = flash(*args)
    assert res.returncode == 2
    assert f"edgeveil: {vb.port}: port busy: another program holds it open" in res.stderr
    assert vb.flash.read_bytes() == before
    assert flash(*args).returncode == 0  # released: it works


def test_no_such_port(fw: Path, tmp_path: Path) -> None:
    res = flash(
        "--board", "esp32-generic", "--port", str(tmp_path / "ttyUSB9"), "--firmware", str(fw)
    )
    assert res.returncode == 2
    assert f"edgeveil: {tmp_path / 'ttyUSB9'}: no such port" in res.stderr


def test_no_chip_answering(fw: Path) -> None:
    master, slave = os.openpty()  # a serial port with nothing behind it
    try:
        port = os.ttyname(slave)
        os.close(slave)
        with pytest.raises(FlashError, match=f"^{port}: no chip answering in download mode"):
            write_firmware(port, BOARD, fw)
    finally:
        os.close(master)


def test_verify_failure_is_reported(make_vboard, fw: Path, monkeypatch) -> None:
    from esptool.targets.esp32 import ESP32StubLoader

    vb = make_vboard(firmware=False)
    # A fake flash fault: the chip's MD5 of what was written never matches.
    monkeypatch.setattr(ESP32StubLoader, "flash_md5sum", lambda self, addr, size: "0" * 32)
    with pytest.raises(FlashError, match=f"^{vb.port}: verify failed: MD5 of file does not"):
        write_firmware(vb.port, BOARD, fw)


def test_three_boards_in_parallel_one_bad_port(make_vboard, fw: Path, tmp_path: Path) -> None:
    a, b = make_vboard(firmware=False), make_vboard(firmware=False)
    bad = str(tmp_path / "ttyUSB7")
    res = flash(
        "--board", "esp32-generic", "--ports", f"{a.port},{bad},{b.port}", "--firmware", str(fw)
    )  # fmt: skip
    assert res.returncode == 2
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:-1]}
    assert rows[a.port][1] == rows[b.port][1] == "ok"
    assert rows[bad][1] == "FAILED" and "no such port" in " ".join(rows[bad])
    assert res.stdout.splitlines()[-1].startswith("flash: 3 boards, 2 ok, 1 failed")
    assert res.stderr.strip().endswith(f"edgeveil: 1 of 3 boards failed (flash): {bad}")
    data = fw.read_bytes()
    for vb in (a, b):
        assert vb.flash.read_bytes()[0x1000 : 0x1000 + len(data)] == data
        booted(vb)
        assert exec_on(vb, "print('flashed')") == "flashed"


def test_json_for_one_board_and_for_ports_auto(make_vboard, fw: Path, tmp_path: Path) -> None:
    a, b = make_vboard(firmware=False), make_vboard(firmware=False)
    res = flash("--board", "esp32-virtual", "--port", a.port, "--firmware", str(fw), "--json")
    assert res.returncode == 0, res.stderr
    one = json.loads(res.stdout)
    assert one["port"] == a.port and one["board"] == "esp32-virtual" and one["verified"]
    assert one["offset"] == 0x1000 and one["project"] == "micropython"
    assert one["mac"] == ":".join("%02x" % x for x in a.spec.mac)
    assert [r["offset"] for r in one["regions"]] == [0x1000, 0x8000, 0x10000]
    assert one["image_sha256"] == hashlib.sha256(fw.read_bytes()).hexdigest()

    # --ports auto finds the running virtual boards through their state files.
    state = tmp_path / "auto"
    state.mkdir()
    (state / "vboards").symlink_to(a.root)
    res = flash(
        "--board", "esp32-generic", "--ports", "auto", "--firmware", str(fw), "--json",
        env={"EDGEVEIL_STATE_DIR": str(state)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    many = json.loads(res.stdout)  # the whole of stdout: no table mixed in
    assert many["ok"] is True and many["exit_code"] == 0
    assert sorted(x["port"] for x in many["boards"]) == sorted([a.port, b.port])
    assert all(x["result"]["bytes_written"] == one["bytes_written"] for x in many["boards"])


def test_killed_mid_write_is_reported_and_a_reflash_recovers(
    make_vboard, fw: Path, tmp_path: Path
) -> None:
    vb = make_vboard()
    app = _big_app(tmp_path)

    def pull_the_plug(done: int, total: int) -> None:
        if done > total // 3:
            vb.kill()

    with pytest.raises(FlashError, match=f"^{vb.port}: writing failed .the board was lost"):
        write_firmware(vb.port, BOARD, app, progress=pull_the_plug)
    vb.restart()  # power back: the half-written app does not boot
    assert b"MicroPython" not in _console(vb.port, 1.0)

    seen: list[tuple[int, int]] = []
    report = write_firmware(vb.port, BOARD, fw, progress=lambda d, n: seen.append((d, n)))
    assert report.bytes_written == sum(n for _, n in report.regions)
    assert seen and seen[-1] == (report.bytes_written, report.bytes_written)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    booted(vb)
    assert exec_on(vb, "print('recovered')") == "recovered"


def test_a_port_lost_mid_write_is_never_opened_again_by_its_name(
    make_vboard, tmp_path: Path
) -> None:
    """esptool retries a failed reset by reopening the port by name; on a jig that name
    may by then be another board's (a USB port re-enumerated, a pty number reused), which
    would be reset or talked to. Here the name moves to a terminal the test holds as soon
    as the board is gone: nothing may open it, write to it or change its settings."""
    vb = make_vboard()
    app = _big_app(tmp_path)
    name = tmp_path / "ttyJIG0"
    name.symlink_to(vb.port)
    other, other_tty = os.openpty()
    os.set_blocking(other, False)
    settings = termios.tcgetattr(other_tty)

    def pull_the_plug(done: int, total: int) -> None:
        if done > total // 3 and name.resolve() == Path(vb.port):
            vb.kill()
            name.unlink()
            name.symlink_to(os.ttyname(other_tty))  # another board now answers there

    with pytest.raises(FlashError, match=f"^{name}: writing failed"):
        write_firmware(str(name), BOARD, app, progress=pull_the_plug)
    assert name.resolve() == Path(os.ttyname(other_tty))  # the plug was pulled mid-write
    with pytest.raises(BlockingIOError):
        os.read(other, 1024)  # not a byte sent to the other board
    assert termios.tcgetattr(other_tty) == settings  # and never opened (pyserial sets raw)
    os.close(other)
    os.close(other_tty)


def _big_app(tmp_path: Path) -> Path:
    """1.5 MB of app that does not compress: about a second to write."""
    t = target("esp32")
    big = build_image(
        "esp32",
        [(t.drom[0] + 0x20, os.urandom(1_500_000)), (t.app_iram, t.idle_code)],
        entry=t.app_iram,
        app_desc=firmware.app_desc(),
    )
    app = tmp_path / "big-app.bin"
    app.write_bytes(big)
    return app


def test_firmware_with_another_partition_layout_is_refused(tmp_path: Path) -> None:
    other = dataclasses.replace(
        BOARD,
        partitions=(*BOARD.partitions[:3], Partition("vfs", "data", "fat", 0x300000, 0x100000)),
    )
    path = tmp_path / "other-layout.bin"
    path.write_bytes(firmware.build_firmware(other))
    with pytest.raises(ImageError, match=r"partition table differs .*'vfs' data/fat at 0x300000"):
        write_firmware(str(tmp_path / "never-opened"), BOARD, path)


def _console(port: str, seconds: float) -> bytes:
    with serial.Serial(port, 115200, timeout=0.1) as p:
        end, buf = time.monotonic() + seconds, b""
        while time.monotonic() < end:
            buf += p.read(4096)
    return buf
