"""The in-process path of a node with the memory store: `Transcriber` on a `MemoryJobQueue`
and a `MemorySessionStore`, Whisper in a spawned worker process. A good recording and a poison
one (garbage audio) are queued through the node's hook (`submit`, as the recorder calls it
after finalisation): the good call's history gets its words, the poison one is
dead-lettered after `max_attempts` and its transcription is `failed (why)`; the metrics say
so."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from siprec_node.session import MemorySessionStore
from siprec_node.sip.call import CallData
from siprec_node.transcription import EngineSettings, MemoryJobQueue
from siprec_node.transcription.service import Transcriber
from tests.integration.transcription.speech import (
    ALICE,
    BOB,
    session_record,
    wer,
    write_recording,
)

pytestmark = pytest.mark.integration

LINES = [
    (ALICE, "Good morning, thank you for calling the support line."),
    (BOB, "Thank you very much."),
]


async def _wait(predicate: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_memory_queue_in_process_workers() -> None:
    directory = Path(tempfile.mkdtemp(prefix="tx-memory-"))
    good = write_recording(directory, uuid.uuid4().hex, LINES)
    poison = write_recording(directory, uuid.uuid4().hex, LINES[:1])
    poison.sidecar.with_suffix(".wav").write_bytes(b"not audio at all" * 100)
    store = MemorySessionStore()
    service = Transcriber(
        EngineSettings("whisper"),
        MemoryJobQueue(max_attempts=2),
        store,
        consumer="node-a",
        workers=1,
    )
    await service.start()
    try:
        for recording in (good, poison):
            await store.save(session_record(recording))  # type: ignore[arg-type]
            data = CallData(session_id=recording.session_id, call_id="c", node_id="node-a")
            finalised = SimpleNamespace(
                sidecar=recording.sidecar,
                conversation=SimpleNamespace(turns=recording.turns),
            )
            service.submit(data, finalised)  # the handler's hook: pending, queued
            assert data.transcription == {"status": "pending", "error": None}

        async def finished() -> bool:
            states = [await store.load(r.session_id) for r in (good, poison)]
            return all(s.transcription and s.transcription.status != "pending" for s in states)

        await _wait(finished, 60)
    finally:
        await service.stop()

    done = await store.load(good.session_id)
    assert str(done.transcription) == "done"
    assert [t.participant for t in done.history] == [ALICE, BOB]
    heard = " ".join(t.text or "" for t in done.history)
    assert wer(" ".join(text for _, text in LINES), heard) < 0.25, heard
    failed = await store.load(poison.session_id)
    assert failed.transcription is not None and failed.transcription.status == "failed"
    assert "RecordingUnreadable" in str(failed.transcription.error)
    registry = CollectorRegistry()
    registry.register(service.collector())
    metrics = generate_latest(registry).decode()
    assert 'siprec_transcription_jobs_total{outcome="done"} 1.0' in metrics
    assert 'siprec_transcription_jobs_total{outcome="failed"} 2.0' in metrics
    assert 'siprec_transcription_jobs_total{outcome="dead_lettered"} 1.0' in metrics
    assert service.stats.audio_s > 2 and service.stats.cpu_s > 0
