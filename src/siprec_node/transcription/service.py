"""`Transcriber`: takes jobs off the queue, has worker processes transcribe them, writes the
texts into the session store, and acknowledges.

It runs inside a recorder node (`transcription.workers` processes next to SIP, the node's hook
`submit` queues each finalised recording) and as `siprec-node transcribe-worker` on any
machine that reaches the store and the recordings. Transcription itself always runs in worker
processes of a process pool: the process that answers SIP only queues, waits and writes.

A job is acknowledged after the history is written; a job whose store record is gone (expired)
is acknowledged too — the sidecar and the VTT have the transcript. Applying a result twice (a
re-delivery after the acknowledgement was lost) writes the same texts: done once.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..session import (
    SessionNotFound,
    SessionState,
    SessionStore,
    StoreError,
    TranscriptionStatus,
    VersionConflict,
)
from .engines import EngineSettings
from .jobs import DeadLetter, Delivery, Job, JobQueue, QueueCounts
from .runner import JobResult, init_process, mark_failed, run_job

log = structlog.get_logger("siprec_node.transcription")
TAKE_TIMEOUT = 1.0
READY_WAIT = 10.0
"""How long a result waits for the recorder's final snapshot (transcription `pending`) to
reach the store before it is written anyway."""
MATCH_MS = 5
STOP_GRACE = 5.0


@dataclass
class TranscriptionStats:
    done: int = 0
    failed: int = 0
    """Attempts that failed (each retried or dead-lettered)."""
    dead: int = 0
    audio_s: float = 0.0
    cpu_s: float = 0.0
    counts: QueueCounts | None = None


class Transcriber:
    """Consumers of the job queue with a pool of worker processes (see module doc)."""

    def __init__(
        self,
        engine: EngineSettings,
        queue: JobQueue,
        store: SessionStore,
        *,
        consumer: str,
        workers: int = 1,
    ) -> None:
        self.engine, self.queue, self.store = engine, queue, store
        self.consumer, self.workers = consumer, max(workers, 1)
        self.stats = TranscriptionStats()
        self._pool: ProcessPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- the recorder's hook ----------------------------------------------------------------

    def submit(self, data: Any, result: Any) -> None:
        """The recorder's `on_finalised` hook: mark the call pending and queue its recording."""
        if result.conversation is None or not result.conversation.turns:
            return  # no speech: nothing to transcribe
        data.transcription = TranscriptionStatus("pending").to_dict()
        job = Job(data.session_id, str(result.sidecar))
        task = asyncio.get_running_loop().create_task(self._put(job))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _put(self, job: Job) -> None:
        for delay in (0.5, 1, 2, 5, 10, 30, 60):
            try:
                await self.queue.put(job)
                log.info("transcription_queued", session_id=job.session_id)
                return
            except Exception as exc:
                log.warning("transcription_queue_unavailable", error=repr(exc), retry_s=delay)
                await asyncio.sleep(delay)
        log.error("transcription_not_queued", session_id=job.session_id)

    # -- lifecycle --------------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_process,
            initargs=(self.engine,),
        )

    async def start(self) -> None:
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(f"{self.consumer}-{n}")) for n in range(self.workers)
        ]
        self._tasks.append(loop.create_task(self._watch_counts()))
        log.info(
            "transcription_started",
            consumer=self.consumer,
            workers=self.workers,
            engine=self.engine.engine,
            model=self.engine.model,
        )

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop taking jobs. Jobs being queued and jobs running get `grace` seconds to finish;
        a job still running then is abandoned (its worker process killed): the durable queue
        delivers it again after `reclaim_after`, a memory queue loses it with the node."""
        self._stopping = True
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=grace)
            for task in list(self._pending):
                task.cancel()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=grace)
            for task in running:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            busy = len(running - {self._tasks[-1]})  # the last task is the counts watcher
            if busy:
                log.warning("transcription_jobs_abandoned", jobs=busy)
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()  # a job left running would hold the exit until it ends
            self._pool.shutdown(wait=False, cancel_futures=True)
        await self.queue.close()

    # -- consuming --------------------------------------------------------------------------

    async def _watch_counts(self) -> None:
        while not self._stopping:
            with contextlib.suppress(Exception):
                self.stats.counts = await self.queue.counts()
            await asyncio.sleep(1.0)

    async def _consume(self, consumer: str) -> None:
        while not self._stopping:
            try:
                delivery = await self.queue.take(consumer, TAKE_TIMEOUT)
            except Exception as exc:  # the store restarting, unreachable
                log.warning("transcription_queue_unavailable", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            if delivery is not None:
                await self._handle(delivery, consumer)

    async def _renew(self, delivery: Delivery, consumer: str) -> None:
        every = max(self.queue.reclaim_after / 3, 0.1)
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await self.queue.renew(delivery, consumer)

    async def _run(self, job: Job) -> JobResult:
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, run_job, job)
        except BrokenProcessPool:
            self._pool = self._new_pool()  # a worker process died: the next job gets a new one
            raise

    async def _handle(self, delivery: Delivery, consumer: str) -> None:
        job = delivery.job
        bound = log.bind(session_id=job.session_id, attempt=delivery.attempt)
        bound.info("transcription_job_taken", consumer=consumer, sidecar=job.sidecar)
        renewing = asyncio.get_running_loop().create_task(self._renew(delivery, consumer))
        try:
            result = await self._run(job)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.stats.failed += 1
            bound.warning("transcription_failed", error=error)
            await self._failed(delivery, error)
            return
        finally:
            renewing.cancel()
        try:
            await self._write(result)
            await self.queue.ack(delivery)
        except Exception as exc:  # the store went away: the job is delivered again later
            bound.warning("transcription_not_written", error=repr(exc))
            return
        self.stats.done += 1
        self.stats.audio_s += result.audio_s
        self.stats.cpu_s += result.cpu_s
        bound.info(
            "transcription_done",
            turns=len(result.turns),
            audio_s=round(result.audio_s, 2),
            cpu_s=round(result.cpu_s, 2),
            wall_s=round(result.wall_s, 2),
            vtt=result.vtt,
        )

    async def _failed(self, delivery: Delivery, error: str) -> None:
        try:
            dead = await self.queue.fail(delivery, error)
        except Exception as exc:
            log.warning("transcription_queue_unavailable", error=repr(exc))
            return
        if dead is not None:
            await self.dead_lettered(dead)

    async def dead_lettered(self, dead: DeadLetter) -> None:
        """A job given up on: `failed (why)` in the store and the sidecar."""
        self.stats.dead += 1
        log.error(
            "transcription_dead_lettered",
            session_id=dead.job.session_id,
            error=dead.error,
            attempts=dead.attempts,
        )
        with contextlib.suppress(Exception):
            await asyncio.to_thread(mark_failed, dead.job.sidecar, dead.error, dead.attempts)
        status = TranscriptionStatus("failed", dead.error)
        with contextlib.suppress(StoreError, SessionNotFound):
            await self._update(dead.job.session_id, lambda s: _set_status(s, status), wait=False)

    # -- the store --------------------------------------------------------------------------

    async def _write(self, result: JobResult) -> None:
        epoch = datetime.fromisoformat(result.media_epoch)
        texts = {
            (t.participant, epoch + timedelta(milliseconds=t.start_ms)): t.text
            for t in result.turns
        }

        def change(state: SessionState) -> None:
            state.history = [_with_text(turn, texts) for turn in state.history]
            if state.call is not None:
                turns = [dict(turn) for turn in state.call.turns]
                for turn in turns:
                    with contextlib.suppress(KeyError, ValueError, TypeError):
                        start = datetime.fromisoformat(turn["start"])
                        turn["text"] = _lookup(texts, turn["participant"], start)
                state.call = msgspec.structs.replace(state.call, turns=tuple(turns))
            _set_status(state, TranscriptionStatus("done"))

        try:
            await self._update(result.session_id, change, wait=True)
        except SessionNotFound:
            log.warning("transcription_session_gone", session_id=result.session_id)

    async def _update(self, session_id: str, change: Any, *, wait: bool) -> None:
        """Load, change, save with compare-and-set (again on a conflict). With `wait`, first
        give the recorder's final snapshot (transcription `pending`) time to land, so that the
        text is not written under it."""
        deadline = asyncio.get_running_loop().time() + (READY_WAIT if wait else 0)
        while True:
            state = await self.store.load(session_id)
            ready = state.transcription is not None and state.is_terminal
            if not ready and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
                continue
            change(state)
            try:
                await self.store.save(state, expected_version=state.version)
                return
            except VersionConflict:
                continue

    def collector(self) -> TranscriptionCollector:
        return TranscriptionCollector(self)


def _set_status(state: SessionState, status: TranscriptionStatus) -> None:
    state.transcription = status
    if state.call is not None:
        state.call = msgspec.structs.replace(state.call, transcription=status.to_dict())


def _lookup(texts: dict[tuple[str, datetime], str], who: str, start: datetime) -> str | None:
    for (participant, at), text in texts.items():
        if participant == who and abs((at - start).total_seconds()) * 1000 <= MATCH_MS:
            return text
    return None


def _with_text(turn: Any, texts: dict[tuple[str, datetime], str]) -> Any:
    from dataclasses import replace

    text = _lookup(texts, turn.participant, turn.start)
    return turn if text is None else replace(turn, text=text)


class TranscriptionCollector:
    """Prometheus metrics of a `Transcriber` (the queue's counts are the fleet's)."""

    def __init__(self, service: Transcriber) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        stats = self.service.stats
        counts = stats.counts or QueueCounts()
        gauge = GaugeMetricFamily(
            "siprec_transcription_queue_depth",
            "Transcription jobs not finished (queued or running), in the whole queue",
            labels=["state"],
        )
        gauge.add_metric(["waiting"], counts.waiting)
        gauge.add_metric(["running"], counts.running)
        yield gauge
        dead = GaugeMetricFamily(
            "siprec_transcription_dead_letters", "Transcription jobs given up on, in the queue"
        )
        dead.add_metric([], counts.dead)
        yield dead
        jobs = CounterMetricFamily(
            "siprec_transcription_jobs", "Transcription jobs by outcome, here", labels=["outcome"]
        )
        jobs.add_metric(["done"], stats.done)
        jobs.add_metric(["failed"], stats.failed)
        jobs.add_metric(["dead_lettered"], stats.dead)
        yield jobs
        audio = CounterMetricFamily(
            "siprec_transcription_audio_seconds", "Speech audio transcribed here (seconds)"
        )
        audio.add_metric([], stats.audio_s)
        yield audio
        cpu = CounterMetricFamily(
            "siprec_transcription_cpu_seconds",
            "CPU time of the worker processes spent on jobs (seconds); audio_seconds_total / "
            "cpu_seconds_total is audio seconds transcribed per CPU second",
        )
        cpu.add_metric([], stats.cpu_s)
        yield cpu
