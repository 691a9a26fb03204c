"""SessionManagers of several nodes sharing one Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from siprec_node.session import (
    ManagerConfig,
    OwnershipConflict,
    RedisSessionStore,
    SessionManager,
    SessionState,
    SessionStatus,
)
from tests.redis_server import RedisProcess
from tests.unit.session.backends import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
async def connect(
    redis_server: RedisProcess,
) -> AsyncIterator[Callable[..., RedisSessionStore]]:
    """Opens stores (one connection pool each, as separate nodes would) on one namespace."""
    prefix = f"mgr:{uuid.uuid4().hex[:8]}:"
    stores: list[RedisSessionStore] = []

    def make(**kw: object) -> RedisSessionStore:
        stores.append(RedisSessionStore(redis_server.url, prefix=prefix, **kw))  # type: ignore[arg-type]
        return stores[-1]

    yield make
    for s in stores:
        await s.close()


async def test_two_managers_racing_take_each_session_exactly_once(
    connect: Callable[..., RedisSessionStore],
) -> None:
    clock = FakeClock()
    hooks: Counter[str] = Counter()
    taken_by: dict[str, str] = {}

    def hook_for(node: str):  # type: ignore[no-untyped-def]
        async def on_takeover(state: SessionState) -> None:
            hooks[state.id] += 1
            taken_by[state.id] = node
            assert state.node_id == node
            await asyncio.sleep(0)

        return on_takeover

    dead_store = connect(clock=clock)
    await dead_store.update_heartbeat("dead", clock.now)
    sessions = []
    for i in range(300):
        state = SessionState(
            node_id="dead", call_id=f"c{i}", status=SessionStatus.ACTIVE, created_at=clock.now
        )
        await dead_store.save(state)
        sessions.append(state)

    clock.advance(timedelta(seconds=20))
    managers = [
        SessionManager(
            connect(clock=clock),
            ManagerConfig(node_id=node),
            clock=clock,
            on_takeover=hook_for(node),
        )
        for node in ("alpha", "beta")
    ]
    for m in managers:
        await m.heartbeat()
    results = await asyncio.gather(*(m.takeover() for m in managers))

    assert len(hooks) == 300
    assert set(hooks.values()) == {1}
    assert sorted(s.id for r in results for s in r) == sorted(s.id for s in sessions)
    assert all(results), "both managers should have won some sessions"
    for state in await dead_store.list_all():
        assert state.status is SessionStatus.FAILED
        assert state.end_reason == "node dead died"
        assert state.node_id == taken_by[state.id]
    assert await dead_store.list_active() == []
    assert await dead_store.list_by_node("dead") == []
    # The "dead" node, if it was only slow, can no longer write over the takeover.
    with pytest.raises(OwnershipConflict):
        await dead_store.save(sessions[0])


async def test_running_managers_detect_a_dead_node(
    connect: Callable[..., RedisSessionStore],
) -> None:
    fast = {
        "heartbeat_interval": timedelta(milliseconds=50),
        "node_ttl": timedelta(milliseconds=250),
        "cleanup_interval": timedelta(seconds=60),
    }
    finalised: list[str] = []

    async def on_takeover(state: SessionState) -> None:
        finalised.append(state.id)

    survivor = SessionManager(
        connect(), ManagerConfig(node_id="survivor", **fast), on_takeover=on_takeover
    )
    victim_store = connect()
    victim = SessionManager(victim_store, ManagerConfig(node_id="victim", **fast))
    await victim.start()
    await survivor.start()
    calls = [SessionState(node_id="victim", status=SessionStatus.ACTIVE) for _ in range(5)]
    for state in calls:
        await victim_store.save(state)
    await asyncio.sleep(0.4)
    assert finalised == []  # the victim is alive: nothing taken over
    await victim.stop()  # it dies
    for _ in range(40):
        await asyncio.sleep(0.05)
        if len(finalised) == len(calls):
            break
    await survivor.stop()
    assert sorted(finalised) == sorted(s.id for s in calls)
    for state in calls:
        stored = await victim_store.load(state.id)
        assert (stored.status, stored.node_id) == (SessionStatus.FAILED, "survivor")


async def test_restart_recovers_own_sessions(connect: Callable[..., RedisSessionStore]) -> None:
    before = connect()
    state = SessionState(node_id="rec-1", status=SessionStatus.ACTIVE, recovery_data={"p": 1})
    await before.save(state)
    await before.close()
    after = SessionManager(connect(), ManagerConfig(node_id="rec-1"))
    (recovered,) = await after.recover_own()
    assert (recovered.id, recovered.recovery_data) == (state.id, {"p": 1})
