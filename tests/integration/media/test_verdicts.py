"""Recording assurance end to end: calls placed on a real node (Redis store, HTTP on) by the
hand-written SRC, each with one defect, and what the node says of each recording: the sidecar,
the warning log line, ``GET /metrics``, the session record in Redis and
``siprec-node recordings --problems``; the audio of the clean call is read back."""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.media.src_client import (
    RtpLeg,
    SrcCall,
    alaw_encode,
    dominant_frequency,
    rms,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import NodeProcess, free_port
from tests.integration.persistence.harness import (
    NodeSpec,
    RedisServer,
    cli_json,
    kill_node,
    launch_node,
    log_tail,
    read_session,
    sigterm,
    unique_prefix,
)
from tests.redis_server import redis_available

pytestmark = pytest.mark.integration


@dataclass
class Node:
    spec: NodeSpec
    process: NodeProcess
    redis: RedisServer


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if not redis_available():
        pytest.fail("redis-server is not installed: these tests keep verdicts in Redis")
    redis = RedisServer()
    spec = NodeSpec(
        node_id="verdict-1",
        redis_url=redis.url,
        prefix=unique_prefix("verdict"),
        http_port=free_port((socket.SOCK_STREAM,)),
    )
    process = launch_node(spec)
    try:
        yield Node(spec, process, redis)
    finally:
        code = sigterm(process)
        kill_node(process)
        redis.stop()
        assert code == 0, log_tail(process)


def metrics(spec: NodeSpec) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{spec.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        # the verdict counters (not the recording disk's gauges, which move with the disk)
        if line.startswith(("siprec_recordings_", "siprec_recording_problems_"))
    }


@dataclass
class Outcome:
    session_id: str
    sidecar: dict[str, Any]
    files: list[Path]
    finalised: dict[str, object]
    warning: dict[str, object] | None
    stored: dict[str, Any]
    listed: dict[str, Any] | None
    """The session's row in ``recordings --problems --json`` (None: not listed)."""
    metrics_delta: dict[str, float]


def finish(node: Node, call: SrcCall, before: dict[str, float]) -> Outcome:
    """BYE, then everything the node says about the recording."""
    assert call.bye() == 200, log_tail(node.process)
    done = node.process.wait_for_event("recording_finalised", call_id=call.call_id, timeout=20)
    session_id = str(done["session_id"])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    warnings = node.process.events("recording_problems")
    warning = next((w for w in warnings if w.get("session_id") == session_id), None)
    deadline = time.monotonic() + 10
    while True:  # the final snapshot is written by the snapshot writer, soon after
        stored = read_session(node.redis.client(), node.spec.prefix, session_id)
        if stored is not None and stored.body.get("verdict") is not None:
            break
        assert time.monotonic() < deadline, f"no verdict stored: {stored}"
        time.sleep(0.05)
    rows = cli_json(node.spec, "recordings", "--problems", "--since", "1h")
    listed = next((r for r in rows if r["id"] == session_id), None)
    after = metrics(node.spec)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    call.close()
    return Outcome(
        session_id,
        sidecar,
        [Path(str(f)) for f in done["files"]],  # type: ignore[union-attr]
        done,
        warning,
        stored.body,
        listed,
        delta,
    )


def assert_problems(outcome: Outcome, problems: list[dict[str, Any]]) -> None:
    """The sidecar, the log, the store, the command and the metrics agree on ``problems``."""
    kinds = [p["kind"] for p in problems]
    verdict = {"status": "problems", "problems": problems}
    assert outcome.sidecar["verdict"] == verdict
    assert outcome.finalised["verdict"] == "problems"
    assert outcome.warning is not None and outcome.warning["problems"] == kinds
    assert outcome.warning["call_id"] == outcome.sidecar["call_id"]
    assert outcome.stored["verdict"] == verdict
    assert outcome.listed is not None and outcome.listed["verdict"] == verdict
    expected = {'siprec_recordings_total{verdict="problems"}': 1.0}
    expected.update({f'siprec_recording_problems_total{{problem="{k}"}}': 1.0 for k in kinds})
    assert outcome.metrics_delta == expected


def legs() -> list[RtpLeg]:
    return [
        RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x51515151),
        RtpLeg(8, alaw_encode(tone(1000, 1.0)), ssrc=0x52525252),
    ]


def test_a_clean_call_is_ok_and_its_tones_are_there(node: Node) -> None:
    before = metrics(node.spec)
    call = SrcCall(node.spec.sip_port)
    call.invite()
    call.stream(legs(), 3.0)
    outcome = finish(node, call, before)
    ok = {"status": "ok", "problems": []}
    assert outcome.sidecar["verdict"] == ok and outcome.finalised["verdict"] == "ok"
    assert [s["verdict"] for s in outcome.sidecar["streams"]] == [ok, ok]
    assert all(-7.0 < s["peak_dbfs"] < -5.0 for s in outcome.sidecar["streams"])  # 0.5 FS
    assert outcome.warning is None
    assert outcome.stored["verdict"] == ok
    assert outcome.listed is None  # not a problem
    every = {r["id"]: r for r in cli_json(node.spec, "recordings")}
    assert every[outcome.session_id]["verdict"] == ok
    assert outcome.metrics_delta == {'siprec_recordings_total{verdict="ok"}': 1.0}
    wav = next(f for f in outcome.files if f.suffix == ".wav")
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768.0
    talk = audio[int(0.3 * rate) : int(2.8 * rate)]
    assert abs(dominant_frequency(talk[:, 0], rate) - 440) < 5
    assert abs(dominant_frequency(talk[:, 1], rate) - 1000) < 5
    assert rms(talk[:, 0]) > 0.2 and rms(talk[:, 1]) > 0.2


def test_a_stream_that_never_gets_rtp(node: Node) -> None:
    before = metrics(node.spec)
    call = SrcCall(node.spec.sip_port)
    call.invite()
    ports = call.ports
    call.ports = ports[:1]  # the SRC forks only the first leg
    call.stream(legs()[:1], 2.0)
    call.ports = ports
    outcome = finish(node, call, before)
    assert_problems(outcome, [{"kind": "no_rtp", "streams": [1]}])
    first, second = outcome.sidecar["streams"]
    assert first["verdict"]["status"] == "ok" and first["packets"] >= 95
    assert second["verdict"] == {"status": "problems", "problems": [{"kind": "no_rtp"}]}
    assert second["packets"] == 0


def test_an_src_that_sends_digital_silence(node: Node) -> None:
    before = metrics(node.spec)
    call = SrcCall(node.spec.sip_port)
    call.invite()
    silence = np.zeros(8000)
    call.stream(
        [
            RtpLeg(0, ulaw_encode(silence), ssrc=0x61616161),
            RtpLeg(8, alaw_encode(silence), ssrc=0x62626262),
        ],
        2.0,
    )
    outcome = finish(node, call, before)
    # µ-law silence decodes to 0, A-law's to ±8 (-72 dBFS): the loudest stream is named
    assert_problems(outcome, [{"kind": "silent", "streams": [0, 1], "peak_dbfs": -72.2}])
    assert [s["peak_dbfs"] for s in outcome.sidecar["streams"]] == [-200.0, -72.2]
    assert all(s["packets"] >= 95 for s in outcome.sidecar["streams"])


def test_packets_of_a_payload_type_never_offered(node: Node) -> None:
    before = metrics(node.spec)
    call = SrcCall(node.spec.sip_port)
    call.invite()
    audio = ulaw_encode(tone(440, 3.0))
    other = legs()[1]
    start = time.monotonic()
    seq, odd = 4000, 0
    for n in range(150):  # 3 s of PCMU; after every third packet one of PT 96 (never offered)
        header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * n, 0x71717171)
        call.rtp.sendto(header + audio[160 * n : 160 * n + 160], ("127.0.0.1", call.ports[0]))
        seq += 1
        if n % 3 == 2:
            header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, 160 * n, 0x71717171)
            call.rtp.sendto(header + bytes(20), ("127.0.0.1", call.ports[0]))
            seq, odd = seq + 1, odd + 1
        call.rtp.sendto(other.next_packet(), ("127.0.0.1", call.ports[1]))
        time.sleep(max(0.0, start + 0.02 * (n + 1) - time.monotonic()))
    outcome = finish(node, call, before)
    assert odd == 50
    expected = {"kind": "unexpected_payload", "packets": 50, "payload_types": {"96": 50}}
    assert_problems(outcome, [{**expected, "streams": [0]}])
    first = outcome.sidecar["streams"][0]
    assert first["verdict"] == {"status": "problems", "problems": [expected]}
    assert first["unexpected_payload"] == {"96": 50} and first["lost"] == 0
    # the audio around them is whole: the tone, no gap
    assert first["gaps"] == []


def test_a_call_cut_short(node: Node) -> None:
    before = metrics(node.spec)
    call = SrcCall(node.spec.sip_port)
    call.invite()
    call.stream(legs(), 1.0)
    time.sleep(4.0)  # RTP stops long before the BYE
    outcome = finish(node, call, before)
    short = outcome.sidecar["verdict"]["problems"]
    assert [p["kind"] for p in short] == ["short"] and short[0]["streams"] == [0, 1]
    assert 15.0 < short[0]["percent"] < 25.0, short
    assert 4800 < short[0]["active_ms"] < 5600 and 900 < short[0]["covered_ms"] < 1100
    assert_problems(outcome, short)
