"""Voice activity per participant and the conversation metrics derived from it.

Energy-based, per channel (one participant per channel), in 20 ms frames, all in numpy:

1. Level: each frame's RMS in dBFS.
2. Noise floor: the minimum level over a sliding window centred on the frame (minimum
   statistics; `floor_window_ms`, 3 s), kept between `floor_min_db` (so digital silence does
   not make every breath speech) and `floor_max_db` (so a long monologue, whose minimum within
   the window is speech, is still speech).
3. Hysteresis: speech starts on a frame `start_db` above the floor and lasts while frames stay
   `stop_db` above it (runs above the low threshold that contain a frame above the high one).
4. Segments shorter than `min_speech_ms` are dropped (clicks); segments of one participant
   closer than `max_gap_ms` are one turn (the pauses inside a sentence).

Turns give who spoke, when and how long. A turn is *interrupted* when another participant starts
speaking while it lasts (strictly after it started) and both keep speaking for at least
`min_overlap_ms`. As in `SessionState.metrics`, a turn counts once however many times it is
talked into; `speech_ms` of a participant is the sum of their turns' durations, so the numbers
here are those `SessionState.add_turn` accumulates from the same turns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

FRAME_MS = 20


@dataclass(frozen=True)
class VadConfig:
    """Thresholds of the detector and of turn taking (levels in dB, times in ms)."""

    frame_ms: int = FRAME_MS
    start_db: float = 12.0
    stop_db: float = 6.0
    floor_window_ms: int = 3000
    floor_min_db: float = -70.0
    floor_max_db: float = -40.0
    min_speech_ms: int = 60
    max_gap_ms: int = 400
    min_overlap_ms: int = 200


@dataclass(frozen=True)
class SpeechTurn:
    """A stretch of speech by one participant, in ms from the recording's media epoch."""

    participant: str
    start_ms: int
    duration_ms: int
    interrupted: bool = False

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "start_ms": self.start_ms,
            "duration_ms": self.duration_ms,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class Interruption:
    """`by` started speaking at `at_ms` while `of` was speaking; they overlapped `overlap_ms`."""

    at_ms: int
    by: str
    of: str
    overlap_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"at_ms": self.at_ms, "by": self.by, "of": self.of, "overlap_ms": self.overlap_ms}


class TurnSink(Protocol):
    """What takes turns: `SessionState.add_turn` has this shape."""

    def add_turn(
        self, participant: str, start: datetime, duration_ms: int, *, interrupted: bool = False
    ) -> object: ...


@dataclass(frozen=True)
class Conversation:
    """The turns of a recording (in start order) and what they add up to."""

    participants: tuple[str, ...]
    turns: tuple[SpeechTurn, ...] = ()
    interruptions: tuple[Interruption, ...] = ()
    speech_ms: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """The sidecar's `metrics`: `SessionState.metrics` keys, plus the turns themselves."""
        turns_by = dict.fromkeys(self.participants, 0)
        interrupted_by = dict.fromkeys(self.participants, 0)
        made_by = dict.fromkeys(self.participants, 0)
        for turn in self.turns:
            turns_by[turn.participant] += 1
        for event in self.interruptions:
            interrupted_by[event.of] += 1
            made_by[event.by] += 1
        return {
            "turn_count": len(self.turns),
            "interruptions": len(self.interruptions),
            "speech_ms": dict(self.speech_ms),
            "turns_by": turns_by,
            "interruptions_by": interrupted_by,
            "interruptions_made_by": made_by,
            "turns": [t.to_dict() for t in self.turns],
            "interruption_events": [i.to_dict() for i in self.interruptions],
        }

    def record_into(self, target: TurnSink, epoch: datetime) -> None:
        """Add every turn to `target` (a `SessionState`), timed from the media `epoch`."""
        for turn in self.turns:
            target.add_turn(
                turn.participant,
                epoch + timedelta(milliseconds=turn.start_ms),
                turn.duration_ms,
                interrupted=turn.interrupted,
            )


# -- levels and activity -------------------------------------------------------------------


def frame_levels(pcm: np.ndarray, rate: int, frame_ms: int = FRAME_MS) -> np.ndarray:
    """RMS level of each whole frame of mono `pcm` in dBFS (a trailing partial frame is
    ignored)."""
    size = rate * frame_ms // 1000
    count = pcm.shape[0] // size
    frames = pcm[: count * size].reshape(count, size).astype(np.float32)
    power: np.ndarray = np.einsum("ij,ij->i", frames, frames) / (size * 32768.0**2)
    return 10.0 * np.log10(power + 1e-12)


def sliding_min(values: np.ndarray, window: int) -> np.ndarray:
    """Minimum over a centred window of `window` items (van Herk / Gil-Werman, O(n))."""
    n = values.shape[0]
    if n == 0 or window <= 1:
        return values.copy()
    half = window // 2
    blocks = -(-(n + window) // window)
    padded = np.full(blocks * window, np.inf, dtype=np.float64)
    padded[half : half + n] = values
    grid = padded.reshape(blocks, window)
    prefix = np.minimum.accumulate(grid, axis=1).reshape(-1)
    suffix = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    # the window of item i covers padded[i : i + window]
    return np.minimum(suffix[:n], prefix[window - 1 : window - 1 + n])


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate(([False], mask, [False])).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def voice_activity(levels: np.ndarray, config: VadConfig = VadConfig()) -> np.ndarray:
    """Per-frame speech flags from frame levels (dBFS), with hysteresis on an adaptive floor."""
    window = max(config.floor_window_ms // config.frame_ms, 1)
    floor = np.clip(sliding_min(levels, window), config.floor_min_db, config.floor_max_db)
    high = levels > floor + config.start_db
    low = levels > floor + config.stop_db
    starts, ends = _runs(low)
    # a run above the low threshold is speech if any of its frames crosses the high one
    totals = np.concatenate(([0], np.cumsum(high, dtype=np.int64)))
    speech = (totals[ends] - totals[starts]) > 0
    active: np.ndarray = np.zeros_like(low)
    active[low] = np.repeat(speech, ends - starts)
    return active


def speech_segments(
    active: np.ndarray, config: VadConfig = VadConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Turns of one channel as (start ms, end ms) arrays: blips dropped, short gaps bridged."""
    starts, ends = _runs(active)
    min_frames = -(-config.min_speech_ms // config.frame_ms)
    long_enough = (ends - starts) >= min_frames
    starts, ends = starts[long_enough], ends[long_enough]
    if starts.size > 1:
        gap_frames = config.max_gap_ms // config.frame_ms
        new_turn = np.concatenate(([True], (starts[1:] - ends[:-1]) > gap_frames))
        last = np.concatenate((np.flatnonzero(new_turn)[1:] - 1, [starts.size - 1]))
        starts, ends = starts[new_turn], ends[last]
    return starts * config.frame_ms, ends * config.frame_ms


# -- conversation --------------------------------------------------------------------------


def conversation(
    segments: Mapping[str, tuple[np.ndarray, np.ndarray]], config: VadConfig = VadConfig()
) -> Conversation:
    """Turns, interruptions and speech time from each participant's (start ms, end ms) turns."""
    names = tuple(segments)
    interrupted: dict[str, np.ndarray] = {
        name: np.zeros(len(s), dtype=bool) for name, (s, _) in segments.items()
    }
    found: list[tuple[Interruption, int]] = []
    for by in names:
        b_starts, b_ends = segments[by]
        for of in names:
            a_starts, a_ends = segments[of]
            if of == by or not len(b_starts) or not len(a_starts):
                continue
            # the turn of `of` in progress when each turn of `by` starts (turns do not overlap)
            idx = np.maximum(np.searchsorted(a_starts, b_starts, side="right") - 1, 0)
            overlap = np.minimum(a_ends[idx], b_ends) - b_starts
            hit = (a_starts[idx] < b_starts) & (a_ends[idx] > b_starts)
            hit &= overlap >= config.min_overlap_ms
            for b in np.flatnonzero(hit).tolist():
                event = Interruption(int(b_starts[b]), by, of, int(overlap[b]))
                found.append((event, int(idx[b])))
    # a turn counts once, for the earliest interruption
    found.sort(key=lambda item: (item[0].at_ms, item[0].by, item[0].of))
    events: list[Interruption] = []
    for event, turn in found:
        if not interrupted[event.of][turn]:
            interrupted[event.of][turn] = True
            events.append(event)
    turns = [
        SpeechTurn(name, int(s), int(e - s), bool(flag))
        for name in names
        for s, e, flag in zip(
            segments[name][0].tolist(),
            segments[name][1].tolist(),
            interrupted[name].tolist(),
            strict=True,
        )
    ]
    turns.sort(key=lambda t: (t.start_ms, names.index(t.participant)))
    speech = {name: int((segments[name][1] - segments[name][0]).sum()) for name in names}
    return Conversation(names, tuple(turns), tuple(events), speech)


def analyse_levels(
    channels: Iterable[tuple[str, np.ndarray]], config: VadConfig = VadConfig()
) -> Conversation:
    """The conversation from each channel's frame levels (`frame_levels`), `(participant,
    levels)` per channel; a participant listed more than once (heard on several streams)
    speaks when any of their channels has speech."""
    activity: dict[str, np.ndarray] = {}
    for name, levels in channels:
        active = voice_activity(levels, config)
        known = activity.get(name)
        if known is not None:
            size = max(known.size, active.size)
            active = np.pad(known, (0, size - known.size)) | np.pad(active, (0, size - active.size))
        activity[name] = active
    segments = {name: speech_segments(active, config) for name, active in activity.items()}
    return conversation(segments, config)


def analyse(
    channels: Mapping[str, tuple[np.ndarray, int]] | Iterable[tuple[str, np.ndarray, int]],
    config: VadConfig = VadConfig(),
) -> Conversation:
    """The conversation of participants each heard on their own channel: `participant ->
    (pcm, rate)`, or `(participant, pcm, rate)` per channel."""
    items = (
        [(name, pcm, rate) for name, (pcm, rate) in channels.items()]
        if isinstance(channels, Mapping)
        else list(channels)
    )
    return analyse_levels(
        ((name, frame_levels(pcm, rate, config.frame_ms)) for name, pcm, rate in items), config
    )
