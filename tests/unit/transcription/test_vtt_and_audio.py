"""WebVTT writing and parsing; cutting each turn's audio without crossing into a pause."""

from __future__ import annotations

import json
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from siprec_node.transcription import vtt
from siprec_node.transcription.audio import (
    RATE,
    RecordingUnreadable,
    clip,
    stream_of,
    turn_audio,
)


def test_vtt_round_trip_with_speakers_and_escapes() -> None:
    cues = [
        vtt.Cue(500, 2750, "Alice", "Hello, <how> are you & yours?"),
        vtt.Cue(3_600_000 + 61_001, 3_600_000 + 62_500, "Bob", "Fine."),
        vtt.Cue(9000, 9100, "Bob", "   "),  # nothing said: no cue
    ]
    document = vtt.render(cues)
    assert document.startswith("WEBVTT\n\n1\n00:00:00.500 --> 00:00:02.750\n<v Alice>Hello, &lt;")
    assert "01:01:01.001 --> 01:01:02.500" in document
    assert vtt.parse(document) == cues[:2]


@pytest.mark.parametrize(
    "document",
    [
        "",
        "1\n00:00:00.000 --> 00:00:01.000\n<v A>x",
        "WEBVTT\n\n00:00:01.000 --> 00:00:00.000\n<v A>x",
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nno speaker",
        "WEBVTT\n\n00:00:61.000 --> 00:01:00.000\n<v A>x",
    ],
)
def test_vtt_parse_rejects_what_is_not_webvtt(document: str) -> None:
    with pytest.raises(ValueError):
        vtt.parse(document)


def test_padding_stops_at_pauses_and_file_ends() -> None:
    # turn 1000-2000 ms, pad 250: a pause ending at 900 and one starting at 2100 bound it
    assert clip(1000, 2000, [], 10_000, 250) == (750, 2250)
    assert clip(1000, 2000, [(0, 900), (2100, 3000)], 10_000, 250) == (900, 2100)
    assert clip(100, 9950, [], 10_000, 250) == (0, 10_000)
    assert clip(1000, 2000, [(5000, 6000)], 10_000, 250) == (750, 2250)


def _sidecar(tmp_path: Path, left: np.ndarray, right: np.ndarray, **extra: object) -> dict:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    with wave.open(str(tmp_path / "r.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        pcm = np.stack([left, right], axis=1)
        wav.writeframes((pcm * 32767).astype("<i2").tobytes())

    def at(ms: int) -> str:
        return (epoch + timedelta(milliseconds=ms)).isoformat()

    meta = {
        "session_id": "s",
        "media_epoch": epoch.isoformat(),
        "audio": [{"path": "r.wav", "streams": [0, 1]}],
        "participants": [{"id": "alice", "streams": [0]}, {"id": "bob", "streams": [1]}],
        "streams": [{"index": 0, "pauses": []}, {"index": 1, "pauses": []}],
        "pauses": [{"start": at(2100), "end": at(3000)}],
        "metrics": {
            "turns": [
                {"participant": "alice", "start_ms": 1000, "duration_ms": 1000},
                {"participant": "bob", "start_ms": 3000, "duration_ms": 500},
                {"participant": "stream-1", "start_ms": 1900, "duration_ms": 600},
            ]
        },
    }
    meta.update(extra)
    return meta


def test_turn_audio_takes_the_speakers_channel_and_never_a_pause(tmp_path: Path) -> None:
    n = 4 * 8000
    left = np.full(n, 0.5)  # a constant level makes every sample's origin visible
    right = np.full(n, -0.25)
    meta = _sidecar(tmp_path, left, right)
    turns = turn_audio(meta, tmp_path)
    assert [t.participant for t in turns] == ["alice", "bob", "stream-1"]
    alice, bob, stream = turns
    # alice: 750 ms before, up to the pause at 2100 ms after
    assert alice.samples.size == (2100 - 750) * RATE // 1000
    assert np.allclose(alice.samples[100:-100], 0.5, atol=0.01)  # her channel only
    # bob starts where the pause ends: the padding does not reach back into it
    assert bob.samples.size == (3750 - 3000) * RATE // 1000
    assert np.allclose(bob.samples[100:-100], -0.25, atol=0.01)
    # a turn overlapping the pause: the part inside it is silence
    first = 1650
    inside = stream.samples[(2100 - first) * RATE // 1000 + 10 :]
    assert inside.size > 0 and not inside.any()
    assert np.allclose(stream.samples[100 : (2100 - first) * RATE // 1000 - 100], -0.25, atol=0.01)


def test_stream_of_and_unreadable_audio(tmp_path: Path) -> None:
    meta = _sidecar(tmp_path, np.zeros(8000), np.zeros(8000))
    assert stream_of(meta, "bob") == 1 and stream_of(meta, "stream-0") == 0
    assert stream_of(meta, "carol") is None
    (tmp_path / "r.wav").write_bytes(b"RIFF....WAVEgarbage")
    with pytest.raises(RecordingUnreadable, match=r"r\.wav"):
        turn_audio(meta, tmp_path)
    meta["participants"] = []
    meta["streams"] = []
    meta["metrics"]["turns"] = [{"participant": "carol", "start_ms": 0, "duration_ms": 10}]
    with pytest.raises(RecordingUnreadable, match="carol"):
        turn_audio(json.loads(json.dumps(meta)), tmp_path)
