"""Voice activity and conversation metrics on synthetic conversations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from siprec_node.media.vad import (
    VadConfig,
    analyse,
    conversation,
    frame_levels,
    sliding_min,
    speech_segments,
    voice_activity,
)
from siprec_node.session.state import SessionState

RATE = 8000


def channel(
    spans: Sequence[tuple[float, float]],
    seconds: float,
    freq: float = 440,
    level_db: float = -15,
    noise_db: float = -65,
    seed: int = 0,
) -> np.ndarray:
    """Tone bursts over background noise, int16 at 8 kHz."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    x = rng.standard_normal(n) * 32768 * 10 ** (noise_db / 20)
    amplitude = 32768 * 10 ** (level_db / 20) * np.sqrt(2)
    for start, end in spans:
        a, b = round(start * RATE), round(end * RATE)
        x[a:b] += np.sin(2 * np.pi * freq * t[a:b]) * amplitude
    return np.clip(x, -32768, 32767).astype(np.int16)


def turns_of(conv, who: str) -> list[tuple[int, int]]:
    return [(t.start_ms, t.end_ms) for t in conv.turns if t.participant == who]


# -- levels and activity -------------------------------------------------------------------


def test_frame_levels() -> None:
    full = (np.sin(2 * np.pi * 1000 * np.arange(8000) / RATE) * 32767).astype(np.int16)
    levels = frame_levels(full, RATE)
    assert levels.shape == (50,)
    assert levels == pytest.approx(-3.01, abs=0.05)
    assert frame_levels(np.zeros(8100, np.int16), RATE).max() < -100
    assert frame_levels(np.zeros(159, np.int16), RATE).size == 0


@pytest.mark.parametrize("window", [1, 2, 5, 150, 1000])
def test_sliding_min_is_a_centred_window_minimum(window: int) -> None:
    values = np.random.default_rng(window).normal(size=777)
    half = window // 2
    expected = [values[max(i - half, 0) : i - half + window].min() for i in range(values.size)]
    assert np.array_equal(sliding_min(values, window), np.array(expected))
    assert sliding_min(np.zeros(0), window).size == 0


def test_tone_bursts_are_found_to_the_frame() -> None:
    spans = [(0.5, 1.3), (2.0, 2.5), (4.0, 6.0)]
    active = voice_activity(frame_levels(channel(spans, 7.0), RATE))
    starts, ends = speech_segments(active, VadConfig(max_gap_ms=0))
    assert starts.tolist() == [500, 2000, 4000]
    assert ends.tolist() == [1300, 2500, 6000]


def test_a_monologue_longer_than_the_floor_window_is_speech() -> None:
    active = voice_activity(frame_levels(channel([(1.0, 21.0)], 22.0), RATE))
    assert active[55:1045].all()
    assert not active[:45].any() and not active[1060:].any()


def test_steady_noise_is_not_speech_and_speech_over_it_is() -> None:
    noisy = channel([(3.0, 4.0)], 8.0, level_db=-20, noise_db=-45)
    active = voice_activity(frame_levels(noisy, RATE))
    assert not active[:140].any() and not active[210:].any()
    assert active[152:198].all()


def test_digital_silence_does_not_make_breaths_speech() -> None:
    x = np.zeros(4 * RATE, np.int16)
    x[RATE : RATE + 800] = (np.random.default_rng(1).standard_normal(800) * 3).astype(np.int16)
    assert not voice_activity(frame_levels(x, RATE)).any()


def test_hysteresis() -> None:
    floor = np.full(300, -60.0)
    levels = floor.copy()
    levels[100:110] = -45  # crosses the start threshold (floor + 12)
    levels[110:150] = -52  # between stop (floor + 6) and start: speech goes on
    levels[200:240] = -52  # never crossed the start threshold: not speech
    active = voice_activity(levels, VadConfig(floor_window_ms=100_000))
    assert np.flatnonzero(active).tolist() == list(range(100, 150))


def test_segments_drop_blips_and_bridge_short_gaps() -> None:
    active = np.zeros(200, bool)
    active[10:12] = True  # 40 ms click
    active[20:40] = True
    active[50:60] = True  # 200 ms gap: same turn
    active[100:120] = True  # 800 ms gap: a new turn
    starts, ends = speech_segments(active)
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [(400, 1200), (2000, 2400)]


# -- conversations -------------------------------------------------------------------------


def seg(*spans: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s for s, _ in spans], np.int64), np.array([e for _, e in spans], np.int64)


def test_turn_taking_without_interruptions() -> None:
    conv = conversation({"a": seg((0, 1000), (3000, 4000)), "b": seg((1200, 2800))})
    assert [(t.participant, t.start_ms, t.duration_ms) for t in conv.turns] == [
        ("a", 0, 1000),
        ("b", 1200, 1600),
        ("a", 3000, 1000),
    ]
    assert conv.interruptions == ()
    assert conv.speech_ms == {"a": 2000, "b": 1600}


def test_interruptions() -> None:
    conv = conversation(
        {
            # a's first turn is talked into twice (counts once), its second only briefly
            "a": seg((0, 5000), (8000, 10000)),
            "b": seg((1000, 1500), (3000, 6000), (9000, 9100), (12000, 13000)),
            # c starts exactly with b's last turn: not an interruption of b
            "c": seg((12000, 12500)),
        },
        VadConfig(min_overlap_ms=200),
    )
    assert [(i.at_ms, i.by, i.of, i.overlap_ms) for i in conv.interruptions] == [
        (1000, "b", "a", 500)
    ]
    flagged = [(t.participant, t.start_ms) for t in conv.turns if t.interrupted]
    assert flagged == [("a", 0)]
    metrics = conv.metrics()
    assert metrics["interruptions"] == 1
    assert metrics["interruptions_by"] == {"a": 1, "b": 0, "c": 0}
    assert metrics["interruptions_made_by"] == {"a": 0, "b": 1, "c": 0}
    assert metrics["turns_by"] == {"a": 2, "b": 4, "c": 1}


def test_a_long_turn_talked_into_by_two_others() -> None:
    conv = conversation(
        {"a": seg((0, 9000)), "b": seg((2000, 3000)), "c": seg((2500, 4000))},
        VadConfig(min_overlap_ms=200),
    )
    # c starts while a and b both speak: b's turn is interrupted too; a's counts once
    assert [(i.by, i.of) for i in conv.interruptions] == [("b", "a"), ("c", "b")]
    assert sum(t.interrupted for t in conv.turns) == 2


def test_alternating_bursts_with_overlaps_end_to_end() -> None:
    alice = channel([(0.5, 2.5), (5.0, 7.0), (9.0, 10.0)], 12.0, freq=440, seed=1)
    bob = channel([(3.0, 4.5), (6.0, 7.5), (9.9, 11.0)], 12.0, freq=1000, seed=2)
    conv = analyse({"alice": (alice, RATE), "bob": (bob, RATE)})
    assert turns_of(conv, "alice") == [(500, 2500), (5000, 7000), (9000, 10000)]
    assert turns_of(conv, "bob") == [(3000, 4500), (6000, 7500), (9900, 11000)]
    # bob starts 1 s into alice's second turn (counted), and 100 ms before her third ends (not)
    assert [(i.at_ms, i.by, i.of) for i in conv.interruptions] == [(6000, "bob", "alice")]
    assert conv.speech_ms == {"alice": 5000, "bob": 4100}

    epoch = datetime(2024, 5, 1, 12, tzinfo=UTC)
    state = SessionState(id="s", call_id="c")
    conv.record_into(state, epoch)
    assert state.metrics.turn_count == 6
    assert state.metrics.interruptions == 1
    assert state.metrics.speech_ms == conv.speech_ms
    assert [t.participant for t in state.history] == ["alice", "bob"] * 3
    assert state.history[3].start == epoch + timedelta(milliseconds=6000)
    assert state.history[2].interrupted


def test_one_participant_on_two_channels() -> None:
    first = channel([(0.5, 1.5)], 4.0)
    second = channel([(2.5, 3.5)], 4.0)
    conv = analyse([("a", first, RATE), ("a", second, RATE)])
    assert turns_of(conv, "a") == [(500, 1500), (2500, 3500)]


def test_silence_everywhere() -> None:
    conv = analyse({"a": (np.zeros(RATE, np.int16), RATE), "b": (np.zeros(0, np.int16), RATE)})
    assert conv.turns == () and conv.speech_ms == {"a": 0, "b": 0}
    assert conv.metrics()["turn_count"] == 0
