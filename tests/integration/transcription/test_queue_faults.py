"""The transcription queue under faults, with `siprec-node transcribe-worker` processes, real
Whisper tiny.en and a private redis-server:

- a worker SIGKILLed (with its worker processes) mid-job: another worker gets the job after
  `reclaim_after` and does it once;
- Redis SIGKILLed and restarted (AOF, fsync always) while jobs wait: every job is still there
  and done — except the poison job among them (the recording's audio is garbage), which is
  dead-lettered with its error after `max_attempts`, the call's transcription `failed (why)`
  in the store and the sidecar, while the good jobs around it are done.

Recordings are written as finalisation leaves them (a stereo WAV of espeak-ng sentences, one
speaker per channel, and a sidecar with the turns); the sessions are stored as a node stores
an ended call (turns in history, transcription pending).
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from siprec_node.session import RedisSessionStore
from siprec_node.transcription import Job
from siprec_node.transcription.redis_queue import RedisJobQueue
from tests.integration.node_process import free_port
from tests.integration.persistence.harness import RedisServer, read_session, unique_prefix
from tests.integration.transcription.speech import (
    ALICE,
    BOB,
    Recording,
    session_record,
    start_worker,
    wer,
    worker_config,
    write_recording,
)
from tests.redis_server import redis_available

pytestmark = pytest.mark.integration

LINES = [
    (ALICE, "Good morning, thank you for calling the support line."),
    (BOB, "Hello, my internet connection stopped working yesterday."),
    (ALICE, "I am sorry to hear that. Let me check your account."),
    (BOB, "Thank you very much."),
    (ALICE, "Your connection will work again in one hour."),
]


def _enqueue(url: str, prefix: str, recordings: list[Recording]) -> None:
    async def work() -> None:
        store = RedisSessionStore(url, prefix=prefix)
        queue = RedisJobQueue(store)
        for recording in recordings:
            await store.save(session_record(recording))  # type: ignore[arg-type]
            await queue.put(Job(recording.session_id, str(recording.sidecar)))
        await store.close()

    asyncio.run(work())


def _queue_state(url: str, prefix: str) -> tuple[int, list[tuple[str, str, int]]]:
    async def work() -> tuple[int, list[tuple[str, str, int]]]:
        store = RedisSessionStore(url, prefix=prefix)
        queue = RedisJobQueue(store)
        counts = await queue.counts()
        dead = [(d.job.session_id, d.error, d.attempts) for d in await queue.dead_letters()]
        await store.close()
        return counts.depth, dead

    return asyncio.run(work())


def _check_done(server: RedisServer, prefix: str, recording: Recording) -> None:
    client = server.client()
    stored = read_session(client, prefix, recording.session_id)
    client.close()
    assert stored is not None
    body = stored.body
    assert body["transcription"] == {"status": "done", "error": None}, body["transcription"]
    history = body["history"]
    assert len(history) == len(recording.texts)  # written once, not appended twice
    for turn, (who, _) in zip(history, recording.texts, strict=True):
        assert turn["participant"] == who
    spoken = " ".join(text for _, text in recording.texts)
    heard = " ".join(turn["text"] for turn in history)
    assert wer(spoken, heard) < 0.25, (spoken, heard)
    sidecar = json.loads(recording.sidecar.read_text())
    assert sidecar["transcription"]["status"] == "done"
    assert recording.sidecar.with_suffix(".vtt").is_file()


@pytest.fixture
def server() -> RedisServer:
    if not redis_available():
        pytest.fail("redis-server is not installed: this test needs it")
    server = RedisServer(persist=True)
    yield server
    server.stop()


def test_worker_killed_mid_job_is_redelivered_and_done_once(server: RedisServer) -> None:
    prefix = unique_prefix("tx-kill")
    directory = Path(tempfile.mkdtemp(prefix="tx-kill-"))
    # a long call, so that the first worker is surely inside it when it dies
    recording = write_recording(directory, uuid.uuid4().hex, LINES[:4])
    config = worker_config(
        directory, server.url, prefix, 'engine = "whisper"\nreclaim_after = "2s"'
    )
    _enqueue(server.url, prefix, [recording])
    first = start_worker(config)
    try:
        first.wait_for("transcription_job_taken", session_id=recording.session_id)
        first.kill()
    finally:
        first.stop()
    assert not first.events("transcription_done")
    metrics_port = free_port()
    second = start_worker(config, "--metrics", f"127.0.0.1:{metrics_port}")
    try:
        second.wait_for("transcription_done", timeout=60, session_id=recording.session_id)
        time.sleep(1.2)  # the queue's counts are refreshed every second
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
            metrics = answer.read().decode()
    finally:
        assert second.stop() == 0
    [taken] = second.events("transcription_job_taken")
    assert taken["attempt"] == 2  # the dead worker's delivery counted
    assert len(second.events("transcription_done")) == 1
    _check_done(server, prefix, recording)
    assert _queue_state(server.url, prefix) == (0, [])
    assert 'siprec_transcription_jobs_total{outcome="done"} 1.0' in metrics
    assert 'siprec_transcription_queue_depth{state="waiting"} 0.0' in metrics
    assert 'siprec_transcription_queue_depth{state="running"} 0.0' in metrics
    audio = re.search(r"^siprec_transcription_audio_seconds_total (\S+)", metrics, re.M)
    cpu = re.search(r"^siprec_transcription_cpu_seconds_total (\S+)", metrics, re.M)
    assert audio and cpu and float(audio[1]) > 5 and float(cpu[1]) > 0


def test_redis_restart_loses_nothing_and_a_poison_job_is_dead_lettered(
    server: RedisServer,
) -> None:
    """Two good jobs and a poison one wait while Redis is SIGKILLed and restarted; then one
    worker (max_attempts 2) does the good ones and dead-letters the poison with its error."""
    prefix = unique_prefix("tx-restart")
    directory = Path(tempfile.mkdtemp(prefix="tx-restart-"))
    poison = write_recording(directory, uuid.uuid4().hex, LINES[:1])
    wav = poison.sidecar.with_suffix(".wav")
    wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 40)  # corrupt audio
    good = [write_recording(directory, uuid.uuid4().hex, LINES[n : n + 1]) for n in (1, 4)]
    _enqueue(server.url, prefix, [good[0], poison, good[1]])
    server.kill()  # SIGKILL: only what the AOF holds comes back
    server.start()
    assert _queue_state(server.url, prefix) == (3, [])
    config = worker_config(directory, server.url, prefix, 'engine = "whisper"\nmax_attempts = 2')
    worker = start_worker(config)
    try:
        worker.wait_for("transcription_dead_lettered", timeout=60, session_id=poison.session_id)
        for recording in good:
            worker.wait_for("transcription_done", timeout=60, session_id=recording.session_id)
    finally:
        assert worker.stop() == 0
    for recording in good:
        _check_done(server, prefix, recording)

    assert len(worker.events("transcription_failed", session_id=poison.session_id)) == 2
    depth, dead = _queue_state(server.url, prefix)
    assert depth == 0
    [(session_id, error, attempts)] = dead
    assert session_id == poison.session_id and attempts == 2
    assert "RecordingUnreadable" in error and wav.name in error, error
    client = server.client()
    stored = read_session(client, prefix, poison.session_id)
    client.close()
    assert stored is not None
    assert stored.body["transcription"] == {"status": "failed", "error": error}
    assert all(turn.get("text") is None for turn in stored.body["history"])
    sidecar = json.loads(poison.sidecar.read_text())
    assert sidecar["transcription"] == {"status": "failed", "error": error, "attempts": 2}


def test_a_renewed_job_stays_with_its_worker_and_a_silent_one_moves(server: RedisServer) -> None:
    async def work() -> None:
        store = RedisSessionStore(server.url, prefix=unique_prefix("tx-renew"))
        queue = RedisJobQueue(store, reclaim_after=0.5, max_attempts=2)
        await queue.put(Job("s1", "/r/s1.json"))
        mine = await queue.take("a", 0.1)
        assert mine is not None and mine.attempt == 1
        for _ in range(3):  # 0.9 s held, renewed every 0.3 s: nobody else gets it
            await asyncio.sleep(0.3)
            await queue.renew(mine, "a")
            assert await queue.take("b", 0.05) is None
        await asyncio.sleep(0.6)  # "a" died: no renewal
        moved = await queue.take("b", 0.05)
        assert moved is not None and moved.id == mine.id and moved.attempt == 2
        assert moved.failures == ("worker died while transcribing",)
        await asyncio.sleep(0.6)  # "b" died too: max_attempts reached, dead-lettered
        assert await queue.take("c", 0.05) is None
        [dead] = await queue.dead_letters()
        assert (dead.job.session_id, dead.attempts) == ("s1", 2)
        assert (await queue.counts()).depth == 0
        await store.close()

    asyncio.run(work())
