"""Factory provisioning: firmware, the device's keys (an NVS image) and the deployed code
(a littlefs image) written to a blank board in one esptool pass, and its resumption.

    with Registry.open(db) as reg:
        report = provision_factory("/dev/ttyUSB0", board, reg, policy, Path("fw.bin"))
        settled = resume_factory("/dev/ttyUSB0", board, reg, policy, Path("fw.bin"))

Order, so that no board ever holds keys the registry lacks and a refusal costs nothing:

1. The firmware file is checked for the board (`flash.load_firmware`: a wrong-chip image
   is refused here, before any secret exists or the registry is touched).
2. The code image: `deploy.image_files(board)` (what a first deploy leaves: slot `a`, its
   manifest, `/app/current`, the loader's boot.py and main.py) and the message counter
   record (`/veil.ctr` at counter 0, `provision.counter_record`: the device refuses to
   send without it) as a littlefs image of the board's `vfs` partition
   (`lfs.make_vfs_image`). The image replaces the whole filesystem: a board that had a
   counter gets a new one together with new keys, so no nonce is ever reused.
3. The secrets are generated, the policy compiled and authenticated for this device, and
   the NVS image of namespace "veil" built (`nvs.make_nvs`, ESP-IDF's own generator) at
   the size of the board's `nvs` partition.
4. The port is opened and the chip that answers identified (`flash.open_chip`: the
   board's chip with enough flash, or nothing is written), and its NVS partition read: a
   board that already holds a device id is refused unless `force` (then its filesystem's
   state files, the ε budget above all, are carried into the new image). Only now is the
   device recorded in the registry as `pending` (with a keyed hash of its MAC).
5. One esptool pass writes the firmware's regions, the NVS image and the littlefs image,
   each MD5-verified by the chip; then the NVS partition is read back (esptool
   read_flash), parsed (`nvs.read_nvs`) and compared with the secrets. Only then is the
   entry made `active` (with the code hash), the chip hard-reset, and the images written
   to `out_dir` if one is given (never for a device that did not become active).

A refusal before the write (port, wrong chip, too little flash, keys already there)
records nothing. A failure during or after the write, or a killed process, leaves the
entry `pending`, and a half-written board may not boot MicroPython at all: `resume_factory`
(`edgeveil provision --factory --firmware F --resume`) settles it through the ROM loader
alone. It finds the pending entries recorded with the MAC of the chip that answers and
reads the NVS partition:

- none of an entry's secrets are there (as parsed, nor anywhere in the raw partition):
  the board never held them, and the entry is deleted ("rolled back");
- any of them are: the pass is written again with the same keys ("completed"), after
  checking that the policy given is the one the entry was provisioned with. What the
  board's filesystem already holds outside the code (its message counter, ε budget,
  configuration; read block by block, `lfs.read_vfs`; a failed read fails the resume) is
  carried into the new image, so a board that ran with these keys never reuses a nonce
  or gets its budget back. The counter carried is recorded in the registry first: should
  that pass be cut off too and tear the filesystem, the next resume knows the board sent
  messages, and refuses rather than start again from counter 0.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boards import Board, Partition
from .demo import DeviceSecrets
from .errors import EdgeveilError, ImageError
from .flash import Chip, ProgressCallback, load_firmware, open_chip
from .lfs import make_vfs_image, read_vfs, vfs_partition
from .nvs import make_nvs, read_nvs
from .partitions import find_partition
from .policy import compile_policy
from .provision import (
    COUNTER_PATH,
    NAMESPACE,
    ProvisionError,
    counter_record,
    is_pending,
    read_counter_record,
    wiped_note,
)

Say = Callable[[str], None]


@dataclass(frozen=True)
class FactoryReport:
    dev_id: str
    board: str
    port: str
    mac: str
    policy_hash: str
    code_hash: str
    regions: tuple[tuple[int, int], ...]  # (flash offset, length) of each region written
    bytes_written: int
    out_dir: str | None
    status: str
    seconds: float

    def summary(self) -> str:
        return (
            "factory-provisioned %s (%s), firmware + keys + code %s in one pass, "
            "%.1f KiB verified, %.2f s%s"
            % (
                self.dev_id,
                self.board,
                self.code_hash[:16],
                self.bytes_written / 1024,
                self.seconds,
                ", images in %s" % self.out_dir if self.out_dir else "",
            )
        )

    def as_json(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["regions"] = [{"offset": o, "length": n} for o, n in self.regions]
        out["seconds"] = round(self.seconds, 3)
        return out


def _write_private(path: Path, data: bytes) -> None:
    """A file only its owner can read (the NVS image holds the device's keys in clear)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_out(
    out_dir: Path,
    dev_id: str,
    regions: list[tuple[int, bytes]],
    nvs_at: int,
    vfs_at: int,
    firmware_path: Path,
) -> Path:
    """nvs.bin, vfs.bin and flash_args (esptool's format) in `out_dir`/<dev_id>/."""
    where = out_dir / dev_id
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    nvs, vfs = dict(regions)[nvs_at], dict(regions)[vfs_at]
    _write_private(where / "nvs.bin", nvs)
    _write_private(where / "vfs.bin", vfs)
    fw_at = min(at for at, _ in regions if at not in (nvs_at, vfs_at))
    args = f"{fw_at:#x} {firmware_path.resolve()}\n{nvs_at:#x} nvs.bin\n{vfs_at:#x} vfs.bin\n"
    (where / "flash_args").write_text(args)
    return where


@dataclass(frozen=True)
class _Plan:
    """What a factory pass writes besides the device's own images: checked once per run."""

    firmware: Path
    fw_regions: list[tuple[int, bytes]]
    nvs: Partition
    vfs: Partition
    code: dict[str, bytes]  # the code image's files, without any device state
    code_hash: str


def _plan(board: Board, firmware_path: Path | str, src: Path | None) -> _Plan:
    from .deploy import image_files

    fw_path = Path(firmware_path)
    info = load_firmware(fw_path, board)  # wrong chip: refused before anything else
    files, code_hash = image_files(board, src)
    return _Plan(
        fw_path,
        info.regions(board),
        find_partition(board.partitions, "nvs"),
        vfs_partition(board),
        files,
        code_hash,
    )


def _device_regions(
    plan: _Plan, secrets: DeviceSecrets, policy: dict[str, Any], state: dict[str, bytes]
) -> tuple[list[tuple[int, bytes]], dict[str, bytes], str]:
    """(regions to write, NVS values, policy hash) for one device; `state` is the device
    state files its filesystem keeps (at least the counter record)."""
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    values = secrets.nvs_values(blob)
    nvs_image = make_nvs({NAMESPACE: values}, plan.nvs.size)
    vfs_image = make_vfs_image({**plan.code, **state}, plan.vfs.size)
    regions = [*plan.fw_regions, (plan.nvs.offset, nvs_image), (plan.vfs.offset, vfs_image)]
    regions.sort(key=lambda r: r[0])
    return regions, values, hashlib.sha256(blob).hexdigest()


def provision_factory(
    port: str,
    board: Board,
    registry: Any,
    policy: dict[str, Any],
    firmware_path: Path | str,
    progress: Say | None = None,
    out_dir: Path | str | None = None,
    src: Path | None = None,
    write_progress: ProgressCallback | None = None,
    force: bool = False,
) -> FactoryReport:
    """Firmware, keys and code to a blank board in one pass; see the module docstring.

    Args:
        write_progress: called with (bytes written, bytes to write) during the pass.
        force: replace the keys of a board whose NVS already holds a device id (its
            registry entry, if any, is marked `wiped`); without it such a board is refused.

    Raises:
        ImageError: the firmware file is wrong for the board, or the code does not fit.
        FlashError: port missing or busy, no or wrong chip, a write or verify failure.
        ProvisionError: the board is already provisioned (without `force`), or the NVS read
            back does not hold the secrets (the entry stays pending).
        RegistryError: no master key, or the registry refused.
    """
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    plan = _plan(board, firmware_path, src)
    if out_dir is not None:  # a directory that cannot be made fails before the board
        Path(out_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    secrets = DeviceSecrets.generate()
    dev_id = secrets.dev_id.hex()
    written_to: Path | None = None
    with open_chip(port, board, write_progress) as chip:
        held = _parse_nvs(chip.read(plan.nvs.offset, plan.nvs.size), strict=False).get("dev_id")
        if held is not None and not force:
            raise ProvisionError(
                "%s: the board is already provisioned as %s; %s; nothing was written"
                % (
                    port,
                    held.hex(),
                    "its entry is pending: `--factory --resume` settles it"
                    if is_pending(registry, held)
                    else "use --force to replace its keys and code",
                )
            )
        state = {COUNTER_PATH: counter_record()}
        if held is not None:
            # Forced: new keys (so a new counter), but the rest of the board's state, its
            # spent ε budget above all, stays with the board.
            kept = _board_state(chip, plan) or {}
            state = {**kept, **state}
        regions, values, policy_hash = _device_regions(plan, secrets, policy, state)
        say("code image: %d files, code %s" % (len(plan.code) + len(state), plan.code_hash[:16]))
        registry.add_pending(
            secrets.dev_id, board.name, secrets, policy_hash, port, mac=_mac_bytes(chip.mac)
        )
        say("recorded %s as pending" % dev_id)
        try:
            wiped = _write_and_activate(chip, plan, registry, secrets.dev_id, regions, values)
        except EdgeveilError as exc:
            exc.args = (
                "%s (device %s stays pending in the registry; `edgeveil provision "
                "--factory --firmware %s --port %s --resume` settles it)"
                % (exc, dev_id, plan.firmware, port),
            )
            raise
        done = "written, verified, confirmed and active: %d regions" % len(regions)
        say(done + wiped_note(wiped))
        if held is not None:
            _mark_wiped(registry, held)  # the board no longer holds the old keys
    if out_dir is not None:
        # Only now: images of a device that never became active would let anyone flash a
        # board with keys a rolled-back registry no longer has.
        try:
            written_to = _write_out(
                Path(out_dir), dev_id, regions, plan.nvs.offset, plan.vfs.offset, plan.firmware
            )
        except OSError as exc:
            raise EdgeveilError(
                "device %s is provisioned and active, but its images could not be kept: "
                "cannot write %s: %s" % (dev_id, exc.filename or out_dir, exc.strerror or exc)
            ) from exc
        say("images written to %s" % written_to)
    return FactoryReport(
        dev_id=dev_id,
        board=board.name,
        port=port,
        mac=chip.mac,
        policy_hash=policy_hash,
        code_hash=plan.code_hash,
        regions=tuple((at, len(d)) for at, d in regions),
        bytes_written=sum(len(d) for _, d in regions),
        out_dir=str(written_to) if written_to else None,
        status="active",
        seconds=time.monotonic() - t0,
    )


def _write_and_activate(
    chip: Chip,
    plan: _Plan,
    registry: Any,
    dev_id: bytes,
    regions: list[tuple[int, bytes]],
    values: dict[str, bytes],
) -> list[str]:
    """The pass, the NVS read back and compared, then the entry made active; returns the
    chip's earlier devices this marked wiped (`Registry.activate`)."""
    chip.write(regions)
    got = _parse_nvs(chip.read(plan.nvs.offset, plan.nvs.size), strict=True)
    wrong = sorted(k for k, v in values.items() if got.get(k) != v)
    if wrong:
        raise ProvisionError(f"{chip.port}: NVS read-back mismatch for {', '.join(wrong)}")
    registry.set_code_hash(dev_id, plan.code_hash)
    return registry.activate(dev_id)


def resume_factory(
    port: str,
    board: Board,
    registry: Any,
    policy: dict[str, Any],
    firmware_path: Path | str,
    progress: Say | None = None,
    src: Path | None = None,
    write_progress: ProgressCallback | None = None,
) -> dict[str, str]:
    """Settle the pending entries of the board on `port` through its ROM loader; see the
    module docstring.

    Returns:
        {dev_id hex: "completed" | "rolled back" | "wiped"} ("wiped": the board's earlier
        device whose keys the completed entry replaced); empty if no pending entry has this
        board's MAC.

    Raises:
        ImageError, FlashError: as `provision_factory` (nothing is settled then).
        ProvisionError: the policy given is not the entry's, the board's NVS holds parts
            of several pending entries, its counter record is not sound, or the board
            sent messages under the entry's keys and its filesystem is lost (all left
            pending, the board untouched).
    """
    say = progress or (lambda _msg: None)
    plan = _plan(board, firmware_path, src)
    done: dict[str, str] = {}
    with open_chip(port, board, write_progress) as chip:
        mine = [r for r in registry.find_mac(_mac_bytes(chip.mac)) if r.status == "pending"]
        if not mine:
            return done
        raw = chip.read(plan.nvs.offset, plan.nvs.size)
        parsed = _parse_nvs(raw, strict=False)
        held = [r for r in mine if _holds_any(raw, parsed, registry.secrets(r.dev_id))]
        if len(held) > 1:
            raise ProvisionError(
                "%s: the board's NVS holds parts of several pending devices (%s); "
                "settle them by hand" % (port, ", ".join(r.dev_id.hex() for r in held))
            )
        # The entry to complete is checked and its images built before anything is
        # settled: a refusal leaves every entry pending and the board untouched.
        plans = [(rec, *_resume_regions(chip, plan, registry, rec, policy)) for rec in held]
        for rec in mine:
            if rec not in held:
                registry.delete_pending(rec.dev_id)
                done[rec.dev_id.hex()] = "rolled back"
                say("%s: none of its keys reached the board: rolled back" % rec.dev_id.hex())
        for rec, regions, values, carried in plans:
            if carried > 0:  # a floor for the counter, should this pass be cut too
                registry.update_counter(rec.dev_id, carried - 1)
            wiped = _write_and_activate(chip, plan, registry, rec.dev_id, regions, values)
            done[rec.dev_id.hex()] = "completed"
            done.update(dict.fromkeys(wiped, "wiped"))
            say("%s: written again, confirmed and active" % rec.dev_id.hex() + wiped_note(wiped))
    return done


def _mark_wiped(registry: Any, dev_id: bytes) -> None:
    try:
        registry.mark_wiped(dev_id)
    except EdgeveilError:
        pass  # a device this registry never knew, or one still pending elsewhere


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _parse_nvs(data: bytes, strict: bool) -> dict[str, bytes]:
    """Namespace "veil" of an NVS partition read from a chip; a partition too damaged to
    parse reads as empty when not `strict` (the raw search in `_holds_any` still looks)."""
    try:
        got = read_nvs(data, strict=strict).get(NAMESPACE, {})
    except ImageError:
        if strict:
            raise
        return {}
    return {k: v for k, v in got.items() if isinstance(v, bytes)}


def _holds_any(raw: bytes, parsed: dict[str, bytes], secrets: DeviceSecrets) -> bool:
    """Whether any of the device's secrets is on the board: parsed from its NVS, or
    anywhere in the raw partition (a page torn mid-write may not parse)."""
    mine = {
        "dev_id": secrets.dev_id,
        "cose_key": secrets.cose_key,
        "base_iv": secrets.base_iv,
        "pseudo_key": secrets.pseudo_key,
        "policy_key": secrets.policy_key,
    }
    return any(parsed.get(k) == v or v in raw for k, v in mine.items())


def _resume_regions(
    chip: Chip, plan: _Plan, registry: Any, rec: Any, policy: dict[str, Any]
) -> tuple[list[tuple[int, bytes]], dict[str, bytes], int]:
    """(regions, NVS values, counter carried) to complete `rec` on the board, its state
    kept.

    Raises:
        ProvisionError: the policy is not the entry's; the counter record is not sound; or
            the registry knows the board sent messages under these keys (a pass of an
            earlier resume carried its counter) but its filesystem or counter is gone,
            so the next counter and the ε budget spent are unknown.
    """
    state = _board_state(chip, plan)
    if state is None or COUNTER_PATH not in state:
        if rec.last_counter is not None:
            raise ProvisionError(
                "%s: device %s sent messages under its keys (counter %d at least), but the "
                "board's filesystem %s: its next message counter and its spent ε budget are "
                "unknown, so it is left pending. Revoke it (`edgeveil registry revoke`) and "
                "provision the board again with --factory --force"
                % (
                    chip.port,
                    rec.dev_id.hex(),
                    rec.last_counter,
                    "is torn or blank" if state is None else "has no counter record",
                )
            )
        state = {**(state or {}), COUNTER_PATH: counter_record()}
    carried = read_counter_record(state[COUNTER_PATH])
    if carried is None:
        raise ProvisionError(
            "%s: the board's %s is not a sound counter record; it is left as it is "
            "(settle it by hand: the device may have sent messages under its keys)"
            % (chip.port, COUNTER_PATH)
        )
    secrets = registry.secrets(rec.dev_id)
    regions, values, policy_hash = _device_regions(plan, secrets, policy, state)
    if policy_hash != rec.policy_hash:
        raise ProvisionError(
            "%s: device %s was provisioned with policy %s, the policy given is %s; resume "
            "with the same --policy" % (chip.port, rec.dev_id.hex(), rec.policy_hash[:16],
                                        policy_hash[:16])
        )  # fmt: skip
    return regions, values, carried


def _board_state(chip: Chip, plan: _Plan) -> dict[str, bytes] | None:
    """The files on the board's filesystem that are the device's state rather than code
    (its counter and ε budget records, its configuration); None when no filesystem can be
    read there (blank, or torn by a cut-off write: MicroPython formats it at boot).

    Raises:
        FlashError: reading the flash failed (never taken for a blank filesystem).
    """
    from littlefs import LittleFSError

    from .deploy import ROOT

    part = plan.vfs
    state: dict[str, bytes] = {}
    try:
        with read_vfs(
            lambda at, n: chip.read(part.offset + at, n), part.size, f"{chip.port}: vfs"
        ) as fs:
            for path, is_dir in fs.walk():
                if not (is_dir or path.startswith(ROOT + "/") or path in plan.code):
                    state[path] = fs.read(path)
    except (ImageError, LittleFSError):
        return None
    return state
