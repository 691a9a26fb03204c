"""Duration strings such as ``"500ms"``, ``"5s"``, ``"15m"``, ``"24h"`` or ``"1h30m"``.

Units: ``us``, ``ms``, ``s``, ``m``, ``h``; each amount may carry a decimal fraction
(``"1.5s"``). A bare number (``5``, ``2.5``, ``"5"``) means seconds. Durations are never
negative and are kept to microsecond resolution, like :class:`datetime.timedelta`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["DurationError", "format_duration", "parse_duration"]

_MICROS_PER_UNIT: dict[str, int] = {
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
# Longest unit names first so that "ms" is not read as "m" followed by garbage.
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|h|m|s)", re.ASCII)
_BARE_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*", re.ASCII)
_HINT = 'must be a duration like "500ms", "5s", "15m", "24h" or "1h30m"'


class DurationError(ValueError):
    """A value that cannot be read as a duration."""


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Read ``value`` as a non-negative duration.

    Strings are unit-suffixed amounts (``"1h30m"``) or a bare number of seconds; ints and floats
    are seconds; a ``timedelta`` is returned unchanged after the sign check.
    """
    if isinstance(value, timedelta):
        return _non_negative(value)
    if isinstance(value, bool):
        raise DurationError(_HINT)
    if isinstance(value, int):
        return _non_negative(_from_micros(value * 1_000_000))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise DurationError("must be a finite number of seconds")
        return _non_negative(_from_micros(_round(Decimal(repr(value)) * 1_000_000)))
    if not isinstance(value, str):
        raise DurationError(_HINT)
    return _parse_text(value)


def format_duration(value: timedelta) -> str:
    """Write ``value`` as the shortest exact duration string (``"90s"``, ``"1h1s"``, ``"500ms"``).

    Every candidate uses whole amounts: one unit that divides the duration exactly, or the
    mixed form from hours down to microseconds. Ties go to the larger leading unit.
    """
    micros = _total_micros(value)
    if micros < 0:
        raise DurationError("must not be negative")
    if micros == 0:
        return "0s"
    candidates: list[str] = []
    for unit, size in _MICROS_PER_UNIT.items():
        if micros % size == 0:
            candidates.append(f"{micros // size}{unit}")
    mixed: list[str] = []
    rest = micros
    for unit, size in _MICROS_PER_UNIT.items():
        amount, rest = divmod(rest, size)
        if amount:
            mixed.append(f"{amount}{unit}")
    candidates.append("".join(mixed))
    # min() keeps the first of equally short candidates, and the list runs from large units down.
    return min(candidates, key=len)


def _parse_text(text: str) -> timedelta:
    if not text.strip():
        raise DurationError(_HINT)
    if text.lstrip().startswith("-"):
        raise DurationError("must not be negative")
    bare = _BARE_NUMBER.fullmatch(text)
    if bare is not None:
        return _from_micros(_round(_decimal(bare.group(1)) * 1_000_000))
    micros = Decimal(0)
    text = text.rstrip()
    position = 0
    while position < len(text):
        match = _PART.match(text, position)
        if match is None:
            raise DurationError(_HINT)
        amount, unit = match.groups()
        micros += _decimal(amount) * _MICROS_PER_UNIT[unit]
        position = match.end()
    return _from_micros(_round(micros))


def _decimal(amount: str) -> Decimal:
    try:
        return Decimal(amount)
    except InvalidOperation as exc:  # pragma: no cover - the regexes only let digits through
        raise DurationError(_HINT) from exc


def _round(micros: Decimal) -> int:
    return int(micros.to_integral_value())


def _from_micros(micros: int) -> timedelta:
    try:
        return timedelta(microseconds=micros)
    except OverflowError as exc:
        raise DurationError("is too long") from exc


def _non_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise DurationError("must not be negative")
    return value


def _total_micros(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
