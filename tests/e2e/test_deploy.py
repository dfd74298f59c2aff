"""`edgeveil deploy` and the link under it, against virtual boards.

Every check on the board goes through a fresh link: opening one soft-resets the board, so
boot.py (the deploy's loader) has put the current slot on sys.path, as after a power-up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import serial
from edgeveil.boards import load_board
from edgeveil.deploy import DeployReport, deploy
from edgeveil.errors import DeployError, LinkError
from edgeveil.link import Link, open_link
from edgeveil.mpy import compile_tree, tree_hash
from edgeveil.paths import device_dir
from vbtest import VBoard, tool

BOARD = load_board("esp32-virtual")
N_FILES = len([p for p in device_dir().rglob("*.py") if p.name != "manifest.py"])


@pytest.fixture(scope="session")
def mpy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mpy-cache")


def settle(board: VBoard) -> VBoard:
    """Wait for the prompt a booting board ends at (after boot.py and main.py).

    Connecting earlier interrupts the boot with Ctrl-C, which is fine on a board; the
    virtual board's VM can die of that Ctrl-C while it starts, and then restarts under the
    link (seen under load), so the tests start from a board at its prompt.
    """
    with serial.Serial(board.port, timeout=0.2) as console:
        seen, deadline, quiet = b"", time.monotonic() + 15, time.monotonic() + 1
        while not seen.endswith(b">>> ") and time.monotonic() < deadline:
            got = console.read(100)
            seen += got
            if got:
                quiet = time.monotonic() + 1
            elif time.monotonic() > quiet:  # booted before we looked: ask for a prompt
                console.write(b"\r")
                quiet = time.monotonic() + 1
    assert seen.endswith(b">>> "), seen
    return board


@pytest.fixture
def board(make_vboard: Callable[..., VBoard]) -> VBoard:
    return settle(make_vboard(board="esp32-virtual"))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A copy of device/ that a test may change; veil.MARK says which version runs."""
    tree = tmp_path / "device"
    shutil.copytree(device_dir(), tree)
    mark(tree, "v1")
    return tree


def mark(tree: Path, version: str) -> None:
    init = tree / "veil" / "__init__.py"
    text = init.read_text().split("\nMARK = ")[0]
    init.write_text(text + f"\nMARK = {version!r}\n")


def run(
    board: VBoard, tree: Path, cache: Path, via: str = "mpremote", **kw: object
) -> DeployReport:
    with open_link(board.port, via) as link:
        return deploy(link, BOARD, tree, cache=cache, **kw)  # type: ignore[arg-type]


def on_board(board: VBoard, code: str) -> str:
    with open_link(board.port) as link:
        return link.exec(code).strip()


def running(board: VBoard) -> tuple[str, str]:
    """(current slot, veil.MARK) as the board imports them after a reset."""
    out = on_board(board, "import veil\nprint(veil.__file__)\nprint(veil.MARK)").split()
    assert out[0].startswith("/app/") and out[0].endswith("/veil/__init__.mpy"), out
    return out[0].split("/")[2], out[1]


def test_first_deploy_sends_everything_and_the_app_imports_from_the_slot(
    board: VBoard, mpy_cache: Path, tmp_path: Path
) -> None:
    r = run(board, device_dir(), mpy_cache)
    assert (r.files_sent, r.files_unchanged, r.files_removed) == (N_FILES, 0, 0)
    assert r.switched and r.slot == "a" and r.previous_hash is None
    assert r.bytes_sent > 20000 and r.arch == "x64" and r.mpy_version == "6.3"
    # The code hash is what edgeveil.mpy gives for the same tree: the registry can check it.
    out = tmp_path / "mpy"
    assert r.code_hash == tree_hash(compile_tree(device_dir(), out), out)
    got = on_board(board, "from veil import app\nprint(app.__file__)")
    assert got == "/app/a/veil/app.mpy"
    # Every file on the board is byte for byte the host's compile.
    with open_link(board.port) as link:
        for f in sorted(out.rglob("*.mpy")):
            rel = f.relative_to(out).as_posix()
            assert link.sha256(f"/app/a/{rel}") == hashlib.sha256(f.read_bytes()).hexdigest()
        assert link.read_file("/app/current") == b"a"


def test_redeploy_of_the_unchanged_tree_sends_nothing(board: VBoard, mpy_cache: Path) -> None:
    first = run(board, device_dir(), mpy_cache)
    again = run(board, device_dir(), mpy_cache)
    assert (again.files_sent, again.bytes_sent, again.files_unchanged) == (0, 0, N_FILES)
    assert not again.switched and again.slot == first.slot
    assert again.code_hash == again.previous_hash == first.code_hash


def test_a_one_file_change_sends_one_file(board: VBoard, src: Path, mpy_cache: Path) -> None:
    first = run(board, src, mpy_cache)
    mark(src, "v2")
    r = run(board, src, mpy_cache)
    assert r.sent == ("veil/__init__.mpy",) and r.bytes_sent < 1000
    assert (r.files_copied, r.files_unchanged) == (N_FILES - 1, N_FILES - 1)
    assert r.switched and r.slot == "b" and r.previous_hash == first.code_hash
    assert r.code_hash != first.code_hash
    assert running(board) == ("b", "v2")
    # Back to v1: slot a still holds it, so nothing travels at all.
    mark(src, "v1")
    back = run(board, src, mpy_cache)
    assert back.files_sent == 0 and back.slot == "a" and back.code_hash == first.code_hash
    assert running(board) == ("a", "v1")


def test_a_stale_file_is_removed(board: VBoard, src: Path, mpy_cache: Path) -> None:
    (src / "veil" / "extra.py").write_text("X = 1\n")
    run(board, src, mpy_cache)
    assert on_board(board, "import veil.extra\nprint(veil.extra.X)") == "1"
    (src / "veil" / "extra.py").unlink()
    r = run(board, src, mpy_cache)
    assert r.removed == ("veil/extra.mpy",) and r.files_removed == 1 and r.files_sent == 0
    with open_link(board.port) as link:
        names = link.eval("__import__('os').listdir('/app/%s/veil')" % r.slot)
        assert isinstance(names, list) and "extra.mpy" not in names and "app.mpy" in names
        with pytest.raises(LinkError, match="ImportError"):
            link.exec("import veil.extra")


def test_a_file_corrupted_on_the_device_is_detected_and_sent_again(
    board: VBoard, mpy_cache: Path
) -> None:
    first = run(board, device_dir(), mpy_cache)
    with open_link(board.port) as link:
        good = link.read_file("/app/a/veil/cbor.mpy")
        link.write_file("/app/a/veil/cbor.mpy", good[:100] + b"\xffgarbage" + good[108:])
    r = run(board, device_dir(), mpy_cache)
    assert r.sent == ("veil/cbor.mpy",) and r.switched and r.slot == "b"
    assert r.code_hash == first.code_hash
    with open_link(board.port) as link:
        assert link.read_file("/app/b/veil/cbor.mpy") == good
    assert on_board(board, "from veil import cbor\nprint(cbor.__file__)") == "/app/b/veil/cbor.mpy"


def test_every_file_is_verified_after_writing(board: VBoard, src: Path, mpy_cache: Path) -> None:
    run(board, src, mpy_cache)
    mark(src, "v2")

    def flaky(link: Link, times: int) -> None:
        """Make the link damage the next `times` writes of veil/__init__.mpy."""
        write = link.write_file
        left = [times]

        def damaged(path: str, data: bytes) -> None:
            if path.endswith("/veil/__init__.mpy") and left[0] > 0:
                left[0] -= 1
                data = data[:-1] + bytes([data[-1] ^ 1])
            write(path, data)

        link.write_file = damaged  # type: ignore[method-assign]

    with open_link(board.port) as link:
        flaky(link, 2)  # the write and its one retry: the deploy fails
        with pytest.raises(DeployError, match="slot b does not verify.*veil/__init__.mpy"):
            deploy(link, BOARD, src, cache=mpy_cache)
    assert running(board) == ("a", "v1")
    with open_link(board.port) as link:
        flaky(link, 1)  # damaged once, sent again, verified
        r = deploy(link, BOARD, src, cache=mpy_cache)
    assert r.switched and running(board) == ("b", "v2")


def test_a_deploy_killed_half_way_leaves_the_previous_version_running(
    board: VBoard, src: Path, mpy_cache: Path
) -> None:
    run(board, src, mpy_cache)
    for py in src.rglob("*.py"):  # every file changes, so every file is sent
        py.write_text(py.read_text() + "\n_V2 = 2\n")
    mark(src, "v2")
    calls: list[tuple[int, int]] = []

    def cut_power(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 5:
            board.kill()

    with pytest.raises(LinkError, match="lost the board"):
        run(board, src, mpy_cache, progress=cut_power)
    assert calls[-1] == (5, N_FILES)
    board.restart()
    settle(board)
    assert running(board) == ("a", "v1")
    assert on_board(board, "from veil import app\nprint(app.__file__)") == "/app/a/veil/app.mpy"
    # The next deploy completes, reusing the five files that had arrived.
    r = run(board, src, mpy_cache)
    assert r.switched and r.slot == "b" and r.files_sent == N_FILES - 5
    assert running(board) == ("b", "v2")


def test_the_loader_runs_the_trees_main_from_the_current_slot(
    board: VBoard, src: Path, mpy_cache: Path
) -> None:
    (src / "main.py").write_text(
        "import veil\nwith open('/booted', 'w') as f:\n    f.write(veil.__file__)\n"
    )
    run(board, src, mpy_cache)
    board.restart()  # a power-up runs boot.py, then main.py
    settle(board)  # a link opened earlier would interrupt main.py, as on a board
    with open_link(board.port) as link:
        assert link.read_file("/booted") == b"/app/a/veil/__init__.mpy"


def test_deploy_through_ampy(board: VBoard, mpy_cache: Path) -> None:
    r = run(board, device_dir(), mpy_cache, via="ampy")
    assert r.files_sent == N_FILES and r.slot == "a"
    assert run(board, device_dir(), mpy_cache, via="ampy").files_sent == 0
    assert on_board(board, "from veil import app\nprint(app.__file__)") == "/app/a/veil/app.mpy"


def test_deploy_over_rfc2217(make_vboard: Callable[..., VBoard], mpy_cache: Path) -> None:
    board = settle(make_vboard(board="esp32-virtual", rfc2217=True))
    assert board.rfc2217
    with open_link(board.rfc2217) as link:
        r = deploy(link, BOARD, device_dir(), cache=mpy_cache)
    assert r.files_sent == N_FILES and r.port == board.rfc2217
    assert on_board(board, "from veil import app\nprint(app.__file__)") == "/app/a/veil/app.mpy"


def test_a_board_of_another_arch_is_refused(board: VBoard, mpy_cache: Path) -> None:
    with open_link(board.port) as link:
        with pytest.raises(DeployError, match="esp32-generic runs xtensawin .* reports x64"):
            deploy(link, load_board("esp32-generic"), device_dir(), cache=mpy_cache)
    assert on_board(board, "import os\nprint('app' in os.listdir('/'))") == "False"


@pytest.mark.parametrize("via", ["mpremote", "ampy"])
def test_a_port_held_by_another_process_is_busy(board: VBoard, via: str) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import serial, sys, time\n"
            "s = serial.Serial(sys.argv[1], exclusive=True)\n"
            "print('held', flush=True)\ntime.sleep(60)",
            board.port,
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            with pytest.raises(LinkError, match="port busy") as err:
                open_link(board.port, via)
            assert err.value.port == board.port and board.port in str(err.value)
        finally:
            holder.kill()
    with open_link(board.port, via) as link:  # free again
        assert link.eval("6 * 7") == 42


@pytest.mark.parametrize("via", ["mpremote", "ampy"])
def test_a_missing_port_is_named(tmp_path: Path, via: str) -> None:
    port = str(tmp_path / "ttyUSB9")
    with pytest.raises(LinkError, match="no such port") as err:
        open_link(port, via)
    assert port in str(err.value)


def test_a_board_without_firmware_gives_no_repl_answer(
    make_vboard: Callable[..., VBoard],
) -> None:
    blank = make_vboard(firmware=False)  # the ROM's invalid-header boot loop, printing on
    with pytest.raises(LinkError, match="no MicroPython REPL answered within 2 s") as err:
        open_link(blank.port, connect_timeout=2)
    assert "invalid header" in str(err.value)


def test_a_device_exception_carries_its_traceback(board: VBoard) -> None:
    with open_link(board.port) as link:
        with pytest.raises(LinkError, match="ZeroDivisionError") as err:
            link.exec("def f():\n    return 1 // 0\nf()")
        assert err.value.traceback and "line 2, in f" in err.value.traceback
        with pytest.raises(LinkError, match="ENOENT"):
            link.read_file("/no/such/file")
        assert link.eval("1 + 1") == 2  # the link is still usable


def test_cli_deploy_one_board_and_a_jig(
    make_vboard: Callable[..., VBoard],
    tmp_path: Path,
    mpy_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEVEIL_CACHE_DIR", str(mpy_cache))
    a, b = (settle(make_vboard(board="esp32-virtual")) for _ in range(2))
    res = tool("edgeveil", "deploy", "--port", a.port, "--board", "esp32-virtual", "--json")
    one = json.loads(res.stdout)
    assert one["files_sent"] == N_FILES and len(one["code_hash"]) == 64
    res = tool("edgeveil", "deploy", "--ports", f"{a.port},{b.port}", "--via", "ampy")
    assert one["code_hash"] in res.stdout and "2 ok, 0 failed" in res.stdout
    # One port of the jig is missing: the other is deployed, the exit code says one failed.
    gone = str(tmp_path / "ttyUSB7")
    res = tool("edgeveil", "deploy", "--ports", f"{a.port},{gone}", "--json", check=False)
    assert res.returncode == 2
    boards = {x["port"]: x for x in json.loads(res.stdout)["boards"]}
    assert boards[a.port]["ok"] and boards[a.port]["result"]["files_sent"] == 0
    assert not boards[gone]["ok"] and "no such port" in boards[gone]["message"]
    res = tool("edgeveil", "deploy", "--port", a.port, "--board", "esp32-generic", check=False)
    assert res.returncode == 2 and "wrong --board" in res.stderr
