"""Duration strings: parsing, formatting, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_node.config.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("5s", timedelta(seconds=5)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m 5s", timedelta(hours=1, minutes=30, seconds=5)),
        ("1.5s", timedelta(milliseconds=1500)),
        (".25h", timedelta(minutes=15)),
        ("250us", timedelta(microseconds=250)),
        ("0s", timedelta(0)),
        ("  10m  ", timedelta(minutes=10)),
        ("5", timedelta(seconds=5)),
        ("2.5", timedelta(seconds=2.5)),
    ],
)
def test_parses_strings(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, timedelta(seconds=5)),
        (0, timedelta(0)),
        (0.5, timedelta(milliseconds=500)),
        (timedelta(minutes=2), timedelta(minutes=2)),
    ],
)
def test_parses_numbers_as_seconds(value: int | float | timedelta, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "   ", "abc", "5x", "5 parsecs", "h", "1h30", "5s-", "1e3s", "5,5s", True, None, [5]],
)
def test_rejects_malformed(value: object) -> None:
    with pytest.raises(DurationError, match="must be a duration like"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-5s", " -1h", -1, -0.5, timedelta(seconds=-1)])
def test_rejects_negative(value: object) -> None:
    with pytest.raises(DurationError, match="must not be negative"):
        parse_duration(value)  # type: ignore[arg-type]


def test_rejects_non_finite_and_huge() -> None:
    with pytest.raises(DurationError, match="finite"):
        parse_duration(float("inf"))
    with pytest.raises(DurationError, match="too long"):
        parse_duration("999999999999h")


def test_duration_error_is_a_value_error() -> None:
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(seconds=5), "5s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=24), "24h"),
        (timedelta(seconds=90), "90s"),
        (timedelta(hours=1, minutes=30), "90m"),
        (timedelta(hours=1, seconds=1), "1h1s"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(microseconds=1), "1us"),
        (timedelta(days=3), "72h"),
    ],
)
def test_formats_shortest(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


def test_format_rejects_negative() -> None:
    with pytest.raises(DurationError):
        format_duration(timedelta(seconds=-1))


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
def test_format_then_parse_round_trips(value: timedelta) -> None:
    text = format_duration(value)
    assert parse_duration(text) == value
    assert len(text) <= len(f"{int(value.total_seconds() * 1_000_000)}us")
