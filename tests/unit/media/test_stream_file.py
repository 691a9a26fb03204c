"""Stream file writers and readers of FORMAT.md, checked with the test's own RIFF parsing."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from siprec_node.media.stream_file import (
    DtmfRecord,
    FramesWriter,
    GapSpan,
    PauseSpan,
    SsrcSpan,
    StreamFileError,
    StreamInfo,
    WavG711Writer,
    media_file_name,
    read_frames,
    read_stream_info,
    read_wav_g711,
    write_stream_info,
)


def riff_chunks(data: bytes) -> tuple[int, list[tuple[bytes, int, int]]]:
    """(RIFF size, [(chunk id, declared size, body offset)]), read the plain way."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    riff_size = int.from_bytes(data[4:8], "little")
    chunks = []
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append((cid, size, pos + 8))
        if cid == b"data":
            break
        pos += 8 + size + (size & 1)
    return riff_size, chunks


def check_wav(path: Path, law_tag: int) -> bytes:
    """A complete, closed G.711 WAVE file: sizes consistent; returns the samples."""
    data = path.read_bytes()
    riff_size, chunks = riff_chunks(data)
    assert riff_size == len(data) - 8
    ids = [c[0] for c in chunks]
    assert ids == [b"fmt ", b"fact", b"data"]
    _, fmt_size, fmt_at = chunks[0]
    assert fmt_size == 18
    tag, channels, rate, byte_rate, align, bits, cb = struct.unpack_from("<HHIIHHH", data, fmt_at)
    assert (tag, channels, rate, byte_rate, align, bits, cb) == (law_tag, 1, 8000, 8000, 1, 8, 0)
    _, _, fact_at = chunks[1]
    _, data_size, data_at = chunks[2]
    assert data_at + data_size == len(data)
    assert data_size % 2 == 0
    assert int.from_bytes(data[fact_at : fact_at + 4], "little") == data_size
    return data[data_at:]


def test_wav_positions_gaps_and_overlap(tmp_path: Path) -> None:
    path = tmp_path / "stream-0.wav"
    w = WavG711Writer(path, "PCMU")
    w.write(100, b"\x01" * 160)  # late start: 100 samples of silence first
    w.write(260, b"\x02" * 160)  # contiguous
    w.write(600, b"\x03" * 10)  # gap of 180
    w.write(605, b"\x04" * 10)  # overlaps 5: only the 5 new bytes
    w.close()
    samples = check_wav(path, 7)
    expected = b"\xff" * 100 + b"\x01" * 160 + b"\x02" * 160 + b"\xff" * 180
    expected += b"\x03" * 10 + b"\x04" * 5
    expected += b"\xff"  # padded to an even size with a silence sample
    assert samples == expected
    assert read_wav_g711(path) == ("PCMU", expected)


def test_alaw_silence_and_tag(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    w = WavG711Writer(path, "PCMA")
    w.write(4, b"\x2a\x2b")
    w.close()
    assert check_wav(path, 6) == b"\xd5" * 4 + b"\x2a\x2b"
    assert read_wav_g711(path) == ("PCMA", b"\xd5" * 4 + b"\x2a\x2b")


def test_header_exact_after_every_write_and_buffer_bounded(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    w = WavG711Writer(path, "PCMU", buffer_ms=100)

    def declared() -> int:
        return riff_chunks(path.read_bytes())[1][2][1]

    for i in range(50):  # one second of 20 ms packets
        w.write(i * 160, bytes([i]) * 160)
        assert declared() == w.samples_on_disk  # the header counts what was written
        assert w.end - w.samples_on_disk <= 800  # never more than 100 ms buffered
    # ahead of the samples, silence preallocated in one write (cut again at close)
    assert path.stat().st_size - 58 >= 8 * 8000
    assert path.read_bytes()[-100:] == b"\xff" * 100
    w.tick(10.0)
    assert declared() == 8000 == w.samples_on_disk
    w.close()
    assert path.stat().st_size - 58 == 8000 == declared()


def test_crash_cut_wav_reads_every_sample_present(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    w = WavG711Writer(path, "PCMU")
    payloads = [bytes([i % 200]) * 160 for i in range(100)]
    for i, p in enumerate(payloads):
        w.write(i * 160, p)
        if i == 40:
            w.tick(1.0)  # header says 41 packets; the file goes on past it
    w.flush()
    full = path.read_bytes()
    w.close()
    everything = b"".join(payloads)
    rng = random.Random(7)
    for cut in [58, 59, 58 + 160 * 41, 58 + 160 * 41 + 1, len(full)] + [
        rng.randrange(58, len(full)) for _ in range(40)
    ]:
        cut_path = tmp_path / "cut.wav"
        cut_path.write_bytes(full[:cut])
        law, samples = read_wav_g711(cut_path)
        assert law == "PCMU" and samples == everything[: cut - 58]


def test_wav_without_data_or_foreign_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x01\x00" * 8)
    with pytest.raises(StreamFileError):
        read_wav_g711(path)
    path.write_bytes(b"not a wave file at all")
    with pytest.raises(StreamFileError):
        read_wav_g711(path)


def test_wav_continues_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    w = WavG711Writer(path, "PCMU")
    w.write(0, b"\x01" * 161)
    w.flush()  # "crash": no close, no header update
    os.close(w._fd)
    w2 = WavG711Writer(path, "PCMU")
    assert w2.end == 161
    w2.write(200, b"\x02" * 3)
    w2.close()
    assert check_wav(path, 7) == b"\x01" * 161 + b"\xff" * 39 + b"\x02" * 3 + b"\xff"
    with pytest.raises(StreamFileError):
        WavG711Writer(path, "PCMA")


def test_frames_round_trip_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "stream-1.frames"
    w = FramesWriter(path, 48000)
    records = [(960 * i + (5000 if i > 10 else 0), bytes([i]) * (20 + i)) for i in range(30)]
    for position, payload in records:
        w.write(position, payload)
    w.close()
    data = path.read_bytes()
    # the header and records as FORMAT.md describes them
    assert data[:8] == b"SRFRAMES" and struct.unpack_from("<II", data, 8) == (1, 48000)
    pos, parsed = 16, []
    while pos < len(data):
        position, length = struct.unpack_from("<QH", data, pos)
        parsed.append((position, data[pos + 10 : pos + 10 + length]))
        pos += 10 + length
    assert parsed == records
    assert read_frames(path) == (48000, records)
    # a crash cut anywhere: the whole records before the cut
    ends = []
    pos = 16
    for _, payload in records:
        pos += 10 + len(payload)
        ends.append(pos)
    for cut in range(16, len(data) + 1, 7):
        path.write_bytes(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        assert read_frames(path) == (48000, records[:whole])


def test_frames_continue_after_a_cut_record(tmp_path: Path) -> None:
    path = tmp_path / "s.frames"
    w = FramesWriter(path, 8000)
    w.write(0, b"a" * 40)
    w.write(160, b"b" * 40)
    w.close()
    path.write_bytes(path.read_bytes()[:-5])  # last record cut
    w = FramesWriter(path, 8000)
    assert w.last_position == 0
    w.write(320, b"c" * 40)
    w.close()
    assert read_frames(path) == (8000, [(0, b"a" * 40), (320, b"c" * 40)])
    with pytest.raises(StreamFileError):
        FramesWriter(path, 48000)


def test_frames_buffer_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "s.frames"
    w = FramesWriter(path, 48000, buffer_ms=100)
    for i in range(100):
        w.write(960 * i, b"x" * 60)
        on_disk = read_frames(path)[1]
        last_on_disk = on_disk[-1][0] if on_disk else -960
        assert 960 * i - last_on_disk <= 4800 + 960  # ≤ 100 ms (+ the packet) buffered
    w.tick(0.0)
    assert len(read_frames(path)[1]) == 100
    w.close()


def test_short_or_foreign_frames_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.frames"
    path.write_bytes(b"SRFRAMES\x01\x00")
    with pytest.raises(StreamFileError):
        read_frames(path)
    path.write_bytes(b"XXFRAMES" + struct.pack("<II", 1, 8000))
    with pytest.raises(StreamFileError):
        read_frames(path)


def test_stream_info_json(tmp_path: Path) -> None:
    path = tmp_path / "stream-0.json"
    info = StreamInfo(
        index=0,
        label="leg-a",
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        epoch=1_700_000_000.125,
        ssrcs=[SsrcSpan(0x1234, 4000), SsrcSpan(0x99, None)],
        packets=10,
        lost=1,
        jitter_ms=2.5,
        first_position=4000,
        last_position=5440,
        pauses=[PauseSpan(8000, 32000), PauseSpan(40000, None)],
        dtmf=[DtmfRecord(4800, 5, 800)],
    )
    write_stream_info(path, info)
    raw = json.loads(path.read_text())
    assert set(raw) == {
        "index",
        "label",
        "codec",
        "payload_type",
        "clock_rate",
        "channels",
        "epoch",
        "ssrcs",
        "packets",
        "lost",
        "duplicates",
        "late",
        "jitter_ms",
        "first_position",
        "last_position",
        "pauses",
        "dtmf",
        "closed",
        "unclean_restarts",
        "sr_offset_ms",
        "sr_offset_reports",
        "version",
        "stretches",
        "unexpected_payload",
        "switches_refused",
        "gaps",
        "gap_count",
        "gap_length",
        "foreign_packets",
        "write_errors",
        "write_lost_ms",
        "write_error",
    }
    assert raw["foreign_packets"] == 0
    assert raw["ssrcs"][0] == {"ssrc": 0x1234, "first_position": 4000}
    assert raw["pauses"][1] == {"start": 40000, "end": None}
    assert raw["dtmf"] == [{"position": 4800, "event": 5, "duration": 800}]
    assert (raw["sr_offset_ms"], raw["sr_offset_reports"]) == (None, 0)
    assert read_stream_info(path) == info
    assert not list(tmp_path.glob("*.tmp"))


def test_stream_info_gaps_and_unexpected_payload_types(tmp_path: Path) -> None:
    path = tmp_path / "stream-0.json"
    info = StreamInfo(0, None, "PCMU", 0, 8000, 1, 1_700_000_000.0)
    info.gaps, info.gap_count, info.gap_length = [GapSpan(800, 2400)], 3, 4000
    info.unexpected_payload = {96: 50, 4: 1}
    write_stream_info(path, info)
    raw = json.loads(path.read_text())
    assert raw["gaps"] == [{"start": 800, "end": 2400}]
    assert raw["unexpected_payload"] == {"96": 50, "4": 1}
    assert read_stream_info(path) == info
    # a sidecar of a node that did not know these fields yet
    old = {
        k: v
        for k, v in info.to_dict().items()
        if k not in ("gaps", "gap_count", "gap_length", "unexpected_payload")
    }
    path.write_text(json.dumps(old))
    loaded = read_stream_info(path)
    assert (loaded.gaps, loaded.gap_count, loaded.gap_length) == ([], 0, 0)
    assert loaded.unexpected_payload == {}


def test_stream_info_sr_offset_and_sidecars_written_before_it(tmp_path: Path) -> None:
    path = tmp_path / "stream-0.json"
    info = StreamInfo(0, None, "PCMA", 8, 8000, 1, 1_700_000_000.0)
    info.sr_offset_ms, info.sr_offset_reports = 41.25, 7
    write_stream_info(path, info)
    assert read_stream_info(path) == info
    # a sidecar of a node that did not know these fields yet
    old = {k: v for k, v in info.to_dict().items() if not k.startswith("sr_offset")}
    path.write_text(json.dumps(old))
    loaded = read_stream_info(path)
    assert (loaded.sr_offset_ms, loaded.sr_offset_reports) == (None, 0)


def test_file_names() -> None:
    assert media_file_name(0, "PCMU") == "stream-0.wav"
    assert media_file_name(1, "PCMA") == "stream-1.wav"
    assert media_file_name(2, "G722") == "stream-2.frames"
    assert media_file_name(3, "opus") == "stream-3.frames"


class _FullDisk:
    """os.pwrite/os.write that refuse every write (ENOSPC) while ``full``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import errno as _errno
        import os as _os

        self.full = False
        self.budget: int | None = None  # bytes the disk still takes (None: no limit)
        real_pwrite = _os.pwrite

        def pwrite(fd: int, data: Any, offset: int) -> int:
            if offset == 0:  # the header rewrites allocated bytes
                return real_pwrite(fd, data, offset)
            if self.full or self.budget == 0:
                raise OSError(_errno.ENOSPC, "No space left on device")
            if self.budget is not None:
                data = memoryview(data)[: self.budget]
                self.budget -= len(data)
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr("siprec_node.media.stream_file.os.pwrite", pwrite)


def test_a_full_disk_loses_audio_but_keeps_positions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FullDisk(monkeypatch)
    wav = WavG711Writer(tmp_path / "stream-0.wav", "PCMU", buffer_ms=20)
    frames = FramesWriter(tmp_path / "stream-1.frames", 16000, buffer_ms=20)
    wav.write(0, b"\x10" * 160)
    frames.write(0, b"a" * 80)
    frames.flush()
    disk.full = True
    wav.write(160, b"\x20" * 160)  # lost: the flush fails, nothing raised
    frames.write(320, b"b" * 80)
    frames.flush()
    assert wav.errors.count == 1 and wav.errors.lost == 160 and wav.pending
    assert "ENOSPC" in str(wav.errors.error)
    assert frames.errors.count == 1
    disk.full = False
    wav.write(320, b"\x30" * 160)  # silence takes the lost samples' place
    frames.write(640, b"c" * 80)
    wav.close()
    frames.close()
    _, samples = read_wav_g711(tmp_path / "stream-0.wav")
    assert samples == b"\x10" * 160 + b"\xff" * 160 + b"\x30" * 160
    _, records = read_frames(tmp_path / "stream-1.frames")
    assert [position for position, _ in records] == [0, 640]  # whole records only


def test_a_write_the_disk_takes_in_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = _FullDisk(monkeypatch)
    wav = WavG711Writer(tmp_path / "stream-0.wav", "PCMU", buffer_ms=20)
    wav.write(0, b"\x10" * 160)
    wav.flush()
    wav._room = wav._written  # no preallocated room: the next write needs new blocks
    disk.budget = 50
    wav.write(160, b"\x20" * 160)  # 50 bytes taken, 110 lost
    assert wav.errors.count == 1 and wav.errors.lost == 110
    disk.budget = None
    wav.write(320, b"\x30" * 160)
    wav.close()
    _, samples = read_wav_g711(tmp_path / "stream-0.wav")
    assert samples == b"\x10" * 160 + b"\x20" * 50 + b"\xff" * 110 + b"\x30" * 160
