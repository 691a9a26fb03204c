"""The recording disk: free space against recording.min_free, files known by name, and the
start-up search for recordings left unfinalised."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siprec_node.config.sizes import format_size, parse_size
from siprec_node.media import disk
from siprec_node.media.disk import (
    DiskSpace,
    clean_leftovers,
    parse_stem,
    remove_parts,
    unfinalised_parts,
)
from siprec_node.media.paths import parts_dir, recording_stem


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), (0, 0), ("500MB", 500_000_000), ("2GiB", 2 << 30), ("64m", 64_000_000), (12, 12)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["lots", "5 parsecs", "-1", -1, True, "1.5.2GB"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


def test_low_below_min_free_and_back(tmp_path: Path) -> None:
    free = [10_000]
    woken: list[bool] = []
    space = DiskSpace(
        tmp_path, 5_000, probe=lambda _: free[0], on_recovered=lambda: woken.append(True)
    )
    assert not space.check() and space.reason is None
    free[0] = 4_999
    assert space.check() and space.low
    assert "recording.min_free" in str(space.reason) and "4999 bytes free" in str(space.reason)
    free[0] = 5_000
    assert not space.check() and woken == [True]
    assert not DiskSpace(tmp_path, 0, probe=lambda _: 0).check()  # 0: no minimum


def test_free_bytes_of_a_folder_not_made_yet(tmp_path: Path) -> None:
    assert disk.free_bytes(tmp_path / "not" / "yet") > 0


def test_leftovers_are_removed_by_name_without_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stem = "20261203T120000Z_call_abc"
    left = [tmp_path / f".{stem}.wav.partial", tmp_path / f".{stem}.stream-1.opus.partial"]
    kept = [tmp_path / ".other.wav.partial", tmp_path / f"{stem}.wav"]
    for path in left + kept:
        path.write_bytes(b"x")

    def no_listing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the day folder must not be listed")

    monkeypatch.setattr(Path, "glob", no_listing)
    monkeypatch.setattr(Path, "iterdir", no_listing)
    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    assert clean_leftovers(tmp_path, stem, [0, 1]) == 2
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


def _parts(root: Path, started: datetime, call_id: str, session_id: str, closed: bool) -> Path:
    stem = recording_stem(started, call_id, session_id)
    parts = parts_dir(root, started, stem)
    parts.mkdir(parents=True)
    (parts / "stream-0.wav").write_bytes(b"RIFF")
    (parts / "stream-0.json").write_text(json.dumps({"index": 0, "closed": closed}))
    return parts


def test_unfinalised_parts(tmp_path: Path) -> None:
    now = time.time()
    started = datetime.fromtimestamp(now - 60, UTC)
    ended = _parts(tmp_path, started, "a@x", "11111111-aaaa", closed=True)
    live = _parts(tmp_path, started, "b@x", "22222222-bbbb", closed=False)
    final = _parts(tmp_path, started, "c@x", "33333333-cccc", closed=True)
    (final.parent / final.name.removesuffix(".parts")).with_suffix(".json").write_text("{}")
    found = unfinalised_parts(tmp_path, now=now)
    assert [f.parts for f in found] == [ended]
    assert (found[0].call_id, found[0].session_id) == ("a_x", "11111111-aaaa")
    # a folder nobody touched for STALE_S is abandoned whatever its JSON says
    later = now + disk.STALE_S + 1
    assert {f.parts for f in unfinalised_parts(tmp_path, now=later)} == {ended, live}
    assert remove_parts(ended) and not ended.exists() and not remove_parts(ended)


def test_stems_read_back() -> None:
    started = datetime(2026, 12, 3, 12, 0, 1, tzinfo=UTC)
    stem = recording_stem(started, "weird/call id@host", "9f1c-77")
    assert parse_stem(stem) == (started, "weird_call_id_host", "9f1c-77")
    assert parse_stem("not a stem") is None


def _sys_tree(root: Path, path: Path, device: str, journal_task: str | None) -> None:
    """A /sys with the block device of ``path``'s filesystem named ``device``."""
    st = os.stat(path)
    (root / "devices" / device).mkdir(parents=True)
    (root / "dev" / "block").mkdir(parents=True)
    (root / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}").symlink_to(
        root / "devices" / device
    )
    if journal_task is not None:
        (root / "fs" / "ext4" / device).mkdir(parents=True)
        (root / "fs" / "ext4" / device / "journal_task").write_text(journal_task)


@pytest.mark.parametrize(
    ("journal_task", "found"),
    [("<none>\n", "vdz1"), ("412\n", None), (None, None)],
    ids=["ext4-no-journal", "ext4-journal", "not-ext4"],
)
def test_ext4_without_journal_is_read_from_sysfs(
    tmp_path: Path, journal_task: str | None, found: str | None
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    _sys_tree(tmp_path / "sys", recordings, "vdz1", journal_task)
    sys_root = str(tmp_path / "sys")
    assert disk.ext4_without_journal(recordings, sys_root=sys_root) == found
    # a directory not made yet: its nearest existing parent's filesystem
    assert disk.ext4_without_journal(recordings / "2026" / "12", sys_root=sys_root) == found


def test_no_sysfs_entry_for_the_device_says_nothing(tmp_path: Path) -> None:
    assert disk.ext4_without_journal(tmp_path, sys_root=str(tmp_path / "empty")) is None


def test_the_node_warns_at_start_about_ext4_without_journal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from siprec_node import app
    from siprec_node.config import Settings

    settings = Settings()
    fake = SimpleNamespace(settings=settings)
    for device, expected in (("vdz1", 1), (None, 0)):
        monkeypatch.setattr(app, "ext4_without_journal", lambda _path, d=device: d)
        with capture_logs() as logs:
            app.Node._warn_about_the_filesystem(fake)  # type: ignore[arg-type]
        warned = [e for e in logs if e["event"] == "recording_filesystem_without_journal"]
        assert len(warned) == expected
        if warned:
            assert warned[0]["device"] == "vdz1" and warned[0]["log_level"] == "warning"
            assert warned[0]["directory"] == str(settings.recording.directory)
