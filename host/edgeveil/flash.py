"""Write MicroPython firmware to a board, through esptool used as a library.

    board = load_board("esp32-generic")
    report = write_firmware("/dev/ttyUSB0", board, Path("firmware.bin"), progress=cb)
    report.summary()   # 'ESP32-D0WD-V3 (revision v3.1) 24:0a:c4:00:00:01: micropython ...'

The order makes a refusal leave the board as it was:

1. The file (`load_firmware`), before the port is opened: an ESP image with the board's
   chip id (`esp_image.check_firmware`), an app descriptor, and, in a combined file, a
   partition table equal to the board file's (deploy and provision write the filesystem
   and the keys where the board file says; a firmware with another layout needs its own
   board file). A wrong-chip image is refused here: nothing is erased.
2. The port: it must exist and not be held by another program (it is opened
   exclusively, as esptool does).
3. The chip that answers must be the board's chip (esptool's detection), with at least
   the board's flash size. Otherwise nothing is written.
4. The write: esptool's stub, the whole chip erased first if asked (`erase=True`), then
   each region `FirmwareInfo.regions(board)` gives (bootloader, partition table, app). The
   0xFF gaps of a combined file are not written, so a reflash keeps the NVS partition (the
   device's keys) and the filesystem unless `erase=True`. Each region is MD5-verified by
   the chip (SPI_FLASH_MD5) against the file, then the chip is hard-reset. A board lost
   mid-write fails at once. esptool reopens a port by name (retrying a reset, or after a
   native-USB board re-enumerates); here that is allowed only for the same USB device
   (vid, pid, serial number, location), never for a pty: on a jig the name may meanwhile
   belong to another board.

`open_chip(port, board)` is the same esptool session for other work on a board's flash:
it connects, checks the chip and yields a `Chip` that writes (`write`, MD5-verified) and
reads (`read`) regions, and resets the chip on the way out. `edgeveil.factory` uses it to
write a device's whole flash in one pass and to read its NVS back through the ROM loader.

esptool's own console output is captured per thread (`edgeveil.esptool_log`; its log is
process-wide), so boards flashed in parallel by `edgeveil.fleet.run_many` keep their
progress and messages apart; `FlashError` carries the last lines esptool printed when
something fails.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import select
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boards import Board
from .errors import FlashError, ImageError
from .esp_image import FirmwareInfo, check_firmware
from .esptool_log import ProgressCallback, Session, esptool_log
from .partitions import boot_app_partition

_CONNECT_ATTEMPTS = 7  # esptool's default
_LINELESS_RESET_S = 0.1  # esptool's hard reset holds RTS (EN low) this long

__all__ = [
    "Chip",
    "FlashReport",
    "ProgressCallback",
    "load_firmware",
    "open_chip",
    "write_firmware",
]


@dataclass(frozen=True)
class FlashReport:
    """What `write_firmware` wrote, and where."""

    port: str
    board: str
    chip: str  # as esptool describes the chip that answered: "ESP32-D0WD-V3 (revision v3.1)"
    mac: str
    offset: int  # where the firmware file goes (the board's firmware offset, or the app's)
    regions: tuple[tuple[int, int], ...]  # (flash offset, length) of each region written
    bytes_written: int
    erased: bool
    project: str  # the app descriptor's project name and version
    version: str
    image_sha256: str  # of the firmware file
    seconds: float

    def summary(self) -> str:
        kib = self.bytes_written / 1024
        return (
            f"{self.chip} {self.mac}: {self.project} {self.version} at {self.offset:#x}, "
            f"{kib:.1f} KiB in {len(self.regions)} region{'s' if len(self.regions) > 1 else ''}"
            f"{', chip erased first' if self.erased else ''}, verified, "
            f"{self.seconds:.2f} s"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "port": self.port,
            "board": self.board,
            "chip": self.chip,
            "mac": self.mac,
            "offset": self.offset,
            "regions": [{"offset": o, "length": n} for o, n in self.regions],
            "bytes_written": self.bytes_written,
            "erased": self.erased,
            "verified": True,
            "project": self.project,
            "version": self.version,
            "image_sha256": self.image_sha256,
            "seconds": round(self.seconds, 3),
        }


def load_firmware(image_path: Path | str, board: Board) -> FirmwareInfo:
    """Read and check a firmware file for `board`, touching no port.

    Raises:
        ImageError: naming the file: unreadable, not an ESP image, for another chip, no
            app descriptor, a partition table that differs from the board's, or an app
            larger than the board's app partition.
    """
    path = Path(image_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        info = check_firmware(data, board.chip)
        info.write_offset(board)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc
    if info.kind == "combined":
        _check_layout(path, info, board)
    else:
        app = boot_app_partition(board.partitions)
        if app is not None and info.app.length > app.size:
            raise ImageError(
                f"{path}: the app ({info.app.length} bytes) does not fit board "
                f"{board.name}'s '{app.name}' partition ({app.size} bytes)"
            )
    return info


def _check_layout(path: Path, info: FirmwareInfo, board: Board) -> None:
    def key(p: Any) -> tuple[str, str, str, int, int]:
        return (p.name, p.type, p.subtype, p.offset, p.size)

    theirs, ours = [key(p) for p in info.partitions], [key(p) for p in board.partitions]
    if theirs == ours:
        return
    where = str(board.path) if board.path else f"board {board.name}"
    diff = next(
        (
            f"'{t[0]}' {t[1]}/{t[2]} at {t[3]:#x}+{t[4]:#x} in the file, "
            + (f"{o[1]}/{o[2]} at {o[3]:#x}+{o[4]:#x} in {where}" if o else f"absent from {where}")
            for t in theirs
            for o in [next((o for o in ours if o[0] == t[0]), None)]
            if t != o
        ),
        f"{where} has partitions the file does not",
    )
    raise ImageError(
        f"{path}: its partition table differs from board {board.name}'s ({diff}); deploy "
        f"and provision write where the board file says, so use a board file with the "
        f"firmware's layout"
    )


def write_firmware(
    port: str,
    board: Board,
    image_path: Path | str,
    erase: bool = False,
    progress: ProgressCallback | None = None,
) -> FlashReport:
    """Check, write, verify and reset: see the module docstring for the order.

    Args:
        port: the serial port (or an rfc2217:// URL) of the board.
        board: the board the firmware is for; its chip must be the one that answers.
        image_path: a MicroPython firmware file: combined (bootloader, partition table,
            app) as MicroPython ships it, or a bare app image.
        erase: erase the whole flash first (NVS keys and the filesystem included).
        progress: called with (bytes written, bytes to write) while writing.

    Returns:
        What was written: chip, MAC, offset, regions, app project and version, seconds.

    Raises:
        ImageError: the file is wrong for the board (before the port is touched).
        FlashError: naming the port: no such port, port busy, no chip answering, wrong
            chip or too little flash (nothing written), or a write or verify failure.
    """
    start = time.monotonic()
    info = load_firmware(image_path, board)
    regions = info.regions(board)
    with open_chip(port, board, progress) as chip:
        chip.write(regions, erase)
    return FlashReport(
        port=port,
        board=board.name,
        chip=chip.description,
        mac=chip.mac,
        offset=info.write_offset(board),
        regions=tuple((at, len(data)) for at, data in regions),
        bytes_written=sum(len(data) for _, data in regions),
        erased=erase,
        project=info.app_desc.project_name,
        version=info.app_desc.version,
        image_sha256=hashlib.sha256(info.data).hexdigest(),
        seconds=time.monotonic() - start,
    )


# -- one esptool session with a board's chip ------------------------------------------------


class Chip:
    """The board's chip in its ROM loader, connected and identified (see `open_chip`).

    Attributes:
        port: the port it answers on.
        board: the board file it was checked against.
        description: esptool's description, e.g. "ESP32-D0WD-V3 (revision v3.1)".
        mac: its MAC address, "24:0a:c4:00:00:01".
    """

    def __init__(self, port: str, board: Board, esp: Any, session: Session) -> None:
        self.port, self.board = port, board
        self._esp, self._session = esp, session
        self.description, self.mac = "", ""
        self._prepared = False

    def write(self, regions: list[tuple[int, bytes]], erase: bool = False) -> None:
        """Write `(offset, data)` regions in one pass, each MD5-verified by the chip; with
        `erase` the whole flash is erased first. Progress goes to `open_chip`'s callback.

        Raises:
            FlashError: too little flash (nothing written), a write or a verify failure.
        """
        self._session.sizes = [len(data) for _, data in regions]
        self._session.region = -1
        self._stub()
        _write(self._esp, self.port, regions, erase, self._session)

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes of flash from `offset` (esptool's read_flash).

        Raises:
            FlashError: the chip stopped answering or the read failed.
        """
        from esptool import cmds

        self._stub()
        doing = f"reading {length} bytes at {offset:#x}"
        with _esptool_errors(self.port, doing, self._session, self._esp._port):
            data = cmds.read_flash(self._esp, offset, length, no_progress=True)
        return bytes(data or b"")

    def _stub(self) -> None:
        if not self._prepared:
            self._esp = _prepare(self._esp, self.port, self.board, self._session)
            self._prepared = True


@contextmanager
def open_chip(port: str, board: Board, progress: ProgressCallback | None = None) -> Iterator[Chip]:
    """Connect to the chip on `port` through esptool and check it is the board's chip.

        with open_chip("/dev/ttyUSB0", board) as chip:
            nvs = chip.read(0x9000, 0x6000)
            chip.write([(0x9000, image)])

    The port is opened exclusively; the chip is hard-reset and the port closed on the way
    out (quietly if the block raised, so the first error is the one reported). esptool's
    output during the session is kept apart per thread and quoted in a FlashError.

    Raises:
        FlashError: no such port, port busy, no chip answering, or a chip that is not the
            board's (nothing is written then).
    """
    _check_port(port)
    log = esptool_log()
    with log.session([], progress) as session:
        chip = Chip(port, board, _connect(port, session), session)
        done = False
        try:
            chip.description, chip.mac = _identify(chip._esp, port, board)
            yield chip
            done = True
        finally:
            if _hung_up(chip._esp._port):
                chip._esp._port.close()  # the board is gone: nothing to reset
            else:
                _leave_loader(chip, session, quiet=not done)


def _leave_loader(chip: Chip, session: Session, quiet: bool) -> None:
    """Hard-reset the chip (the board runs its app) and close the port."""
    ser = chip._esp._port
    try:
        with _esptool_errors(chip.port, "the work is done but the chip did not reset "
                             "(power-cycle the board)", session):  # fmt: skip
            _reset(chip._esp, quiet=quiet)
    finally:
        lines = _has_modem_lines(ser)
        ser.close()
        if not lines:
            # No DTR/RTS (a pty): a board there resets when the port closes, so keep it
            # closed as long as esptool's RTS reset pulse lasts, lest a client that
            # reopens at once find the chip still in its loader.
            time.sleep(_LINELESS_RESET_S)


# -- the steps ------------------------------------------------------------------------------


def _check_port(port: str) -> None:
    if "://" not in port and not os.path.exists(port):
        raise FlashError(f"{port}: no such port (is the board plugged in?)")


def _connect(port: str, session: Session) -> Any:
    """The serial port, opened exclusively, and the chip detected on it (esptool's loader).

    The port is opened here rather than by esptool so that it is closed again when no chip
    answers (esptool's detect_chip leaves it open, and locked, on failure)."""
    import serial
    from esptool import cmds
    from esptool.util import FatalError

    try:
        ser = serial.serial_for_url(port, exclusive=True, do_not_open=True)
        ser.open()
        _never_reopen(ser)
    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
        text = str(exc)
        if "exclusively lock" in text or getattr(exc, "errno", None) == errno.EAGAIN:
            why = "port busy: another program holds it open (a serial monitor, mpremote?)"
        else:
            why = f"cannot open the port: {_first_line(text)}"
        raise FlashError(f"{port}: {why}") from exc
    try:
        return cmds.detect_chip(ser, connect_attempts=_CONNECT_ATTEMPTS)
    except (FatalError, serial.SerialException, OSError, termios.error) as exc:
        ser.close()
        why = f"no chip answering in download mode ({_first_line(str(exc))})"
        raise FlashError(f"{port}: {why}{session.tail()}") from exc


def _identify(esp: Any, port: str, board: Board) -> tuple[str, str]:
    """(esptool's description, MAC) of the chip that answered; refuses a chip that is not
    the board's."""
    from esptool.targets import CHIP_DEFS

    chip = next((k for k, c in CHIP_DEFS.items() if c.CHIP_NAME == esp.CHIP_NAME), "")
    if chip != board.chip:
        raise FlashError(
            f"{port}: wrong chip: an {esp.CHIP_NAME} answered, board {board.name} is "
            f"{board.chip}; nothing was written"
        )
    from esptool.util import FatalError
    from serial import SerialException

    try:
        description = esp.get_chip_description()
        mac = ":".join(f"{b:02x}" for b in esp.read_mac())
    except (FatalError, SerialException, OSError, termios.error) as exc:
        raise FlashError(f"{port}: the chip stopped answering: {_first_line(str(exc))}") from exc
    return description, mac


def _prepare(esp: Any, port: str, board: Board, session: Session) -> Any:
    """Stub, attach and size check; returns the stub's loader (or the ROM's, where esptool
    runs no stub)."""
    from esptool import cmds

    with _esptool_errors(port, "connecting to the flash failed", session, esp._port):
        esp = cmds.run_stub(esp)
        # esptool would reopen the port by name for seconds after losing it: on a jig the
        # name may by then be another board's, which would get this board's firmware.
        esp.WRITE_FLASH_ATTEMPTS = 1
        cmds.attach_flash(esp)
        size = _flash_bytes(cmds.detect_flash_size(esp))
    if size is not None and size < board.flash_size:
        raise FlashError(
            f"{port}: the chip has {size >> 20} MiB of flash, board {board.name} needs "
            f"{board.flash_size >> 20} MiB; nothing was written"
        )
    return esp


def _write(
    esp: Any, port: str, regions: list[tuple[int, bytes]], erase: bool, session: Session
) -> None:
    """Write the regions in one pass (the whole chip erased first if `erase`) and verify."""
    from esptool import cmds

    with _esptool_errors(port, "writing failed", session, esp._port):
        cmds.write_flash(esp, list(regions), erase_all=erase)
        for at, data in regions:
            _verify(esp, port, at, data)


@contextmanager
def _esptool_errors(port: str, doing: str, session: Session, ser: Any = None) -> Iterator[None]:
    """esptool's and pyserial's exceptions as a FlashError naming the port; with `ser`, a
    port whose device went away is said to be lost."""
    from esptool.util import FatalError
    from serial import SerialException

    try:
        yield
    except (FatalError, SerialException, OSError, termios.error) as exc:
        text = _first_line(str(exc))
        if "MD5" in text or "written flash region is empty" in text:
            doing = "verify failed"
        elif ser is not None and _hung_up(ser):
            doing += " (the board was lost: cable pulled or power cut? run the same command again)"
        raise FlashError(f"{port}: {doing}: {text}{session.tail()}") from exc


def _verify(esp: Any, port: str, at: int, data: bytes) -> None:
    """The chip's MD5 of the region against the file's (esptool pads to 4 bytes with 0xFF)."""
    padded = data + b"\xff" * (-len(data) % 4)
    got = esp.flash_md5sum(at, len(padded))
    want = hashlib.md5(padded).hexdigest()
    if got != want:
        raise FlashError(
            f"{port}: verify failed at {at:#x}: the flash holds MD5 {got}, the file {want}"
        )


def _reset(esp: Any, quiet: bool = False) -> None:
    from esptool import cmds

    try:
        cmds.reset_chip(esp, "hard-reset")
    except Exception:  # noqa: BLE001 - best effort on the way out of a failure
        if not quiet:
            raise


def _never_reopen(ser: Any) -> None:
    """Let this port be opened again only by the same USB device. esptool reopens a port by
    its name when a reset fails or the device re-enumerates: a board on native USB (an
    ESP32-S3's /dev/ttyACM0) does that on every reset, and comes back as the same device.
    But the name may by then belong to another board (another USB device, a pty number
    reused), which would be opened, reset and talked to: that is refused, and the board
    reported lost; the user runs the work again. A pty is never reopened."""
    import serial

    first = _usb_identity(ser.port)
    reopen = ser.open

    def same_device_only() -> None:
        if first is None or _usb_identity(ser.port) != first:
            raise serial.SerialException(
                errno.ENODEV, f"{ser.port}: the board was lost; its port is not opened again"
            )
        reopen()

    ser.open = same_device_only


def _usb_identity(port: str) -> tuple[Any, ...] | None:
    """(vid, pid, serial number, USB location) of the USB device at `port`; None for a
    port that is not a USB device there now (a pty, a URL, a name gone)."""
    from serial.tools import list_ports

    try:
        path = os.path.realpath(port)
    except (OSError, ValueError):
        return None
    for info in list_ports.comports():
        if info.vid is not None and os.path.realpath(info.device) == path:
            return (info.vid, info.pid, info.serial_number, info.location)
    return None


def _hung_up(ser: Any) -> bool:
    """Whether the port's device is gone (unplugged, or a virtual board's pty closed)."""
    if not ser.is_open:
        return True
    try:
        fd = ser.fileno()
    except (AttributeError, ValueError, TypeError, OSError):  # rfc2217:// has no fd
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(
        ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in poller.poll(0)
    )


def _has_modem_lines(port: Any) -> bool:
    """Whether the port has DTR/RTS (a USB-serial adapter does, a pty does not)."""
    try:
        fcntl.ioctl(port.fileno(), termios.TIOCMGET, struct.pack("I", 0))
    except OSError as exc:
        return exc.errno not in (errno.ENOTTY, errno.EINVAL)
    except (AttributeError, ValueError, TypeError):  # not a file descriptor (rfc2217://)
        return True
    return True


def _flash_bytes(text: str | None) -> int | None:
    if not text or not text.endswith("MB"):
        return None
    try:
        return int(text[:-2]) << 20
    except ValueError:
        return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else text
