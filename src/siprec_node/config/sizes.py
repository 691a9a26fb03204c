"""Sizes such as ``"500MB"``, ``"2GiB"`` or ``"64M"``; a bare number means bytes.

Units: ``B``, ``KB``/``K``, ``MB``/``M``, ``GB``/``G``, ``TB``/``T`` (powers of 1000) and ``KiB``,
``MiB``, ``GiB``, ``TiB`` (powers of 1024), in any case; the amount may carry a decimal fraction.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_size(value: str | int) -> int:
    """Bytes from ``"500MB"``, ``"2GiB"``, ``"64M"``, ``"0"`` or an integer of bytes."""
    if isinstance(value, bool):
        raise ValueError('must be a size like "500MB" or "2GiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError('must be a size like "500MB" or "2GiB"')
    match = _SIZE.match(value)
    if match is None:
        raise ValueError('must be a size like "500MB" or "2GiB" (units B, KB, MB, GB, TB, KiB…)')
    unit = (match.group(2) or "").lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {match.group(2)!r}: use B, KB, MB, GB, TB, KiB, MiB, GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(value: int) -> str:
    """The shortest exact form of a size (``"500MB"``, ``"2GiB"``, ``"1234"``)."""
    for unit in ("TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "KB"):
        factor = _UNITS[unit.lower()]
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)
