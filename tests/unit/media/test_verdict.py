"""The verdict rules of media/verdict.py, one problem kind at a time."""

from __future__ import annotations

import json

import pytest

from siprec_node.media.verdict import (
    CallWindow,
    Problem,
    StreamEvidence,
    Verdict,
    judge_call,
    judge_stream,
)

WINDOW = CallWindow(start=0.5, end=10.5)  # 10 s of active time


def clean(index: int = 0, **changes: object) -> StreamEvidence:
    values: dict[str, object] = {
        "index": index,
        "packets": 500,
        "audio": (0.52, 10.5),
        "peak_dbfs": -6.0,
    }
    values.update(changes)
    return StreamEvidence(**values)  # type: ignore[arg-type]


def test_a_clean_stream_is_ok() -> None:
    verdict = judge_stream(clean(), WINDOW)
    assert verdict.ok and verdict.status == "ok" and verdict.problems == ()
    assert verdict.to_dict() == {"status": "ok", "problems": []}


def test_no_rtp_is_only_that() -> None:
    verdict = judge_stream(StreamEvidence(index=1), WINDOW)
    assert verdict.kinds == ("no_rtp",)
    assert verdict.to_dict() == {"status": "problems", "problems": [{"kind": "no_rtp"}]}


def test_no_rtp_when_the_end_is_unknown() -> None:
    # a takeover: the call's end is the end of the recorded media, here its start
    assert judge_stream(StreamEvidence(index=0), CallWindow(0.5, 0.0)).kinds == ("no_rtp",)


def test_no_rtp_is_not_a_problem_for_a_stream_paused_all_along() -> None:
    paused = StreamEvidence(index=1, pauses=[(0.0, 11.0)])
    assert judge_stream(paused, WINDOW).ok
    assert judge_stream(StreamEvidence(index=1), CallWindow(0.5, 10.5, [(0.5, 10.5)])).ok


def test_silent_below_minus_60_dbfs() -> None:
    quiet = judge_stream(clean(peak_dbfs=-72.25), WINDOW)
    assert quiet.kinds == ("silent",)
    assert quiet.get("silent") == Problem("silent", peak_dbfs=-72.2)
    assert judge_stream(clean(peak_dbfs=-59.9), WINDOW).ok
    digital = judge_stream(clean(peak_dbfs=float("-inf")), WINDOW)
    assert digital.to_dict()["problems"] == [{"kind": "silent", "peak_dbfs": None}]
    assert judge_stream(clean(peak_dbfs=None), WINDOW).kinds == ("silent",)


def test_unexpected_payload_per_type() -> None:
    verdict = judge_stream(clean(unexpected_payload={96: 40, 4: 10, 18: 0}), WINDOW)
    assert verdict.kinds == ("unexpected_payload",)
    assert verdict.to_dict()["problems"] == [
        {"kind": "unexpected_payload", "packets": 50, "payload_types": {"4": 10, "96": 40}}
    ]


def test_foreign_packets_are_named_on_the_stream_and_summed_for_the_call() -> None:
    verdict = judge_stream(clean(foreign_packets=25), WINDOW)
    assert verdict.to_dict()["problems"] == [{"kind": "foreign_packets", "packets": 25}]
    assert judge_stream(clean(foreign_packets=0), WINDOW).kinds == ()
    # a stream that got nothing but foreign packets: no_rtp, and says why
    starved = judge_stream(StreamEvidence(index=1, foreign_packets=7), WINDOW)
    assert starved.kinds == ("no_rtp", "foreign_packets")
    call = judge_call(
        [clean(0, foreign_packets=25), StreamEvidence(index=1, foreign_packets=7)], WINDOW
    ).call
    assert call.get("foreign_packets") == Problem("foreign_packets", (0, 1), packets=32)


def test_undecodable_frames_and_streams_whose_codec_is_not_decoded() -> None:
    assert judge_stream(clean(undecodable=3), WINDOW).get("undecodable") == Problem(
        "undecodable", frames=3
    )
    opaque = judge_stream(clean(decodable=False, peak_dbfs=None), WINDOW)
    assert opaque.get("undecodable") == Problem("undecodable", frames=500)
    assert "silent" not in opaque.kinds  # its audio was never decoded: not judged silent
    assert "short" in opaque.kinds  # and it covers nothing


def test_short_when_rtp_stops_long_before_the_end() -> None:
    verdict = judge_stream(clean(audio=(0.52, 3.5)), WINDOW)
    assert verdict.kinds == ("short",)
    assert verdict.get("short") == Problem("short", covered_ms=2980, active_ms=10000, percent=29.8)


def test_short_excludes_pauses_and_forgives_a_late_first_packet() -> None:
    # paused 4 s in the middle: 6 s active, the audio covers all of it
    assert judge_stream(clean(pauses=[(3.0, 7.0)]), WINDOW).ok
    assert judge_stream(clean(), CallWindow(0.5, 10.5, pauses=[(3.0, 7.0)])).ok
    # 96 % covered: not short; 0.4 s missing of a 2 s call: not short (within the slack)
    assert judge_stream(clean(audio=(0.9, 10.5)), WINDOW).ok
    assert judge_stream(clean(audio=(0.9, 2.5)), CallWindow(0.5, 2.5)).ok
    # the audio before the answer does not count
    assert judge_stream(clean(audio=(0.0, 5.0)), WINDOW).kinds == ("short",)


def test_gaps_count_and_sum_and_shorten_the_coverage() -> None:
    verdict = judge_stream(clean(gaps=[(2.0, 4.6), (6.0, 6.12)]), WINDOW)
    assert verdict.get("gaps") == Problem("gaps", count=2, ms=2720)
    assert verdict.get("short") == Problem("short", covered_ms=7260, active_ms=10000, percent=72.6)
    # a hole that a pause partly covers: only the rest is a gap (at least 100 ms of it)
    paused = judge_stream(
        clean(gaps=[(2.0, 4.6), (6.0, 6.3)], pauses=[(2.0, 4.0), (6.0, 6.25)]), WINDOW
    )
    assert paused.get("gaps") == Problem("gaps", count=1, ms=600)
    # totals beyond the listed gaps
    many = judge_stream(clean(gaps=[(2.0, 2.2)], gap_count=150, gap_seconds=21.0), WINDOW)
    assert many.get("gaps") == Problem("gaps", count=150, ms=21000)


def test_the_call_merges_its_streams_and_adds_its_flags() -> None:
    streams = [
        clean(0, gaps=[(2.0, 2.3)], unexpected_payload={96: 5}, peak_dbfs=-80.0),
        clean(1, gaps=[(5.0, 5.4)], unexpected_payload={96: 2, 97: 1}, peak_dbfs=-70.0),
        StreamEvidence(index=2),
    ]
    flags = [{"kind": "metadata_unparsed", "detail": "not XML"}, Problem("stalled", ms=60000)]
    result = judge_call(streams, WINDOW, flags)
    assert set(result.streams) == {0, 1, 2}
    assert result.streams[2].kinds == ("no_rtp",)
    assert result.call.kinds == (
        "no_rtp",
        "silent",
        "unexpected_payload",
        "gaps",
        "metadata_unparsed",
        "stalled",
    )
    data = result.call.to_dict()
    assert data["status"] == "problems"
    assert data["problems"] == [
        {"kind": "no_rtp", "streams": [2]},
        {"kind": "silent", "streams": [0, 1], "peak_dbfs": -70.0},
        {
            "kind": "unexpected_payload",
            "streams": [0, 1],
            "packets": 8,
            "payload_types": {"96": 7, "97": 1},
        },
        {"kind": "gaps", "streams": [0, 1], "count": 2, "ms": 700},
        {"kind": "metadata_unparsed", "detail": "not XML"},
        {"kind": "stalled", "ms": 60000},
    ]
    # JSON and back
    again = Verdict.from_dict(json.loads(json.dumps(data)))
    assert again == result.call


def test_short_of_the_call_is_its_worst_stream() -> None:
    streams = [clean(0, audio=(0.5, 5.5)), clean(1, audio=(0.5, 3.5))]
    short = judge_call(streams, WINDOW).call.get("short")
    assert short == Problem("short", (0, 1), covered_ms=3000, active_ms=10000, percent=30.0)


def test_a_clean_call_is_ok_and_a_flag_alone_makes_problems() -> None:
    assert judge_call([clean(0), clean(1)], WINDOW).call.to_dict() == {
        "status": "ok",
        "problems": [],
    }
    flagged = judge_call([clean(0)], WINDOW, [{"kind": "stalled"}, {"kind": "stalled"}])
    assert flagged.call.kinds == ("stalled",)
    assert flagged.streams[0].ok


def test_a_flag_without_a_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        judge_call([], WINDOW, [{"detail": "?"}])
