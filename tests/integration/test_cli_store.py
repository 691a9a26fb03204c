"""`siprec-node sessions` and `nodes` read the configured store (a real redis-server here)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest

from siprec_node.session import (
    RedisSessionStore,
    SessionState,
    SessionStatus,
    TranscriptionStatus,
)
from tests.integration.node_process import ROOT
from tests.redis_server import RedisProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisProcess()
    yield server.url
    server.stop()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPREC_")}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        SIPREC_STORE__BACKEND="redis",
        SIPREC_STORE__URL=url,
        SIPREC_STORE__PREFIX="cli:",
    )
    return subprocess.run(
        [sys.executable, "-m", "siprec_node", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


async def _seed(url: str) -> None:
    store = RedisSessionStore(url, prefix="cli:", ttl=timedelta(hours=1))
    try:
        await store.update_heartbeat("rec-live")
        await store.save(SessionState(id="s-live", call_id="call-a", node_id="rec-live"))
        ended = SessionState(id="s-done", call_id="call-b", node_id="rec-live")
        ended.transition(SessionStatus.ENDED, reason="BYE from SRC")
        ended.transcription = TranscriptionStatus("failed", "EngineError: HTTP 401")
        await store.save(ended)
    finally:
        await store.close()


def test_sessions_and_nodes_commands(redis_url: str) -> None:
    asyncio.run(_seed(redis_url))
    live = _cli(redis_url, "sessions")
    assert live.returncode == 0, live.stderr
    lines = live.stdout.splitlines()
    assert lines[0].split() == [
        "SESSION",
        "CALL-ID",
        "STATUS",
        "NODE",
        "STARTED",
        "HEARTBEAT",
        "TRANSCRIPTION",
    ]
    assert lines[1].split()[-1] == "-"  # none asked for
    assert len(lines) == 2 and lines[1].split()[:4] == [
        "s-live",
        "call-a",
        "connecting",
        "rec-live",
    ]
    everything = json.loads(_cli(redis_url, "sessions", "--all", "--json").stdout)
    assert {row["id"]: row["status"] for row in everything} == {
        "s-live": "connecting",
        "s-done": "ended",
    }
    assert all(row["node_alive"] for row in everything)
    assert {row["id"]: row["transcription"] for row in everything} == {
        "s-live": None,
        "s-done": "failed (EngineError: HTTP 401)",
    }
    table = _cli(redis_url, "sessions", "--all").stdout
    assert "failed (EngineError: HTTP 401)" in table
    nodes = _cli(redis_url, "nodes")
    assert nodes.returncode == 0 and nodes.stdout.splitlines()[1].split()[:2] == ["rec-live", "yes"]
    assert json.loads(_cli(redis_url, "nodes", "--json").stdout)[0]["alive"] is True


def test_store_unavailable_is_reported(redis_url: str) -> None:
    result = _cli("redis://127.0.0.1:1/0", "nodes")
    assert result.returncode == 1
    assert "store unavailable" in result.stderr


async def _seed_recordings(url: str) -> None:
    from datetime import UTC, datetime

    from siprec_node.adapters import to_session_state
    from siprec_node.sip.call import CallData, CallStatus

    now = datetime.now(UTC)
    store = RedisSessionStore(url, prefix="clirec:", ttl=timedelta(hours=48))

    def call(session_id: str, ended_ago: timedelta, verdict: dict | None) -> SessionState:
        data = CallData(session_id=session_id, call_id=f"{session_id}@src", node_id="rec-1")
        data.status = CallStatus.ENDED
        data.started_at = now - ended_ago - timedelta(seconds=65)
        data.ended_at = now - ended_ago
        data.verdict = verdict
        return to_session_state(data)

    gaps = {"kind": "gaps", "streams": [0], "count": 1, "ms": 2600}
    odd = {"kind": "unexpected_payload", "streams": [1], "packets": 50, "payload_types": {"96": 50}}
    try:
        await store.save(call("r-ok", timedelta(minutes=5), {"status": "ok", "problems": []}))
        await store.save(
            call("r-bad", timedelta(minutes=2), {"status": "problems", "problems": [gaps, odd]})
        )
        await store.save(
            call("r-old", timedelta(hours=30), {"status": "problems", "problems": [gaps]})
        )
        await store.save(call("r-none", timedelta(minutes=1), None))
        await store.save(SessionState(id="r-live", call_id="live@src", node_id="rec-1"))
    finally:
        await store.close()


def test_recordings_command(redis_url: str) -> None:
    asyncio.run(_seed_recordings(redis_url))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPREC_")}
        env.update(
            PYTHONPATH=str(ROOT / "src"),
            SIPREC_STORE__BACKEND="redis",
            SIPREC_STORE__URL=redis_url,
            SIPREC_STORE__PREFIX="clirec:",
        )
        return subprocess.run(
            [sys.executable, "-m", "siprec_node", "recordings", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )

    table = cli()
    assert table.returncode == 0 and table.stderr == "", table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "CALL-ID", "ENDED", "DURATION", "VERDICT"]
    assert [line.split()[0] for line in lines[1:]] == ["r-old", "r-ok", "r-bad", "r-none"]
    bad = next(line for line in lines if line.startswith("r-bad"))
    assert "65.0s" in bad
    assert bad.endswith("gaps 1x 2600 ms stream 0; unexpected_payload PT96:50 stream 1")
    assert lines[-1].split()[-1] == "-"

    problems = cli("--problems", "--since", "24h")
    assert [line.split()[0] for line in problems.stdout.splitlines()[1:]] == ["r-bad"]
    rows = json.loads(cli("--problems", "--json").stdout)
    assert [r["id"] for r in rows] == ["r-old", "r-bad"]
    assert rows[1]["verdict"]["problems"][1]["payload_types"] == {"96": 50}
    assert rows[1]["duration_s"] == 65.0 and rows[1]["call_id"] == "r-bad@src"
    assert cli("--since", "nonsense").returncode == 2
