"""Finalisation aligns the legs by their RTCP sender reports (FORMAT.md, `sr_offset_ms`).

Two legs carry the same noise bursts at the same true times (as two microphones of one room
would), each with a tone of its own between them. The parts are written by hand as the receive
path would have left them when leg B's packets reached the recorder 40 ms after leg A's: B's
audio sits 40 ms late in its file, while the senders' reports (`sr_offset_ms`, file time minus
sender's clock) say so: B's offset is 40 ms larger than A's. How far apart the legs are in the
final file is measured independently, by cross-correlating its two channels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from siprec_node.media.finalise import finalise_call
from tests.unit.media.test_finalise import Parts, call, read_wav

RATE = 8000
END = 3.5  # the call: BYE 3.5 s after the media epoch
LATE = 0.040  # how late leg B's audio was placed
BURSTS = (1.0, 1.7, 2.4)  # true times of the shared noise bursts
ORIGIN = 0.5  # the scene starts this long before the epoch (a leg may have started before it)


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    folder = tmp_path / "p.parts"
    folder.mkdir()
    return Parts(folder)


def scene(rate: int = RATE) -> np.ndarray:
    """What both legs hear, on the true timeline from `-ORIGIN` to the end of the call."""
    rng = np.random.default_rng(7)
    x = np.zeros(round((ORIGIN + END) * rate))
    for at in BURSTS:
        a = round((ORIGIN + at) * rate)
        x[a : a + round(0.06 * rate)] = rng.normal(0, 0.25, round(0.06 * rate))
    return x


def leg(freq: float, start: float, stop: float, rate: int = RATE) -> np.ndarray:
    """One leg's int16 audio from true time `start` to `stop`: the scene and its own tone."""
    x = scene(rate)
    t = np.arange(x.size) / rate - ORIGIN
    x = x + 0.1 * np.sin(2 * np.pi * freq * t)
    frame = rate // 50
    a, b = round((ORIGIN + start) * rate), round((ORIGIN + stop) * rate)
    b -= (b - a) % frame
    return np.clip(np.round(x[a:b] * 32767), -32768, 32767).astype(np.int16)


def lag_ms(reference: np.ndarray, other: np.ndarray, rate: int, within: float = 0.2) -> float:
    """How late `other` is against `reference` (ms), from the peak of their cross-correlation
    (parabolic interpolation between samples)."""
    a, b = reference.astype(np.float64), other.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)  # xc[k] = Σ b[t+k]a[t]
    m = round(within * rate)
    window = np.concatenate((xc[-m:], xc[: m + 1]))  # lags -m .. m
    k = int(np.argmax(window))
    shift = 0.0
    if 0 < k < window.size - 1:
        y0, y1, y2 = window[k - 1], window[k], window[k + 1]
        shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return (k - m + shift) / rate * 1000


def two_legs(
    parts: Parts,
    *,
    a_start: float = 0.5,
    a_stop: float = 3.0,
    b_start: float = 0.6,
    b_stop: float = 3.0,
    offsets: tuple[float | None, float | None] = (3.0, 3.0 + LATE * 1000),
    reports: tuple[int, int] = (5, 5),
) -> None:
    """Leg A (PCMU) placed where it belongs, leg B (PCMA) `LATE` late; `offsets` (ms) and
    `reports` are what their sidecars say of the SRs (None: no SR)."""
    placed = {0: a_start, 1: b_start + LATE}
    for index, (codec, pcm) in enumerate(
        (("PCMU", leg(440, a_start, a_stop)), ("PCMA", leg(1000, b_start, b_stop)))
    ):
        extra: dict[str, Any] = {"first_position": round(placed[index] * RATE)}
        if offsets[index] is not None:
            extra |= {"sr_offset_ms": offsets[index], "sr_offset_reports": reports[index]}
        parts.g711(index, codec, pcm, start_s=placed[index], **extra)


def finalise(parts: Parts, out: Path, **kw: Any) -> tuple[np.ndarray, dict[str, Any]]:
    finalise_call(parts.path, output_dir=out, stem="rec", call=call(END), **kw)
    samples, rate = read_wav(out / "rec.wav")
    assert rate == RATE
    return samples, json.loads((out / "rec.json").read_text())


def moved(side: dict[str, Any]) -> list[float]:
    return [s["alignment_ms"] for s in side["streams"]]


# -- tests -----------------------------------------------------------------------------------


def test_the_measurement_sees_the_40_ms(parts: Parts, tmp_path: Path) -> None:
    two_legs(parts, offsets=(None, None))
    samples, side = finalise(parts, tmp_path / "out")
    assert lag_ms(samples[:, 0], samples[:, 1], RATE) == pytest.approx(40, abs=0.2)
    assert moved(side) == [0.0, 0.0]
    assert side["alignment"] == {"method": "arrival", "reference": None, "notes": []}
    assert [s["sr_offset_ms"] for s in side["streams"]] == [None, None]


def test_the_late_leg_is_moved_earlier_through_its_leading_silence(
    parts: Parts, tmp_path: Path
) -> None:
    two_legs(parts)
    samples, side = finalise(parts, tmp_path / "out")
    measured = lag_ms(samples[:, 0], samples[:, 1], RATE)
    print(f"legs after RTCP alignment: {measured:+.3f} ms apart (40 ms before)")
    assert abs(measured) < 1.0
    assert moved(side) == [0.0, -40.0]
    assert side["alignment"]["method"] == "rtcp" and side["alignment"]["reference"] == 0
    assert [s["sr_offset_ms"] for s in side["streams"]] == [3.0, 43.0]
    assert [s["sr_offset_reports"] for s in side["streams"]] == [5, 5]
    # a second of call is a second of file, and none of B's audio was dropped
    assert samples.shape[0] == END * RATE
    b = leg(1000, 0.6, 3.0).astype(np.float64)
    right = samples[:, 1].astype(np.float64)
    assert np.sum(np.abs(right) > 64) == pytest.approx(np.sum(np.abs(b) > 64), abs=20)
    start = round(0.6 * RATE)
    assert np.corrcoef(right[start : start + b.size], b)[0, 1] > 0.99  # where it belongs


def test_without_leading_silence_the_other_leg_is_delayed(parts: Parts, tmp_path: Path) -> None:
    # B's first packet arrived at the epoch: it cannot move earlier; A has silence after it
    two_legs(parts, b_start=-LATE, a_stop=3.0)
    samples, side = finalise(parts, tmp_path / "out")
    assert abs(lag_ms(samples[:, 0], samples[:, 1], RATE)) < 1.0
    assert moved(side) == [40.0, 0.0]
    assert samples.shape[0] == END * RATE
    a = leg(440, 0.5, 3.0).astype(np.float64)
    left = samples[:, 0].astype(np.float64)
    start = round((0.5 + LATE) * RATE)
    assert np.corrcoef(left[start : start + a.size], a)[0, 1] > 0.99  # all of A, 40 ms later


def test_a_short_leading_silence_is_used_and_the_rest_delays_the_other(
    parts: Parts, tmp_path: Path
) -> None:
    two_legs(parts, b_start=0.010 - LATE)  # B's audio 10 ms after the epoch in its file
    samples, side = finalise(parts, tmp_path / "out")
    assert abs(lag_ms(samples[:, 0], samples[:, 1], RATE)) < 1.0
    assert moved(side) == [30.0, -10.0]


def test_no_room_either_way_moves_nothing(parts: Parts, tmp_path: Path) -> None:
    two_legs(parts, b_start=-LATE, a_stop=END)  # B from the epoch, A up to the BYE
    samples, side = finalise(parts, tmp_path / "out")
    assert lag_ms(samples[:, 0], samples[:, 1], RATE) == pytest.approx(40, abs=0.2)
    assert moved(side) == [0.0, 0.0]
    assert side["alignment"]["method"] == "arrival"
    assert "without cutting audio" in side["alignment"]["notes"][0]


def test_offsets_too_far_apart_are_distrusted(parts: Parts, tmp_path: Path) -> None:
    two_legs(parts, offsets=(3.0, 743.0))
    samples, side = finalise(parts, tmp_path / "out")
    assert lag_ms(samples[:, 0], samples[:, 1], RATE) == pytest.approx(40, abs=0.2)
    assert moved(side) == [0.0, 0.0]
    assert side["alignment"]["method"] == "arrival"
    (problem,) = side["streams"][1]["problems"]
    assert "+740.0 ms" in problem and "not trusted" in problem
    assert side["alignment"]["notes"] == [problem]


@pytest.mark.parametrize(
    ("offsets", "reports"),
    [((3.0, None), (5, 0)), ((3.0, 43.0), (5, 1)), ((None, None), (0, 0)), ((3.0, np.nan), (5, 5))],
    ids=["no-sr", "one-sr", "none", "not-a-number"],
)
def test_a_leg_without_enough_sender_reports_moves_nothing(
    parts: Parts, tmp_path: Path, offsets: tuple[float | None, float | None], reports: tuple
) -> None:
    two_legs(parts, offsets=offsets, reports=reports)
    samples, side = finalise(parts, tmp_path / "out")
    assert lag_ms(samples[:, 0], samples[:, 1], RATE) == pytest.approx(40, abs=0.2)
    assert moved(side) == [0.0, 0.0]
    assert side["alignment"]["method"] == "arrival"
    assert all(not s["problems"] for s in side["streams"])


def test_offsets_within_a_millisecond_move_nothing(parts: Parts, tmp_path: Path) -> None:
    two_legs(parts, offsets=(3.0, 3.6))
    _, side = finalise(parts, tmp_path / "out")
    assert moved(side) == [0.0, 0.0]
    assert side["alignment"]["method"] == "rtcp"


def test_three_legs_the_odd_clock_out(parts: Parts, tmp_path: Path) -> None:
    two_legs(parts)
    parts.g711(2, "PCMU", leg(700, 0.5, 3.0), start_s=0.5 + 0.02, first_position=4160)
    parts.info(2, "PCMU", 8000, first_position=4160, sr_offset_ms=9000.0, sr_offset_reports=3)
    finalise_call(parts.path, output_dir=tmp_path / "out", stem="rec", call=call(END))
    side = json.loads((tmp_path / "out" / "rec.json").read_text())
    # 0 and 1 agree with each other, 2 with neither: 0 is the reference, 2 is left alone
    assert side["alignment"]["reference"] == 0
    assert moved(side) == [0.0, -40.0, 0.0]
    assert "not trusted" in side["streams"][2]["problems"][0]


def test_a_frame_log_leg_moves_with_its_pauses_and_dtmf(parts: Parts, tmp_path: Path) -> None:
    """A G.722 leg B (a frame log, 16 kHz decoded): the file's right channel moves 40 ms
    earlier against the same call finalised without SRs; B's pause and DTMF move with it."""
    a = leg(440, 0.5, 3.0)
    b16k = leg(1000, 0.6, 3.0, rate=16000)
    parts.g711(0, "PCMU", a, start_s=0.5, first_position=4000)
    pause = {"start": round(2.0 * RATE), "end": round(2.2 * RATE)}
    dtmf = {"position": round(1.2 * RATE), "event": 5, "duration": 800}

    def b_info(**sr: Any) -> None:
        parts.g722(1, b16k, start_s=0.6 + LATE)
        parts.info(1, "G722", 8000, first_position=round(0.64 * RATE), pauses=[pause], **sr)
        info = json.loads((parts.path / "stream-1.json").read_text())
        info["dtmf"] = [dtmf]
        (parts.path / "stream-1.json").write_text(json.dumps(info))

    b_info()
    finalise_call(parts.path, output_dir=tmp_path / "plain", stem="rec", call=call(END))
    parts.info(0, "PCMU", 8000, first_position=4000, sr_offset_ms=3.0, sr_offset_reports=4)
    b_info(sr_offset_ms=43.0, sr_offset_reports=4)
    finalise_call(parts.path, output_dir=tmp_path / "rtcp", stem="rec", call=call(END))
    before, rate = read_wav(tmp_path / "plain" / "rec.wav")
    after, rate2 = read_wav(tmp_path / "rtcp" / "rec.wav")
    assert rate == rate2 == 16000 and before.shape == after.shape
    assert lag_ms(before[:, 1], after[:, 1], rate) == pytest.approx(-40, abs=0.1)
    assert lag_ms(before[:, 0], after[:, 0], rate) == pytest.approx(0, abs=0.1)
    side_before = json.loads((tmp_path / "plain" / "rec.json").read_text())
    side_after = json.loads((tmp_path / "rtcp" / "rec.json").read_text())
    assert moved(side_after) == [0.0, -40.0]
    assert side_before["streams"][1]["dtmf"][0]["at_ms"] == 1200
    assert side_after["streams"][1]["dtmf"][0]["at_ms"] == 1160
    assert side_after["streams"][1]["pauses"][0]["start"].endswith("12:00:01.960+00:00")
    assert side_before["streams"][1]["pauses"][0]["start"].endswith("12:00:02.000+00:00")
