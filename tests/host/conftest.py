"""Fixtures shared by the host tests of the registry and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgeveil.registry import init_registry


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No registry or master key from the environment of whoever runs the tests."""
    monkeypatch.delenv("EDGEVEIL_MASTER_KEY", raising=False)
    monkeypatch.delenv("EDGEVEIL_REGISTRY", raising=False)


@pytest.fixture
def db(tmp_path: Path, clean_env: None) -> Path:
    """A new registry (fleet.db, its key file beside it)."""
    return init_registry(tmp_path / "fleet.db")
