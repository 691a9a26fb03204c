"""The typed call snapshot through the stores: SessionState carries it, the stored body keeps the
previous layout (``recovery_data.call``), records of the previous version load, and a state
change costs no deep copy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from siprec_node.adapters import SharedCallStore, to_call_data
from siprec_node.recorder.snapshots import SnapshotWriter
from siprec_node.session import (
    MemorySessionStore,
    RecordingVerdict,
    RedisSessionStore,
    SessionState,
    SessionStatus,
    SessionStore,
)
from siprec_node.session.memory_store import _Record
from siprec_node.sip.call import CallData, MemoryCallStore
from siprec_node.sip.effects import SaveSnapshot
from siprec_node.snapshot import CallSnapshot, decode_call
from siprec_node.status import OVER, CallStatus
from tests.unit.session.backends import Backend
from tests.unit.sip.test_call_control import Core, statuses
from tests.unit.sip.test_handler_harness import Dialogue
from tests.unit.test_snapshot import EXPECTED

V1_RECORD = json.loads((Path(__file__).parent / "v1_record.json").read_text())


def test_the_state_is_the_snapshot_seen_by_the_store() -> None:
    call = CallData.from_snapshot(EXPECTED)
    call.add_turn("bob", EXPECTED.created_at, 700, interrupted=True)
    call.verdict = {"status": "problems", "problems": [{"kind": "short", "percent": 12}]}
    snapshot = call.snapshot()
    state = SessionState.from_call(snapshot)
    assert state.call is snapshot
    assert (state.id, state.call_id, state.node_id, state.status) == (
        "s-1",
        "c-1@src",
        "rec-1",
        SessionStatus.ACTIVE,
    )
    assert (state.from_, state.to, state.provider, state.direction) == (
        "sip:alice@example.com",
        "sip:srs@example.net",
        "siprec",
        "recording",
    )
    assert state.created_at == EXPECTED.created_at and state.updated_at == EXPECTED.updated_at
    assert [t.participant for t in state.history] == ["alice", "bob"]
    assert state.metrics.turn_count == 2 and state.metrics.interruptions == 1
    assert state.verdict == RecordingVerdict("problems", ({"kind": "short", "percent": 12},))
    assert state.transcription is not None and state.transcription.status == "pending"
    assert state.recovery_data == {}
    assert state.to_dict()["recovery_data"] == {"call": snapshot.to_dict()}


def test_what_the_store_owns_wins_over_the_snapshot() -> None:
    state = SessionState.from_call(EXPECTED)
    state.node_id = "rec-2"  # claimed
    state.transition(SessionStatus.FAILED, reason="node rec-1 died")
    state.verdict = RecordingVerdict()
    call = state.current_call()
    assert call is not None and state.call is EXPECTED  # the snapshot itself is untouched
    assert (call.node_id, call.status, call.end_reason) == ("rec-2", "failed", "node rec-1 died")
    assert call.verdict == {"status": "ok", "problems": []}
    assert call.dialog == EXPECTED.dialog and call.recoveries == 1
    data = to_call_data(state)
    assert data.snapshot() == call and isinstance(data.turns, list)


def test_the_stored_body_keeps_the_previous_layout() -> None:
    state = SessionState.from_call(EXPECTED)
    body = json.loads(state.encode())
    assert body["schema"] == 1 and list(body) == sorted(body)
    assert set(body["recovery_data"]) == {"call"}
    stored = body["recovery_data"]["call"]
    assert stored == json.loads(json.dumps(EXPECTED.to_dict(), sort_keys=True))
    assert stored["created_at"] == "2026-01-02T03:04:05.123456Z"
    assert SessionState.from_json(state.encode()).call == EXPECTED
    # a reader of the previous version finds what it looked for: the CallData fields there
    assert {"dialog", "recording", "media", "recoveries", "turns", "flags"} <= set(stored)


def test_free_form_recovery_data_stays_beside_the_call() -> None:
    state = SessionState.from_call(EXPECTED)
    state.recovery_data = {"p": 1}
    again = SessionState.from_json(state.to_json())
    assert again.recovery_data == {"p": 1} and again.call == EXPECTED
    assert again.to_json() == state.to_json()


async def _store_raw(store: SessionStore, record: dict[str, Any], session_id: str) -> None:
    """Put a record in the store as the previous version's save left it (same fields)."""
    data = record["data"]
    if isinstance(store, MemorySessionStore):
        store._records[session_id] = _Record(
            data=data.encode(),
            version=record["version"],
            node=record["node"],
            status=SessionStatus(record["status"]),
            activity_ms=record["activity"],
            expires_ms=None,
        )
        store._active[session_id] = record["activity"]
        store._by_node.setdefault(record["node"], {})[session_id] = record["activity"]
        return
    assert isinstance(store, RedisSessionStore)
    await store._save_script(  # the save script is unchanged since that version
        keys=[store.session_key(session_id), store._active_key, store.node_index_key("rec-old")],
        args=[session_id, data, record["node"], record["status"], str(record["activity"]),
              store._ttl_arg, "", "0", ",connecting,active,"],
    )  # fmt: skip


async def test_a_call_stored_by_the_previous_version_is_picked_up_after_an_upgrade(
    backend: Backend,
) -> None:
    store = backend.new()
    old = json.loads(V1_RECORD["data"])
    session_id = old["id"]
    await _store_raw(store, V1_RECORD, session_id)
    adapter = SharedCallStore(store, "rec-old")

    (data,) = await adapter.list()  # what recovery reads at start
    assert (data.session_id, data.status, data.node_id) == (session_id, "active", "rec-old")
    assert data.dialog["local_tag"] == V1_RECORD["to_tag"]
    assert data.flags == [{"kind": "metadata_unparsed", "detail": "example"}]
    assert data.media["ports"] == [31000, 31002]

    restarted = Core(node_id="rec-old")
    call = restarted.core.restore(data, restarted.now)
    assert call is not None and sorted(restarted.ports.reclaimed) == [31000, 31002]
    restarted.take()
    dialogue = Dialogue("upgrade-call@sbc", to_tag=V1_RECORD["to_tag"])
    assert statuses(restarted.feed(dialogue.bye())) == [200]  # from the stored dialog
    saved = [e.data for e in restarted.effects_of(SaveSnapshot) if isinstance(e, SaveSnapshot)]
    for snapshot in saved:
        await adapter.save(snapshot)
    state = await store.load(session_id)
    assert state.call is not None and state.call.recoveries == 1
    assert state.status in OVER and state.end_reason == "BYE from SRC"
    stored_dialog = old["recovery_data"]["call"]["dialog"]
    assert state.call.dialog == stored_dialog | {"remote_cseq": 2, "state": "terminated"}


async def test_snapshots_round_trip_through_the_session_stores(backend: Backend) -> None:
    store = backend.new()
    adapter = SharedCallStore(store, "rec-1")
    await adapter.save(EXPECTED)
    loaded = await adapter.load("s-1")
    assert loaded is not None
    state = await store.load("s-1")
    assert state.call == EXPECTED and state.version == 1
    expected = CallData.from_snapshot(EXPECTED)
    expected.updated_at, expected.last_activity = state.updated_at, state.last_activity
    assert loaded == expected
    assert [c.session_id for c in await adapter.list()] == ["s-1"]


async def test_the_memory_call_store_keeps_the_encoded_snapshot() -> None:
    store = MemoryCallStore()
    await store.save(EXPECTED)
    assert decode_call(store._calls["s-1"]) == EXPECTED  # bytes, not a shared object
    loaded = await store.load("s-1")
    assert loaded is not None and loaded.snapshot() == EXPECTED
    later = EXPECTED.last_activity.replace(minute=30)
    await store.touch_many({"s-1": later, "gone": later})  # one no longer stored: skipped
    assert (await store.list())[0].last_activity == later and len(store) == 1
    await store.save(CallData.from_snapshot(EXPECTED))  # a live CallData is frozen first
    assert (await store.load("s-1")).snapshot() == EXPECTED  # type: ignore[union-attr]
    await store.delete("s-1")
    assert await store.load("s-1") is None and len(store) == 0


async def test_a_state_change_costs_no_deep_copy() -> None:
    """From the core's snapshot to both stores: no ``copy.deepcopy``, no ``dataclasses.asdict``."""
    c = Core()
    _dialogue, session_id = c.confirmed("cheap@sbc")
    call = c.core.calls[session_id]
    c.effects_of(SaveSnapshot)  # those of the answer and the ACK
    sessions = SharedCallStore(MemorySessionStore(), "core-test")
    memory = MemoryCallStore()
    writer = SnapshotWriter(memory)
    seen: list[str] = []

    def watch(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name in {"deepcopy", "asdict", "_asdict_inner"}:
            seen.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(watch)
    try:
        c.core._snapshot(call)
        c.take()
        (effect,) = c.effects_of(SaveSnapshot)
        assert isinstance(effect, SaveSnapshot) and isinstance(effect.data, CallSnapshot)
        writer.submit(effect.data)
        await sessions.save(effect.data)
        await memory.save(effect.data)
    finally:
        sys.setprofile(None)
    assert seen == []
    assert await writer.flush(5)
    await writer.close()


@pytest.mark.parametrize("status", [CallStatus.FINALISING, CallStatus.ENDED])
def test_status_is_one_vocabulary(status: CallStatus) -> None:
    state = SessionState.from_call(CallData("s", "c", "n", status=status).snapshot())
    assert state.status is status and SessionStatus is CallStatus


def test_a_record_whose_call_is_not_a_snapshot_still_loads() -> None:
    """Cleanup and takeover must still see it; the adapter makes a bare call of it."""
    body = json.loads(SessionState.from_call(EXPECTED).encode())
    body["recovery_data"]["call"] = {"session_id": "s-1", "created_at": "not a time"}
    state = SessionState.from_json(json.dumps(body))
    assert state.call is None and state.recovery_data["call"]["created_at"] == "not a time"
    assert state.status is SessionStatus.ACTIVE
    data = to_call_data(state)
    assert (data.session_id, data.node_id, data.dialog) == ("s-1", "rec-1", {})
    assert json.loads(state.encode())["recovery_data"] == body["recovery_data"]
