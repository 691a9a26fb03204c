"""Finalisations: a call is `finalising` until its recording is final, a failure is retried
with backoff and counted, parts go after success (unless kept), start-up resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from siprec_node.recorder.finalisations import Finalisations
from siprec_node.sip.call import CallData, CallStatus, MemoryCallStore
from siprec_node.sip.media_state import MediaState


def _call(tmp_path: Path, session_id: str = "s-1") -> tuple[CallData, MediaState]:
    parts = tmp_path / f"{session_id}.parts"
    parts.mkdir()
    (parts / "stream-0.wav").write_bytes(b"RIFF")
    state = MediaState(epoch=0.0, stem=session_id, directory=str(tmp_path), parts=str(parts))
    data = CallData(session_id=session_id, call_id="c@x", node_id="n1", status=CallStatus.ACTIVE)
    return data, state


class Flaky:
    """A handler's finalise that fails ``failures`` times (ENOSPC), then succeeds."""

    def __init__(self, work: Finalisations | None, failures: int) -> None:
        self.work = work
        self.failures = failures
        self.calls: list[float] = []

    async def __call__(self, data: CallData, state: MediaState | None, session: Any) -> Any:
        assert self.work is not None and state is not None
        self.calls.append(asyncio.get_running_loop().time())
        if len(self.calls) <= self.failures:
            self.work.failed(data, state, session, OSError(28, "No space left on device"))
            return None
        self.work.done(data, state)
        return object()


@pytest.mark.parametrize("keep", [False, True])
async def test_failures_are_retried_with_backoff_until_done(tmp_path: Path, keep: bool) -> None:
    saved: list[str] = []
    flaky = Flaky(None, failures=3)
    work = Finalisations(
        flaky, lambda d: saved.append(d.status), keep_parts=keep, retry_initial=0.05, retry_max=0.1
    )
    flaky.work = work
    work.start()
    data, state = _call(tmp_path)
    work.hold(data, CallStatus.ENDED)
    assert data.status == CallStatus.FINALISING and data.is_final and not data.is_terminal
    await flaky(data, state, None)  # the first attempt, as the handler makes it
    assert data.status == CallStatus.FINALISING and work.backlog == 1
    for _ in range(100):
        if not work.backlog:
            break
        await asyncio.sleep(0.02)
    await work.stop()
    assert data.status == CallStatus.ENDED and data.outcome is None
    assert (work.failures, work.retries, work.backlog) == (3, 3, 0)
    gaps = [round(b - a, 2) for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.09, gaps  # 0.05, 0.1, 0.1 (max)
    assert saved[-1] == CallStatus.ENDED and saved[:-1] == [CallStatus.FINALISING] * 2
    assert Path(state.parts).exists() == keep


async def test_disk_back_retries_at_once(tmp_path: Path) -> None:
    flaky = Flaky(None, failures=1)
    work = Finalisations(flaky, lambda d: None, retry_initial=30.0)
    flaky.work = work
    work.start()
    data, state = _call(tmp_path)
    work.hold(data, CallStatus.FAILED)
    await flaky(data, state, None)
    await asyncio.sleep(0.05)
    assert len(flaky.calls) == 1  # the next try is 30 s away
    work.wake()
    await asyncio.sleep(0.05)
    await work.stop()
    assert len(flaky.calls) == 2 and data.status == CallStatus.FAILED


async def test_a_finalising_call_is_resumed_and_a_store_lists_it(tmp_path: Path) -> None:
    flaky = Flaky(None, failures=0)
    store = MemoryCallStore()
    work = Finalisations(flaky, lambda d: None)
    flaky.work = work
    data, state = _call(tmp_path)
    data.media = {"state": state.to_dict()}
    work.hold(data, CallStatus.ENDED)
    await store.save(data)
    assert [c.session_id for c in await store.list()] == [data.session_id]  # not terminal
    work.start()
    assert work.resume((await store.list())[0])
    await asyncio.sleep(0.05)
    await work.stop()
    assert len(flaky.calls) == 1 and work.recovered == 1 and work.retries == 0
    assert not Path(state.parts).exists()


async def test_no_recording_state_closes_the_call(tmp_path: Path) -> None:
    saved: list[CallData] = []
    work = Finalisations(Flaky(None, 0), saved.append)
    data, _ = _call(tmp_path)
    work.hold(data, CallStatus.ENDED)
    assert not work.resume(data)
    assert data.status == CallStatus.ENDED and saved == [data]


async def test_deferred_finalisations_go_in_oldest_first_as_room_comes(tmp_path: Path) -> None:
    """A full queue defers calls; each room() lets in as many as the queue has room for, in
    the order they were deferred, and the ones still waiting are not tried meanwhile."""
    room = [0]
    tried: list[str] = []
    work: Finalisations

    async def finalise(data: CallData, state: MediaState | None, session: Any) -> Any:
        assert state is not None
        tried.append(data.session_id)
        if room[0] <= 0:
            work.deferred(data, state, session)
            return None
        room[0] -= 1
        work.done(data, state)
        return object()

    work = Finalisations(finalise, lambda d: None, free_slots=lambda: room[0])
    work.start()
    calls = [_call(tmp_path, f"s-{i}") for i in range(50)]
    for data, state in calls:
        work.hold(data, CallStatus.ENDED)
        await finalise(data, state, None)
    assert work.backlog == 50 and work.deferrals == 50
    tried.clear()
    for batch in range(5):
        room[0] = 3
        work.room()
        for _ in range(20):
            await asyncio.sleep(0)
        assert tried == [f"s-{i}" for i in range(batch * 3, batch * 3 + 3)], tried
        tried.clear()
    assert work.backlog == 35 and work.deferrals == 50  # no attempt was deferred again
    room[0] = 100
    work.room()
    for _ in range(50):
        await asyncio.sleep(0)
    assert work.backlog == 0 and [d.status for d, _ in calls] == [CallStatus.ENDED] * 50
    await work.stop()
