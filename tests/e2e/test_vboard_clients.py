"""Unmodified mpremote, ampy and pyserial against a running virtual board, as subprocesses.

Everything here goes through the board's pseudo-terminal exactly as it would through
/dev/ttyUSB0; nothing reaches into the board process.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import serial
from edgeveil.boards import load_board
from vbtest import VBoard, tool


def mpremote(vb: VBoard, *args: str, check: bool = True, timeout: float = 60):
    return tool("mpremote", "connect", vb.port, *args, check=check, timeout=timeout)


def exec_out(vb: VBoard, code: str) -> str:
    return mpremote(vb, "exec", code).stdout.strip()


def test_mpremote_copies_a_tree_and_reads_it_back(vboard: VBoard, tmp_path: Path) -> None:
    src = tmp_path / "app"
    (src / "lib" / "deep").mkdir(parents=True)
    (src / "main_x.py").write_text("print('hi from app')\n")
    blob = bytes(range(256)) * 40 + b"\x03\x04\x01\x00end"  # control bytes and NUL survive
    (src / "lib" / "deep" / "blob.bin").write_bytes(blob)

    mpremote(vboard, "fs", "cp", "-r", str(src), ":")
    listing = mpremote(vboard, "fs", "ls", ":app").stdout
    assert "main_x.py" in listing and "lib/" in listing
    assert "deep/" in mpremote(vboard, "fs", "ls", ":app/lib").stdout
    assert mpremote(vboard, "fs", "cat", ":app/main_x.py").stdout == "print('hi from app')\n"
    back = tmp_path / "back.bin"
    mpremote(vboard, "fs", "cp", ":app/lib/deep/blob.bin", str(back))
    assert back.read_bytes() == blob

    mpremote(vboard, "fs", "rm", ":app/main_x.py")
    assert "main_x.py" not in mpremote(vboard, "fs", "ls", ":app").stdout
    res = mpremote(vboard, "fs", "cat", ":app/main_x.py", check=False)
    assert res.returncode != 0


def test_mpremote_exec_and_run_see_only_the_board(vboard: VBoard, tmp_path: Path) -> None:
    root = exec_out(vboard, "import os; print(sorted(os.listdir('/')))")
    assert "boot.py" in root
    for host_dir in ("etc", "usr", "proc", "tmp", "home"):
        assert "'%s'" % host_dir not in root, root
    denied = exec_out(
        vboard, "try:\n open('/etc/passwd')\nexcept OSError as e:\n print('denied', e)"
    )
    assert denied.startswith("denied")
    assert exec_out(vboard, "import os; print(os.getcwd())") == "/"

    script = tmp_path / "hello.py"
    script.write_text("import machine\nprint('uid', machine.unique_id().hex())\n")
    out = mpremote(vboard, "run", str(script)).stdout.strip()
    assert out == "uid " + vboard.spec.mac.hex()
    assert exec_out(vboard, "print(6 * 7)") == "42"
    err = mpremote(vboard, "exec", "raise ValueError('boom')", check=False)
    assert err.returncode != 0 and "ValueError: boom" in err.stdout + err.stderr


def test_soft_reset_runs_boot_and_reset_reboots_the_chip(vboard: VBoard, tmp_path: Path) -> None:
    boot = tmp_path / "boot.py"
    boot.write_text(
        "import machine\n"
        "with open('causes.txt', 'a') as f:\n"
        "    f.write('%d\\n' % machine.reset_cause())\n"
    )
    mpremote(vboard, "fs", "cp", str(boot), ":boot.py")
    mpremote(vboard, "soft-reset")  # boot.py runs: the board's cause is still power-on
    mpremote(vboard, "reset")  # machine.reset(): a hard reset, then boot.py again
    time.sleep(0.5)
    causes = [int(x) for x in mpremote(vboard, "fs", "cat", ":causes.txt").stdout.split()]
    pwron, soft = 1, 5  # machine.PWRON_RESET, machine.SOFT_RESET on the ESP32 port
    assert causes[0] == pwron
    assert soft in causes and causes.index(soft) >= 1
    assert all(c == pwron for c in causes[: causes.index(soft)])


def test_pyserial_sees_the_rom_banner_and_main_py_after_reset(vboard: VBoard) -> None:
    # Closed: a hard reset finalises nothing, so an open file's data would be lost.
    main = "with open('main.py','w') as f:\n f.write(\"print('main says hello')\")"
    mpremote(vboard, "exec", main)
    with serial.Serial(vboard.port, 115200, timeout=0.2) as port:
        port.write(b"\r\x03\r\x01")
        _read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"import machine; machine.reset()\x04")
        text = _read_until(port, b"main says hello")
    assert b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)" in text
    assert text.index(b"ets ") < text.index(b"main says hello")


def test_ctrl_c_interrupts_a_running_main_py(vboard: VBoard) -> None:
    loop = "import time\\nwhile True:\\n time.sleep_ms(5)\\n"
    mpremote(vboard, "exec", "with open('main.py','w') as f:\n f.write('%s')" % loop)
    mpremote(vboard, "reset")
    time.sleep(0.5)
    # mpremote must interrupt the endless main.py to get a REPL at all.
    assert exec_out(vboard, "print('interrupted ok')") == "interrupted ok"


def test_ampy_put_get_ls_run_rmdir(vboard: VBoard, tmp_path: Path) -> None:
    def ampy(*args: str):
        return tool("ampy", "--port", vboard.port, *args)

    f = tmp_path / "data.txt"
    f.write_text("ampy was here\n")
    ampy("mkdir", "/d")
    ampy("put", str(f), "/d/data.txt")
    assert "/d/data.txt" in ampy("ls", "/d").stdout
    ampy("get", "/d/data.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "ampy was here\n"
    script = tmp_path / "s.py"
    script.write_text("print(sum(range(10)))\n")
    assert ampy("run", str(script)).stdout.strip() == "45"
    ampy("rmdir", "/d")
    assert "/d" not in ampy("ls", "/").stdout


def test_files_persist_across_power_cycles_and_read_on_the_host(
    make_vboard, tmp_path: Path
) -> None:
    from edgeveil import lfs

    vb = make_vboard()
    # Closed before the power goes: an open file's data is not committed (on a board too).
    mpremote(vb, "exec", "with open('keep.txt','w') as f: f.write('kept across restarts')")
    vb.stop()
    assert lfs.read_file(vb.flash, load_board("esp32-generic"), "/keep.txt") == (
        b"kept across restarts"
    )
    vb.restart()
    assert mpremote(vb, "fs", "cat", ":keep.txt").stdout == "kept across restarts"


def test_four_boards_at_once(make_vboard) -> None:
    boards = [make_vboard() for _ in range(4)]
    assert len({b.port for b in boards}) == 4
    results: dict[str, str] = {}

    def work(vb: VBoard) -> None:
        me = "import machine\nwith open('me.txt','w') as f:\n f.write(machine.unique_id().hex())"
        mpremote(vb, "exec", me)
        results[vb.port] = mpremote(vb, "fs", "cat", ":me.txt").stdout

    threads = [threading.Thread(target=work, args=(b,)) for b in boards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {results[b.port] for b in boards} == {b.spec.mac.hex() for b in boards}


def test_sigkill_mid_write_leaves_littlefs_and_nvs_consistent(make_vboard) -> None:
    vb = make_vboard()
    mpremote(vb, "exec", "import esp32; n = esp32.NVS('app'); n.set_i32('keep', 1234); n.commit()")
    writer = (
        "import os\n"
        "i = 0\n"
        "while True:\n"
        "    with open('grow.tmp', 'wb') as f:\n"
        "        f.write(bytes([i & 255]) * (1024 + (i % 7) * 700))\n"
        "    os.rename('grow.tmp', 'grow.bin')\n"
        "    i += 1\n"
    )
    with serial.Serial(vb.port, 115200, timeout=0.2) as port:
        port.write(b"\r\x03\r\x01")
        _read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(writer.encode() + b"\x04")
        _read_until(port, b"OK")
        time.sleep(1.0)
        vb.kill()
    _wait_vm_gone(vb.flash)
    vb.restart()
    out = exec_out(
        vb,
        "import esp32, os\n"
        "b = bytearray(0)\n"
        "d = open('grow.bin','rb').read()\n"
        "print(len(d), len(set(d)), esp32.NVS('app').get_i32('keep'), 'grow.tmp' in os.listdir())",
    )
    size, distinct, keep, _ = out.split()
    assert (int(size) - 1024) % 700 == 0 and int(distinct) == 1  # one whole version
    assert int(keep) == 1234


def _read_until(port: serial.Serial, marker: bytes, timeout: float = 15) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > end:
            raise AssertionError("no %r in console output: %r" % (marker, buf[-400:]))
        buf += port.read(4096)
    return buf


def _wait_vm_gone(flash: Path, timeout: float = 10) -> None:
    """Wait until no VM process has this flash file in its environment."""
    needle = ("EDGEVEIL_VB_FLASH=%s" % flash).encode()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = Path("/proc", pid, "environ").read_bytes()
            except OSError:
                continue
            if needle in env.split(b"\0"):
                alive = True
                break
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError("the VM for %s outlived its board" % flash)


SCAN = """
import bluetooth, time
n = 0
keys = set()
done = []
def irq(event, data):
    global n
    if event == 5:  # _IRQ_SCAN_RESULT: count, and keep 24 bits of each address
        a = data[1]
        n += 1
        keys.add(a[3] << 16 | a[4] << 8 | a[5])
    elif event == 6:  # _IRQ_SCAN_DONE
        done.append(1)
ble = bluetooth.BLE()
ble.active(True)
ble.irq(irq)
ble.gap_scan(%d, 30000, 30000)
while not done:
    time.sleep_ms(100)
print(n, len(keys))
"""


def test_replayed_advertisements_reach_a_scan_and_the_clock_carries_on(
    make_vboard, tmp_path: Path
) -> None:
    from edgeveil.vboard import rawreplay

    events = rawreplay.ble_footfall(seed=7, n_phones=25, minutes=10)
    replay = tmp_path / "raw.jsonl"
    rawreplay.write_raw_replay(replay, events)
    vb = make_vboard(replay=replay, speed=0)
    # The scan covers the whole recording (11 board minutes, no real time at speed 0).
    n, distinct = map(int, exec_out(vb, SCAN % (11 * 60 * 1000)).split())
    addrs = {e["addr"] for e in events}
    assert len(events) - 2 <= n <= len(events)  # the first may fall before the scan starts
    assert distinct <= len(addrs) and distinct >= len(addrs) - 2
    # The next boot (mpremote's soft reset) continues the board's clock: the recording is
    # over, so a new scan hears nothing instead of the replay starting again.
    n2, _ = map(int, exec_out(vb, SCAN % 60_000).split())
    assert n2 == 0


def test_a_slow_reader_loses_no_console_output(vboard: VBoard) -> None:
    # 200 KB of output against a reader that starts late and reads in small bites: the
    # board must hold the VM back (a UART's flow control), not drop bytes.
    with serial.Serial(vboard.port, 115200, timeout=0.5) as port:
        port.write(b"\r\x03\r\x01")
        marker = b"raw REPL; CTRL-B to exit\r\n>"
        seen = _read_until(port, marker)
        port.write(b"for i in range(25000):\n print('%07d' % i)\n\x04")
        time.sleep(1.0)
        buf = seen[seen.rindex(marker) + len(marker) :]  # what came with the prompt counts
        end = time.monotonic() + 60
        while b"\x04\x04>" not in buf[-8:] and time.monotonic() < end:
            buf += port.read(512)
    assert buf.startswith(b"OK") and buf.endswith(b"\x04\x04>"), (buf[:40], buf[-40:])
    lines = buf[2:-3].split(b"\n")[:-1]
    want = [b"%07d" % i for i in range(25000)]
    bad = next((i for i, (a, b) in enumerate(zip(lines, want, strict=False)) if a != b), None)
    assert bad is None and len(lines) == len(want), (len(lines), bad, lines[bad or 0 :][:3])
