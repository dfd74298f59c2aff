"""`edgeveil.deploy` without a board: the sync plan, the device's state report, the
device-side helpers (run in the real MicroPython VM) and the compile cache.

The whole deploy, interrupted and not, runs against virtual boards in
tests/e2e/test_deploy.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from edgeveil import deploy as dep
from edgeveil import deploy_device, mpy
from edgeveil.boards import load_board
from edgeveil.errors import DeployError
from edgeveil.mpy import compile_for, compile_tree, tree_hash
from edgeveil.paths import device_dir
from edgeveil.vm import run_code

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def test_first_deploy_sends_everything_to_slot_a() -> None:
    p = dep.plan({"x.mpy": H1, "d/y.mpy": H2}, None, {"a": None, "b": None})
    assert p.target == "a" and p.send == ("d/y.mpy", "x.mpy")
    assert p.keep == p.copy == p.stale == p.removed == ()


def test_a_change_copies_what_the_running_slot_has_and_sends_the_rest() -> None:
    running = {"x.mpy": H1, "y.mpy": H2, "gone.mpy": H3}
    p = dep.plan({"x.mpy": H1, "y.mpy": H3}, "a", {"a": running, "b": None})
    assert p.target == "b" and p.copy == ("x.mpy",) and p.send == ("y.mpy",)
    assert p.removed == ("gone.mpy",) and p.stale == ()


def test_what_the_spare_slot_already_holds_is_kept_and_its_strays_deleted() -> None:
    # Slot b holds the version before last plus the start of an interrupted deploy.
    spare = {"x.mpy": H1, "y.mpy": H1, "old.mpy": H1}
    p = dep.plan({"x.mpy": H1, "y.mpy": H2}, "a", {"a": {"x.mpy": H2, "y.mpy": H2}, "b": spare})
    assert p.keep == ("x.mpy",) and p.copy == ("y.mpy",) and p.send == ()
    assert p.stale == ("old.mpy",)


def test_parse_state_reads_the_devices_report() -> None:
    text = (
        "cur 'b'\n"
        "slot a\nf a 'veil/x.mpy' " + H1 + "\n"
        "f a 'it\\'s a \\n name.mpy' " + H2 + "\n"
        "manifest a 'abc'\n"
        "slot b\nmanifest b None\n"
        "file /boot.py " + H3 + "\nfile /main.py None\n"
    )
    st = dep.parse_state(text)
    assert st.current == "b"
    assert st.slots == {"a": {"veil/x.mpy": H1, "it's a \n name.mpy": H2}, "b": {}}
    assert st.manifests == {"a": "abc", "b": None}
    assert st.files == {"/boot.py": H3, "/main.py": None}
    # A pointer to a slot that does not exist means no current slot.
    assert dep.parse_state("cur 'b'\nslot a\n").current is None
    with pytest.raises(DeployError, match="unexpected answer"):
        dep.parse_state("cur 'a'\nMemoryError: memory allocation failed\n")


def device(code: str, cwd: Path) -> str:
    """Run the deploy's device helpers, then `code`, in the MicroPython VM."""
    res = run_code(deploy_device.HELPERS + code, 100 * 1024, path=[], cwd=cwd)
    assert res.ok, res.stdout.decode() + res.stderr.decode()
    return res.stdout.decode()


def test_the_device_helpers_list_copy_remove_and_replace(tmp_path: Path) -> None:
    slot = tmp_path / "a"
    names = {"veil/x.mpy": b"\x00" * 700, 'veil/sub/it\'s "q" 日本.mpy': b"q", "top.mpy": b""}
    for rel, data in names.items():
        (slot / rel).parent.mkdir(parents=True, exist_ok=True)
        (slot / rel).write_bytes(data)
    got: dict[str, dict[str, str] | None] = {}
    dep.parse_listing(device("_ls(%r, 'a')" % str(slot), tmp_path), got)
    assert got == {"a": {r: hashlib.sha256(d).hexdigest() for r, d in names.items()}}

    b = tmp_path / "b"
    cur = str(tmp_path / "cur")
    code = "_mkdirs(%r)\n_cp(%r, %r)\n_put(%r, b'new')\n_put(%r, b'newer')" % (
        str(b / "veil"),
        str(slot / "veil/x.mpy"),
        str(b / "veil/x.mpy"),
        cur,
        cur,
    )
    device(code, tmp_path)
    assert (b / "veil/x.mpy").read_bytes() == b"\x00" * 700
    assert (tmp_path / "cur").read_bytes() == b"newer" and not (tmp_path / "cur.tmp").exists()
    device(
        "_rm(%r)\n_prune(%r)" % (str(slot / 'veil/sub/it\'s "q" 日本.mpy'), str(slot)), tmp_path
    )
    assert not (slot / "veil/sub").exists() and (slot / "veil/x.mpy").exists()
    device("_rm(%r)" % str(slot), tmp_path)
    assert not slot.exists()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    tree = tmp_path / "device"
    shutil.copytree(device_dir(), tree)
    return tree


def test_compile_for_matches_compile_tree_and_caches_per_file(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    files, code_hash = compile_for(src, "x64", cache)
    out = tmp_path / "ref"
    ref = compile_tree(src, out, "x64")
    assert code_hash == tree_hash(ref, out)
    assert files == {f.relative_to(out).as_posix(): f.read_bytes() for f in ref}
    assert "manifest.mpy" not in files and "veil/app.mpy" in files

    compiled: list[Path] = []
    real = mpy.compile_tree

    def counting(s: Path, o: Path, arch: str | None = None) -> list[Path]:
        made = real(s, o, arch)
        compiled.extend(made)
        return made

    monkeypatch.setattr(mpy, "compile_tree", counting)
    assert compile_for(src, "x64", cache) == (files, code_hash)
    assert compiled == []  # all from the cache
    (src / "veil" / "cbor.py").write_text((src / "veil" / "cbor.py").read_text() + "\nZ = 1\n")
    files2, hash2 = compile_for(src, "x64", cache)
    assert [p.name for p in compiled] == ["cbor.mpy"] and hash2 != code_hash
    assert {k for k in files if files[k] != files2[k]} == {"veil/cbor.mpy"}
    # A damaged cache entry is not used: it is compiled again.
    for entry in cache.rglob("*.mpy"):
        entry.write_bytes(b"garbage")
    compiled.clear()
    assert compile_for(src, "x64", cache) == (files2, hash2)
    assert len(compiled) == len(files2)


def test_image_files_lay_out_a_first_deploy(tmp_path: Path) -> None:
    board = load_board("esp32-generic")
    files, code_hash = dep.image_files(board, device_dir(), cache=tmp_path / "cache")
    assert files["/app/current"] == b"a" and files["/boot.py"] == deploy_device.BOOT_PY
    assert "/app/a/veil/app.mpy" in files and files["/main.py"] == deploy_device.MAIN_PY
    manifest = json.loads(files["/app/a.json"])
    assert manifest["code_hash"] == code_hash and manifest["arch"] == "xtensawin"
    app = files["/app/a/veil/app.mpy"]
    assert manifest["files"]["veil/app.mpy"] == hashlib.sha256(app).hexdigest()
