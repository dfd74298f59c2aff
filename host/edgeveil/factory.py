"""Factory provisioning: firmware, the device's keys (an NVS image) and the deployed code
(a littlefs image) written to a blank board in one esptool pass.

    with Registry.open(db) as reg:
        report = provision_factory("/dev/ttyUSB0", board, reg, policy, Path("fw.bin"))

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
4. The port is opened and the chip that answers identified (the board's chip, or nothing
   is written). Only now is the device recorded in the registry as `pending` (with its
   MAC), and the images written to `out_dir` if one is given.
5. One esptool pass writes the firmware's regions, the NVS image and the littlefs image,
   each MD5-verified by the chip; then the NVS partition is read back (esptool
   read_flash), parsed (`nvs.read_nvs`) and compared with the secrets. Only then is the
   entry made `active` (with the code hash), and the chip is hard-reset.

A failure before anything was written (port, wrong chip, too little flash) deletes the
pending entry again. A failure during or after the write leaves the entry `pending`:
`edgeveil provision --resume` settles it once the board runs (or the factory run is
repeated after `edgeveil registry` shows it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boards import Board
from .demo import DeviceSecrets
from .errors import EdgeveilError, FlashError
from .flash import (
    _LINELESS_RESET_S,
    _check_port,
    _connect,
    _esptool_log,
    _flash,
    _has_modem_lines,
    _identify,
    _reset,
    load_firmware,
)
from .lfs import make_vfs_image, vfs_partition
from .nvs import make_nvs, read_nvs
from .partitions import find_partition
from .policy import compile_policy
from .provision import COUNTER_PATH, NAMESPACE, ProvisionError, counter_record

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


def provision_factory(
    port: str,
    board: Board,
    registry: Any,
    policy: dict[str, Any],
    firmware_path: Path | str,
    progress: Say | None = None,
    out_dir: Path | str | None = None,
    src: Path | None = None,
) -> FactoryReport:
    """Firmware, keys and code to a blank board in one pass; see the module docstring.

    Raises:
        ImageError: the firmware file is wrong for the board, or the code does not fit.
        FlashError: port missing or busy, no or wrong chip, a write or verify failure.
        ProvisionError: the NVS read back does not hold the secrets (entry stays pending).
        RegistryError: no master key, or the registry refused.
    """
    from .deploy import image_files

    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    fw_path = Path(firmware_path)
    info = load_firmware(fw_path, board)  # wrong chip: refused before anything else
    fw_regions = info.regions(board)

    nvs_part = find_partition(board.partitions, "nvs")
    vfs_part = vfs_partition(board)
    files, code_hash = image_files(board, src)
    files[COUNTER_PATH] = counter_record()
    vfs_image = make_vfs_image(files, vfs_part.size)
    say("code image: %d files, code %s" % (len(files), code_hash[:16]))

    secrets = DeviceSecrets.generate()
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    policy_hash = hashlib.sha256(blob).hexdigest()
    values = secrets.nvs_values(blob)
    nvs_image = make_nvs({NAMESPACE: values}, nvs_part.size)
    dev_id = secrets.dev_id.hex()
    regions = [*fw_regions, (nvs_part.offset, nvs_image), (vfs_part.offset, vfs_image)]
    regions.sort(key=lambda r: r[0])

    _check_port(port)
    log = _esptool_log()
    written_to: Path | None = None
    recorded = False
    touched = False  # whether the write may have begun
    with log.session([len(d) for _, d in regions], None) as session:
        esp = _connect(port, session)
        reset = False
        try:
            _description, mac = _identify(esp, port, board)
            registry.add_pending(
                secrets.dev_id,
                board.name,
                secrets,
                policy_hash,
                port,
                mac=bytes.fromhex(mac.replace(":", "")),
            )
            recorded = True
            say("recorded %s as pending" % dev_id)
            if out_dir is not None:
                written_to = _write_out(
                    Path(out_dir), dev_id, regions, nvs_part.offset, vfs_part.offset, fw_path
                )
                say("images written to %s" % written_to)
            touched = True
            esp = _flash(esp, port, regions, False, board, session)
            say("written and verified: %d regions" % len(regions))
            _confirm_flash(esp, port, nvs_part.offset, nvs_part.size, values)
            registry.set_code_hash(secrets.dev_id, code_hash)
            registry.activate(secrets.dev_id)
            say("confirmed and active")
            _reset(esp)
            reset = True
        except BaseException as exc:
            if recorded and (
                not touched or (isinstance(exc, FlashError) and "nothing was written" in str(exc))
            ):
                _roll_back(registry, secrets.dev_id, written_to)
            elif recorded and isinstance(exc, EdgeveilError):
                exc.args = (
                    "%s (device %s stays pending in the registry; "
                    "`edgeveil provision --resume` settles it)" % (exc, dev_id),
                )
            raise
        finally:
            if not reset:
                _reset(esp, quiet=True)
            lines = _has_modem_lines(esp._port)
            esp._port.close()
            if not lines:
                time.sleep(_LINELESS_RESET_S)  # as write_firmware: let a pty board reset
    return FactoryReport(
        dev_id=dev_id,
        board=board.name,
        port=port,
        mac=mac,
        policy_hash=policy_hash,
        code_hash=code_hash,
        regions=tuple((at, len(d)) for at, d in regions),
        bytes_written=sum(len(d) for _, d in regions),
        out_dir=str(written_to) if written_to else None,
        status="active",
        seconds=time.monotonic() - t0,
    )


def _roll_back(registry: Any, dev_id: bytes, written_to: Path | None) -> None:
    """Nothing reached the board: forget the entry and the images holding its keys."""
    try:
        registry.delete_pending(dev_id)
    finally:
        if written_to is not None:
            for name in ("nvs.bin", "vfs.bin", "flash_args"):
                (written_to / name).unlink(missing_ok=True)
            try:
                written_to.rmdir()
            except OSError:
                pass


def _confirm_flash(esp: Any, port: str, at: int, size: int, values: dict[str, bytes]) -> None:
    """Read the NVS partition back from the chip and compare it with the secrets."""
    from esptool import cmds
    from esptool.util import FatalError
    from serial import SerialException

    try:
        data = cmds.read_flash(esp, at, size, no_progress=True)
    except (FatalError, SerialException, OSError) as exc:
        raise ProvisionError(f"{port}: reading the NVS partition back failed: {exc}") from exc
    got = read_nvs(bytes(data or b""), strict=True).get(NAMESPACE, {})
    wrong = sorted(k for k, v in values.items() if got.get(k) != v)
    if wrong:
        raise ProvisionError(f"{port}: NVS read-back mismatch for {', '.join(wrong)}")


def report_json(report: FactoryReport) -> dict[str, object]:
    out = dict(report.__dict__)
    out["regions"] = [{"offset": o, "length": n} for o, n in report.regions]
    out["seconds"] = round(report.seconds, 3)
    return json.loads(json.dumps(out))
