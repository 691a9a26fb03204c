"""The memory store keeps a bounded number of finished sessions: its memory grows with the
calls live, not with the calls done (the default store of a node)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from siprec_node.session import MemorySessionStore, SessionNotFound
from siprec_node.session.state import SessionState, SessionStatus, TranscriptionStatus

from .backends import FakeClock


def _state(session_id: str, status: SessionStatus = SessionStatus.ACTIVE) -> SessionState:
    return SessionState(id=session_id, node_id="node-a", call_id=f"{session_id}@sbc", status=status)


async def _finish(store: MemorySessionStore, session_id: str) -> None:
    await store.save(_state(session_id, SessionStatus.ENDED))


async def _held(store: MemorySessionStore) -> set[str]:
    return {s.id for s in await store.list_all()}


async def test_the_oldest_finished_session_is_forgotten_beyond_the_bound() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock=clock, max_finished=3)
    for n in range(6):
        await store.save(_state(f"s{n}"))
    for n in range(4):
        clock.advance(1)
        await _finish(store, f"s{n}")
    assert await _held(store) == {"s1", "s2", "s3", "s4", "s5"}  # live ones are never evicted
    with pytest.raises(SessionNotFound):
        await store.load("s0")
    assert (await store.load("s1")).status is SessionStatus.ENDED
    assert {s.id for s in await store.list_active()} == {"s4", "s5"}


async def test_a_finished_session_saved_again_counts_from_its_last_save() -> None:
    store = MemorySessionStore(clock=FakeClock(), max_finished=2)
    await _finish(store, "a")
    await _finish(store, "b")
    await _finish(store, "a")  # e.g. the snapshot carrying its recording's verdict
    await _finish(store, "c")
    assert await _held(store) == {"a", "c"}


async def test_expired_and_deleted_sessions_do_not_take_room() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock=clock, ttl=timedelta(minutes=1), max_finished=2)
    await _finish(store, "old")
    clock.advance(120)
    assert await _held(store) == set()  # expired at ttl
    await _finish(store, "a")
    await _finish(store, "b")
    assert await store.delete("b")
    await _finish(store, "c")
    assert await _held(store) == {"a", "c"}


async def test_no_bound_keeps_every_finished_session_until_its_ttl() -> None:
    store = MemorySessionStore(clock=FakeClock(), max_finished=None)
    for n in range(50):
        await _finish(store, f"s{n}")
    assert len(await _held(store)) == 50
    zero = MemorySessionStore(clock=FakeClock(), max_finished=0)
    await _finish(zero, "gone")
    assert await _held(zero) == set()
    with pytest.raises(ValueError):
        MemorySessionStore(max_finished=-1)


async def test_memory_stays_flat_with_calls_done() -> None:
    store = MemorySessionStore(clock=FakeClock(), max_finished=100)
    for n in range(5000):
        await store.save(_state(f"c{n}"))
        await _finish(store, f"c{n}")
    assert len(store._records) == 100 and len(store._finished) == 100
    assert store._active == {} and store._by_node == {}


async def test_a_session_waiting_for_its_transcription_is_kept_until_it_has_it() -> None:
    store = MemorySessionStore(clock=FakeClock(), max_finished=1)
    waiting = _state("waiting", SessionStatus.ENDED)
    waiting.transcription = TranscriptionStatus("pending")
    await store.save(waiting)
    await _finish(store, "a")
    await _finish(store, "b")
    assert await _held(store) == {"waiting", "b"}
    done = await store.load("waiting")
    done.transcription = TranscriptionStatus("done")
    await store.save(done, expected_version=done.version)
    assert await _held(store) == {"waiting"}  # now the latest finished: b goes
