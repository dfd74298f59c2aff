"""edgeveil host toolkit: flash, deploy, provision and verify privacy code on ESP32 boards."""

__version__ = "0.1.0"
