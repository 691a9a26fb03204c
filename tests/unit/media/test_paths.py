from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_node.media.paths import (
    MAX_STEM_LENGTH,
    parts_dir,
    recording_dir,
    recording_stem,
)

START = datetime(2024, 5, 1, 23, 30, 5, tzinfo=UTC)
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10))}


def assert_safe(stem: str) -> None:
    assert stem
    assert len(stem.encode()) <= MAX_STEM_LENGTH
    assert "/" not in stem and "\\" not in stem and "\x00" not in stem
    assert ".." not in stem
    assert all(32 < ord(c) < 127 for c in stem)
    assert not stem.startswith((".", "-"))
    assert stem.split(".")[0].upper() not in WINDOWS_RESERVED
    assert Path(stem).name == stem


def test_plain_identifiers_are_kept_readable() -> None:
    stem = recording_stem(START, "a84b4c76e66710@pc33.example.com", "0f8e2c1a-5b7d")
    assert stem == "20240501T233005Z_a84b4c76e66710_pc33.example.com_0f8e2c1a-5b7d"


@pytest.mark.parametrize(
    "call_id",
    [
        "../../etc/passwd",
        "..",
        "/",
        "a\x00b",
        "line\r\nbreak\tand\x7f",
        "CON",
        "nul.txt",
        "ünïcødé☎",
        "",
        " ",
        "x" * 5000,
        "-rf",
        ".hidden",
    ],
)
def test_weird_call_ids(call_id: str) -> None:
    stem = recording_stem(START, call_id, "sess-1")
    assert_safe(stem)
    assert stem.endswith("_sess-1")


@given(st.text(max_size=300), st.text(max_size=300))
def test_any_identifiers_give_a_safe_stem(call_id: str, session_id: str) -> None:
    assert_safe(recording_stem(START, call_id, session_id))


@given(st.text(max_size=200), st.text(max_size=200))
def test_different_session_ids_never_share_a_stem(a: str, b: str) -> None:
    if a != b:
        assert recording_stem(START, "same", a) != recording_stem(START, "same", b)


def test_session_ids_that_clean_to_the_same_text_stay_apart() -> None:
    stems = {recording_stem(START, "c", s) for s in ["a/b", "a\\b", "a b", "a_b", "a" * 65 + "1"]}
    stems.add(recording_stem(START, "c", "a" * 65 + "2"))
    assert len(stems) == 6


def test_stem_uses_utc() -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2024, 5, 2, 1, 30, 5, tzinfo=paris)
    assert recording_stem(local, "c", "s") == recording_stem(START, "c", "s")


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError):
        recording_stem(datetime(2024, 5, 1), "c", "s")


def test_dated_folders(tmp_path: Path) -> None:
    paris = timezone(timedelta(hours=2))
    assert recording_dir(tmp_path, START) == tmp_path / "2024" / "05" / "01"
    # 01:30 in Paris on the 2nd is still the 1st in UTC
    assert recording_dir(tmp_path, datetime(2024, 5, 2, 1, 30, tzinfo=paris)).name == "01"
    stem = recording_stem(START, "c", "s")
    assert parts_dir(tmp_path, START, stem) == tmp_path / "2024/05/01" / f"{stem}.parts"
    with pytest.raises(ValueError):
        parts_dir(tmp_path, START, "../x")
