"""Issue 5's promise for the recording itself: a node SIGKILLed mid-call and restarted with the
same node id keeps recording the same call into the same files; the final recording covers the
whole call, with silence only for the downtime."""

from __future__ import annotations

import json
import threading
import time
import wave
from pathlib import Path

import numpy as np

from tests.integration.media.src_client import (
    RtpLeg,
    SrcCall,
    alaw_encode,
    dominant_frequency,
    rms,
    tone,
    ulaw_encode,
)
from tests.integration.persistence.harness import (
    NodeSpec,
    Processes,
    RedisServer,
    kill_node,
    launch_node,
    log_tail,
    sigterm,
    unique_prefix,
    wait_session,
)


def test_restart_continues_the_same_recording(redis_server: RedisServer, procs: Processes) -> None:
    spec = NodeSpec(node_id="rec-1", redis_url=redis_server.url, prefix=unique_prefix("cont"))
    node = procs.node(launch_node(spec))
    call = SrcCall(spec.sip_port)
    legs = [
        RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x0A0A0A0A),
        RtpLeg(8, alaw_encode(tone(1000, 1.0)), ssrc=0x0B0B0B0B),
    ]
    t0 = time.time()
    call.invite()
    answered = node.wait_for_event("call_answered")
    session_id = str(answered["session_id"])
    wait_session(redis_server.client(), spec.prefix, session_id, status="active")

    # RTP flows all along, the node dies after 2 s and is back about 1.5 s later (up to 5 s
    # on a loaded CI machine: the RTP lasts long enough for an "after" window either way)
    sender = threading.Thread(target=call.stream, args=(legs, 8.0), daemon=True)
    rtp_start = time.time() - t0
    sender.start()
    time.sleep(2.0)
    killed = time.time() - t0
    kill_node(node)
    node = procs.node(launch_node(spec))
    node.wait_for_event("call_recovered", session_id=session_id)
    restarted = time.time() - t0
    sender.join(10)
    assert call.bye() == 200, log_tail(node)
    t1 = time.time()
    done = node.wait_for_event("recording_finalised", session_id=session_id, timeout=20)
    final = wait_session(redis_server.client(), spec.prefix, session_id, status="ended")
    assert final.call["recoveries"] == 1
    assert sigterm(node) == 0, log_tail(node)

    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    wavs = [Path(str(f)) for f in done["files"] if str(f).endswith(".wav")]
    assert len(wavs) == 1, done["files"]  # one recording for the whole call
    with wave.open(str(wavs[0])) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768.0
    duration = len(audio) / rate
    assert abs(duration - sidecar["duration_s"]) < 0.02
    assert (t1 - t0) - 0.3 < duration < (t1 - t0) + 0.1

    def window(a: float, b: float) -> np.ndarray:
        return audio[int(a * rate) : int(b * rate)]

    before, after = window(rtp_start + 0.2, killed - 0.4), window(restarted + 0.5, t1 - t0 - 0.3)
    for part in (before, after):
        assert abs(dominant_frequency(part[:, 0], rate) - 440) < 5
        assert abs(dominant_frequency(part[:, 1], rate) - 1000) < 5
    # the downtime is silence (the node was not there to hear it)
    down = window(killed + 0.3, restarted - 0.3)
    if len(down):
        assert rms(down[:, 0]) < 0.01 and rms(down[:, 1]) < 0.01
    # and nothing else is: every 100 ms of the call outside the downtime carries the tone
    frames = int(0.1 * rate)
    for start in range(int((rtp_start + 0.1) * rate), len(audio) - frames, frames):
        t = start / rate
        if killed - 0.3 < t < restarted + 0.3 or t > (t1 - t0) - 0.4:
            continue
        assert rms(audio[start : start + frames, 0]) > 0.1, f"hole at {t:.1f}s"
    call.close()
