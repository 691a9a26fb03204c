"""One behaviour, every store: this suite runs against each `backend` (memory, Redis; the
integration tests re-run it on Sentinel and Cluster by importing it and overriding `backend`).

Only the `backend` fixture comes from outside; everything else is defined here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siprec_node.session import (
    InvalidTransition,
    OwnershipConflict,
    RecordingVerdict,
    SessionNotFound,
    SessionState,
    SessionStatus,
    SessionStore,
    StoreClosed,
    VersionConflict,
)

from .backends import Backend, FakeClock

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture
def store(backend: Backend) -> SessionStore:
    """A fresh, empty store of the backend under test."""
    return backend.new()


@pytest.fixture
def clock() -> FakeClock:
    """A settable clock."""
    return FakeClock()


def make_state(node: str = "node-a", **fields: object) -> SessionState:
    state = SessionState(
        call_id=fields.pop("call_id", "call-1@sbc.example"),  # type: ignore[arg-type]
        provider="sbc",
        direction="inbound",
        from_="sip:alice@example.com",
        to="sip:bob@example.com",
        node_id=node,
        **fields,  # type: ignore[arg-type]
    )
    return state


def ids(states: list[SessionState]) -> set[str]:
    return {s.id for s in states}


# -- save / load / delete -------------------------------------------------------------------


async def test_save_then_load_returns_an_equal_state(store: SessionStore) -> None:
    state = make_state(status=SessionStatus.ACTIVE, created_at=T0)
    state.add_turn("alice", T0 + timedelta(seconds=1), 1500)
    state.add_turn("bob", T0 + timedelta(seconds=2), 700, interrupted=True)
    state.recovery_data = {"dialog": {"tags": ["a", "b"]}, "ports": [20000, 20002], "x": None}
    state.to = "sip:bøb@exämple.com ☎"
    version = await store.save(state)
    assert version == state.version == 1
    loaded = await store.load(state.id)
    assert loaded.to_dict() == state.to_dict()
    assert loaded.metrics.turn_count == 2
    assert loaded.metrics.interruptions_by == {"bob": 1}


async def test_the_verdict_of_a_recording_round_trips(store: SessionStore) -> None:
    state = make_state(status=SessionStatus.ENDED, created_at=T0)
    state.verdict = RecordingVerdict(
        "problems",
        (
            {"kind": "no_rtp", "streams": [1]},
            {"kind": "unexpected_payload", "streams": [0], "packets": 50,
             "payload_types": {"96": 50}},
            {"kind": "gaps", "streams": [0], "count": 1, "ms": 2600},
        ),
    )  # fmt: skip
    await store.save(state)
    loaded = await store.load(state.id)
    assert loaded.verdict == state.verdict
    assert loaded.verdict is not None and loaded.verdict.kinds == (
        "no_rtp",
        "unexpected_payload",
        "gaps",
    )
    assert loaded.verdict.problem("gaps") == {
        "kind": "gaps",
        "streams": [0],
        "count": 1,
        "ms": 2600,
    }
    assert [s.verdict for s in await store.list_all()] == [state.verdict]
    # a session without one (a live call, or written before verdicts existed)
    plain = make_state(call_id="other@sbc.example")
    await store.save(plain)
    assert (await store.load(plain.id)).verdict is None


async def test_every_save_bumps_the_version_and_sets_updated_at(store: SessionStore) -> None:
    state = make_state()
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert [await store.save(state) for _ in range(3)] == [1, 2, 3]
    assert (await store.load(state.id)).version == 3
    assert state.updated_at >= before


async def test_load_of_a_missing_id_raises_session_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound) as err:
        await store.load("nope")
    assert err.value.session_id == "nope"
    assert isinstance(err.value, KeyError)


async def test_delete_removes_record_and_index_entries(store: SessionStore) -> None:
    state = make_state()
    await store.save(state)
    assert await store.delete(state.id) is True
    with pytest.raises(SessionNotFound):
        await store.load(state.id)
    assert await store.list_active() == []
    assert await store.list_by_node("node-a") == []
    assert await store.list_all() == []
    assert await store.delete(state.id) is False


async def test_not_json_safe_recovery_data_is_refused_and_nothing_stored(
    store: SessionStore,
) -> None:
    state = make_state(recovery_data={"sock": object()})
    with pytest.raises(ValueError, match="JSON-safe"):
        await store.save(state)
    assert state.version == 0
    with pytest.raises(SessionNotFound):
        await store.load(state.id)


@pytest.mark.parametrize(
    "session_id",
    ["index:active", "index:node:node-a", "nodes", "session:x", "{siprec}", "*", "a b/../c", "☎"],
)
async def test_ids_that_look_like_keys_do_not_collide_with_indexes(
    store: SessionStore, session_id: str
) -> None:
    other = make_state()
    await store.save(other)
    await store.update_heartbeat("node-a")
    state = make_state(id=session_id)
    await store.save(state)
    assert (await store.load(session_id)).id == session_id
    assert ids(await store.list_active()) == {session_id, other.id}
    assert ids(await store.list_by_node("node-a")) == {session_id, other.id}
    assert ids(await store.list_all()) == {session_id, other.id}
    assert [n.node_id for n in await store.list_nodes()] == ["node-a"]
    assert await store.delete(session_id)
    assert ids(await store.list_active()) == {other.id}


async def test_namespaces_are_isolated(backend: Backend) -> None:
    a, b = backend.new(), backend.new()
    await a.save(make_state(id="same"))
    with pytest.raises(SessionNotFound):
        await b.load("same")
    assert await b.list_active() == []


# -- indexes ---------------------------------------------------------------------------------


async def test_active_index_holds_exactly_the_non_terminal_sessions(store: SessionStore) -> None:
    connecting = make_state(node="n1")
    active = make_state(node="n2", status=SessionStatus.ACTIVE)
    ended = make_state(node="n1")
    for s in (connecting, active, ended):
        await store.save(s)
    ended.transition(SessionStatus.ENDED, reason="bye")
    await store.save(ended)
    assert ids(await store.list_active()) == {connecting.id, active.id}
    assert ids(await store.list_by_node("n1")) == {connecting.id}
    assert ids(await store.list_by_node("n2")) == {active.id}
    assert ids(await store.list_all()) == {connecting.id, active.id, ended.id}
    assert (await store.load(ended.id)).end_reason == "bye"


async def test_a_session_saved_terminal_from_the_start_is_never_active(
    store: SessionStore,
) -> None:
    state = make_state(status=SessionStatus.FAILED, end_reason="488")
    await store.save(state)
    assert await store.list_active() == []
    assert await store.list_by_node("node-a") == []
    assert ids(await store.list_all()) == {state.id}


async def test_listing_many_sessions(store: SessionStore) -> None:
    states = [make_state(node=f"n{i % 3}") for i in range(1100)]
    for s in states:
        await store.save(s)
    assert ids(await store.list_active()) == ids(states)
    assert len(await store.list_by_node("n1")) == len([s for s in states if s.node_id == "n1"])


# -- compare-and-set, ownership, lifecycle --------------------------------------------------


async def test_save_with_expected_version_is_compare_and_set(store: SessionStore) -> None:
    state = make_state()
    assert await store.save(state, expected_version=0) == 1  # create-only
    with pytest.raises(VersionConflict) as err:
        await store.save(make_state(id=state.id), expected_version=0)
    assert (err.value.expected, err.value.actual) == (0, 1)
    assert await store.save(state, expected_version=1) == 2
    stale = await store.load(state.id)
    await store.save(state, expected_version=2)
    stale.call_id = "lost update"
    with pytest.raises(VersionConflict):
        await store.save(stale, expected_version=stale.version)
    assert (await store.load(state.id)).call_id == state.call_id
    assert stale.version == 2  # a refused save leaves the state untouched


async def test_two_writers_with_the_same_version_exactly_one_wins(backend: Backend) -> None:
    first = backend.new()
    second = backend.peer(first)
    for round_ in range(20):
        state = make_state(id=f"race-{round_}")
        await first.save(state)
        a, b = await first.load(state.id), await second.load(state.id)
        a.call_id, b.call_id = "writer-a", "writer-b"
        results = await asyncio.gather(
            first.save(a, expected_version=a.version),
            second.save(b, expected_version=b.version),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, int)]
        losses = [r for r in results if isinstance(r, VersionConflict)]
        assert (len(wins), len(losses)) == (1, 1), results
        stored = await first.load(state.id)
        assert stored.version == 2
        assert stored.call_id == ("writer-a" if results[0] == 2 else "writer-b")


async def test_only_the_owner_saves(store: SessionStore) -> None:
    state = make_state(node="node-a")
    await store.save(state)
    intruder = await store.load(state.id)
    intruder.node_id = "node-b"
    with pytest.raises(OwnershipConflict) as err:
        await store.save(intruder)
    assert (err.value.owner, err.value.attempted) == ("node-a", "node-b")
    assert (await store.load(state.id)).node_id == "node-a"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (SessionStatus.ENDED, SessionStatus.ACTIVE),
        (SessionStatus.FAILED, SessionStatus.CONNECTING),
        (SessionStatus.ACTIVE, SessionStatus.CONNECTING),
        (SessionStatus.ENDED, SessionStatus.FAILED),
    ],
)
async def test_status_never_moves_backwards(
    store: SessionStore, first: SessionStatus, second: SessionStatus
) -> None:
    state = make_state(status=first)
    await store.save(state)
    stale = await store.load(state.id)
    stale.status = second  # bypasses transition(), as a confused writer would
    with pytest.raises(InvalidTransition):
        await store.save(stale)
    assert (await store.load(state.id)).status is first
    assert ids(await store.list_active()) == (set() if first.is_terminal else {state.id})


# -- claim -----------------------------------------------------------------------------------


async def test_claim_moves_ownership(store: SessionStore) -> None:
    state = make_state(node="dead", status=SessionStatus.ACTIVE)
    await store.save(state)
    assert await store.claim(state.id, "dead", "alive") is True
    claimed = await store.load(state.id)
    assert claimed.node_id == "alive"
    assert claimed.version == 2
    assert claimed.status is SessionStatus.ACTIVE
    assert await store.list_by_node("dead") == []
    assert ids(await store.list_by_node("alive")) == {state.id}
    assert ids(await store.list_active()) == {state.id}
    # the old owner lost it
    with pytest.raises(OwnershipConflict):
        await store.save(state)
    # the new owner saves normally
    claimed.transition(SessionStatus.FAILED, reason="node dead died")
    await store.save(claimed, expected_version=2)
    assert await store.list_active() == []


async def test_claim_fails_when_not_owned_terminal_or_missing(store: SessionStore) -> None:
    live = make_state(node="a")
    done = make_state(node="a", status=SessionStatus.ENDED)
    await store.save(live)
    await store.save(done)
    assert await store.claim(live.id, "b", "c") is False
    assert await store.claim(done.id, "a", "c") is False
    assert await store.claim("missing", "a", "c") is False
    assert (await store.load(live.id)).node_id == "a"
    assert (await store.load(done.id)).node_id == "a"


async def test_concurrent_claimers_exactly_one_wins(backend: Backend) -> None:
    stores = [backend.new()]
    stores += [backend.peer(stores[0]) for _ in range(3)]
    sessions = [make_state(node="dead") for _ in range(40)]
    for s in sessions:
        await stores[0].save(s)
    for s in sessions:
        results = await asyncio.gather(
            *(st.claim(s.id, "dead", f"claimer-{i}") for i, st in enumerate(stores))
        )
        assert results.count(True) == 1, results
        winner = f"claimer-{results.index(True)}"
        assert (await stores[0].load(s.id)).node_id == winner
    claimed = [await stores[0].list_by_node(f"claimer-{i}") for i in range(len(stores))]
    assert sum(len(c) for c in claimed) == len(sessions)
    assert await stores[0].list_by_node("dead") == []


# -- activity and expiry ---------------------------------------------------------------------


async def test_touch_records_activity_and_never_moves_it_back(store: SessionStore) -> None:
    state = make_state()
    await store.save(state)
    later = state.last_activity + timedelta(minutes=5)
    await store.touch(state.id, later)
    await store.touch(state.id, later - timedelta(minutes=1))
    loaded = await store.load(state.id)
    assert abs(loaded.last_activity - later) < timedelta(milliseconds=1)
    assert loaded.version == state.version  # touching is not a write of the record
    with pytest.raises(SessionNotFound):
        await store.touch("missing")


async def test_list_by_node_idle_before_sees_touches(backend: Backend, clock: FakeClock) -> None:
    store = backend.new(clock=clock)
    quiet, rtp, sip = (make_state(created_at=clock.now) for _ in range(3))
    for s in (quiet, rtp, sip):
        await store.save(s)
    clock.advance(timedelta(minutes=50))
    await store.touch(rtp.id)  # RTP activity
    await store.save(sip)  # a SIP event saves a snapshot
    clock.advance(timedelta(minutes=20))
    cutoff = clock.now - timedelta(hours=1)
    assert ids(await store.list_by_node("node-a", idle_before=cutoff)) == {quiet.id}
    assert ids(await store.list_by_node("node-a")) == {quiet.id, rtp.id, sip.id}
    assert await store.list_by_node("other", idle_before=cutoff) == []


async def test_touch_many_touches_each_and_names_the_missing(
    backend: Backend, clock: FakeClock
) -> None:
    store = backend.new(clock=clock)
    states = [make_state(created_at=clock.now) for _ in range(450)]  # more than one batch
    for s in states:
        await store.save(s)
    start = clock.now
    clock.advance(timedelta(minutes=50))
    touches = {s.id: clock.now for s in states[:300]}
    touches[states[300].id] = start - timedelta(minutes=1)  # older: activity never moves back
    touches["missing"] = clock.now
    assert await store.touch_many(touches) == ["missing"]
    clock.advance(timedelta(minutes=20))
    cutoff = clock.now - timedelta(hours=1)
    assert ids(await store.list_by_node("node-a", idle_before=cutoff)) == ids(states[300:])
    loaded = await store.load(states[0].id)
    assert abs(loaded.last_activity - (start + timedelta(minutes=50))) < timedelta(milliseconds=1)
    assert loaded.version == states[0].version  # touching is not a write of the record
    assert await store.touch_many({}) == []


async def test_expired_records_leave_no_ghost_ids(backend: Backend) -> None:
    store = backend.new(ttl=timedelta(milliseconds=300))
    states = [make_state(node="n1") for _ in range(5)]
    for s in states:
        await store.save(s)
    await store.update_heartbeat("n1", datetime(2000, 1, 1, tzinfo=UTC))
    assert len(await store.list_active()) == 5
    await asyncio.sleep(0.45)
    assert await store.list_active() == []
    assert await store.list_by_node("n1") == []
    assert await store.list_all() == []
    for s in states:
        with pytest.raises(SessionNotFound):
            await store.load(s.id)
    # The node index is empty too, or the dead node could not be forgotten.
    assert await store.forget_node("n1", dead_before=datetime.now(UTC)) is True


async def test_touch_and_save_refresh_the_ttl(backend: Backend) -> None:
    store = backend.new(ttl=timedelta(milliseconds=400))
    touched, many, saved, idle = make_state(), make_state(), make_state(), make_state()
    for s in (touched, many, saved, idle):
        await store.save(s)
    await asyncio.sleep(0.25)
    await store.touch(touched.id)
    await store.touch_many({many.id: datetime.now(UTC)})
    await store.save(saved)
    await asyncio.sleep(0.25)
    assert ids(await store.list_active()) == {touched.id, many.id, saved.id}
    with pytest.raises(SessionNotFound):
        await store.load(idle.id)


async def test_claim_refreshes_the_ttl(backend: Backend) -> None:
    store = backend.new(ttl=timedelta(milliseconds=400))
    state = make_state(node="dead")
    await store.save(state)
    await asyncio.sleep(0.25)
    assert await store.claim(state.id, "dead", "alive")
    await asyncio.sleep(0.25)
    assert (await store.load(state.id)).node_id == "alive"


# -- nodes -----------------------------------------------------------------------------------


async def test_heartbeats_and_node_liveness(store: SessionStore) -> None:
    await store.update_heartbeat("b", T0)
    await store.update_heartbeat("a", T0 - timedelta(seconds=20))
    nodes = await store.list_nodes(timedelta(seconds=15), now=T0 + timedelta(seconds=1))
    assert [(n.node_id, n.alive) for n in nodes] == [("a", False), ("b", True)]
    assert abs(nodes[1].last_heartbeat - T0) < timedelta(milliseconds=1)
    await store.update_heartbeat("a", T0)
    nodes = await store.list_nodes(timedelta(seconds=15), now=T0 + timedelta(seconds=1))
    assert all(n.alive for n in nodes)


async def test_heartbeat_defaults_to_now(store: SessionStore) -> None:
    await store.update_heartbeat("n")
    (node,) = await store.list_nodes()
    assert node.alive
    assert abs(node.last_heartbeat - datetime.now(UTC)) < timedelta(seconds=5)


async def test_forget_node_only_when_dead_and_empty(store: SessionStore) -> None:
    await store.update_heartbeat("n", T0)
    state = make_state(node="n")
    await store.save(state)
    assert await store.forget_node("n", dead_before=T0) is False  # not dead long enough
    assert await store.forget_node("n", dead_before=T0 + timedelta(hours=1)) is False  # has one
    await store.delete(state.id)
    assert await store.forget_node("n", dead_before=T0 + timedelta(hours=1)) is True
    assert await store.list_nodes() == []
    assert await store.forget_node("unknown", dead_before=T0) is False


async def test_a_node_marked_stopped_is_not_alive_until_it_beats_again(
    store: SessionStore,
) -> None:
    await store.update_heartbeat("a", T0)
    await store.update_heartbeat("b", T0)
    await store.mark_node_stopped("a", T0 + timedelta(seconds=1))
    nodes = await store.list_nodes(timedelta(seconds=15), now=T0 + timedelta(seconds=2))
    assert [(n.node_id, n.alive, n.status) for n in nodes] == [
        ("a", False, "stopped"),
        ("b", True, "alive"),
    ]
    assert nodes[0].stopped_at is not None
    assert abs(nodes[0].stopped_at - (T0 + timedelta(seconds=1))) < timedelta(milliseconds=1)
    assert abs(nodes[0].last_heartbeat - T0) < timedelta(milliseconds=1)
    assert nodes[1].stopped_at is None
    # started again with the same id: its heartbeat clears the mark
    await store.update_heartbeat("a", T0 + timedelta(seconds=3))
    nodes = await store.list_nodes(timedelta(seconds=15), now=T0 + timedelta(seconds=4))
    assert (nodes[0].node_id, nodes[0].status, nodes[0].stopped_at) == ("a", "alive", None)
    # a node never seen before is listed, stopped
    await store.mark_node_stopped("c", T0 + timedelta(seconds=5))
    (c,) = [n for n in await store.list_nodes() if n.node_id == "c"]
    assert c.status == "stopped" and not c.alive


async def test_forgetting_a_stopped_node_forgets_its_mark(store: SessionStore) -> None:
    await store.update_heartbeat("n", T0)
    await store.mark_node_stopped("n", T0)
    assert await store.forget_node("n", dead_before=T0 + timedelta(hours=1)) is True
    assert await store.list_nodes() == []
    await store.update_heartbeat("n", T0 + timedelta(hours=2))
    (node,) = await store.list_nodes(now=T0 + timedelta(hours=2))
    assert node.status == "alive"


# -- lifecycle -------------------------------------------------------------------------------


async def test_ping(store: SessionStore) -> None:
    assert await store.ping() is True


CALLS = {
    "save": lambda s: s.save(make_state()),
    "load": lambda s: s.load("x"),
    "delete": lambda s: s.delete("x"),
    "list_active": lambda s: s.list_active(),
    "list_all": lambda s: s.list_all(),
    "list_by_node": lambda s: s.list_by_node("n"),
    "touch": lambda s: s.touch("x"),
    "claim": lambda s: s.claim("x", "a", "b"),
    "update_heartbeat": lambda s: s.update_heartbeat("n"),
    "list_nodes": lambda s: s.list_nodes(),
    "mark_node_stopped": lambda s: s.mark_node_stopped("n"),
    "forget_node": lambda s: s.forget_node("n", dead_before=T0),
    "ping": lambda s: s.ping(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_every_call_on_a_closed_store_raises_store_closed(
    backend: Backend, call: str
) -> None:
    store = backend.new()
    await store.save(make_state(id="x"))
    await store.close()
    await store.close()  # idempotent
    assert store.closed
    with pytest.raises(StoreClosed):
        await CALLS[call](store)


async def test_async_context_manager_closes(backend: Backend) -> None:
    async with backend.new() as store:
        await store.save(make_state())
    with pytest.raises(StoreClosed):
        await store.list_active()


# -- random operation sequences against a model ---------------------------------------------

SESSION_IDS = ["a", "b", "index:active", "session:a"]
NODES = ["n1", "n2", ""]
operations = st.one_of(
    st.tuples(
        st.just("save"),
        st.sampled_from(SESSION_IDS),
        st.sampled_from(NODES),
        st.sampled_from(SessionStatus),
    ),
    st.tuples(
        st.just("claim"),
        st.sampled_from(SESSION_IDS),
        st.sampled_from(NODES),
        st.sampled_from(NODES),
    ),
    st.tuples(st.just("delete"), st.sampled_from(SESSION_IDS)),
    st.tuples(st.just("touch"), st.sampled_from(SESSION_IDS)),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operations, max_size=25))
async def test_random_operations_match_a_model(backend: Backend, ops: list[tuple]) -> None:
    store = backend.new()
    model: dict[str, tuple[str, SessionStatus]] = {}
    try:
        for op in ops:
            kind, session_id = op[0], op[1]
            current = model.get(session_id)
            if kind == "save":
                node, status = op[2], op[3]
                state = SessionState(id=session_id, node_id=node, status=status)
                if current and current[0] != node:
                    with pytest.raises(OwnershipConflict):
                        await store.save(state)
                elif current and not current[1].can_become(status):
                    with pytest.raises(InvalidTransition):
                        await store.save(state)
                else:
                    await store.save(state)
                    model[session_id] = (node, status)
            elif kind == "claim":
                src, dst = op[2], op[3]
                expected = bool(current and current[0] == src and not current[1].is_terminal)
                assert await store.claim(session_id, src, dst) is expected
                if expected and current:
                    model[session_id] = (dst, current[1])
            elif kind == "delete":
                assert await store.delete(session_id) is (current is not None)
                model.pop(session_id, None)
            elif current is None:
                with pytest.raises(SessionNotFound):
                    await store.touch(session_id)
            else:
                await store.touch(session_id)

            live = {i for i, (_, s) in model.items() if not s.is_terminal}
            assert ids(await store.list_active()) == live
            assert ids(await store.list_all()) == set(model)
            for node in NODES:
                mine = {i for i in live if model[i][0] == node}
                assert ids(await store.list_by_node(node)) == mine
        for session_id, (node, status) in model.items():
            loaded = await store.load(session_id)
            assert (loaded.node_id, loaded.status) == (node, status)
    finally:
        await store.close()
