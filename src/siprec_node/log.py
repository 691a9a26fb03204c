"""Logging set-up: structlog and the standard library both write to stderr through one handler.

Lines carry an ISO 8601 UTC ``timestamp``, ``level``, ``logger`` and any context bound with
``structlog.contextvars.bind_contextvars`` (such as ``call_id`` and ``session_id``). The format is
JSON lines, or a human-readable console rendering on a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

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
        renderer = structlog.processors.JSONRenderer()
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

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
