"""The `http` engine against a real local server of the OpenAI transcription API (a minimal
one built on faster-whisper, `openai_server.py`, with a bearer token): a `transcribe-worker`
with `engine = "http"` transcribes a queued recording through it, the words land in the
history; a wrong token is an error naming the answer."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from siprec_node.transcription.engines import EngineError, HttpEngine
from tests.integration.node_process import ROOT, free_port
from tests.integration.persistence.harness import RedisServer, read_session, unique_prefix
from tests.integration.transcription.speech import (
    ALICE,
    BOB,
    start_worker,
    wer,
    worker_config,
    write_recording,
)
from tests.integration.transcription.test_queue_faults import _enqueue
from tests.redis_server import redis_available

pytestmark = pytest.mark.integration

LINES = [
    (ALICE, "Good morning, thank you for calling the support line."),
    (BOB, "I would like to check the status of my order."),
]
TOKEN = "s3cret-token"


def test_http_engine_through_an_openai_compatible_server() -> None:
    if not redis_available():
        pytest.fail("redis-server is not installed: this test needs it")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + str(ROOT / "src")
    server_proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.transcription.openai_server", str(port), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    redis = RedisServer()
    try:
        assert server_proc.stdout is not None
        assert server_proc.stdout.readline().strip() == b"ready"
        url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
        with pytest.raises(EngineError, match="HTTP 401"):
            HttpEngine(url, token="wrong").transcribe(np.zeros(16000, np.float32))

        prefix = unique_prefix("tx-http")
        directory = Path(tempfile.mkdtemp(prefix="tx-http-"))
        recording = write_recording(directory, uuid.uuid4().hex, LINES)
        _enqueue(redis.url, prefix, [recording])
        extra = f'engine = "http"\nhttp_url = "{url}"\nhttp_token = "{TOKEN}"\n'
        worker = start_worker(worker_config(directory, redis.url, prefix, extra))
        try:
            worker.wait_for("transcription_done", timeout=60, session_id=recording.session_id)
        finally:
            assert worker.stop() == 0
        client = redis.client()
        stored = read_session(client, prefix, recording.session_id)
        client.close()
    finally:
        redis.stop()
        server_proc.terminate()
        _, errors = server_proc.communicate(timeout=10)

    assert stored is not None
    assert stored.body["transcription"]["status"] == "done"
    history = stored.body["history"]
    assert [t["participant"] for t in history] == [who for who, _ in LINES]
    heard = " ".join(t["text"] for t in history)
    print("heard through http:", heard)
    assert wer(" ".join(text for _, text in LINES), heard) < 0.25
    # the server transcribed each turn (a request per turn, the configured model name)
    assert errors.decode().count("transcribed model=whisper-1") == len(LINES)
