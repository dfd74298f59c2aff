"""device/veil/noise.py uses integer arithmetic only: checked on its syntax tree.

A float anywhere in the sampler (a literal, a true division, `math`) would make the
noise distribution depend on rounding (Mironov, CCS 2012), and the ESP32 computes in
single precision. The check is syntactic, so it covers code paths the VM tests miss.
"""

from __future__ import annotations

import ast

import pytest
from edgeveil.paths import device_dir

NOISE = device_dir() / "veil" / "noise.py"


def float_hazards(source: str) -> list[str]:
    """Every float literal, true division, float() call and math/cmath import in source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Constant) and isinstance(node.value, float | complex):
            found.append(f"line {line}: float literal {node.value!r}")
        elif isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Div):
            found.append(f"line {line}: true division")
        elif isinstance(node, ast.Import):
            found += [
                f"line {line}: import {a.name}" for a in node.names if a.name in ("math", "cmath")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module in ("math", "cmath"):
            found.append(f"line {line}: from {node.module} import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "float":
                found.append(f"line {line}: float()")
    return found


def test_noise_module_has_no_float() -> None:
    assert float_hazards(NOISE.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "x = 0.5",
        "x = a / b",
        "x /= 2",
        "import math",
        "from math import exp",
        "x = float(3)",
        "x = 1e3",
    ],
)
def test_checker_catches_floats(snippet: str) -> None:
    # The checker itself can fail: each hazard is reported.
    assert float_hazards(snippet) != []


def test_checker_accepts_integer_code() -> None:
    assert float_hazards("x = a // b\ny = a % b\nz = 1 << 3\n") == []
