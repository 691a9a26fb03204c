"""Streams that change codec without signalling, recorded by the real node, read back.

SBCs fork a call's media as it is: an SRC that offered ``0 8 9`` may send PCMU, then PCMA, then
G.722 after a transfer, on one SSRC, and one that offered ``8 0`` sends PCMA whatever was
answered. The node must record every packet by its payload type and the recording must have
each stretch's tone at its time, on its channel, with no hole or overlap at the switches, and
packets of a payload type never offered must be counted in the sidecar. The payloads are
encoded by the test client's own G.711 formulas and by FFmpeg's G.722 and Opus encoders.

(These need the RFC 3264 answer of issue 9, item 1: every offered decodable codec accepted.)
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import skip_unless_c_receive_path
from tests.integration.media.src_client import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    RATE,
    SrcCall,
    Stretch,
    SwitchingLeg,
    alaw_encode,
    dominant_frequency,
    g722_encode,
    opus_encode,
    read_wav,
    rms,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import start_node

pytestmark = pytest.mark.integration

RATES = {0: 8000, 8: 8000, 9: 16000, 111: 48000}


def _payloads(payload_type: int, freq: float, start: float, seconds: float) -> list[bytes]:
    """20 ms payloads of a tone whose phase runs on from time 0 (segments join smoothly)."""
    rate = RATES.get(payload_type, RATE)
    x = tone(freq, seconds, 0.5, rate=rate, phase=2 * np.pi * freq * start)
    if payload_type == 9:
        return g722_encode(x)
    if payload_type == 111:
        return opus_encode(x)
    data = alaw_encode(x) if payload_type in (8, 96) else ulaw_encode(x)
    return [data[i : i + 160] for i in range(0, len(data) - 159, 160)]


def _leg(segments: list[tuple[int, float, float]], ssrc: int) -> SwitchingLeg:
    stretches, at = [], 0.0
    for payload_type, freq, seconds in segments:
        clock = 48000 if payload_type == 111 else RATE
        stretches.append(Stretch(payload_type, _payloads(payload_type, freq, at, seconds), clock))
        at += seconds
    return SwitchingLeg(stretches[0].payload_type, b"", ssrc=ssrc, stretches=stretches)


def _epoch(sidecar: dict[str, Any]) -> float:
    return datetime.fromisoformat(sidecar["media_epoch"]).timestamp()


def _holes(x: np.ndarray, rate: int, start: float, end: float, level: float) -> float:
    """The longest run (s) of 5 ms windows below a quarter of ``level`` in [start, end)."""
    window = rate // 200
    part = x[round(start * rate) : round(end * rate)]
    longest = run = 0
    for i in range(0, part.size - window + 1, window):
        if rms(part[i : i + window]) < level / 4:
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    return longest * window / rate


def _answered_formats(answer: str) -> list[str]:
    return [line.split(" ", 3)[3] for line in answer.splitlines() if line.startswith("m=audio")]


@pytest.mark.parametrize("receive_path", ["c", "python"])
def test_codec_switches_without_signalling(receive_path: str) -> None:
    """Leg 1 offers ``0 8 9`` and sends PCMU, PCMA, G.722, PCMU (400, 800, 1200, 1600 Hz, a
    second each); leg 2 offers ``8 0`` and sends PCMA only (1 kHz), ten packets of it as PT 96,
    never offered."""
    if receive_path == "c":
        skip_unless_c_receive_path()
    segments = [(0, 400.0, 1.0), (8, 800.0, 1.0), (9, 1200.0, 1.0), (0, 1600.0, 1.0)]
    legs = [
        _leg(segments, 0x5117C4),
        _leg([(8, 1000.0, 2.0), (96, 1000.0, 0.2), (8, 1000.0, 1.8)], 0xA1A1),
    ]
    node = start_node(
        env={"SIPREC_MEDIA__WORKERS": "1", "SIPREC_MEDIA__RECEIVE_PATH": receive_path}
    )
    try:
        call = SrcCall(node.sip_port, codecs=((PCMU, PCMA, G722), (PCMA, PCMU)))
        call.invite()
        assert _answered_formats(call.answer)[0].startswith("0 8 9"), call.answer
        assert _answered_formats(call.answer)[1].startswith("8 0"), call.answer
        call.stream(legs, 4.0)
        time.sleep(0.1)
        assert call.bye() == 200
        done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
        call.close()
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    left, right = sidecar["streams"]
    assert [(c["codec"], c["payload_type"], c["packets"]) for c in left["codecs"]] == [
        ("PCMU", 0, 50),
        ("PCMA", 8, 50),
        ("G722", 9, 50),
        ("PCMU", 0, 50),
    ]
    assert left["codec"] == "PCMU" and left["lost"] == 0 and left["unexpected_payload"] == {}
    assert [c["codec"] for c in right["codecs"]] == ["PCMA"] and right["codec"] == "PCMA"
    assert right["unexpected_payload"] == {"96": 10} and right["packets"] == 200
    # the switches leave no gap: the switching leg is judged ok; the other names PT 96
    assert left["verdict"] == {"status": "ok", "problems": []}, left["verdict"]
    assert {"kind": "unexpected_payload", "packets": 10, "payload_types": {"96": 10}} in right[
        "verdict"
    ]["problems"], right["verdict"]
    assert sidecar["sample_rate"] == 16000

    files = [Path(str(f)) for f in done["files"]]
    assert len(files) == 1
    rate, audio = read_wav(files[0])
    assert rate == 16000 and audio.shape[1] == 2
    assert abs(len(audio) / rate - sidecar["duration_s"]) < 0.02
    first = call.first_rtp - _epoch(sidecar)  # type: ignore[operator]
    starts = [c["start_s"] for c in left["codecs"]]
    for k in range(1, 4):  # each switch where the SRC made it (arrival jitter aside)
        assert abs(starts[k] - (first + k)) < 0.03, (k, starts, first)
    x, y = audio[:, 0], audio[:, 1]
    for k, (_, freq, _) in enumerate(segments):
        middle = x[int((first + k + 0.2) * rate) : int((first + k + 0.8) * rate)]
        assert abs(dominant_frequency(middle, rate) - freq) < 5, (k, freq)
        assert rms(middle) > 0.2, k
    level = rms(x[int((first + 0.2) * rate) : int((first + 0.8) * rate)])
    for k in range(1, 4):
        # no hole at a switch (a lost packet would be 20 ms), nothing of the next stretch early
        assert _holes(x, rate, first + k - 0.1, first + k + 0.1, level) < 0.011, k
        before = x[int((first + k - 0.15) * rate) : int((first + k - 0.03) * rate)]
        assert abs(dominant_frequency(before, rate) - segments[k - 1][1]) < 10, k
    assert rms(x[int((first + 4.05) * rate) :]) < 0.01  # nothing doubled beyond the end
    # the PCMA leg: 1 kHz throughout, but for the 200 ms sent as PT 96 (dropped: silence)
    assert (
        abs(
            dominant_frequency(y[int((first + 0.2) * rate) : int((first + 1.8) * rate)], rate)
            - 1000
        )
        < 5
    )
    assert rms(y[int((first + 2.03) * rate) : int((first + 2.17) * rate)]) < 0.01
    assert rms(y[int((first + 2.4) * rate) : int((first + 3.8) * rate)]) > 0.2


def test_a_tone_runs_on_across_codec_and_clock_changes() -> None:
    """One mixed stream, offered ``0 9 111``: a 1 kHz tone sent as PCMU, G.722, Opus (48 kHz
    RTP clock, a new timestamp base), PCMU. The mono file has the tone with no hole."""
    skip_unless_c_receive_path()
    legs = [_leg([(0, 1000.0, 1.0), (9, 1000.0, 1.0), (111, 1000.0, 1.0), (0, 1000.0, 1.0)], 7)]
    node = start_node(env={"SIPREC_MEDIA__WORKERS": "1"})
    try:
        call = SrcCall(node.sip_port, codecs=((PCMU, G722, OPUS),))
        call.invite()
        assert _answered_formats(call.answer)[0].startswith("0 9 111"), call.answer
        t0 = time.time()
        call.stream(legs, 4.0)
        time.sleep(0.1)
        assert call.bye() == 200
        wall = time.time() - t0
        done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
        call.close()
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    (stream,) = sidecar["streams"]
    assert [c["codec"] for c in stream["codecs"]] == ["PCMU", "G722", "OPUS", "PCMU"]
    assert stream["lost"] == 0 and stream["undecodable"] == 0
    assert stream["verdict"] == {"status": "ok", "problems": []}, stream["verdict"]
    rate, audio = read_wav(Path(str(done["files"][0])))
    assert rate == 48000 and audio.shape[1] == 1
    x = audio[:, 0]
    first = call.first_rtp - _epoch(sidecar)  # type: ignore[operator]
    level = rms(x[int((first + 0.2) * rate) : int((first + 0.8) * rate)])
    assert level > 0.2
    assert _holes(x, rate, first + 0.05, first + 3.95, level) < 0.011
    for k in range(4):
        middle = x[int((first + k + 0.1) * rate) : int((first + k + 0.9) * rate)]
        assert abs(dominant_frequency(middle, rate) - 1000) < 5, k
    assert wall - 0.3 < sidecar["duration_s"] < wall + 0.3
    assert rms(x[int((first + 4.05) * rate) :]) < 0.01


def test_a_worker_killed_inside_a_g722_stretch_continues_it() -> None:
    """A stream offered ``0 9`` sends PCMU (400 Hz) for 1.5 s, then G.722 (1200 Hz); its media
    worker is SIGKILLed inside the G.722 stretch. The restarted worker continues the same files
    in G.722; the recording has both tones at their times and one gap, no longer than the
    worker took to come back."""
    legs = [_leg([(0, 400.0, 1.5), (9, 1200.0, 5.0)], 0x722)]
    # keep_parts: the parts folder is looked at after the finalisation
    node = start_node(env={"SIPREC_MEDIA__WORKERS": "1", "SIPREC_RECORDING__KEEP_PARTS": "true"})
    try:
        started = node.wait_for_event("media_worker_started", worker=0)
        call = SrcCall(node.sip_port, codecs=((PCMU, G722),))
        call.invite()
        assert _answered_formats(call.answer)[0].startswith("0 9"), call.answer
        sender = threading.Thread(target=call.stream, args=(legs, 6.5), daemon=True)
        sender.start()
        time.sleep(2.5)
        os.kill(int(str(started["pid"])), signal.SIGKILL)
        killed_at = time.time()
        node.wait_for_event("media_worker_restarted_for_call", timeout=5)
        reopened_at = time.time()
        sender.join(15)
        time.sleep(0.1)
        assert call.bye() == 200
        done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
        call.close()
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    (stream,) = sidecar["streams"]
    assert [c["codec"] for c in stream["codecs"]] == ["PCMU", "G722"], stream["codecs"]
    assert stream["codecs"][0]["packets"] == 75
    assert any("after a crash" in p for p in stream["problems"]), stream["problems"]
    gaps = [p for p in stream["verdict"]["problems"] if p["kind"] == "gaps"]
    assert len(gaps) == 1 and gaps[0]["count"] == 1, stream["verdict"]  # the kill, not a switch
    path = Path(str(done["files"][0]))
    parts = sorted(
        p.name for p in path.with_suffix(".parts").iterdir() if not p.name.endswith(".tmp")
    )
    assert parts == ["stream-0.json", "stream-0.pt9.frames", "stream-0.wav"]
    rate, audio = read_wav(path)
    assert rate == 16000
    x = audio[:, 0]
    epoch = _epoch(sidecar)
    first = call.first_rtp - epoch  # type: ignore[operator]
    kill, back = killed_at - epoch, reopened_at - epoch
    pcmu = x[int((first + 0.2) * rate) : int((first + 1.3) * rate)]
    before = x[int((first + 1.7) * rate) : int((kill - 0.1) * rate)]
    after = x[int((back + 0.3) * rate) : int((first + 6.4) * rate)]
    print(f"worker back {back - kill:.2f} s after the kill")
    assert after.size > 0.5 * rate
    assert abs(dominant_frequency(pcmu, rate) - 400) < 5
    assert abs(dominant_frequency(before, rate) - 1200) < 5
    assert abs(dominant_frequency(after, rate) - 1200) < 5
    level = rms(before)
    assert rms(after) > level / 2
    gap = _holes(x, rate, kill - 0.5, back + 0.3, level)
    print(f"gap at the worker kill: {gap * 1000:.0f} ms")
    assert 0 < gap < back - kill + 0.3
    assert _holes(x, rate, first + 1.3, first + 1.7, level) < 0.011  # the switch itself


@pytest.mark.parametrize("workers", [0, 1])
def test_a_reinvite_that_adds_a_codec(workers: int) -> None:
    """Offered PCMU only, the SRC re-INVITEs offering ``0 9`` (a transfer to a wideband leg) and
    then sends G.722 at once: recorded from the re-INVITE on, in its own stretch, none of it
    lost to the time the answer takes to reach the media worker."""
    legs = [_leg([(0, 500.0, 1.0), (9, 1000.0, 1.5)], 0x0909)]
    node = start_node(env={"SIPREC_MEDIA__WORKERS": str(workers)})
    try:
        call = SrcCall(node.sip_port, codecs=(PCMU,))
        call.invite()
        assert _answered_formats(call.answer)[0].startswith("0"), call.answer
        call.stream(legs, 1.0)
        call.codecs = ((PCMU, G722),)
        answer = call.reinvite("sendonly")
        assert _answered_formats(answer.split("\r\n\r\n", 1)[1])[0].startswith("0 9"), answer
        switched = time.time()
        call.stream(legs, 1.5)
        time.sleep(0.1)
        assert call.bye() == 200
        done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
        call.close()
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    (stream,) = sidecar["streams"]
    assert [(c["codec"], c["packets"]) for c in stream["codecs"]] == [("PCMU", 50), ("G722", 75)]
    assert stream["unexpected_payload"] == {}
    rate, audio = read_wav(Path(str(done["files"][0])))
    x = audio[:, 0]
    epoch = _epoch(sidecar)
    first = call.first_rtp - epoch  # type: ignore[operator]
    g722 = x[int((switched - epoch + 0.2) * rate) : int((switched - epoch + 1.3) * rate)]
    assert (
        abs(
            dominant_frequency(x[int((first + 0.2) * rate) : int((first + 0.8) * rate)], rate) - 500
        )
        < 5
    )
    assert abs(dominant_frequency(g722, rate) - 1000) < 5 and rms(g722) > 0.2
