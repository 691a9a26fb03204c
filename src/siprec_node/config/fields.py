"""Field types shared by the settings sections: integers that refuse booleans, positive
durations written like ``"5s"``, and case-insensitive choices."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

from siprec_node.config.durations import format_duration, parse_duration


def not_bool(value: Any) -> Any:
    """Refuse ``true``/``false`` where a number is meant (TOML and pydantic's lax mode would
    otherwise read ``true`` as 1)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    return value


def positive(value: timedelta) -> timedelta:
    """Refuse a zero or negative duration."""
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


def lower(value: Any) -> Any:
    """A string choice read case-insensitively, surrounding blanks ignored."""
    return value.strip().lower() if isinstance(value, str) else value


Int = Annotated[int, BeforeValidator(not_bool)]
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(positive),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A positive duration, written ``"5s"`` in files and read from numbers of seconds too."""
