"""The verdict finalisation writes into the sidecar, from hand-made parts (media/FORMAT.md)."""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from siprec_node.media.finalise import finalise_call
from tests.unit.media.test_finalise import SILENCE, Parts, call, tone, wav_g711_file


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    folder = tmp_path / "p.parts"
    folder.mkdir()
    return Parts(folder)


def finalise(parts: Parts, seconds: float, **changes: object) -> dict:
    result = finalise_call(
        parts.path, output_dir=parts.path.parent / "out", stem="v", call=call(seconds, **changes)
    )
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["verdict"] == result.verdict.call.to_dict()
    return sidecar


def test_a_clean_two_leg_call_is_ok(parts: Parts) -> None:
    parts.g711(0, "PCMU", tone(440, 4.0, 8000))
    parts.g711(1, "PCMA", tone(1000, 4.0, 8000))
    sidecar = finalise(parts, 4.0)
    assert sidecar["verdict"] == {"status": "ok", "problems": []}
    for stream in sidecar["streams"]:
        assert stream["verdict"] == {"status": "ok", "problems": []}
        assert stream["gaps"] == [] and stream["unexpected_payload"] == {}
        assert -11.0 < stream["peak_dbfs"] < -10.0  # a tone at 0.3 of full scale: -10.5 dBFS


def test_no_rtp_silent_and_unexpected_payload(parts: Parts) -> None:
    parts.g711(0, "PCMU", np.zeros(32000, np.int16), unexpected_payload={"96": 7})
    parts.g711(1, "PCMA", np.zeros(0, np.int16), packets=0)
    sidecar = finalise(parts, 4.0)
    zero, empty = sidecar["streams"]
    assert zero["verdict"]["problems"] == [
        {"kind": "silent", "peak_dbfs": None},
        {"kind": "unexpected_payload", "packets": 7, "payload_types": {"96": 7}},
    ]
    assert zero["peak_dbfs"] == -200.0  # µ-law silence decodes to 0
    assert empty["verdict"]["problems"] == [{"kind": "no_rtp"}]
    assert [p["kind"] for p in sidecar["verdict"]["problems"]] == [
        "no_rtp",
        "silent",
        "unexpected_payload",
    ]
    # A-law silence decodes to ±8: -72 dBFS, silent too
    parts.g711(1, "PCMA", np.zeros(32000, np.int16))
    sidecar = finalise(parts, 4.0)
    assert sidecar["streams"][1]["peak_dbfs"] == pytest.approx(-72.2, abs=0.1)
    assert sidecar["streams"][1]["verdict"]["problems"][0]["kind"] == "silent"


def test_quiet_speech_is_not_silent(parts: Parts) -> None:
    parts.g711(0, "PCMU", tone(300, 4.0, 8000, level=0.003))  # -50 dBFS
    parts.g711(1, "PCMA", tone(300, 4.0, 8000, level=0.0005))  # -66 dBFS
    quiet, quieter = finalise(parts, 4.0)["streams"]
    assert quiet["verdict"]["status"] == "ok"
    assert quieter["verdict"]["problems"][0]["kind"] == "silent"


def test_short_when_the_audio_stops_early_gaps_from_the_stream_json(parts: Parts) -> None:
    # the answer came 150 ms before the epoch (STARTED); a 10 s call
    parts.g711(0, "PCMU", tone(440, 3.0, 8000))
    parts.g711(
        1,
        "PCMA",
        tone(1000, 10.0, 8000),
        gaps=[{"start": 16000, "end": 36800}],
        gap_count=1,
        gap_length=20800,
    )
    sidecar = finalise(parts, 10.0)
    short, gappy = sidecar["streams"]
    assert short["verdict"]["problems"] == [
        {"kind": "short", "covered_ms": 3000, "active_ms": 10150, "percent": 29.6}
    ]
    assert gappy["gaps"] == [{"at_ms": 2000, "ms": 2600}]
    assert gappy["verdict"]["problems"] == [
        {"kind": "short", "covered_ms": 7400, "active_ms": 10150, "percent": 72.9},
        {"kind": "gaps", "count": 1, "ms": 2600},
    ]
    assert sidecar["verdict"]["problems"] == [
        {"kind": "short", "streams": [0, 1], "covered_ms": 3000, "active_ms": 10150,
         "percent": 29.6},
        {"kind": "gaps", "streams": [1], "count": 1, "ms": 2600},
    ]  # fmt: skip


def test_paused_time_is_not_expected_and_flags_join_the_call_verdict(parts: Parts) -> None:
    # 2 s of audio, a 6 s pause (stream JSON positions), 2 s of audio
    audio = tone(440, 2.0, 8000)
    g711 = parts.g711(0, "PCMU", audio)
    more = g711 + SILENCE["PCMU"] * 48000 + g711
    (parts.path / "stream-0.wav").write_bytes(wav_g711_file("PCMU", more))
    parts.info(0, "PCMU", 8000, pauses=[{"start": 16000, "end": 64000}])
    flags = ({"kind": "metadata_unparsed", "detail": "not XML"},)
    sidecar = finalise(parts, 10.0, flags=flags)
    assert sidecar["streams"][0]["verdict"]["status"] == "ok"
    assert sidecar["verdict"] == {
        "status": "problems",
        "problems": [{"kind": "metadata_unparsed", "detail": "not XML"}],
    }


def test_a_stream_whose_codec_is_not_decoded_is_undecodable(parts: Parts) -> None:
    parts.g711(0, "PCMU", tone(440, 2.0, 8000))
    parts.info(1, "G728", 8000, packets=100)
    sidecar = finalise(parts, 2.0)
    problems = sidecar["streams"][1]["verdict"]["problems"]
    assert {"kind": "undecodable", "frames": 100} in problems


def test_a_g722_stream_is_judged_on_its_decoded_audio(parts: Parts) -> None:
    parts.g722(0, tone(440, 2.0, 16000))
    sidecar = finalise(parts, 2.0)
    assert sidecar["streams"][0]["verdict"]["status"] == "ok"
    assert -11.5 < sidecar["streams"][0]["peak_dbfs"] < -9.0


def test_decoder_errors_the_stream_data_reports_are_undecodable(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoding of stretches reports its errors as the sidecar stream's `undecodable`."""
    import siprec_node.media.finalise as finalise_module

    sidecar_of = finalise_module._sidecar

    def with_errors(*args: object) -> dict:
        data = sidecar_of(*args)  # type: ignore[arg-type]
        data["streams"][0]["undecodable"] = 4
        return data

    monkeypatch.setattr(finalise_module, "_sidecar", with_errors)
    parts.g711(0, "PCMU", tone(440, 2.0, 8000))
    sidecar = finalise(parts, 2.0)
    assert sidecar["streams"][0]["verdict"]["problems"] == [{"kind": "undecodable", "frames": 4}]


def test_the_level_costs_little(parts: Parts) -> None:
    """Five minutes of two G.711 legs: the peak levels cost under 3 ms."""
    from siprec_node.media.evidence import _peak_dbfs
    from siprec_node.media.stream_parts import load_stream as _load_stream

    long = tone(440, 300.0, 8000)
    parts.g711(0, "PCMU", long)
    parts.g711(1, "PCMA", long)
    streams = [_load_stream(parts.path, 0), _load_stream(parts.path, 1)]
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        peaks = [_peak_dbfs(s) for s in streams]
        best = min(best, time.perf_counter() - t0)
    print(f"peak of two 5-minute G.711 legs: {best * 1000:.2f} ms")
    assert all(p is not None and -11 < p < -10 for p in peaks)
    assert best < 0.003 * 4  # loose on a shared machine; measured well below


def test_takeover_without_an_end_judges_up_to_the_recorded_media(parts: Parts) -> None:
    parts.g711(0, "PCMU", tone(440, 3.0, 8000))
    sidecar = finalise(parts, 3.0, ended_at=None, status="failed")
    assert sidecar["streams"][0]["verdict"]["status"] == "ok"
    assert timedelta(seconds=sidecar["duration_s"]) == timedelta(seconds=3.0)
