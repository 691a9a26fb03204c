"""SessionManager duties driven step by step with a fake clock, on the memory store."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from siprec_node.session import (
    ManagerConfig,
    MemorySessionStore,
    SessionManager,
    SessionState,
    SessionStatus,
    SessionStore,
    StoreUnavailable,
)

from .backends import Backend, FakeClock

HB = timedelta(seconds=5)


def config(node: str, **kw: Any) -> ManagerConfig:
    kw.setdefault("heartbeat_interval", HB)
    kw.setdefault("cleanup_interval", timedelta(seconds=30))
    kw.setdefault("session_timeout", timedelta(hours=1))
    return ManagerConfig(node_id=node, **kw)


@pytest.fixture
def mem(clock: FakeClock) -> MemorySessionStore:
    return MemorySessionStore(clock=clock)


async def new_session(store: SessionStore, node: str, clock: FakeClock, **kw: Any) -> SessionState:
    state = SessionState(node_id=node, created_at=clock.now, status=SessionStatus.ACTIVE, **kw)
    await store.save(state)
    return state


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_follow_spec() -> None:
    cfg = ManagerConfig(node_id="n")
    assert cfg.heartbeat_interval == timedelta(seconds=5)
    assert cfg.node_ttl == timedelta(seconds=15)
    assert cfg.cleanup_interval == timedelta(seconds=30)
    assert cfg.session_timeout == timedelta(hours=1)
    assert ManagerConfig(node_id="n", heartbeat_interval=timedelta(seconds=30)).node_ttl == (
        timedelta(seconds=90)
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"node_id": ""},
        {"node_id": "n", "heartbeat_interval": timedelta(0)},
        {"node_id": "n", "session_timeout": -timedelta(seconds=1)},
        {"node_id": "n", "node_ttl": timedelta(seconds=5)},
        {"node_id": "n", "takeover_concurrency": 0},
    ],
)
def test_config_refuses_nonsense(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ManagerConfig(**kw)


# -- heartbeat and recovery ------------------------------------------------------------------


async def test_heartbeat_marks_the_node_alive(mem: MemorySessionStore, clock: FakeClock) -> None:
    manager = SessionManager(mem, config("a"), clock=clock)
    await manager.heartbeat()
    (node,) = await mem.list_nodes(timedelta(seconds=15), now=clock.now)
    assert (node.node_id, node.last_heartbeat, node.alive) == ("a", clock.now, True)
    clock.advance(16)
    (node,) = await mem.list_nodes(timedelta(seconds=15), now=clock.now)
    assert not node.alive


class CountingStore(MemorySessionStore):
    """Counts calls per method."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if not name.startswith("_") and callable(attr) and name != "calls":
            super().__getattribute__("calls")[name] += 1
        return attr


@pytest.mark.parametrize("sessions", [10, 2000])
async def test_heartbeat_cost_does_not_grow_with_sessions(sessions: int, clock: FakeClock) -> None:
    store = CountingStore(clock=clock)
    for _ in range(sessions):
        await new_session(store, "a", clock)
    manager = SessionManager(store, config("a"), clock=clock)
    store.calls.clear()
    await manager.heartbeat()
    assert store.calls == Counter({"update_heartbeat": 1})


async def test_recover_own_returns_this_nodes_live_sessions(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    mine = await new_session(mem, "a", clock)
    await new_session(mem, "b", clock)
    done = await new_session(mem, "a", clock)
    done.transition(SessionStatus.ENDED)
    await mem.save(done)
    manager = SessionManager(mem, config("a"), clock=clock)
    assert [s.id for s in await manager.recover_own()] == [mine.id]


# -- cleanup ---------------------------------------------------------------------------------


async def test_cleanup_ends_idle_sessions_of_this_node_only(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    seen: list[str] = []

    async def on_timeout(state: SessionState) -> None:
        assert state.status is SessionStatus.ACTIVE
        seen.append(state.id)

    manager = SessionManager(mem, config("a"), clock=clock, on_timeout=on_timeout)
    idle = await new_session(mem, "a", clock)
    rtp = await new_session(mem, "a", clock)
    sip = await new_session(mem, "a", clock)
    other = await new_session(mem, "b", clock)
    clock.advance(timedelta(minutes=59))
    assert await manager.cleanup() == []
    await mem.touch(rtp.id)  # RTP keeps it alive
    await mem.save(sip)  # so does a SIP event
    clock.advance(timedelta(minutes=2))
    ended = await manager.cleanup()
    assert [s.id for s in ended] == [idle.id] == seen
    stored = await mem.load(idle.id)
    assert (stored.status, stored.end_reason) == (SessionStatus.ENDED, "timeout")
    assert {s.id for s in await mem.list_active()} == {rtp.id, sip.id, other.id}
    assert await manager.cleanup() == []  # once only


async def test_cleanup_accepts_a_hook_that_ends_the_session_itself(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    async def on_timeout(state: SessionState) -> None:
        state.transition(SessionStatus.ENDED, reason="bye sent")
        await mem.save(state, expected_version=state.version)

    manager = SessionManager(mem, config("a"), clock=clock, on_timeout=on_timeout)
    state = await new_session(mem, "a", clock)
    clock.advance(timedelta(hours=2))
    (ended,) = await manager.cleanup()
    assert ended.id == state.id
    assert (await mem.load(state.id)).end_reason == "bye sent"


async def test_cleanup_spares_a_session_active_again_during_the_hook(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    async def on_timeout(state: SessionState) -> None:
        fresh = await mem.load(state.id)
        await mem.save(fresh)  # a re-INVITE arrived meanwhile

    manager = SessionManager(mem, config("a"), clock=clock, on_timeout=on_timeout)
    state = await new_session(mem, "a", clock)
    clock.advance(timedelta(hours=2))
    assert await manager.cleanup() == []
    assert (await mem.load(state.id)).status is SessionStatus.ACTIVE


# -- takeover --------------------------------------------------------------------------------


async def test_takeover_fails_the_sessions_of_a_dead_node(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    finalised: list[SessionState] = []

    async def on_takeover(state: SessionState) -> None:
        finalised.append(state)

    alive = SessionManager(mem, config("alive"), clock=clock, on_takeover=on_takeover)
    dead = SessionManager(mem, config("dead"), clock=clock)
    await dead.heartbeat()
    theirs = [await new_session(mem, "dead", clock) for _ in range(3)]
    ended = await new_session(mem, "dead", clock)
    ended.transition(SessionStatus.ENDED, reason="bye")
    await mem.save(ended)
    mine = await new_session(mem, "alive", clock)

    clock.advance(timedelta(seconds=14))
    await alive.heartbeat()
    assert await alive.takeover() == []  # 14 s < node_ttl 15 s

    clock.advance(timedelta(seconds=2))
    await alive.heartbeat()
    taken = await alive.takeover()
    assert {s.id for s in taken} == {s.id for s in theirs} == {s.id for s in finalised}
    assert all(s.node_id == "alive" for s in finalised)
    for s in theirs:
        stored = await mem.load(s.id)
        assert stored.status is SessionStatus.FAILED
        assert stored.end_reason == "node dead died"
        assert stored.node_id == "alive"
    assert (await mem.load(ended.id)).end_reason == "bye"
    assert [s.id for s in await mem.list_active()] == [mine.id]
    assert await alive.takeover() == []


async def test_a_node_never_takes_over_itself(mem: MemorySessionStore, clock: FakeClock) -> None:
    manager = SessionManager(mem, config("a"), clock=clock)
    await manager.heartbeat()
    await new_session(mem, "a", clock)
    clock.advance(timedelta(minutes=5))
    assert await manager.takeover() == []


async def test_takeover_finishes_even_if_the_hook_fails(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    async def on_takeover(state: SessionState) -> None:
        raise OSError("recording volume gone")

    alive = SessionManager(mem, config("alive"), clock=clock, on_takeover=on_takeover)
    await mem.update_heartbeat("dead", clock.now)
    state = await new_session(mem, "dead", clock)
    clock.advance(timedelta(minutes=1))
    (taken,) = await alive.takeover()
    assert taken.id == state.id
    assert (await mem.load(state.id)).status is SessionStatus.FAILED


async def test_racing_managers_take_each_session_exactly_once(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    hooks: Counter[str] = Counter()

    async def on_takeover(state: SessionState) -> None:
        hooks[state.id] += 1
        await asyncio.sleep(0)  # let the other manager run in between

    managers = [
        SessionManager(mem, config(f"m{i}"), clock=clock, on_takeover=on_takeover) for i in range(3)
    ]
    await mem.update_heartbeat("dead", clock.now)
    sessions = [await new_session(mem, "dead", clock) for _ in range(50)]
    clock.advance(timedelta(minutes=1))
    results = await asyncio.gather(*(m.takeover() for m in managers))
    taken = [s.id for r in results for s in r]
    assert sorted(taken) == sorted(s.id for s in sessions)
    assert set(hooks.values()) == {1}
    assert len(hooks) == 50
    assert await mem.list_active() == []


async def test_dead_empty_nodes_are_forgotten_after_a_while(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    manager = SessionManager(
        mem, config("a", forget_dead_nodes_after=timedelta(hours=1)), clock=clock
    )
    await mem.update_heartbeat("gone", clock.now)
    await new_session(mem, "gone", clock)
    clock.advance(timedelta(minutes=30))
    await manager.heartbeat()
    assert len(await manager.takeover()) == 1
    assert [n.node_id for n in await mem.list_nodes()] == ["a", "gone"]
    clock.advance(timedelta(minutes=31))
    await manager.heartbeat()
    assert await manager.takeover() == []
    assert [n.node_id for n in await mem.list_nodes()] == ["a"]


# -- background loop -------------------------------------------------------------------------


async def test_start_runs_heartbeat_takeover_and_cleanup_until_stop() -> None:
    store = MemorySessionStore()
    fast = ManagerConfig(
        node_id="a",
        heartbeat_interval=timedelta(milliseconds=20),
        cleanup_interval=timedelta(milliseconds=20),
        session_timeout=timedelta(milliseconds=50),
    )
    manager = SessionManager(store, fast)
    await store.update_heartbeat("dead", store._now() - timedelta(minutes=5))
    orphan = SessionState(node_id="dead")
    mine = SessionState(node_id="a")
    await store.save(orphan)
    await store.save(mine)
    await manager.start()
    assert manager.running
    await manager.start()  # idempotent
    await asyncio.sleep(0.3)
    await manager.stop()
    assert not manager.running
    assert (await store.load(orphan.id)).status is SessionStatus.FAILED
    assert (await store.load(mine.id)).end_reason == "timeout"
    (node,) = [n for n in await store.list_nodes() if n.node_id == "a"]
    beat = node.last_heartbeat
    await asyncio.sleep(0.1)
    (node,) = [n for n in await store.list_nodes() if n.node_id == "a"]
    assert node.last_heartbeat == beat  # stopped


class FlakyStore(MemorySessionStore):
    """Fails the first `failures` heartbeats."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.beats = 0

    async def update_heartbeat(self, node_id: str, at: Any = None) -> None:
        self.beats += 1
        if self.beats <= self.failures:
            raise StoreUnavailable("redis: connection refused")
        await super().update_heartbeat(node_id, at)


async def test_a_failing_store_does_not_kill_the_loop() -> None:
    store = FlakyStore(failures=0)
    manager = SessionManager(
        store, ManagerConfig(node_id="a", heartbeat_interval=timedelta(milliseconds=10))
    )
    await manager.start()
    store.failures = store.beats + 3
    await asyncio.sleep(0.2)
    await manager.stop()
    assert store.beats > store.failures
    assert [n.node_id for n in await store.list_nodes()] == ["a"]


async def test_start_raises_if_the_store_is_down() -> None:
    manager = SessionManager(FlakyStore(failures=1), ManagerConfig(node_id="a"))
    with pytest.raises(StoreUnavailable):
        await manager.start()
    assert not manager.running


async def test_heartbeat_gap_longer_than_node_ttl_triggers_ownership_check(
    backend: Backend, clock: FakeClock
) -> None:
    store = backend.new(clock=clock)
    checks: list[datetime] = []

    async def check() -> None:
        checks.append(clock())

    manager = SessionManager(
        store,
        ManagerConfig(node_id="n1", heartbeat_interval=timedelta(seconds=1)),
        on_presumed_dead=check,
        clock=clock,
    )
    await manager.heartbeat()
    clock.advance(2)
    await manager.heartbeat()
    assert checks == []  # within node_ttl (3 s)
    clock.advance(10)  # the process was stopped for 10 s
    await manager.heartbeat()
    assert checks == [clock()]


async def test_leave_marks_the_node_stopped_only_once_its_sessions_are_final(
    mem: MemorySessionStore, clock: FakeClock
) -> None:
    manager = SessionManager(mem, config("a"), clock=clock)
    await manager.heartbeat()
    state = await new_session(mem, "a", clock)
    assert await manager.leave() is False  # a live session: left to expire like a dead node
    (node,) = await mem.list_nodes(now=clock.now)
    assert node.alive and node.status == "alive"
    state.transition(SessionStatus.ENDED, reason="BYE")
    await mem.save(state)
    clock.advance(timedelta(seconds=1))
    assert await manager.leave() is True
    (node,) = await mem.list_nodes(now=clock.now)
    assert (node.alive, node.status, node.stopped_at) == (False, "stopped", clock.now)
