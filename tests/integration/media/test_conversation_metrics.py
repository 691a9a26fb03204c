"""Conversation metrics of a recorded call, from the sidecar and from the session store.

Alice (leg 0) "speaks" (a 440 Hz tone) at 0-1 s and 2-3 s, Bob (leg 1, 1 kHz) at 1.2-1.8 s and
2.6-3.4 s, so Bob talks into Alice's second turn for 400 ms: one interruption. Between the bursts
both legs keep sending µ-law silence (0xFF). The real node runs with a private redis-server as its
session store (the memory store is not observable from outside); after the BYE the sidecar's
``metrics`` and the stored session's ``history`` and ``metrics`` must both say: four turns in
that order, one interruption (Bob's of Alice), speech time per participant within 100 ms of what
was sent.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.integration.media.src_client import PCMU, RtpLeg, SrcCall, ulaw_encode
from tests.integration.node_process import start_node
from tests.integration.persistence.harness import RedisServer, read_session, unique_prefix
from tests.redis_server import redis_available

pytestmark = pytest.mark.integration

ALICE, BOB = "YWxpY2U=", "Ym9i"  # participant ids of the client's metadata
SECONDS = 3.8
SPEECH = {  # seconds from the first packet
    ALICE: [(0.0, 1.0), (2.0, 3.0)],
    BOB: [(1.2, 1.8), (2.6, 3.4)],
}
TOLERANCE_MS = 100


def _talk(freq: float, spans: list[tuple[float, float]]) -> bytes:
    """µ-law audio of the whole call: the tone during ``spans``, digital silence (0xFF)
    elsewhere."""
    x = np.zeros(round(SECONDS * 8000))
    for start, end in spans:
        a, b = round(start * 8000), round(end * 8000)
        x[a:b] = 0.3 * np.sin(2 * np.pi * freq * np.arange(b - a) / 8000 + 0.3)
    return ulaw_encode(x)


def _wait_history(client: redis.Redis, prefix: str, session_id: str, turns: int) -> Any:
    deadline = time.monotonic() + 10
    stored = None
    while time.monotonic() < deadline:
        stored = read_session(client, prefix, session_id)
        if stored is not None and len(stored.body.get("history") or []) >= turns:
            return stored
        time.sleep(0.05)
    raise AssertionError(f"the store never held {turns} turns for {session_id}: {stored}")


def test_turns_interruptions_and_speech_time() -> None:
    if not redis_available():
        pytest.fail("redis-server is not installed: this test needs it")
    server = RedisServer()
    prefix = unique_prefix("metrics")
    try:
        node = start_node(
            f'[store]\nbackend = "redis"\nurl = "{server.url}"\nprefix = "{prefix}"\n'
        )
        try:
            call = SrcCall(node.sip_port, codecs=(PCMU, PCMU))
            legs = [
                RtpLeg(0, _talk(440, SPEECH[ALICE]), ssrc=0xA11CE),
                RtpLeg(0, _talk(1000, SPEECH[BOB]), ssrc=0xB0B),
            ]
            call.invite()
            answered = node.wait_for_event("call_answered", call_id=call.call_id)
            session_id = str(answered["session_id"])
            call.stream(legs, SECONDS)
            time.sleep(0.1)
            assert call.bye() == 200
            done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
            call.close()
            client = server.client()
            stored = _wait_history(client, prefix, session_id, 4)
            client.close()
        finally:
            assert node.stop() == 0, "\n".join(node.raw[-40:])
    finally:
        server.stop()

    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert sidecar["session_id"] == session_id
    assert call.first_rtp is not None
    epoch = datetime.fromisoformat(sidecar["media_epoch"])
    offset_ms = 1000 * (call.first_rtp - epoch.timestamp())
    truth = sorted(
        (1000 * s + offset_ms, who, 1000 * (e - s))
        for who, spans in SPEECH.items()
        for s, e in spans
    )
    metrics = sidecar["metrics"]
    print(
        f"sidecar metrics: turn_count {metrics['turn_count']}, interruptions "
        f"{metrics['interruptions']}, speech_ms {metrics['speech_ms']}, turns "
        f"{[(t['participant'], t['start_ms'], t['duration_ms']) for t in metrics['turns']]}, "
        f"first packet {offset_ms:.0f} ms after the media epoch"
    )
    assert metrics["turn_count"] == 4
    assert metrics["interruptions"] == 1
    assert [(t["participant"]) for t in metrics["turns"]] == [who for _, who, _ in truth]
    for turn, (start, _, duration) in zip(metrics["turns"], truth, strict=True):
        assert abs(turn["start_ms"] - start) <= TOLERANCE_MS, (turn, start)
        assert abs(turn["duration_ms"] - duration) <= TOLERANCE_MS, (turn, duration)
    assert [t["interrupted"] for t in metrics["turns"]] == [False, False, True, False]
    [event] = metrics["interruption_events"]
    assert event["by"] == BOB and event["of"] == ALICE
    assert abs(event["at_ms"] - (2600 + offset_ms)) <= TOLERANCE_MS
    assert abs(event["overlap_ms"] - 400) <= TOLERANCE_MS
    assert abs(metrics["speech_ms"][ALICE] - 2000) <= TOLERANCE_MS
    assert abs(metrics["speech_ms"][BOB] - 1400) <= TOLERANCE_MS
    assert metrics["turns_by"] == {ALICE: 2, BOB: 2}

    # the session store: the same four turns in history, the same metrics
    assert stored.status == "ended"
    history = stored.body["history"]
    store_metrics = stored.body["metrics"]
    print(f"stored history {history}\nstored metrics {store_metrics}")
    assert len(history) == 4
    for turn, expected in zip(history, metrics["turns"], strict=True):
        assert turn["participant"] == expected["participant"]
        assert turn["duration_ms"] == expected["duration_ms"]
        assert turn["interrupted"] == expected["interrupted"]
        start_ms = 1000 * (datetime.fromisoformat(turn["start"]) - epoch).total_seconds()
        assert abs(start_ms - expected["start_ms"]) <= 1, (turn, expected)
    assert store_metrics["turn_count"] == 4
    assert store_metrics["interruptions"] == 1
    assert store_metrics["speech_ms"] == metrics["speech_ms"]
    assert store_metrics["turns_by"] == {ALICE: 2, BOB: 2}
    assert store_metrics["interruptions_by"].get(ALICE) == 1
