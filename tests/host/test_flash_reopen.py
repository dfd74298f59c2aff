"""Which reopen of a port edgeveil lets esptool make (flash._never_reopen).

No USB device is attached here, so serial.tools.list_ports.comports() is replaced by a
list of port records: the one part that cannot exist on this machine. The logic under test
is edgeveil's own: the same USB device may come back under its name (a native-USB board
re-enumerates on every reset), nothing else may."""

from __future__ import annotations

import os

import pytest
import serial
from edgeveil import flash
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo


class _Port:
    def __init__(self, name: str) -> None:
        self.port, self.opened = name, 0

    def open(self) -> None:
        self.opened += 1


def _usb(device: str, serial_number: str, location: str = "1-1:1.0") -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.location = 0x303A, 0x1001, serial_number, location
    return info


@pytest.fixture
def attached(monkeypatch: pytest.MonkeyPatch) -> list[ListPortInfo]:
    now: list[ListPortInfo] = []
    monkeypatch.setattr(list_ports, "comports", lambda: list(now))
    return now


def test_the_same_usb_device_may_come_back(attached: list[ListPortInfo]) -> None:
    attached.append(_usb("/dev/ttyACM0", "S3-A"))
    port = _Port("/dev/ttyACM0")
    flash._never_reopen(port)
    attached.clear()  # reset: the board drops off the bus...
    with pytest.raises(serial.SerialException, match="the board was lost"):
        port.open()  # ...and is not back yet (esptool retries)
    attached.append(_usb("/dev/ttyACM0", "S3-A"))
    port.open()  # back: the same device
    assert port.opened == 1


@pytest.mark.parametrize(
    "now", [_usb("/dev/ttyACM0", "S3-B"), _usb("/dev/ttyACM0", "S3-A", location="1-2:1.0")]
)
def test_another_device_under_the_name_is_refused(
    attached: list[ListPortInfo], now: ListPortInfo
) -> None:
    attached.append(_usb("/dev/ttyACM0", "S3-A"))
    port = _Port("/dev/ttyACM0")
    flash._never_reopen(port)
    attached[:] = [now]  # another board took the name (or the same serial on another hub port)
    with pytest.raises(serial.SerialException, match="the board was lost"):
        port.open()
    assert port.opened == 0


def test_a_pty_is_never_reopened(attached: list[ListPortInfo]) -> None:
    master, slave = os.openpty()
    try:
        port = _Port(os.ttyname(slave))
        flash._never_reopen(port)
        with pytest.raises(serial.SerialException, match="the board was lost"):
            port.open()
        assert port.opened == 0
    finally:
        os.close(master)
        os.close(slave)
