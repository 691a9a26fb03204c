"""The recording's verdict from finalisation to the snapshot, the metrics and the log."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from pathlib import Path

import structlog
from prometheus_client import generate_latest

from siprec_node.http.server import HttpApi
from siprec_node.sip.call import MemoryCallStore
from tests.unit.sip.test_handler_harness import Dialogue, Harness


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_the_verdict_reaches_the_snapshot_the_metrics_and_the_log() -> None:
    store = MemoryCallStore()
    harness = Harness(call_store=store)
    await harness.handler.start()
    api = HttpApi(harness.handler)
    before = _samples(generate_latest(api.registry).decode())
    assert before['siprec_recordings_total{verdict="ok"}'] == 0
    assert before['siprec_recording_problems_total{problem="no_rtp"}'] == 0

    dialogue = Dialogue(call_id="verdict-call-1")
    sent = await harness.feed_and_settle(dialogue.siprec_invite())
    ok = next(s.response for s in sent if s.response.status == 200)
    dialogue.to_tag = ok.to.tag
    harness.feed(dialogue.ack())
    session_id = next(iter(harness.handler.calls))
    call = harness.handler.calls[session_id]
    call.data.flag("metadata_unparsed", detail="not well-formed XML")
    # one second of a 1 kHz tone in µ-law on the first stream, nothing on the second
    port = int(ok.body.decode().split("m=audio ")[1].split()[0])
    tone = bytes([0x1E, 0x9E] * 80)  # a square-ish loud µ-law wave
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        for n in range(50):
            header = struct.pack("!BBHII", 0x80, 0, n, 160 * n, 0x1234)
            rtp.sendto(header + tone, ("127.0.0.1", port))
            await asyncio.sleep(0.02)
    with structlog.testing.capture_logs() as logs:
        assert [s.response.status for s in harness.feed(dialogue.bye())] == [200]
        await harness.handler.idle()
        assert await harness.handler.snapshots.flush(5)  # type: ignore[union-attr]

    stored = await store.load(session_id)
    assert stored is not None and stored.verdict is not None
    assert stored.verdict["status"] == "problems"
    kinds = [p["kind"] for p in stored.verdict["problems"]]
    assert kinds == ["no_rtp", "metadata_unparsed"], stored.verdict
    assert stored.verdict["problems"][0]["streams"] == [1]
    warning = next(e for e in logs if e["event"] == "recording_problems")
    assert warning["log_level"] == "warning"
    assert (warning["call_id"], warning["session_id"]) == ("verdict-call-1", session_id)
    assert warning["problems"] == ["no_rtp", "metadata_unparsed"]
    sidecar = json.loads(Path(warning["sidecar"]).read_text())
    assert sidecar["verdict"] == stored.verdict
    assert sidecar["streams"][0]["verdict"] == {"status": "ok", "problems": []}

    after = _samples(generate_latest(api.registry).decode())
    assert after['siprec_recordings_total{verdict="problems"}'] == 1
    assert after['siprec_recordings_total{verdict="ok"}'] == 0
    assert after['siprec_recording_problems_total{problem="no_rtp"}'] == 1
    assert after['siprec_recording_problems_total{problem="metadata_unparsed"}'] == 1
    assert after['siprec_recording_problems_total{problem="silent"}'] == 0
    await harness.handler.close()
