"""docs/configuration.md is what the settings models generate, and documents every key."""

from __future__ import annotations

from pathlib import Path

from siprec_node.config import Settings
from siprec_node.config.reference import reference_markdown

PAGE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def _keys(model: type, prefix: str) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        if hasattr(annotation, "model_fields"):
            keys += _keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_page_is_up_to_date() -> None:
    assert PAGE.read_text() == reference_markdown(), (
        "regenerate: python -m siprec_node.config.reference > docs/configuration.md"
    )


def test_every_key_has_a_row_with_its_meaning() -> None:
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[4].strip()
        for line in reference_markdown().splitlines()
        if line.startswith("| `")
    }
    keys = _keys(Settings, "")
    assert sorted(rows) == sorted(keys)
    assert [key for key in keys if not rows[key]] == []
