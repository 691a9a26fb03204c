"""Shared helpers for the siprec tests: the corpus under tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA
