"""Build :class:`Settings` from a TOML file, ``SIPREC_<SECTION>__<KEY>`` variables and defaults.

Environment variables win over the file. Variables without ``__`` after the prefix are not
settings and are ignored. A list is given as JSON (``["udp:0.0.0.0:5060"]``) or comma-separated
(``udp:0.0.0.0:5060,tcp:0.0.0.0:5060``); ``store.url`` is a list only when written as JSON,
since sentinel URLs contain commas. An empty value unsets a key whose default is unset.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from siprec_node.config.errors import ConfigError, Problem
from siprec_node.config.settings import CROSS_FIELD_ERROR, Settings

__all__ = ["ENV_PREFIX", "load_settings"]

ENV_PREFIX = "SIPREC_"
_ENV_SEPARATOR = "__"
_MISSING = object()


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (optional), apply overrides from ``environ`` (default ``os.environ``).

    Raises :class:`ConfigError` listing every problem found: an unreadable or invalid file on its
    own, otherwise all bad environment variables and all invalid keys together.
    """
    data = _read_toml(path) if path is not None else {}
    overrides, sources, problems = _environment_overrides(
        os.environ if environ is None else environ
    )
    merged = _merge(data, overrides)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, merged, sources))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


# --- the file ----------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem("<file>", str(path), "no such file")]) from None
    except OSError as exc:
        why = f"cannot be read: {exc.strerror or exc}"
        raise ConfigError([Problem("<file>", str(path), why)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem("<file>", str(path), "is not UTF-8 text")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("<file>", str(path), f"is not valid TOML: {exc}")]) from None


# --- the environment ---------------------------------------------------------------------------


def _environment_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
    """Turn ``SIPREC_*`` variables into nested data, noting which variable set which key."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or _ENV_SEPARATOR not in name[len(ENV_PREFIX) :]:
            continue
        value = environ[name]
        parts = name[len(ENV_PREFIX) :].lower().split(_ENV_SEPARATOR)
        key = ".".join(parts)
        if not all(parts):
            why = f"malformed variable name {name}; use SIPREC_<SECTION>__<KEY>"
            problems.append(Problem(key, value, why))
            continue
        annotation = _annotation_at(parts)
        if annotation is _MISSING:
            problems.append(Problem(key, value, f"unknown key (from {name})"))
            continue
        try:
            converted = _from_env_text(value, annotation)
        except ValueError as exc:
            problems.append(Problem(key, value, f"{exc} (from {name})"))
            continue
        target = overrides
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = converted
        sources[key] = name
    return overrides, sources, problems


def _annotation_at(parts: list[str]) -> Any:
    """The type annotation of the settings field at ``parts``, or ``_MISSING``."""
    model: type[BaseModel] | None = Settings
    annotation: Any = _MISSING
    for part in parts:
        if model is None or part not in model.model_fields:
            return _MISSING
        annotation = model.model_fields[part].annotation
        model = annotation if _is_model(annotation) else None
    return annotation


def _from_env_text(text: str, annotation: Any) -> Any:
    members = _union_members(annotation)
    stripped = text.strip()
    if type(None) in members and stripped == "":
        return None
    if any(_is_model(member) for member in members) and stripped.startswith("{"):
        return _json(stripped, dict, "must be a JSON object")
    has_list = any(get_origin(member) is list for member in members)
    if has_list and stripped.startswith("["):
        return _json(stripped, list, "must be a JSON list or comma-separated values")
    if has_list and str not in members:
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return text


def _json(text: str, kind: type, why: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(why) from None
    if not isinstance(value, kind):
        raise ValueError(why)
    return value


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge(current, value)
        elif key in merged and isinstance(value, dict) and not isinstance(current, dict):
            # The file's value for a section is not a table: keep it so it gets reported.
            continue
        else:
            merged[key] = value
    return merged


# --- pydantic errors to problems ---------------------------------------------------------------

_SIMPLE_REASONS = {
    "extra_forbidden": "unknown key",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "path_type": "must be a path string",
    "missing": "is required",
}


def _problems_from(
    exc: ValidationError, data: Mapping[str, Any], sources: Mapping[str, str]
) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == CROSS_FIELD_ERROR:
            for sub_key, value, why in error["ctx"]["problems"]:
                sub_loc = loc + tuple(sub_key.split("."))
                raw = _lookup(data, sub_loc)
                problems.append(
                    _sourced(_dotted(sub_loc), value if raw is _MISSING else raw, why, sources)
                )
            continue
        raw = _lookup(data, loc)
        value = error.get("input") if raw is _MISSING else raw
        problems.append(_sourced(_dotted(loc), value, _why(error), sources))
    return problems


def _why(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _SIMPLE_REASONS:
        return _SIMPLE_REASONS[kind]
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return "must be one of: " + ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
    bounds = {
        "greater_than_equal": ("ge", "must be at least {}"),
        "less_than_equal": ("le", "must be at most {}"),
        "greater_than": ("gt", "must be greater than {}"),
        "less_than": ("lt", "must be less than {}"),
    }
    if kind in bounds:
        name, template = bounds[kind]
        return template.format(ctx.get(name))
    message = str(error.get("msg", kind))
    return message[:1].lower() + message[1:]


def _sourced(key: str, value: Any, why: str, sources: Mapping[str, str]) -> Problem:
    base = key.split("[", 1)[0]
    for candidate, variable in sources.items():
        if base == candidate or base.startswith(candidate + "."):
            return Problem(key, value, f"{why} (from {variable})")
    return Problem(key, value, why)


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(part, int):
            found = isinstance(data, list) and -len(data) <= part < len(data)
        else:
            found = isinstance(data, Mapping) and part in data
        if not found:
            return _MISSING
        data = data[part]
    return data


def _dotted(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key
