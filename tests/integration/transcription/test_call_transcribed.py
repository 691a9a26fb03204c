"""A SIPREC call with real speech, recorded by a real node and transcribed by its worker
process: espeak-ng sentences on the two legs (G.711 µ-law over RTP), Alice and Bob taking
turns. The stored history must hold each turn with the right speaker and the words spoken
(word error rate under 25 % over the call), the sidecar the same texts, `<stem>.vtt` must parse
with a cue per turn and its speaker, and `siprec-node sessions` must say `done`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from siprec_node.transcription import vtt
from tests.integration.media.src_client import PCMU, RtpLeg, SrcCall, ulaw_encode
from tests.integration.node_process import free_port, start_node
from tests.integration.persistence.harness import RedisServer, read_session, unique_prefix
from tests.integration.transcription.speech import ALICE, BOB, speak, wer
from tests.redis_server import redis_available

pytestmark = pytest.mark.integration

LINES = [
    (ALICE, "Good morning, thank you for calling the support line."),
    (BOB, "Hello, my internet connection stopped working yesterday."),
    (ALICE, "I am sorry to hear that. Let me check your account."),
    (BOB, "I would like to check the status of my order."),
]
SESSIONS_COMMAND = (sys.executable, "-m", "siprec_node", "sessions", "--all", "--json")
GAP = 0.7  # seconds of silence between turns (longer than the VAD's max_gap of 400 ms)


def _legs() -> tuple[list[RtpLeg], float]:
    clips = [(who, speak(text)) for who, text in LINES]
    total = sum(c.size for _, c in clips) / 8000 + GAP * (len(clips) + 1)
    tracks = {ALICE: np.zeros(round(total * 8000)), BOB: np.zeros(round(total * 8000))}
    at = round(GAP * 8000)
    for who, clip in clips:
        tracks[who][at : at + clip.size] = 0.8 * clip
        at += clip.size + round(GAP * 8000)
    legs = [
        RtpLeg(0, ulaw_encode(tracks[ALICE]), ssrc=0xA11CE),
        RtpLeg(0, ulaw_encode(tracks[BOB]), ssrc=0xB0B),
    ]
    return legs, total


def _wait_done(server: RedisServer, prefix: str, session_id: str, timeout: float) -> dict:
    client = server.client()
    deadline = time.monotonic() + timeout
    body: dict = {}
    try:
        while time.monotonic() < deadline:
            stored = read_session(client, prefix, session_id)
            body = stored.body if stored is not None else {}
            if (body.get("transcription") or {}).get("status") in ("done", "failed"):
                return body
            time.sleep(0.1)
    finally:
        client.close()
    raise AssertionError(f"transcription of {session_id} not finished: {body}")


def test_call_is_transcribed_per_turn_with_its_speakers() -> None:
    if not redis_available():
        pytest.fail("redis-server is not installed: this test needs it")
    server = RedisServer()
    prefix = unique_prefix("transcribed")
    legs, seconds = _legs()
    try:
        node = start_node(
            f'[store]\nbackend = "redis"\nurl = "{server.url}"\nprefix = "{prefix}"\n\n'
            '[transcription]\nengine = "whisper"\nworkers = 1\n',
            env={"HF_HUB_OFFLINE": "1"},
            http_port=(http_port := free_port()),
        )
        try:
            call = SrcCall(node.sip_port, codecs=(PCMU, PCMU))
            call.invite()
            answered = node.wait_for_event("call_answered", call_id=call.call_id)
            session_id = str(answered["session_id"])
            call.stream(legs, seconds)
            assert call.bye() == 200
            call.close()
            done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
            body = _wait_done(server, prefix, session_id, timeout=60)
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as answer:
                metrics = answer.read().decode()
            listed = subprocess.run(
                [*SESSIONS_COMMAND, "-c", str(node.workdir / "node.toml")],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=node.workdir,
            )
        finally:
            assert node.stop() == 0, "\n".join(node.raw[-40:])
    finally:
        server.stop()

    assert body["transcription"] == {"status": "done", "error": None}
    history = body["history"]
    print("history:", [(t["participant"], t["text"]) for t in history])
    print("sidecar:", done["sidecar"])
    assert [t["participant"] for t in history] == [who for who, _ in LINES]
    spoken = " ".join(text for _, text in LINES)
    heard = " ".join(t["text"] for t in history)
    error = wer(spoken, heard)
    print(f"WER {error:.1%}: {heard!r}")
    assert error < 0.25
    for n, turn in enumerate(history):  # each turn holds its own words, not a neighbour's
        errors = [wer(text, turn["text"]) for _, text in LINES]
        assert errors.index(min(errors)) == n, (turn["text"], errors)
    # the recovery snapshot carries the texts too (a node recovering the call keeps them)
    assert [t.get("text") for t in body["recovery_data"]["call"]["turns"]] == [
        t["text"] for t in history
    ]

    sidecar_path = Path(str(done["sidecar"]))
    print("sidecar:", sidecar_path)
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["transcription"]["status"] == "done"
    assert sidecar["transcription"]["model"] == "tiny.en"
    assert [t["text"] for t in sidecar["metrics"]["turns"]] == [t["text"] for t in history]
    cues = vtt.parse(sidecar_path.with_name(sidecar["transcription"]["vtt"]).read_text())
    assert [c.speaker for c in cues] == [who for who, _ in LINES]
    assert [c.text for c in cues] == [t["text"] for t in history]
    turns = sidecar["metrics"]["turns"]
    assert [c.start_ms for c in cues] == [t["start_ms"] for t in turns]

    assert 'siprec_transcription_jobs_total{outcome="done"} 1.0' in metrics

    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout) if r["id"] == session_id]
    assert row["transcription"] == "done"
