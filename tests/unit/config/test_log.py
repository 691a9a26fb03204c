"""configure_logging: JSON or console lines, stdlib routed, idempotent."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import structlog

from siprec_node.log import configure_logging, wants_json


class _TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_timestamp_level_logger_and_context() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.contextvars.bind_contextvars(call_id="abc@host", session_id="s-1")
    structlog.get_logger("siprec_node.test").info("call_started", streams=2)
    (line,) = _lines(stream)
    assert line["event"] == "call_started"
    assert line["level"] == "info"
    assert line["logger"] == "siprec_node.test"
    assert (line["call_id"], line["session_id"], line["streams"]) == ("abc@host", "s-1", 2)
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() == timedelta(0)


def test_stdlib_logging_is_routed_and_filtered_by_level() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    logging.getLogger("redis.client").info("hidden")
    logging.getLogger("redis.client").warning("retrying %s", "now")
    structlog.get_logger("x").info("hidden too")
    (line,) = _lines(stream)
    assert (line["event"], line["logger"], line["level"]) == (
        "retrying now",
        "redis.client",
        "warning",
    )


def test_exceptions_are_rendered_in_json() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("x").exception("failed")
    (line,) = _lines(stream)
    assert "RuntimeError: boom" in str(line["exception"])


def test_auto_is_json_off_a_terminal_and_console_on_one() -> None:
    assert wants_json("auto", io.StringIO())
    assert not wants_json("auto", _TtyStream())
    assert wants_json("json", _TtyStream())
    assert not wants_json("console", io.StringIO())
    stream = _TtyStream()
    configure_logging("info", "auto", stream=stream)
    structlog.get_logger("x").info("hello", answer=42)
    text = stream.getvalue()
    assert "hello" in text and "answer" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_configuring_twice_keeps_one_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("debug", "json", stream=second)
    configure_logging("debug", "json", stream=second)
    structlog.get_logger("x").debug("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]


def test_rejects_unknown_level_and_format() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "json")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")
