"""What the node records, read back from the files: a tone in, the same tone out, on the right
channel, for the length of the call, with silence where the call was paused."""

from __future__ import annotations

import json
import signal
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import skip_unless_c_receive_path
from tests.integration.media.src_client import (
    RATE,
    RtpLeg,
    SrcCall,
    alaw_encode,
    dominant_frequency,
    rms,
    tone,
    ulaw_decode,
    ulaw_encode,
)
from tests.integration.node_process import NodeProcess, start_node

pytestmark = pytest.mark.integration


def _legs() -> list[RtpLeg]:
    return [
        RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x11111111),
        RtpLeg(8, alaw_encode(tone(1000, 1.0)), ssrc=0x22222222),
    ]


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), frames.reshape(-1, w.getnchannels()) / 32768.0


@pytest.mark.parametrize("receive_path", ["c", "python"])
@pytest.mark.parametrize("workers", [0, 1])
def test_two_tones_on_their_channels_with_a_pause(workers: int, receive_path: str) -> None:
    if receive_path == "c":
        skip_unless_c_receive_path()
    node = start_node(
        "",
        env={
            "SIPREC_MEDIA__WORKERS": str(workers),
            "SIPREC_MEDIA__RECEIVE_PATH": receive_path,
        },
    )
    try:
        if workers:
            ready = node.wait_for_event("media_worker_ready", timeout=10)
            assert ready["receive_path"] == receive_path
        call = SrcCall(node.sip_port)
        legs = _legs()
        t0 = time.time()
        call.invite()
        call.stream(legs, 2.0)
        # hold: the SRC re-INVITEs inactive and stops sending for 1.5 s, then resumes
        held = call.reinvite("inactive")
        assert held.count("a=inactive") == 2
        pause_start = time.time() - t0
        call.skip(legs, 1.5)
        call.reinvite("sendonly")
        pause_end = time.time() - t0
        call.stream(legs, 1.5)
        assert call.bye() == 200
        t1 = time.time()
        done = node.wait_for_event("recording_finalised", timeout=20)
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert sidecar["status"] == "ended" and sidecar["call_id"] == call.call_id
    assert [p["name"] for p in sidecar["participants"]] == ["Alice", "Bob"]
    stereo = [Path(str(f)) for f in done["files"] if str(f).endswith(".wav")]
    assert len(stereo) == 1
    rate, audio = _read_wav(stereo[0])
    assert audio.shape[1] == 2
    duration = len(audio) / rate
    # a second of call is a second of file: the whole call, INVITE to BYE, within 20 ms + the
    # time our own SIP round trips took
    assert abs(duration - sidecar["duration_s"]) < 0.02
    assert (t1 - t0) - 0.25 < duration < (t1 - t0) + 0.1
    # talk: 440 Hz left, 1 kHz right, nothing of one in the other
    talk = audio[int(0.5 * rate) : int(1.8 * rate)]
    assert abs(dominant_frequency(talk[:, 0], rate) - 440) < 5
    assert abs(dominant_frequency(talk[:, 1], rate) - 1000) < 5
    assert rms(talk[:, 0]) > 0.2 and rms(talk[:, 1]) > 0.2
    # the pause is silence on both channels (inside it, away from its edges)
    paused = audio[int((pause_start + 0.2) * rate) : int((pause_end - 0.2) * rate)]
    assert len(paused) > 0.8 * rate
    assert rms(paused[:, 0]) < 0.01 and rms(paused[:, 1]) < 0.01
    # after the resume, the tones again
    after = audio[int((pause_end + 0.3) * rate) : int((pause_end + 1.2) * rate)]
    assert abs(dominant_frequency(after[:, 0], rate) - 440) < 5
    assert abs(dominant_frequency(after[:, 1], rate) - 1000) < 5
    streams = {s["label"]: s for s in sidecar["streams"]}
    assert streams["1"]["codec"] == "PCMU" and streams["2"]["codec"] == "PCMA"
    assert streams["1"]["lost"] == 0 and streams["1"]["packets"] >= 170
    assert len(sidecar["pauses"]) == 1
    # the hold is a pause, not a gap, and the time on hold is not expected to carry audio
    assert sidecar["verdict"] == {"status": "ok", "problems": []}, sidecar["verdict"]


def _riff_g711(path: Path) -> tuple[int, bytes]:
    """Parse a WAVE file by its chunks (not trusting the data size: a crash may cut it)."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    offset, fmt_tag = 12, None
    while offset + 8 <= len(raw):
        chunk, size = struct.unpack_from("<4sI", raw, offset)
        if chunk == b"fmt ":
            fmt_tag = struct.unpack_from("<H", raw, offset + 8)[0]
        if chunk == b"data":
            return int(fmt_tag or 0), raw[offset + 8 :]
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def test_sigkill_mid_call_leaves_files_that_play_to_the_kill() -> None:
    node: NodeProcess = start_node()
    call = SrcCall(node.sip_port)
    legs = _legs()
    call.invite()
    offered = node.wait_for_event("call_answered")
    call.stream(legs, 3.0)
    killed_at = time.time()
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(10)
    parts = sorted(node.workdir.glob("recordings/*/*/*/*.parts"))
    assert len(parts) == 1, list(node.workdir.rglob("*"))
    info = json.loads((parts[0] / "stream-0.json").read_text())
    fmt_tag, data = _riff_g711(parts[0] / "stream-0.wav")
    assert fmt_tag == 7  # µ-law
    audio = ulaw_decode(data)
    recorded = len(audio) / RATE
    # the file covers the call up to the kill, less what was buffered (≤ 200 ms by design)
    expected = killed_at - float(info["epoch"])
    assert expected - 0.25 < recorded <= expected + 0.05, (recorded, expected, offered)
    tail = audio[-int(1.0 * RATE) :]
    assert abs(dominant_frequency(tail, RATE) - 440) < 5
    call.close()
