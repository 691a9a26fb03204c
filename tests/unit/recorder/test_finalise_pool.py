"""The finalisation pool: a bounded queue whose depth is visible, a job per call at a time,
and a pool process that dies is replaced, its recording still finalised once."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from siprec_node.media.finalise import CallInfo
from siprec_node.media.paths import parts_dir, recording_stem
from siprec_node.recorder.config import HandlerConfig
from siprec_node.recorder.driver import CallDriver
from siprec_node.recorder.finalisations import Finalisations
from siprec_node.recorder.finalise_pool import (
    NICENESS,
    FinaliseDone,
    FinaliseJob,
    FinalisePool,
    PoolStopped,
    QueueFull,
    run_job,
)
from siprec_node.sip.call import CallData, CallStatus, MemoryCallStore
from siprec_node.sip.media_state import MediaState
from tests.unit.media.test_finalise import EPOCH, STARTED, Parts, tone


def _job(tmp_path: Path, name: str = "s-1") -> FinaliseJob:
    info = CallInfo(
        session_id=name,
        call_id=f"{name}@x",
        node_id="n1",
        status="ended",
        end_reason="bye",
        started_at=STARTED,
        ended_at=EPOCH + timedelta(seconds=1),
    )
    return FinaliseJob(str(tmp_path / f"{name}.parts"), str(tmp_path), name, info, "wav", "stereo")


class Gate:
    """A pool's ``run`` (threads) that holds every job until released, counting the runs."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.runs: list[str] = []

    def __call__(self, job: FinaliseJob) -> FinaliseDone:
        self.runs.append(job.stem)
        assert self.open.wait(10)
        return run_job(job)


def _call(tmp_path: Path, name: str) -> tuple[CallData, MediaState]:
    parts = Parts(tmp_path / f"{name}.parts")
    parts.path.mkdir()
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    parts.g711(1, "PCMU", tone(660, 1.0, 8000))
    state = MediaState(
        epoch=EPOCH.timestamp(), stem=name, directory=str(tmp_path), parts=str(parts.path)
    )
    data = CallData(
        session_id=name,
        call_id=f"{name}@x",
        node_id="n1",
        status=CallStatus.ENDED,
        started_at=STARTED,
        ended_at=EPOCH + timedelta(seconds=1),
    )
    data.media = {"state": state.to_dict()}
    data.outcome, data.status = CallStatus.ENDED, CallStatus.FINALISING
    return data, state


async def _until(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_queue_is_bounded_and_its_depth_counted(tmp_path: Path) -> None:
    gate = Gate()
    room: list[int] = []
    pool = FinalisePool(0, queue_size=2, run=gate, on_room=lambda: room.append(1))
    pool.start()
    jobs = []
    for n in range(6):
        jobs.append(pool.submit(f"s-{n}", _job(tmp_path, f"s-{n}")))
        await asyncio.sleep(0.02)  # taken by a free dispatcher, if any
    # four run at once in threads (THREADS), two wait: the queue is full
    assert (pool.running, pool.depth) == (4, 2) and len(room) == 4
    with pytest.raises(QueueFull):
        pool.submit("s-9", _job(tmp_path, "s-9"))
    assert pool.full == 1 and not pool.has_room()
    again = pool.submit("s-5", _job(tmp_path, "s-5"))  # queued: joined, not queued twice
    assert again.joined and again.future is jobs[5].future and pool.depth == 2
    for n in range(6):
        parts = Parts(tmp_path / f"s-{n}.parts")
        parts.path.mkdir()
        parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    gate.open.set()
    done = await asyncio.gather(*(j.future for j in jobs))
    assert sorted(gate.runs) == [f"s-{n}" for n in range(6)]  # each once
    assert all(d.pid == os.getpid() for d in done)  # threads: this process
    assert done[0].recording.metadata == {} and done[0].recording.sidecar.exists()
    assert pool.depth == 0 and pool.running == 0 and pool.done == 6 and len(room) == 6
    await pool.stop()
    with pytest.raises(PoolStopped):
        pool.submit("s-0", _job(tmp_path))


async def test_stop_fails_what_was_not_started(tmp_path: Path) -> None:
    gate = Gate()
    pool = FinalisePool(0, queue_size=10, run=gate)
    pool.start()
    jobs = []
    for n in range(5):
        jobs.append(pool.submit(f"s-{n}", _job(tmp_path, f"s-{n}")))
        await asyncio.sleep(0.02)
    stopping = asyncio.get_running_loop().create_task(pool.stop(timeout=5))
    await asyncio.sleep(0.05)
    with pytest.raises(PoolStopped):
        await jobs[4].future  # queued behind the four running: never started
    gate.open.set()
    await stopping
    assert len(gate.runs) == 4


async def test_a_call_queued_again_while_in_flight_is_finalised_once(tmp_path: Path) -> None:
    driver = CallDriver(HandlerConfig(node_id="n1", recording_dir=str(tmp_path)))
    gate = Gate()
    driver.finalise_pool = FinalisePool(0, run=gate, on_room=driver._finalise_room)
    data, state = _call(tmp_path, "s-1")
    first = asyncio.get_running_loop().create_task(driver.finalise(data, state, None))
    await asyncio.sleep(0.05)
    resumed = copy.deepcopy(data)  # e.g. the same call resumed from the store
    second = asyncio.get_running_loop().create_task(driver.finalise(resumed, state, None))
    await asyncio.sleep(0.05)
    gate.open.set()
    results = await asyncio.gather(first, second)
    assert gate.runs == ["s-1"]
    assert results[0] is not None and results[1] is None  # the join reports nothing twice
    assert sum(driver.recordings.values()) == 1
    assert data.status == resumed.status == CallStatus.ENDED
    assert data.verdict == resumed.verdict and data.verdict is not None
    await driver.finalise_pool.stop()


async def test_a_full_queue_defers_the_call_until_there_is_room(tmp_path: Path) -> None:
    saved: list[tuple[str, str]] = []
    driver = CallDriver(HandlerConfig(node_id="n1", recording_dir=str(tmp_path)))
    driver._save_data = lambda d: saved.append((d.session_id, d.status))  # type: ignore[method-assign]
    driver.finalisations._save = driver._save_data
    gate = Gate()
    driver.finalise_pool = FinalisePool(0, queue_size=1, run=gate, on_room=driver._finalise_room)
    driver.finalise_pool.start()
    driver.finalisations.start()
    calls = [_call(tmp_path, f"s-{n}") for n in range(7)]
    loop = asyncio.get_running_loop()
    tasks = []
    for data, state in calls:
        tasks.append(loop.create_task(driver.finalise(data, state, None)))
        await asyncio.sleep(0.02)
    # four running (threads), one queued, two waiting for room: still finalising
    assert (driver.finalise_pool.running, driver.finalise_pool.depth) == (4, 1)
    assert driver.finalisations.deferrals == 2 and driver.finalisations.backlog == 2
    assert [d.status for d, _ in calls[5:]] == [CallStatus.FINALISING] * 2
    gate.open.set()
    await asyncio.gather(*tasks)
    await _until(lambda: not driver.finalisations.backlog)
    assert sorted(gate.runs) == [f"s-{n}" for n in range(7)]  # each exactly once
    assert all(d.status == CallStatus.ENDED for d, _ in calls)
    assert sum(driver.recordings.values()) == 7 and driver.finalisations.failures == 0
    assert sorted(saved) == [("s-5", CallStatus.ENDED), ("s-6", CallStatus.ENDED)]
    await driver.finalisations.stop()
    await driver.finalise_pool.stop()


def slow_run(job: FinaliseJob) -> FinaliseDone:
    """A pool process's ``run`` that says it started, then takes its time (to be killed)."""
    marker = Path(job.output_dir) / "slow"
    if marker.exists():
        (Path(job.output_dir) / f"started-{os.getpid()}").touch()
        time.sleep(30)
    return run_job(job)


async def test_a_killed_pool_process_is_replaced_and_the_call_finalised_once(
    tmp_path: Path,
) -> None:
    config = HandlerConfig(
        node_id="n1", recording_dir=str(tmp_path), finalise_workers=1, finalise_retry=(0.1, 0.2)
    )
    driver = CallDriver(config)
    driver.finalise_pool = FinalisePool(1, run=slow_run, on_room=driver._finalise_room)
    driver.finalise_pool.start()
    driver.finalisations.start()
    data, state = _call(tmp_path, "s-1")
    (tmp_path / "slow").touch()
    first = asyncio.get_running_loop().create_task(driver.finalise(data, state, None))
    await _until(lambda: list(tmp_path.glob("started-*")))
    pid = int(next(tmp_path.glob("started-*")).name.split("-")[1])
    assert pid != os.getpid() and pid in driver.finalise_pool.pids()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, ours + NICENESS)  # SIP goes first
    (tmp_path / "slow").unlink()
    os.kill(pid, signal.SIGKILL)
    assert await first is None  # failed: FinaliserDied, retried by Finalisations
    assert driver.finalisations.failures == 1 and driver.finalise_pool.restarts == 1
    await _until(lambda: data.status == CallStatus.ENDED)
    assert sum(driver.recordings.values()) == 1
    assert (tmp_path / "s-1.json").exists() and not Path(state.parts).exists()
    assert pid not in driver.finalise_pool.pids()
    await driver.finalisations.stop()
    await driver.finalise_pool.stop()


class Killed(Gate):
    """Jobs held until the node 'dies': then they fail, as a dead node's would never end."""

    def __call__(self, job: FinaliseJob) -> FinaliseDone:
        self.runs.append(job.stem)
        assert self.open.wait(10)
        raise RuntimeError("the node died")


async def test_calls_left_in_a_full_queue_are_finalised_once_by_the_next_start(
    tmp_path: Path,
) -> None:
    store = MemoryCallStore()
    config = HandlerConfig(node_id="n1", recording_dir=str(tmp_path), call_store=store)
    dying = CallDriver(dataclasses.replace(config, finalise_retry=(30.0, 30.0)))
    killed = Killed()
    dying.finalise_pool = FinalisePool(0, queue_size=1, run=killed, on_room=dying._finalise_room)
    calls = [_call(tmp_path, f"s-{n}") for n in range(7)]
    loop = asyncio.get_running_loop()
    tasks = []
    for data, state in calls:
        await store.save(data)  # the core's snapshot of the ended call: finalising
        tasks.append(loop.create_task(dying.finalise(data, state, None)))
        await asyncio.sleep(0.02)
    assert dying.finalisations.deferrals == 2  # 4 running, 1 queued, 2 waiting for room
    killed.open.set()  # the node dies: nothing it was finalising is done
    await asyncio.gather(*tasks)
    await dying.finalise_pool.stop()
    assert all(d.status == CallStatus.FINALISING for d in (await store.list()))
    assert len(await store.list()) == 7

    restarted = CallDriver(config)
    gate = Gate()
    gate.open.set()
    restarted.finalise_pool = FinalisePool(
        0, queue_size=2, run=gate, on_room=restarted._finalise_room
    )
    await restarted.start()
    await restarted.recover()
    await _until(lambda: not restarted.finalisations.backlog)
    await restarted.close()
    assert sorted(gate.runs) == [f"s-{n}" for n in range(7)]  # each once
    assert sum(restarted.recordings.values()) == 7
    assert await store.list() == []  # none left finalising
    for n in range(7):
        stored = await store.load(f"s-{n}")
        assert stored is not None and stored.status == CallStatus.ENDED
        assert stored.verdict is not None


async def test_the_parts_scan_leaves_the_folders_of_queued_finalisations(tmp_path: Path) -> None:
    """A call whose finalisation waits in the pool's queue has closed streams and no final
    sidecar, as a folder left by a dead node has: the start-up scan (recovery.py) must not take
    it too (at 100 calls/s the queue is deep when the second scan runs, 121 s after start)."""
    now = time.time()
    started = datetime.fromtimestamp(now - 60, UTC)
    queued = _left_parts(tmp_path, started, "a@x", "11111111-aaaa")
    left = _left_parts(tmp_path, started, "b@x", "22222222-bbbb")
    gate = Gate()
    pool = FinalisePool(0, queue_size=10, run=gate)
    pool.start()
    job = dataclasses.replace(_job(tmp_path, "11111111-aaaa"), parts=str(queued))
    submitted = pool.submit("11111111-aaaa", job)
    work = Finalisations(lambda *a: asyncio.sleep(0), lambda d: None)
    store = MemoryCallStore()
    found = await work.recover_parts(tmp_path, "n1", store, pool.parts_in_flight())
    assert found == [str(left)]  # the dead node's folder, not the queued call's
    gate.open.set()
    await pool.stop()
    submitted.future.exception()  # the gated job's outcome is not this test's


def _left_parts(root: Path, started: datetime, call_id: str, session_id: str) -> Path:
    parts = parts_dir(root, started, recording_stem(started, call_id, session_id))
    parts.mkdir(parents=True)
    (parts / "stream-0.wav").write_bytes(b"RIFF")
    (parts / "stream-0.json").write_text(json.dumps({"index": 0, "closed": True}))
    return parts


class Unfinishable(Exception):
    """A job's own error, raised in the pool process."""


def failing_or_slow_run(job: FinaliseJob) -> FinaliseDone:
    """A pool process's ``run``: ``bad-*`` jobs raise, ``slow-*`` ones never end, the rest
    finalise."""
    if job.stem.startswith("bad"):
        raise Unfinishable(f"no parts for {job.stem}")
    if job.stem.startswith("slow"):
        (Path(job.output_dir) / f"started-{os.getpid()}").touch()
        time.sleep(60)
    return run_job(job)


async def test_a_jobs_error_comes_back_and_its_process_takes_the_next_job(tmp_path: Path) -> None:
    pool = FinalisePool(1, run=failing_or_slow_run)
    pool.start()
    with pytest.raises(Unfinishable, match="no parts for bad-1"):
        await pool.submit("bad-1", _job(tmp_path, "bad-1")).future
    (pid,) = pool.pids()
    _call(tmp_path, "s-2")  # its parts
    done = await pool.submit("s-2", _job(tmp_path, "s-2")).future
    assert done.pid == pid and pool.restarts == 0  # the same process, which lives on
    assert done.recording.duration_s == pytest.approx(1.0, abs=0.05)
    await pool.stop()
    assert pool.pids() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped, not left a zombie


async def test_stop_kills_a_process_whose_job_outlives_the_timeout(tmp_path: Path) -> None:
    pool = FinalisePool(2, run=failing_or_slow_run)
    pool.start()
    slow = pool.submit("slow-1", _job(tmp_path, "slow-1"))
    await _until(lambda: list(tmp_path.glob("started-*")))
    pid = int(next(tmp_path.glob("started-*")).name.split("-")[1])
    began = time.monotonic()
    await pool.stop(timeout=0.5)
    assert time.monotonic() - began < 2.0  # killed: neither the job's 60 s nor EXIT_WAIT
    with pytest.raises(PoolStopped):
        await slow.future
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_pool_with_processes_needs_a_module_level_run() -> None:
    with pytest.raises(ValueError, match="module-level function"):
        FinalisePool(1, run=lambda job: run_job(job))
    with pytest.raises(ValueError, match="module-level function"):
        FinalisePool(1, run=Gate())  # a callable object
    FinalisePool(0, run=lambda job: run_job(job))  # threads: any callable


async def test_warm_starts_the_processes_before_any_job_and_they_take_the_jobs(
    tmp_path: Path,
) -> None:
    """The driver warms the pool when it answers a call: the processes import the
    finalisation code then, not at the first call's end."""
    pool = FinalisePool(2, run=failing_or_slow_run)
    pool.start()
    await asyncio.sleep(0.3)
    assert pool.pids() == []  # started, not warmed: nothing spawned yet
    pool.warm()
    pool.warm()  # once is enough
    await _until(lambda: len(pool.pids()) == 2)
    warmed = pool.pids()
    _call(tmp_path, "s-1")
    done = await pool.submit("s-1", _job(tmp_path, "s-1")).future
    assert done.pid in warmed and pool.pids() == warmed  # no third process
    await pool.stop()
    assert pool.pids() == []
