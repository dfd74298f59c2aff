"""The virtual ESP32: the real MicroPython VM behind a serial port (see docs/vboard.md)."""
