"""Write settings back as TOML, as ``check-config`` shows them.

Durations come out as strings (``"5s"``), unset keys are left out, and the admin token is masked
unless asked for. Loading the output gives the same settings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from siprec_node.config.settings import Settings

__all__ = ["SECRET_MASK", "dumps_toml", "render_toml"]

SECRET_MASK = "**********"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def render_toml(settings: Settings, *, reveal_secrets: bool = False) -> str:
    """The effective ``settings`` as a TOML document; ``http.token`` masked unless revealed."""
    data = settings.model_dump(mode="json", exclude_none=True)
    token = settings.http.token
    if token is not None:
        data["http"]["token"] = token.get_secret_value() if reveal_secrets else SECRET_MASK
    http_token = settings.transcription.http_token
    if http_token is not None:
        secret = http_token.get_secret_value()
        data["transcription"]["http_token"] = secret if reveal_secrets else SECRET_MASK
    return dumps_toml(data)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested mappings of strings, numbers, booleans and lists as a TOML document.

    ``None`` values are skipped; nested mappings become ``[dotted.table]`` sections.
    """
    lines: list[str] = []
    _write_table(lines, (), data)
    return "\n".join(lines).strip("\n") + "\n"


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and scalars:
        if lines:
            lines.append("")
        lines.append(f"[{'.'.join(_key(part) for part in path)}]")
    for key, value in scalars:
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        _write_table(lines, (*path, key), value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{" + items + "}" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
