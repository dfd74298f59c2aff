# Helpers shared by the aggregator tests (test_aggregate.py, test_distinct.py) in the VM.
import struct

from veil.aggregate import AggregateError

KEY_A = b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
KEY_B = b"edgeveil-test-kB"


def raises(fn, *args):
    """True if fn(*args) raises AggregateError."""
    try:
        fn(*args)
    except AggregateError:
        return True
    return False


def mac(i):
    # A 6-byte BLE-address-like id.
    return struct.pack(">HI", 0xC0DE, i)
