"""SharedCallStore: the handler's snapshots in the shared SessionStore, on memory and real Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from siprec_node.adapters import SharedCallStore, to_call_data, to_session_state
from siprec_node.recorder import CallDriver, HandlerConfig
from siprec_node.session import (
    ManagerConfig,
    RedisSessionStore,
    SessionManager,
    SessionStatus,
)
from siprec_node.sip import CallData, CallStore
from siprec_node.sip.call import CallStatus, SnapshotRejected
from tests.redis_server import RedisProcess
from tests.unit.session.backends import Backend
from tests.unit.sip.test_handler_harness import Dialogue, Harness


async def _call_through(harness: Harness) -> tuple[Dialogue, str]:
    """INVITE → 200 → ACK on the harness; returns the dialogue and the session id."""
    dialogue = Dialogue(call_id="adapter-call-1")
    sent = await harness.feed_and_settle(dialogue.siprec_invite())
    ok = next(s.response for s in sent if s.response.status == 200)
    dialogue.to_tag = ok.to.tag
    harness.feed(dialogue.ack())
    session_id = next(iter(harness.handler.calls))
    return dialogue, session_id


def test_call_data_round_trip() -> None:
    call = CallData(
        session_id="s-1",
        call_id="c-1",
        node_id="rec-1",
        status=CallStatus.ACTIVE,
        from_uri="sip:alice@example.com",
        to_uri="sip:srs@example.net",
        vendor_ids={"Cisco-Guid": "1234"},
        dialog={"call_id": "c-1", "local_tag": "a"},
        recording={"is_siprec": True, "session": {"session_id": "s-1"}},
        media={"ports": [20000, 20002]},
    )
    state = to_session_state(call)
    assert (state.id, state.call_id, state.node_id) == ("s-1", "c-1", "rec-1")
    assert state.status is SessionStatus.ACTIVE
    assert state.from_ == "sip:alice@example.com" and state.provider == "siprec"
    back = to_call_data(state)
    assert back.to_dict() == call.to_dict()


def test_the_verdict_and_flags_go_with_the_snapshot() -> None:
    call = CallData(session_id="s-2", call_id="c-2", node_id="rec-1", status=CallStatus.ENDED)
    call.flag("metadata_unparsed", detail="not XML")
    call.flag("stalled")
    call.flag("metadata_unparsed", detail="still not XML")
    assert call.flags == [
        {"kind": "stalled"},
        {"kind": "metadata_unparsed", "detail": "still not XML"},
    ]
    call.verdict = {
        "status": "problems",
        "problems": [{"kind": "gaps", "streams": [0], "count": 1, "ms": 2600}],
    }
    state = to_session_state(call)
    assert state.verdict is not None and state.verdict.kinds == ("gaps",)
    assert state.verdict.problem("gaps") == {"kind": "gaps", "streams": [0], "count": 1, "ms": 2600}
    back = to_call_data(state)
    assert back.to_dict() == call.to_dict()
    # a call not finalised yet has none
    assert to_session_state(CallData(session_id="s-3", call_id="c-3", node_id="n")).verdict is None


async def test_snapshots_follow_the_call(backend: Backend) -> None:
    store = backend.new()
    adapter = SharedCallStore(store, "test-node")
    assert isinstance(adapter, CallStore)
    harness = Harness(call_store=adapter)
    await harness.handler.start()
    dialogue, session_id = await _call_through(harness)
    assert await harness.handler.snapshots.flush(5)  # type: ignore[union-attr]
    state = await store.load(session_id)
    assert state.status is SessionStatus.ACTIVE and state.node_id == "test-node"
    assert state.call_id == "adapter-call-1"
    stored = state.call
    assert stored is not None and stored.dialog["call_id"] == "adapter-call-1"
    assert [s["label"] for s in stored.recording["session"]["streams"]] == ["1", "2"]
    assert [s.id for s in await store.list_by_node("test-node")] == [session_id]
    assert [c.session_id for c in await adapter.list()] == [session_id]

    assert [s.response.status for s in harness.feed(dialogue.bye())] == [200]
    await harness.handler.idle()  # the finalisation: `finalising` until it is done
    assert await harness.handler.snapshots.flush(5)  # type: ignore[union-attr]
    state = await store.load(session_id)
    assert state.status is SessionStatus.ENDED and state.end_reason == "BYE from SRC"
    assert await store.list_active() == []
    await harness.handler.close()


async def test_taken_over_session_rejects_the_old_owners_snapshots(backend: Backend) -> None:
    store = backend.new()
    adapter = SharedCallStore(store, "rec-1")
    call = CallData(session_id="s-2", call_id="c-2", node_id="rec-1")
    await adapter.save(call)
    assert await store.claim("s-2", "rec-1", "rec-2")
    call.status = CallStatus.ACTIVE
    with pytest.raises(SnapshotRejected, match="rec-2"):
        await adapter.save(call)


async def test_restart_recovers_the_call_and_answers_its_bye(backend: Backend) -> None:
    store = backend.new()
    first = Harness(call_store=SharedCallStore(store, "test-node"))
    await first.handler.start()
    dialogue, session_id = await _call_through(first)
    ports = list(first.handler.calls[session_id].ports)
    assert await first.handler.snapshots.flush(5)  # type: ignore[union-attr]
    # the process dies: its sockets close, nothing else is cleaned up
    await first.handler.engine.stop()
    first.handler.media.close()
    await asyncio.sleep(0.01)  # asyncio closes datagram sockets on the next loop iteration

    second = Harness(
        call_store=SharedCallStore(store, "test-node"),
        port_min=first.config.port_min,
        port_max=first.config.port_max,
    )
    await second.handler.start()
    assert await second.handler.recover() == [session_id]
    call = second.handler.calls[session_id]
    assert call.ports == ports and call.data.recoveries == 1
    assert second.handler.media.reserved == len(ports)
    assert [s.response.status for s in second.feed(dialogue.bye())] == [200]
    await second.handler.idle()  # the finalisation: `finalising` until it is done
    assert await second.handler.snapshots.flush(5)  # type: ignore[union-attr]
    state = await store.load(session_id)
    assert state.status is SessionStatus.ENDED
    assert state.call is not None and state.call.recoveries == 1
    assert second.handler.media.reserved == 0
    await second.handler.close()


async def test_surviving_node_answers_bye_of_a_dead_nodes_call(backend: Backend) -> None:
    store = backend.new()
    dead = Harness(call_store=SharedCallStore(store, "rec-dead"), node_id="rec-dead")
    await dead.handler.start()
    dialogue, session_id = await _call_through(dead)
    assert await dead.handler.snapshots.flush(5)  # type: ignore[union-attr]
    await dead.handler.engine.stop()
    dead.handler.media.close()
    await store.update_heartbeat("rec-dead")

    survivor = Harness(call_store=SharedCallStore(store, "rec-live"), node_id="rec-live")
    manager = SessionManager(
        store,
        ManagerConfig(node_id="rec-live", heartbeat_interval=timedelta(seconds=1)),
        on_takeover=lambda state: _adopt(survivor, state),
        clock=lambda: store._clock() + timedelta(minutes=5),  # the dead node's beat is old
    )
    taken = await manager.takeover()
    assert [s.id for s in taken] == [session_id]
    state = await store.load(session_id)
    assert state.status is SessionStatus.FAILED and state.node_id == "rec-live"
    assert state.end_reason == "node rec-dead died"
    assert [s.response.status for s in survivor.feed(dialogue.bye())] == [200]
    other = Dialogue(call_id="never-seen")
    other.to_tag = "nope"
    assert [s.response.status for s in survivor.feed(other.bye())] == [481]


async def _adopt(harness: Harness, state: object) -> None:
    harness.handler.adopt_finished(to_call_data(state), "node died")  # type: ignore[arg-type]


@pytest.mark.integration
async def test_spec_python_api_example(redis_server: RedisProcess) -> None:
    """SPEC's example, as written, against a real Redis."""
    store = RedisSessionStore(redis_server.url, prefix="voice:sessions:", ttl=timedelta(hours=24))
    handler = CallDriver(HandlerConfig(session_store=store, session_node_id="recorder-1"))
    manager = SessionManager(
        store,
        ManagerConfig(
            node_id="recorder-1",
            heartbeat_interval=timedelta(seconds=30),
            cleanup_interval=timedelta(minutes=5),
            session_timeout=timedelta(hours=1),
        ),
    )
    assert handler.node_id == "recorder-1"
    assert isinstance(handler.store, SharedCallStore) and handler.store.store is store
    await manager.start()
    try:
        nodes = await store.list_nodes()
        assert [(n.node_id, n.alive) for n in nodes] == [("recorder-1", True)]
        await handler.start()
        call = CallData(session_id="spec-1", call_id="spec-call", node_id=handler.node_id)
        await handler.store.save(call)
        assert (await store.load("spec-1")).node_id == "recorder-1"
    finally:
        await manager.stop()
        await handler.close()
        await store.close()


async def test_a_call_taken_over_elsewhere_stops_recording_here(backend: Backend) -> None:
    """A node stalled past node_ttl comes back: calls other nodes took over end here, quietly."""
    store = backend.new()
    harness = Harness(call_store=SharedCallStore(store, "test-node"))
    await harness.handler.start()
    _dialogue, first = await _call_through(harness)
    assert await harness.handler.snapshots.flush(5)  # type: ignore[union-attr]
    assert await store.claim(first, "test-node", "other-node")
    assert await harness.handler.verify_ownership() == [first]
    assert harness.handler.calls == {}
    assert harness.take() == []  # no BYE: the SRC talks to the other node now

    second_dialogue = Dialogue(call_id="takeover-call-2")
    sent = await harness.feed_and_settle(second_dialogue.siprec_invite())
    assert [s.response.status for s in sent] == [100, 200], [s.data[:200] for s in sent]
    second_dialogue.to_tag = sent[-1].response.to.tag
    harness.feed(second_dialogue.ack())
    second = next(iter(harness.handler.calls))
    assert await harness.handler.snapshots.flush(5)  # type: ignore[union-attr]
    assert await store.claim(second, "test-node", "other-node")
    harness.handler.set_operator_pause(second, True)  # any snapshot now meets the new owner
    assert await harness.handler.snapshots.flush(5)  # type: ignore[union-attr]
    assert harness.handler.calls == {}
    assert (await store.load(second)).node_id == "other-node"
    await harness.handler.close()
