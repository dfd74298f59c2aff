"""The device test runner fails what it should: heap exhaustion, assertions, exceptions."""

from pathlib import Path

import pytest
from edgeveil.boards import load_board
from edgeveil.vm import run_code


def test_allocating_past_the_board_heap_fails() -> None:
    board = load_board("esp32-generic")
    ok = run_code("b = bytearray(%d)" % (board.heap_bytes // 2), board.heap_bytes)
    assert ok.ok, ok.stderr
    too_big = run_code("b = bytearray(%d)" % board.heap_bytes, board.heap_bytes)
    assert not too_big.ok
    assert b"MemoryError" in too_big.stdout + too_big.stderr


def test_cpython_only_module_is_missing_in_the_vm() -> None:
    result = run_code("import dataclasses", 102400)
    assert not result.ok
    assert b"ImportError" in result.stdout + result.stderr


def test_device_items_pass_and_fail_with_the_vm_message(pytester: pytest.Pytester) -> None:
    conftest = Path(__file__).parents[1] / "conftest.py"
    pytester.makeconftest(conftest.read_text())
    pytester.mkdir("device")
    (pytester.path / "device" / "test_demo.py").write_text(
        "def test_good():\n    assert 1 + 1 == 2\n\n"
        "def test_bad():\n    assert 40 + 1 == 42, 'sum is off'\n\n"
        "def test_heap():\n    b = bytearray(200000)\n\n"
        "def helper():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "device")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*AssertionError: sum is off*", "*MemoryError*"])
