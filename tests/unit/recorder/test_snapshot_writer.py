"""SnapshotWriter: the newest snapshot of a session wins, kept as given (frozen, never copied)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from siprec_node.recorder.snapshots import SnapshotWriter
from siprec_node.sip.call import CallData, CallSnapshot, MemoryCallStore
from siprec_node.status import CallStatus


class Recording:
    """A CallStore that remembers the very objects it was given."""

    def __init__(self) -> None:
        self.saved: list[CallSnapshot] = []

    async def save(self, call: CallSnapshot | CallData) -> None:
        assert isinstance(call, CallSnapshot)
        self.saved.append(call)

    async def load(self, session_id: str) -> CallData | None:
        return None

    async def delete(self, session_id: str) -> None:
        return None

    async def list(self) -> list[CallData]:
        return []

    async def touch_many(self, touches: Mapping[str, datetime]) -> None:
        return None


async def test_the_newest_snapshot_of_a_session_is_written_as_given() -> None:
    store = Recording()
    writer = SnapshotWriter(store)
    live = CallData("s-1", "c-1", "rec-1")
    first = live.snapshot()
    live.status, live.version = CallStatus.ACTIVE, 1
    second = live.snapshot()
    other = CallData("s-2", "c-2", "rec-1").snapshot()
    writer.submit(first)
    writer.submit(other)
    writer.submit(second)  # before the writer ran: replaces `first`
    assert writer.backlog == 2
    assert await writer.flush(5)
    assert [id(s) for s in store.saved] == [id(second), id(other)]  # the objects, not copies
    await writer.close()


async def test_a_submitted_snapshot_does_not_follow_the_live_call() -> None:
    store = MemoryCallStore()
    writer = SnapshotWriter(store)
    live = CallData("s-1", "c-1", "rec-1", status=CallStatus.ACTIVE, media={"ports": [20000]})
    writer.submit(live.snapshot())
    live.status = CallStatus.ENDED  # the call changes before the writer runs
    live.flag("stalled")
    live.add_turn("alice", live.created_at, 100)
    live.vendor_ids["X-Id"] = "1"
    live.media = {"ports": []}
    assert await writer.flush(5)
    stored = await store.load("s-1")
    assert stored is not None
    assert (stored.status, stored.flags, stored.turns, stored.vendor_ids) == ("active", [], [], {})
    assert stored.media == {"ports": [20000]}
    await writer.close()


async def test_a_live_call_data_is_frozen_when_submitted() -> None:
    store = Recording()
    writer = SnapshotWriter(store)
    live = CallData("s-1", "c-1", "rec-1")
    writer.submit(live)
    live.status = CallStatus.ACTIVE
    assert await writer.flush(5)
    assert [s.status for s in store.saved] == [CallStatus.CONNECTING]
    await writer.close()


async def test_snapshots_within_the_linger_cost_one_write() -> None:
    store = Recording()
    writer = SnapshotWriter(store, linger=0.05)
    live = CallData("s-1", "c-1", "rec-1")
    writer.submit(live)  # the INVITE
    await asyncio.sleep(0.01)
    live.status, live.version = CallStatus.ACTIVE, 1
    writer.submit(live)  # the ACK, 10 ms later
    assert await writer.flush(5)
    assert [(s.status, s.version) for s in store.saved] == [(CallStatus.ACTIVE, 1)]
    await asyncio.sleep(0.01)
    live.status, live.version = CallStatus.ENDED, 2
    writer.submit(live)  # after the write: written too
    assert await writer.flush(5)
    assert [s.version for s in store.saved] == [1, 2]
    await writer.close()


async def test_without_linger_each_snapshot_is_written_when_the_writer_runs() -> None:
    store = Recording()
    writer = SnapshotWriter(store, linger=0)
    live = CallData("s-1", "c-1", "rec-1")
    writer.submit(live)
    await asyncio.sleep(0.01)
    live.version = 1
    writer.submit(live)
    assert await writer.flush(5)
    assert [s.version for s in store.saved] == [0, 1]
    await writer.close()


async def test_the_snapshot_of_a_call_that_is_over_is_written_without_lingering() -> None:
    store = Recording()
    writer = SnapshotWriter(store, linger=5.0)
    live = CallData("s-1", "c-1", "rec-1", status=CallStatus.ACTIVE)
    writer.submit(live)
    live.status, live.version = CallStatus.FINALISING, 1
    writer.submit(live)  # the BYE: what finalising it elsewhere needs goes out now
    assert await writer.flush(1)
    assert [(s.status, s.version) for s in store.saved] == [(CallStatus.FINALISING, 1)]
    await writer.close()
