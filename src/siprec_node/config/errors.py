"""Configuration problems, reported all at once as ``KEY: VALUE: why`` lines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "Problem", "format_value"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration.

    ``key`` is dotted (``sip.max_sessions``, ``sip.listen[1]``) or ``<file>`` for a file that
    cannot be read; ``value`` is the offending input (``None`` when a required key is unset);
    ``why`` is the rule it breaks, in words.
    """

    key: str
    value: Any
    why: str

    def __str__(self) -> str:
        return f"{self.key}: {format_value(self.value)}: {self.why}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists everything found wrong."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def format_value(value: Any) -> str:
    """Show a configuration value the way it would be written: strings quoted, unset as <unset>."""
    if value is None:
        return "<unset>"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)
