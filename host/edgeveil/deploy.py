"""`edgeveil deploy`: compile `device/` for the board and sync it, by content hash, safely.

    with open_link("/dev/ttyUSB0") as link:
        report = deploy(link, load_board("esp32-generic"))
    report.code_hash      # what the registry records
    report.files_sent     # 0 when nothing changed

Layout on the board's filesystem:

    /app/a/, /app/b/      two slots, each a complete compiled tree (veil/*.mpy ...)
    /app/a.json, b.json   each slot's manifest: code hash, .mpy version and arch, and the
                          SHA-256 of every file; present only once the slot is verified
    /app/current          "a" or "b": the slot that runs
    /boot.py              puts /app/<current> first on sys.path (every boot and soft reset,
                          so `mpremote exec "from veil import app"` works too)
    /main.py              runs the slot's `main` module if the tree has one
                          (device/main.py); the board's own main.py is replaced

Steps, each on what the board actually holds (the device hashes every file; nothing is
trusted from an earlier run):

1. Ask the device for its .mpy version and native arch; compile with mpy-cross for that
   arch (`-march`; for bytecode-only code the result is the same as without it), per file,
   cached by source content in ~/.cache/edgeveil/mpy (EDGEVEIL_CACHE_DIR;
   `edgeveil.mpy.compile_for`).
2. Hash both slots on the device. If the current slot already equals the compiled tree,
   nothing is written at all.
3. Otherwise fill the other slot: drop its manifest first (an unverified slot has none),
   keep files that already match there, copy files that match in the current slot on the
   device (not over the serial line), send the rest, remove files the tree no longer has.
4. List the slot on the device, hashing again every file written in step 3, and compare
   with the host's hashes: exactly the tree's files, each with the host's SHA-256. A
   file that differs is sent again once, then the deploy fails.
5. The device writes the slot's manifest from the hashes it computed, then boot.py and
   main.py if they differ; each goes to a temporary name and is renamed over the old
   file. Last, `/app/current` is switched the same way. Until that rename the previous
   version is the one that boots: a deploy killed at any point leaves it bootable, and
   the next deploy reuses whatever already arrived in the other slot.

Why two slots: the new version is complete and verified before anything the board boots
from changes, and the one rename that switches is atomic. Unchanged files are copied
from slot to slot on the board, not sent; and as deploys alternate, the spare slot holds
the version before last, so a small change usually finds all but the changed files
already there.

Renaming over an existing file is atomic on littlefs (MicroPython's default filesystem
on ESP32). FAT cannot rename over a file; there the old file is removed first.
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .boards import Board
from .deploy_device import HELPERS, LOADER
from .errors import DeployError, EdgeveilError, LinkError
from .link import Link
from .mpy import compile_for, mpy_cross_version
from .paths import device_dir

Progress = Callable[[int, int], None]
"""`progress(files_done, files_total)`: files placed in the new slot (sent or copied)."""

SLOTS = ("a", "b")
_COPY_BATCH = 8  # files copied on the device per exec (one round trip each)
ROOT = "/app"


@dataclass(frozen=True)
class DeployReport:
    """What `deploy` did on one board."""

    port: str
    board: str
    code_hash: str
    slot: str
    switched: bool
    files_sent: int
    files_copied: int
    files_unchanged: int
    files_removed: int
    bytes_sent: int
    mpy_version: str
    arch: str | None
    previous_hash: str | None
    seconds: float
    sent: tuple[str, ...] = field(default=())
    removed: tuple[str, ...] = field(default=())
    # What became of the code hash in the registry (`record_code`), if anything was tried.
    registry: str | None = None

    def summary(self) -> str:
        what = (
            f"{self.files_sent} sent ({self.bytes_sent} B), {self.files_unchanged} unchanged, "
            f"{self.files_removed} removed"
        )
        where = f"; {self.registry}" if self.registry else ""
        if not self.switched:
            return f"code {self.code_hash} already current in slot {self.slot}: {what}{where}"
        return f"code {self.code_hash} now current in slot {self.slot}: {what}{where}"

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["sent"], d["removed"] = list(self.sent), list(self.removed)
        return d


@dataclass(frozen=True)
class Plan:
    """How to turn slot `target` into the new tree (paths relative to the slot)."""

    target: str
    keep: tuple[str, ...]  # already right in the target slot
    copy: tuple[str, ...]  # right in the current slot: copied on the device
    send: tuple[str, ...]  # sent over the link
    stale: tuple[str, ...]  # in the target slot, not in the tree: deleted
    removed: tuple[str, ...]  # in the current version, not in the new one


def plan(
    want: dict[str, str],
    current: str | None,
    slots: dict[str, dict[str, str] | None],
) -> Plan:
    """The cheapest way to a verified copy of `want` ({path: sha256}) in the other slot.

    Args:
        want: the compiled tree's files and their hashes.
        current: the slot that runs now ("a", "b" or None).
        slots: what each slot holds on the device ({path: sha256}, None if missing).
    """
    target = "b" if current == "a" else "a"
    have = slots.get(target) or {}
    running = (slots.get(current) or {}) if current else {}
    keep, copy, send = [], [], []
    for rel, digest in sorted(want.items()):
        if have.get(rel) == digest:
            keep.append(rel)
        elif running.get(rel) == digest:
            copy.append(rel)
        else:
            send.append(rel)
    stale = sorted(set(have) - set(want))
    removed = sorted(set(running) - set(want))
    return Plan(target, tuple(keep), tuple(copy), tuple(send), tuple(stale), tuple(removed))


# --- deploying ---------------------------------------------------------------------------


def _check_device(link: Link, board: Board | None) -> tuple[dict, str | None]:
    """The device's info and the arch to compile for; refuses a mismatch."""
    info = link.device_info()
    if info["implementation"] != "micropython" or info["mpy"] is None:
        raise DeployError(
            f"{link.port}: the device runs {info['implementation']} {info['version']}, "
            "which does not report its .mpy version (needs MicroPython 1.19 or later)"
        )
    major, sub = mpy_cross_version()
    dev_major = int(info["mpy_version"].split(".")[0])
    if dev_major != major:
        raise DeployError(
            f"{link.port}: the device loads .mpy v{info['mpy_version']} (MicroPython "
            f"{info['version']}) but mpy-cross here emits v{major}.{sub}: flash a MicroPython "
            f"that loads v{major} or install a matching mpy-cross"
        )
    arch = info["arch"]
    if board is not None and arch is not None and arch != board.mpy_arch:
        hint = " (a virtual board: use --board esp32-virtual)" if arch in ("x64", "x86") else ""
        raise DeployError(
            f"{link.port}: board {board.name} runs {board.mpy_arch} code but the device "
            f"reports {arch}{hint}: wrong --board?"
        )
    return info, arch


def _slot_path(slot: str, rel: str = "") -> str:
    return f"{ROOT}/{slot}" + (f"/{rel}" if rel else "")


def _meta(code_hash: str, mpy_version: str, arch: str | None, board: Board | None) -> dict:
    """A slot manifest without its "files" (the device adds them from its own hashes)."""
    return {
        "format": 1,
        "code_hash": code_hash,
        "mpy_version": mpy_version,
        "arch": arch,
        "board": board.name if board else None,
        "tool": f"edgeveil {__version__}",
    }


@dataclass
class DeviceState:
    """What the board holds, as its `_state()` printed it (hashes computed on the device)."""

    current: str | None = None  # the slot /app/current names, if it names one that exists
    slots: dict[str, dict[str, str] | None] = field(default_factory=dict)
    manifests: dict[str, str | None] = field(default_factory=dict)  # each slot's code hash
    files: dict[str, str | None] = field(default_factory=dict)  # boot.py, main.py hashes


def parse_listing(text: str, into: dict[str, dict[str, str] | None]) -> None:
    """Add `f SLOT 'path' sha256` lines to `into[SLOT]`."""
    for line in text.splitlines():
        if line.startswith("f "):
            _, slot, rest = line.split(" ", 2)
            rel, digest = rest.rsplit(" ", 1)
            listing = into.setdefault(slot, {})
            assert listing is not None
            listing[ast.literal_eval(rel)] = digest


def parse_state(text: str) -> DeviceState:
    """The device's `_state()` output as a `DeviceState`.

    Raises:
        DeployError: a line it does not understand.
    """
    st = DeviceState(slots={s: None for s in SLOTS}, manifests={s: None for s in SLOTS})
    cur = None
    try:
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "cur":
                cur = ast.literal_eval(rest)
            elif kind == "slot":
                st.slots[rest] = {}
            elif kind == "manifest":
                slot, code = rest.split(" ", 1)
                st.manifests[slot] = ast.literal_eval(code)
            elif kind == "file":
                path, digest = rest.split(" ", 1)
                st.files[path] = None if digest == "None" else digest
            elif kind == "f":
                parse_listing(line, st.slots)
            elif line.strip():
                raise ValueError(line)
    except (ValueError, SyntaxError) as exc:
        raise DeployError(f"unexpected answer from the device: {str(exc)[:200]!r}") from exc
    if cur in SLOTS and st.slots.get(cur) is not None:
        st.current = cur
    return st


def deploy(
    link: Link,
    board: Board | None,
    src: Path | None = None,
    progress: Progress | None = None,
    cache: Path | None = None,
) -> DeployReport:
    """Compile `src` (default `device/`) for the device on `link` and make it current.

    Args:
        link: an open link to the board.
        board: the board file; the device's reported arch must match its `mpy_arch`
            (None: take the device's word).
        src: the MicroPython tree to deploy.
        progress: called as `progress(files_done, files_total)` while a slot is filled.
        cache: compiled-file cache (default `cache_dir()`).

    Returns:
        The `DeployReport`; `code_hash` is the compiled tree's `tree_hash`.

    Raises:
        DeployError: .mpy version or arch mismatch, or a file that does not verify.
        LinkError: the board was lost or refused a command (the previous version stays).
        VMError: mpy-cross rejected a source file.
    """
    try:
        return _deploy(link, board, src, progress, cache)
    except LinkError as exc:
        if exc.traceback and "NameError" in exc.traceback:  # our helpers are gone
            raise LinkError(
                f"{link.port}: the board reset during the deploy; the previous version stays "
                "current, run the deploy again",
                link.port,
                exc.traceback,
            ) from exc
        raise


def _deploy(
    link: Link,
    board: Board | None,
    src: Path | None,
    progress: Progress | None,
    cache: Path | None,
) -> DeployReport:
    start = time.monotonic()
    info, arch = _check_device(link, board)
    files, code_hash = compile_for(src or device_dir(), arch, cache)
    want = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    state = parse_state(link.exec(HELPERS + "_state()\n", timeout=30.0))
    current = state.current
    previous = state.manifests[current] if current else None
    p = plan(want, current, state.slots)
    meta = _meta(code_hash, info["mpy_version"], arch, board)

    def report(slot: str, switched: bool) -> DeployReport:
        sent = p.send if switched else ()
        return DeployReport(
            port=link.port,
            board=board.name if board else "-",
            code_hash=code_hash,
            slot=slot,
            switched=switched,
            files_sent=len(sent),
            files_copied=len(p.copy) if switched else 0,
            files_unchanged=len(want) - len(sent),
            files_removed=len(p.removed) if switched else 0,
            bytes_sent=sum(len(files[r]) for r in sent),
            mpy_version=info["mpy_version"],
            arch=arch,
            previous_hash=previous,
            seconds=time.monotonic() - start,
            sent=sent,
            removed=p.removed if switched else (),
        )

    if current is not None and state.slots[current] == want:
        if previous != code_hash:  # the right files, but no or an old manifest: record it
            link.exec("_mf(%r, %r)" % (_slot_path(current), meta))
        _write_loader(link, state)
        return report(current, False)

    _fill_slot(link, p, files, progress)
    _verify_slot(link, p, files, want, state.slots.get(p.target) or {})
    link.exec("_mf(%r, %r)" % (_slot_path(p.target), meta))
    _write_loader(link, state)
    link.exec("_put(%r, %r)" % (f"{ROOT}/current", p.target.encode()))
    if link.eval("_txt(%r)" % f"{ROOT}/current") != p.target:
        raise DeployError(f"{link.port}: {ROOT}/current did not switch to slot {p.target}")
    return report(p.target, True)


def _fill_slot(link: Link, p: Plan, files: dict[str, bytes], progress: Progress | None) -> None:
    """Step 3 of the module docstring."""
    slot = p.target
    link.exec("_mkdirs(%r)\n_rm(%r)" % (_slot_path(slot), f"{ROOT}/{slot}.json"))
    if p.stale:
        link.exec(
            "for _p in %r:\n _rm(_p)\n_prune(%r)"
            % ([_slot_path(slot, r) for r in p.stale], _slot_path(slot))
        )
    dirs = sorted({_slot_path(slot, r).rsplit("/", 1)[0] for r in p.copy + p.send})
    if dirs:
        link.exec("for _p in %r:\n _mkdirs(_p)" % dirs)
    total, done = len(p.copy) + len(p.send), 0
    if progress:
        progress(0, total)
    current = "b" if slot == "a" else "a"
    for i in range(0, len(p.copy), _COPY_BATCH):
        pairs = [
            (_slot_path(current, r), _slot_path(slot, r)) for r in p.copy[i : i + _COPY_BATCH]
        ]
        link.exec("for _a, _b in %r:\n _cp(_a, _b)" % pairs, 30.0)
        done += len(pairs)
        if progress:
            progress(done, total)
    for rel in p.send:
        link.write_file(_slot_path(slot, rel), files[rel])
        done += 1
        if progress:
            progress(done, total)


def _verify_slot(
    link: Link, p: Plan, files: dict[str, bytes], want: dict[str, str], before: dict[str, str]
) -> None:
    """Step 4: the slot must hold exactly the host's files. The device hashes again every
    file written in this deploy; a kept file it hashed at the start ("=") is as it was."""
    slot, fresh = p.target, set(p.copy + p.send)
    for attempt in range(2):
        got: dict[str, dict[str, str] | None] = {slot: {}}
        code = "_ls(%r, %r, %r)" % (_slot_path(slot), slot, fresh)
        parse_listing(link.exec(code, 30.0), got)
        have = {r: before.get(r, "?") if d == "=" else d for r, d in (got[slot] or {}).items()}
        if have == want:
            return
        bad = sorted(r for r in want if have.get(r) != want[r])
        extra = sorted(set(have) - set(want))
        if attempt == 1:
            raise DeployError(
                f"{link.port}: slot {slot} does not verify after writing: "
                f"{', '.join(bad + extra)[:300]} (the previous version stays current)"
            )
        if extra:
            link.exec("for _p in %r:\n _rm(_p)" % [_slot_path(slot, r) for r in extra])
        for rel in bad:
            link.write_file(_slot_path(slot, rel), files[rel])
        fresh = set(bad)


def _write_loader(link: Link, state: DeviceState) -> None:
    """boot.py and main.py, each replaced atomically and verified, when they differ."""
    for path, body in LOADER.items():
        digest = hashlib.sha256(body).hexdigest()
        if state.files.get(path) == digest:
            continue
        link.exec("_put(%r, %r)" % (path, body))
        if link.eval("_fh(%r)" % path) != digest:
            raise DeployError(f"{link.port}: {path} does not verify after writing")


def image_files(
    board: Board, src: Path | None = None, arch: str | None = None, cache: Path | None = None
) -> tuple[dict[str, bytes], str]:
    """The files a first deploy leaves on a board, for a filesystem image (`--factory`).

    Returns:
        ({"/app/a/veil/app.mpy": bytes, "/app/a.json": ..., "/app/current": b"a",
        "/boot.py": ..., "/main.py": ...}, code hash)
    """
    arch = arch or board.mpy_arch
    files, code_hash = compile_for(src or device_dir(), arch, cache)
    meta = _meta(code_hash, "%d.%d" % mpy_cross_version(), arch, board)
    meta["files"] = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    out = {_slot_path("a", rel): data for rel, data in files.items()}
    out[f"{ROOT}/a.json"] = json.dumps(meta).encode()
    out[f"{ROOT}/current"] = b"a"
    out.update(LOADER)
    return out, code_hash


_CODE_HASH = """
try:
    _c = open(%r + '/current').read().strip()
    import json
    with open(%r + '/' + _c + '.json') as _f:
        print(repr(json.load(_f).get('code_hash')))
except (OSError, ValueError, AttributeError):
    print(None)
""" % (ROOT, ROOT)


def deployed_code_hash(link: Any) -> str | None:
    """The code hash of the version the board boots (its current slot's manifest), or None
    if nothing was deployed; `link` is anything with `exec(code) -> output`."""
    out = link.exec(_CODE_HASH).strip()
    try:
        got = ast.literal_eval(out)
    except (ValueError, SyntaxError):
        return None
    return got if isinstance(got, str) else None


def record_code(
    link: Link, registry_path: Path | None, key_path: Path | None, code_hash: str
) -> str | None:
    """Record `code_hash` in the registry for the device the board is provisioned as.

    Nothing is tried when no registry file is at `registry_path` (or the default path), or
    the board holds no device id. A registry that cannot take it is reported, not raised:
    the deploy itself succeeded.

    Returns:
        What happened ("registry: recorded for device D", "registry: not recorded: why"),
        or None when nothing was tried.
    """
    from .provision import read_device
    from .registry import Registry, default_registry_path

    path = registry_path or default_registry_path()
    if not path.exists():
        return None
    try:
        dev_id = read_device(link, ("dev_id",)).get("dev_id")
    except (LinkError, DeployError, EdgeveilError):
        return None  # no esp32.NVS here: not a provisioned ESP32
    if dev_id is None:
        return None
    try:
        with Registry.open(path, key_path=key_path) as reg:
            reg.set_code_hash(dev_id, code_hash)
            upgraded = reg.upgraded_from
    except EdgeveilError as exc:
        return f"registry: not recorded for device {dev_id.hex()}: {exc}"
    said = f"registry: recorded for device {dev_id.hex()}"
    if upgraded is not None:  # as every command that opens the registry says it
        said += f" (registry {path} upgraded from schema version {upgraded} on the way)"
    return said


def remove_deployment(link: Link) -> None:
    """Delete both slots, their manifests and the pointer (boot.py and main.py stay)."""
    link.exec(HELPERS + "_rm(%r)\n" % ROOT)
