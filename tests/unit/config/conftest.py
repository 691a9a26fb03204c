"""Helpers shared by the config tests: load TOML text through the real loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from siprec_node.config import ConfigError, Problem, Settings, load_settings

LoadText = Callable[..., Settings]
ProblemsOf = Callable[..., list[Problem]]


@pytest.fixture
def load_text(tmp_path: Path) -> LoadText:
    """Load settings from TOML ``text`` and an ``environ`` (empty unless given)."""

    def load(text: str = "", environ: Mapping[str, str] | None = None) -> Settings:
        path = tmp_path / "node.toml"
        path.write_text(text, encoding="utf-8")
        return load_settings(path, environ={} if environ is None else environ)

    return load


@pytest.fixture
def problems_of(load_text: LoadText) -> ProblemsOf:
    """The problems reported for TOML ``text`` and ``environ``; fails if it loads."""

    def problems(text: str = "", environ: Mapping[str, str] | None = None) -> list[Problem]:
        with pytest.raises(ConfigError) as caught:
            load_text(text, environ)
        return caught.value.problems

    return problems
