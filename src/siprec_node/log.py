"""Logging set-up: structlog and the standard library both write to stderr through one handler.

Lines carry an ISO 8601 UTC ``timestamp``, ``level``, ``logger`` and any context bound with
``structlog.contextvars.bind_contextvars`` (such as ``call_id`` and ``session_id``). The format is
JSON lines, or a human-readable console rendering on a terminal.

structlog's events do not go through the standard library's logging (a ``LogRecord`` made
twice, the caller's frame looked up, a handler lock): they are filtered by level in the bound
logger itself (nothing is built for a line below the level), rendered by structlog's own
processors and written to the stream as one line. The standard library's records (asyncio,
redis, ...) still go through the root logger's handler, rendered the same way, to the same
stream.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import Processor

__all__ = ["LEVELS", "configure_logging", "wants_json"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FORMATS = ("auto", "json", "console")


class _SiprecHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installs, so that a second call replaces it."""


class _LineWriter:
    """Where structlog's lines go: the stream of the latest ``configure_logging``, so that a
    logger cached before a second call writes where the second call said."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self._lock = threading.Lock()  # lines of executor threads never interleave

    def write_line(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


_WRITER = _LineWriter()


class _LineLogger:
    """structlog's wrapped logger: writes each rendered event as a line; ``name`` is the name
    it was asked for (``add_logger_name`` reads it)."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, message: str) -> None:
        _WRITER.write_line(message)

    debug = info = warning = warn = error = err = critical = exception = fatal = log = msg


def _line_logger(*args: Any) -> _LineLogger:
    """structlog's logger factory: ``get_logger(name)`` passes the name on."""
    return _LineLogger(str(args[0]) if args else "")


def wants_json(fmt: str, stream: TextIO) -> bool:
    """Whether ``fmt`` means JSON lines on ``stream``: ``json``, or ``auto`` off a terminal."""
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    return not _is_tty(stream)


def configure_logging(
    level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) at ``level``.

    ``fmt`` is ``json``, ``console`` or ``auto`` (JSON unless the stream is a terminal). Calling it
    again replaces the previous set-up instead of adding a second handler.
    """
    level_key = level.lower()
    if level_key not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of: {', '.join(LEVELS)}")
    fmt_key = fmt.lower()
    if fmt_key not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of: {', '.join(_FORMATS)}")
    target = sys.stderr if stream is None else stream
    as_json = wants_json(fmt_key, target)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if as_json:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(target))
    final.append(renderer)

    handler = _SiprecHandler(target)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=final,
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SiprecHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[level_key])

    _WRITER.stream = target
    own: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        own.append(structlog.processors.format_exc_info)
    own.append(renderer)
    structlog.configure(
        processors=own,
        logger_factory=_line_logger,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level_key]),
        cache_logger_on_first_use=True,
    )


def _dumps(event: Any, default: Any = None, **_: Any) -> str:
    """One JSON line by orjson; what it cannot serialise goes through structlog's fallback
    (``repr``), as with the standard library's encoder, which takes what orjson refuses
    outright (integers beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event, default=default)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
