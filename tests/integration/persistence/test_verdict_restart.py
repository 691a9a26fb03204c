"""A node SIGKILLed mid-call and restarted: the recording continues (test_recording_continuity),
and its verdict says what was lost: a gap per stream as long as the downtime, in the sidecar,
the metrics of the restarted node, the session record in Redis and ``recordings --problems``."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np

from tests.integration.media.src_client import (
    RtpLeg,
    SrcCall,
    alaw_encode,
    rms,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import free_port
from tests.integration.persistence.harness import (
    NodeSpec,
    Processes,
    RedisServer,
    cli_json,
    kill_node,
    launch_node,
    log_tail,
    sigterm,
    unique_prefix,
    wait_session,
)


def test_a_restart_leaves_a_gap_the_verdict_names(
    redis_server: RedisServer, procs: Processes
) -> None:
    spec = NodeSpec(
        node_id="rec-v",
        redis_url=redis_server.url,
        prefix=unique_prefix("verdict-restart"),
        http_port=free_port((socket.SOCK_STREAM,)),
    )
    node = procs.node(launch_node(spec))
    call = SrcCall(spec.sip_port)
    legs = [
        RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x0C0C0C0C),
        RtpLeg(8, alaw_encode(tone(1000, 1.0)), ssrc=0x0D0D0D0D),
    ]
    t0 = time.time()
    call.invite()
    session_id = str(node.wait_for_event("call_answered")["session_id"])
    wait_session(redis_server.client(), spec.prefix, session_id, status="active")
    stop = threading.Event()

    def send() -> None:  # RTP flows all along, however long the restart takes
        while not stop.is_set():
            call.stream(legs, 0.2)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(2.0)
    killed = time.time() - t0
    kill_node(node)
    node = procs.node(launch_node(spec))
    node.wait_for_event("call_recovered", session_id=session_id)
    restarted = time.time() - t0
    time.sleep(3.0)
    stop.set()
    sender.join(10)
    assert call.bye() == 200, log_tail(node)
    done = node.wait_for_event("recording_finalised", session_id=session_id, timeout=20)
    warning = node.wait_for_event("recording_problems", session_id=session_id)
    final = wait_session(redis_server.client(), spec.prefix, session_id, status="ended")
    rows = cli_json(spec, "recordings", "--problems", "--since", "1h")
    with urllib.request.urlopen(f"http://127.0.0.1:{spec.http_port}/metrics", timeout=5) as r:
        exposition = r.read().decode()
    assert sigterm(node) == 0, log_tail(node)

    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    downtime_ms = (restarted - killed) * 1000
    print(f"downtime {downtime_ms:.0f} ms; verdict {sidecar['verdict']}")
    for stream in sidecar["streams"]:
        (gap,) = stream["gaps"]
        # from the last sample written before the kill to the first packet placed after it
        assert downtime_ms - 250 < gap["ms"] < downtime_ms + 1000, (gap, downtime_ms)
        assert abs(gap["at_ms"] / 1000 - killed) < 0.4, (gap, killed)
        problems = {p["kind"]: p for p in stream["verdict"]["problems"]}
        assert problems["gaps"] == {"kind": "gaps", "count": 1, "ms": gap["ms"]}
        assert set(problems) <= {"gaps", "short"}  # a long downtime in a short call: short too
    call_gaps = next(p for p in sidecar["verdict"]["problems"] if p["kind"] == "gaps")
    assert call_gaps["streams"] == [0, 1] and call_gaps["count"] == 2
    assert call_gaps["ms"] == sum(s["gaps"][0]["ms"] for s in sidecar["streams"])
    assert "gaps" in warning["problems"]  # type: ignore[operator]
    assert final.body["verdict"] == sidecar["verdict"]
    listed = next(r for r in rows if r["id"] == session_id)
    assert listed["verdict"] == sidecar["verdict"]
    assert 'siprec_recording_problems_total{problem="gaps"} 1.0' in exposition
    assert 'siprec_recordings_total{verdict="problems"} 1.0' in exposition

    # the recording: silence where the verdict puts the gap, the tone elsewhere
    wav = next(Path(str(f)) for f in done["files"] if str(f).endswith(".wav"))  # type: ignore[union-attr]
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768.0
    gap = sidecar["streams"][0]["gaps"][0]
    start, end = gap["at_ms"] / 1000, (gap["at_ms"] + gap["ms"]) / 1000
    assert rms(audio[int((start + 0.05) * rate) : int((end - 0.05) * rate), 0]) < 0.01
    assert rms(audio[int((start - 0.5) * rate) : int((start - 0.05) * rate), 0]) > 0.2
    assert rms(audio[int((end + 0.05) * rate) : int((end + 0.5) * rate), 0]) > 0.2
    call.close()
