"""Finalisation of parts written by the receive path's own writers (media/stream_file.py).

test_finalise.py builds parts by hand from FORMAT.md; here the recorder's writers produce them,
so a drift between the two sides of the contract fails here.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from siprec_node.media.finalise import finalise_call
from siprec_node.media.stream_file import (
    FramesWriter,
    PauseSpan,
    SsrcSpan,
    StreamInfo,
    WavG711Writer,
    info_file_name,
    media_file_name,
    write_stream_info,
)

from .test_finalise import (
    ALICE,
    BOB,
    EPOCH,
    call,
    dominant,
    encode,
    g711_bytes,
    read_wav,
    rms,
    span,
    tone,
)


def info(index: int, codec: str, clock: int, **changes: object) -> StreamInfo:
    values: dict[str, object] = {
        "index": index,
        "label": f"L{index}",
        "codec": codec,
        "payload_type": 0 if codec == "PCMU" else 111,
        "clock_rate": clock,
        "channels": 1,
        "epoch": EPOCH.timestamp(),
        "ssrcs": [SsrcSpan(0xABC0 + index, 0)],
        "packets": 150,
        "lost": 1,
    }
    values.update(changes)
    return StreamInfo(**values)  # type: ignore[arg-type]


def test_parts_from_the_recorders_writers(tmp_path: Path) -> None:
    parts = tmp_path / "x.parts"
    parts.mkdir()
    # stream 0: PCMU, 20 ms payloads with a lost second (1.0 s to 2.0 s) and a pause after
    pcmu = g711_bytes("PCMU", tone(440, 3.0, 8000))
    wav = WavG711Writer(parts / media_file_name(0, "PCMU"), "PCMU")
    for position in range(0, len(pcmu), 160):
        if not 8000 <= position < 16000:
            wav.write(position, pcmu[position : position + 160])
        wav.tick(position / 8000)
    wav.close()
    write_stream_info(
        parts / info_file_name(0),
        info(0, "PCMU", 8000, pauses=[PauseSpan(20000, 24000)], closed=True),
    )
    # stream 1: Opus from 0.5 s
    packets = encode("libopus", tone(1000, 2.5, 48000), 48000, frame=960)
    frames = FramesWriter(parts / media_file_name(1, "opus"), 48000)
    for k, payload in enumerate(packets):
        frames.write(24000 + 960 * k, payload)
    frames.close()
    write_stream_info(parts / info_file_name(1), info(1, "opus", 48000, closed=True))

    result = finalise_call(
        parts, output_dir=tmp_path, stem="x", call=call(3.5), participants=[ALICE, BOB]
    )
    samples, rate = read_wav(result.files[0])
    assert rate == 48000 and abs(samples.shape[0] / rate - 3.5) <= 0.02
    left, right = samples[:, 0], samples[:, 1]
    assert dominant(span(left, rate, 0.1, 0.9), rate) == pytest.approx(440, abs=2)
    assert rms(span(left, rate, 1.05, 1.95)) < 20  # the lost second
    assert rms(span(left, rate, 2.55, 2.95)) < 20  # the pause
    assert dominant(span(right, rate, 0.6, 2.9), rate) == pytest.approx(1000, abs=2)
    assert rms(span(right, rate, 0.0, 0.45)) < 20
    streams = result.metadata["streams"]
    assert [(s["label"], s["ssrc"], s["participant"]) for s in streams] == [
        ("L0", 0xABC0, "alice"),
        ("L1", 0xABC1, "bob"),
    ]
    assert streams[0]["pauses"] == [
        {"start": "2024-05-01T12:00:02.500+00:00", "end": "2024-05-01T12:00:03.000+00:00"}
    ]


def test_parts_of_a_node_killed_mid_call(tmp_path: Path) -> None:
    parts = tmp_path / "k.parts"
    parts.mkdir()
    pcmu = g711_bytes("PCMU", tone(440, 3.0, 8000))
    wav = WavG711Writer(parts / media_file_name(0, "PCMU"), "PCMU")
    write_stream_info(parts / info_file_name(0), info(0, "PCMU", 8000))
    for position in range(0, len(pcmu), 160):
        wav.write(position, pcmu[position : position + 160])
        wav.tick(position / 8000)  # never closed: silence preallocated past the last sample
    packets = encode("libopus", tone(1000, 3.0, 48000), 48000, frame=960)
    frames = FramesWriter(parts / media_file_name(1, "opus"), 48000)
    write_stream_info(parts / info_file_name(1), info(1, "opus", 48000))
    for k, payload in enumerate(packets):
        frames.write(960 * k, payload)
    frames.flush()
    # SIGKILL: nothing closed; the last frame record is cut by the dying write
    os.truncate(
        parts / media_file_name(1, "opus"), (parts / media_file_name(1, "opus")).stat().st_size - 5
    )
    killed_at = EPOCH + timedelta(seconds=3)

    result = finalise_call(
        parts,
        output_dir=tmp_path,
        stem="k",
        call=call(0, ended_at=killed_at, status="failed", end_reason="node rec-1 died"),
    )
    samples, rate = read_wav(result.files[0])
    assert abs(samples.shape[0] / rate - 3.0) <= 0.02
    assert rms(span(samples[:, 0], rate, 2.5, 2.95)) > 1000  # up to the kill
    assert dominant(span(samples[:, 1], rate, 0.5, 2.9), rate) == pytest.approx(1000, abs=2)
    assert [s["complete"] for s in result.metadata["streams"]] == [False, False]
    assert result.metadata["end_reason"] == "node rec-1 died"
    wav.close()
    frames.close()


def test_finalising_while_nothing_was_flushed(tmp_path: Path) -> None:
    parts = tmp_path / "e.parts"
    parts.mkdir()
    wav = WavG711Writer(parts / media_file_name(0, "PCMA"), "PCMA")
    write_stream_info(parts / info_file_name(0), info(0, "PCMA", 8000))
    result = finalise_call(parts, output_dir=tmp_path, stem="e", call=call(1.0))
    samples, _ = read_wav(result.files[0])
    assert samples.shape == (8000, 1)
    assert np.abs(samples).max() <= 8  # A-law silence decodes to +-8
    wav.close()
