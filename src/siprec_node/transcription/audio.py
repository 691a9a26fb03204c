"""The audio of each turn, taken from a finalised recording as its sidecar describes it.

A turn (the sidecar's `metrics.turns`: participant, start and duration in ms from the media
epoch, which is sample 0 of every file) is cut from the channel of the stream its participant
is heard on, widened by `PAD_MS` on each side so that no word's edge is lost — but never into a
pause of the recording or of that stream (that audio is private; it is silence in the file
already, and a turn's own audio inside a pause, should there be any, is silenced too), nor
beyond the file. Audio comes out as 16 kHz mono float32, what Whisper models take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

RATE = 16000
PAD_MS = 250


class RecordingUnreadable(Exception):
    """The sidecar or audio of a job cannot be used (the job can never succeed)."""


@dataclass(frozen=True, slots=True)
class TurnAudio:
    """One turn's audio, cut for transcription."""

    index: int
    """Position of the turn in the sidecar's `metrics.turns`."""
    participant: str
    start_ms: int
    duration_ms: int
    samples: np.ndarray
    """16 kHz mono float32 in [-1, 1]."""

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE


def _ms(value: Any, epoch: datetime) -> int:
    return round((datetime.fromisoformat(str(value)) - epoch).total_seconds() * 1000)


def _pauses(meta: Mapping[str, Any], stream: int | None, epoch: datetime) -> list[tuple[int, int]]:
    spans = list(meta.get("pauses") or ())
    for s in meta.get("streams") or ():
        if s.get("index") == stream:
            spans += list(s.get("pauses") or ())
    return [(_ms(p["start"], epoch), _ms(p["end"], epoch)) for p in spans]


def stream_of(meta: Mapping[str, Any], participant: str) -> int | None:
    """The stream (m-line index) a turn's participant is heard on."""
    if participant.startswith("stream-") and participant[7:].isdigit():
        return int(participant[7:])
    for p in meta.get("participants") or ():
        if p.get("id") == participant and p.get("streams"):
            return int(p["streams"][0])
    for s in meta.get("streams") or ():
        if s.get("participant") == participant:
            return int(s["index"])
    return None


def _file_of(meta: Mapping[str, Any], stream: int) -> tuple[str, int] | None:
    """The file that holds a stream, and its channel there (a file of its own preferred)."""
    best: tuple[str, int] | None = None
    for audio in meta.get("audio") or ():
        streams = list(audio.get("streams") or ())
        if stream in streams:
            if len(streams) == 1:
                return str(audio["path"]), 0
            best = best or (str(audio["path"]), streams.index(stream))
    return best


def decode_channels(path: Path) -> list[np.ndarray]:
    """Every channel of an audio file at 16 kHz, float32."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            layout = stream.layout.name if stream.channels <= 2 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=RATE)
            chunks: list[np.ndarray] = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise RecordingUnreadable(f"{path.name}: {exc}") from exc
    if not chunks:
        raise RecordingUnreadable(f"{path.name}: no audio")
    planes = np.concatenate(chunks, axis=1)
    return [planes[c].astype(np.float32, copy=False) for c in range(planes.shape[0])]


def clip(
    start_ms: int, end_ms: int, pauses: Sequence[tuple[int, int]], length_ms: int, pad: int
) -> tuple[int, int]:
    """A turn's span widened by `pad` on each side, stopped at pauses and the file's ends."""
    first, last = max(start_ms - pad, 0), min(end_ms + pad, length_ms)
    for p_start, p_end in pauses:
        if p_end <= start_ms:
            first = max(first, p_end)
        elif p_start >= end_ms:
            last = min(last, p_start)
    return first, max(last, first)


def turn_audio(meta: Mapping[str, Any], directory: Path, pad_ms: int = PAD_MS) -> list[TurnAudio]:
    """The audio of every turn of a finalised recording (see module doc)."""
    metrics = meta.get("metrics") or {}
    turns = metrics.get("turns") or []
    if not turns:
        return []
    try:
        epoch = datetime.fromisoformat(str(meta["media_epoch"]))
    except (KeyError, ValueError) as exc:
        raise RecordingUnreadable(f"sidecar: no media_epoch: {exc}") from exc
    decoded: dict[str, list[np.ndarray]] = {}
    out: list[TurnAudio] = []
    for index, turn in enumerate(turns):
        who = str(turn["participant"])
        stream = stream_of(meta, who)
        place = None if stream is None else _file_of(meta, stream)
        if place is None:
            raise RecordingUnreadable(f"turn {index}: no audio file holds {who}'s stream")
        name, channel = place
        if name not in decoded:
            decoded[name] = decode_channels(directory / name)
        pcm = decoded[name][channel]
        start, duration = int(turn["start_ms"]), int(turn["duration_ms"])
        pauses = _pauses(meta, stream, epoch)
        length_ms = pcm.size * 1000 // RATE
        first, last = clip(start, start + duration, pauses, length_ms, pad_ms)
        samples = pcm[first * RATE // 1000 : last * RATE // 1000].copy()
        for p_start, p_end in pauses:  # inside the span: silence, whatever the file holds
            a, b = max(p_start, first) - first, min(p_end, last) - first
            if b > a:
                samples[a * RATE // 1000 : b * RATE // 1000] = 0.0
        out.append(TurnAudio(index, who, start, duration, samples))
    return out
