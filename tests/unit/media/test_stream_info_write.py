"""``write_stream_info``: the sidecar rewritten through a persistent twin and renameat2.

The twin ``stream-<i>.json.tmp`` is rewritten in place and swapped with the sidecar
(RENAME_EXCHANGE), so rewrites allocate no inode; a reader still sees the old or the new JSON.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import fcntl
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from siprec_node.media import stream_file
from siprec_node.media.finalise import finalise_call
from siprec_node.media.stream_file import (
    DtmfRecord,
    PauseSpan,
    SsrcSpan,
    StreamInfo,
    WavG711Writer,
    info_file_name,
    media_file_name,
    read_stream_info,
    write_stream_info,
)

from .test_finalise import EPOCH, call

needs_exchange = pytest.mark.skipif(
    not stream_file._exchange_works, reason="renameat2(RENAME_EXCHANGE) not available here"
)


@pytest.fixture(autouse=True)
def _restore_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that makes the exchange fail must not turn it off for the tests after it."""
    monkeypatch.setattr(stream_file, "_exchange_works", stream_file._exchange_works)


def info(version: int, *, index: int = 0) -> StreamInfo:
    """Version ``version`` of a sidecar; its length goes up and down with the version."""
    width = (version * 37) % 200  # 0..199: successive versions shrink and grow
    return StreamInfo(
        index=index,
        label="x" * width,
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        epoch=EPOCH.timestamp(),
        ssrcs=[SsrcSpan(0x1234, 4000)] + [SsrcSpan(i, None) for i in range(version % 5)],
        packets=version,
        lost=version % 7,
        jitter_ms=version / 8,
        first_position=4000,
        last_position=4000 + 160 * version,
        pauses=[PauseSpan(8000, None)] * (version % 3),
        dtmf=[DtmfRecord(4800, 5, 800)] * (version % 2),
        closed=version % 11 == 0,
        unclean_restarts=list(range(version % 4)),
    )


def consistent(got: StreamInfo) -> bool:
    """Is ``got`` exactly one of the versions written (not a mix of two)?"""
    return got == info(got.packets, index=got.index)


def twin(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def test_round_trip_over_many_rewrites_that_shrink_and_grow(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    sizes = set()
    for version in range(300):
        write_stream_info(path, info(version))
        assert read_stream_info(path) == info(version)
        raw = path.read_bytes()
        assert json.loads(raw) == info(version).to_dict()  # nothing left past the JSON
        sizes.add(len(raw))
    assert len(sizes) > 100


def test_the_first_write_leaves_no_twin_and_the_second_makes_one(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream-0.json"]
    write_stream_info(path, info(2))
    if stream_file._exchange_works:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["stream-0.json", "stream-0.json.tmp"]


@needs_exchange
def test_the_twin_holds_the_previous_complete_json(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    versions = [40, 41, 45, 47, 50, 51]  # lengths go up and down
    write_stream_info(path, info(versions[0]))
    for previous, version in itertools.pairwise(versions):
        write_stream_info(path, info(version))
        assert read_stream_info(path) == info(version)
        assert read_stream_info(twin(path)) == info(previous)


@needs_exchange
def test_rewrites_reuse_the_two_inodes(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(1))
    write_stream_info(path, info(2))
    inodes = {path.stat().st_ino, twin(path).stat().st_ino}
    for version in range(3, 20):
        write_stream_info(path, info(version))
        assert path.stat().st_ino in inodes
        assert {path.stat().st_ino, twin(path).stat().st_ino} == inodes
    assert read_stream_info(path) == info(19)


def test_the_mode_is_that_of_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    for version in range(3):
        write_stream_info(path, info(version))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def refuse(code: int, calls: list[tuple[bytes, bytes]]) -> Any:
    def renameat2(fd_a: int, a: bytes, fd_b: int, b: bytes, flags: int) -> int:
        calls.append((a, b))
        ctypes.set_errno(code)
        return -1

    return renameat2


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM])
def test_a_refused_exchange_falls_back_to_a_rename_once_and_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(1))
    calls: list[tuple[bytes, bytes]] = []
    monkeypatch.setattr(stream_file, "_renameat2", refuse(code, calls))
    monkeypatch.setattr(stream_file, "_exchange_works", True)
    for version in range(2, 60):
        write_stream_info(path, info(version))
        assert read_stream_info(path) == info(version)
        assert not twin(path).exists()  # renamed over the sidecar every time
    assert calls == [(os.fsencode(twin(path)), os.fsencode(path))]  # tried once per process
    assert stream_file._exchange_works is False


def test_without_renameat2_a_new_file_is_renamed_over_the_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / info_file_name(0)
    monkeypatch.setattr(stream_file, "_renameat2", None)
    monkeypatch.setattr(stream_file, "_exchange_works", False)
    twin(path).write_text('{"index": 0, "lab')  # a crash's leftover
    for version in range(30):
        inode = path.stat().st_ino if path.exists() else None
        write_stream_info(path, info(version))
        assert read_stream_info(path) == info(version)
        assert path.stat().st_ino != inode
    assert not twin(path).exists()


def test_another_error_of_the_exchange_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES, EIO...: os.replace is tried and raises the same error when it fails too."""
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(1))
    monkeypatch.setattr(stream_file, "_renameat2", refuse(errno.EIO, []))
    monkeypatch.setattr(stream_file, "_exchange_works", True)

    def replace(a: object, b: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(stream_file.os, "replace", replace)
    with pytest.raises(OSError) as raised:
        write_stream_info(path, info(2))
    assert raised.value.errno == errno.EIO
    assert stream_file._exchange_works is True  # not a refusal: the exchange stays in use
    assert read_stream_info(path) == info(1)


def test_without_locks_the_twin_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem without flock: readers could not hold the twin still, so no twin."""
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(1))

    def flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(stream_file.fcntl, "flock", flock)
    for version in range(2, 10):
        write_stream_info(path, info(version))
        assert read_stream_info(path) == info(version)  # the reader reads without its lock
    assert not twin(path).exists()
    assert stream_file._exchange_works is False


@needs_exchange
def test_a_twin_that_a_reader_holds_is_left_to_the_reader(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(150))
    with open(path, "rb") as held:  # a reader opened the sidecar and locked it...
        fcntl.flock(held.fileno(), fcntl.LOCK_SH)
        write_stream_info(path, info(151))  # ...its inode became the twin...
        write_stream_info(path, info(152))  # ...and was not written into
        write_stream_info(path, info(153))
        assert json.loads(held.read()) == info(150).to_dict()
        assert os.fstat(held.fileno()).st_nlink == 0
    assert read_stream_info(path) == info(153)
    assert read_stream_info(twin(path)) == info(152)


@needs_exchange
def test_a_reader_never_sees_a_partial_or_mixed_sidecar(tmp_path: Path) -> None:
    path = tmp_path / info_file_name(0)
    write_stream_info(path, info(0))
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def reader() -> None:
        while not done.is_set() or not seen:
            try:
                got = read_stream_info(path)
            except Exception as exc:
                problems.append(repr(exc))
                continue
            if not consistent(got):
                problems.append(f"mixed: {got}")
            elif seen and got.packets < seen[-1]:
                problems.append(f"went back from {seen[-1]} to {got.packets}")
            seen.append(got.packets)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(1, 2001):
            write_stream_info(path, info(version))
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert len(set(seen)) > 1
    assert read_stream_info(path) == info(2000)


def test_to_dict_is_what_asdict_gives() -> None:
    for version in (0, 1, 7, 60, 119):
        got = info(version).to_dict()
        want = dataclasses.asdict(info(version))
        assert list(got.items()) == list(want.items())  # the same keys, in the same order
        assert got["ssrcs"] is not info(version).ssrcs


def test_a_twin_in_a_parts_folder_is_ignored_and_removed_with_it(tmp_path: Path) -> None:
    """finalise lists parts by ``stream-<i>.(wav|frames|json)``: a ``.json.tmp`` is no stream
    of its own, even a crash's unreadable leftover; ``remove_parts`` takes the twin along."""
    parts = tmp_path / "x.parts"
    parts.mkdir()
    wav = WavG711Writer(parts / media_file_name(0, "PCMU"), "PCMU")
    wav.write(0, b"\x11" * 8000)
    wav.close()
    sidecar = parts / info_file_name(0)
    for version in (1, 2, 3):
        write_stream_info(sidecar, dataclasses.replace(info(version), label="L0", closed=True))
    (parts / "stream-1.json.tmp").write_text('{"index": 1, "co')  # leftover of a crash
    result = finalise_call(
        parts,
        output_dir=tmp_path,
        stem="x",
        call=call(1.0),
        metrics=False,
        durable=False,
        remove_parts=True,
    )
    assert [s["index"] for s in result.metadata["streams"]] == [0]
    assert result.metadata["streams"][0]["packets"] == 3
    assert not parts.exists()
