"""The configuration reference (docs/configuration.md), generated from the settings models.

``python -m siprec_node.config.reference > docs/configuration.md`` rewrites it; a test checks
that the file in the repository is what this module generates, so the page cannot fall behind
the code. Each key's text is its docstring in `settings.py`.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from siprec_node.config.loader import ENV_PREFIX
from siprec_node.config.settings import Settings

__all__ = ["reference_markdown"]

_HEADER = f"""\
# Configuration reference

Generated from `src/siprec_node/config/settings.py` by
`python -m siprec_node.config.reference > docs/configuration.md`; do not edit by hand.

Settings come from a TOML file given with `-c FILE`, then environment variables
`{ENV_PREFIX}<SECTION>__<KEY>` (nested tables with more `__`: `{ENV_PREFIX}SIP__TLS__CERT_FILE`;
lists as JSON or comma-separated), then these defaults. Every key is optional. Durations are
strings such as `"500ms"`, `"5s"`, `"15m"`, `"24h"` (or numbers of seconds); sizes
such as `"500MB"`, `"2GiB"` (or numbers of bytes).
`siprec-node check-config -c FILE` prints the effective settings, or every problem as
`KEY: VALUE: why` and exits 2.
"""


def reference_markdown() -> str:
    """The whole reference page as Markdown."""
    defaults = Settings().model_dump(mode="json")
    parts = [_HEADER]
    for name, field in Settings.model_fields.items():
        _section(parts, name, _model(field), defaults[name])
    return "\n".join(parts)


def _model(field: FieldInfo) -> type[BaseModel]:
    annotation = field.annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation


def _section(parts: list[str], path: str, model: type[BaseModel], defaults: dict[str, Any]) -> None:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    doc = doc.split(": ", 1)[-1].replace("``", "`")
    parts.append(f"## `[{path}]`\n\n{doc}\n")
    parts.append("| key | type | default | meaning |\n|---|---|---|---|")
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        meaning = meaning.replace("``", "`")
        default = _default(name, defaults.get(name))
        parts.append(f"| `{path}.{name}` | {_type(field)} | {default} | {meaning} |")
    parts.append("")
    for name, sub in nested:
        _section(parts, f"{path}.{name}", sub, defaults.get(name) or {})


def _default(name: str, value: Any) -> str:
    if name == "id" and isinstance(value, str):
        return "host name"
    if value is None:
        return "unset"
    return f"`{json.dumps(value)}`"


def _type(field: FieldInfo) -> str:
    text = _validated_name(field.metadata) or _type_name(field.annotation)
    bounds = [f"≥ {m.ge}" for m in field.metadata if isinstance(m, Ge)]
    bounds += [f"≤ {m.le}" for m in field.metadata if isinstance(m, Le)]
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _annotated_name(args)
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return {"int": "integer", "str": "string", "bool": "boolean", "float": "number"}.get(
        getattr(annotation, "__name__", str(annotation)), getattr(annotation, "__name__", "?")
    )


def _annotated_name(args: tuple[Any, ...]) -> str:
    base, *metadata = args
    return _validated_name(metadata) or _type_name(base)


_VALIDATED = {
    "parse_duration": "duration",
    "parse_host": "host",
    "_optional_host": "host",
    "_network": "CIDR",
    "_path": "path",
    "_listen_text": "listen address",
    "_codec": "codec name",
    "parse_size": "size",
}


def _validated_name(metadata: list[Any]) -> str | None:
    """The friendly name of a type known by the validator pydantic runs on it."""
    for item in metadata:
        name = _VALIDATED.get(getattr(getattr(item, "func", None), "__name__", ""))
        if name is not None:
            return name
    return None


if __name__ == "__main__":
    print(reference_markdown(), end="")
