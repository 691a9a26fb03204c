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

from siprec_node.session import RedisSessionStore, SessionState, SessionStatus
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
        await store.save(ended)
    finally:
        await store.close()


def test_sessions_and_nodes_commands(redis_url: str) -> None:
    asyncio.run(_seed(redis_url))
    live = _cli(redis_url, "sessions")
    assert live.returncode == 0, live.stderr
    lines = live.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "CALL-ID", "STATUS", "NODE", "STARTED", "HEARTBEAT"]
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
    nodes = _cli(redis_url, "nodes")
    assert nodes.returncode == 0 and nodes.stdout.splitlines()[1].split()[:2] == ["rec-live", "yes"]
    assert json.loads(_cli(redis_url, "nodes", "--json").stdout)[0]["alive"] is True


def test_store_unavailable_is_reported(redis_url: str) -> None:
    result = _cli("redis://127.0.0.1:1/0", "nodes")
    assert result.returncode == 1
    assert "store unavailable" in result.stderr
