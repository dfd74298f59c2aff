"""Where the project's data lives: the device tree and the board files.

In a source checkout they sit beside `host/`; `EDGEVEIL_ROOT` overrides that.
"""

import os
from pathlib import Path


def project_root() -> Path:
    """The directory holding `device/` and `boards/`."""
    env = os.environ.get("EDGEVEIL_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2]


def device_dir() -> Path:
    """The MicroPython tree deployed to boards (`device/`)."""
    return project_root() / "device"


def boards_dir() -> Path:
    """The board data files (`boards/`)."""
    return project_root() / "boards"
