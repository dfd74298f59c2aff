# The device tests really run inside MicroPython, at the board's heap.
import gc
import sys


def test_runs_in_micropython():
    assert sys.implementation.name == "micropython"


def test_heap_is_the_boards():
    gc.collect()
    total = gc.mem_free() + gc.mem_alloc()
    # The runner sets -X heapsize from boards/esp32-generic.toml (100 KiB).
    assert total <= 102400, total
    assert total > 90000, total


def test_veil_imports():
    import veil

    assert veil.VERSION
