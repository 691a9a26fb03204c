"""The finalisation pool: recordings are finalised in worker processes of their own.

Finalisation (decode, VAD, encode, sidecar, fsync) costs milliseconds to seconds of CPU per call;
run in threads of the SIP process it competes with the event loop for the GIL. The pool runs it
in ``recording.finalise_workers`` processes started with ``spawn`` (never forked from the
asyncio process), fed from a queue of at most ``recording.finalise_queue`` jobs:

- A job is keyed by its session id. Submitting a key that is queued or running joins that job
  (same result, ``joined`` set) instead of finalising the recording a second time.
- A full queue raises :class:`QueueFull`: the caller keeps the call ``finalising`` (the store
  says so) and submits it again when ``on_room`` is called, as each job leaves the queue
  (``recorder/finalisations.py``).
- A pool process that dies (SIGKILL, segfault) breaks a ``ProcessPoolExecutor`` for good: the
  pool is replaced (``finalisation_pool_restarted``), the jobs it was running fail with
  ``BrokenProcessPool`` and are retried by their caller's backoff; queued jobs go to the new one.
- :meth:`FinalisePool.stop` gives running jobs ``timeout`` seconds, then terminates the
  processes; jobs not started fail with :class:`PoolStopped` (their calls stay ``finalising`` in
  the store, for the next start or a surviving node).

Pool processes log through the node's structlog set-up, ignore the terminal's and systemd's
signals as media workers do (the node stops them) and die with the node
(:mod:`siprec_node.child_process`). ``workers=0`` runs
jobs in threads of the SIP process instead (the default executor; embedding and tests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

import structlog

from siprec_node.child_process import init_child, signals_blocked
from siprec_node.media.finalise import CallInfo, FinalisedRecording, ParticipantInfo, finalise_call

log = structlog.get_logger("siprec_node.recorder.finalise_pool")

THREADS = 4
"""Jobs run at once when ``workers`` is 0 (threads of the SIP process)."""

STOP_TIMEOUT = 5.0
"""Seconds :meth:`FinalisePool.stop` gives running jobs before it terminates the processes."""


NICENESS = 10
"""Added to a pool process's nice value: on a node short of CPU, the SIP process (answering
INVITEs within milliseconds) and the media workers (whose sockets hold seconds of packets) go
first; a finalisation has seconds to spare. At 100 calls/s on a saturated 2-core machine
(bench/e2e) INVITE→200 p99 went from 1.9-3.2 s to 0.35 s, finalisation from 8 s to 14 s late."""


def init_finaliser(log_level: str, log_format: str, parent: int) -> None:
    """A pool process's initializer: :func:`init_child`, then a lower CPU priority."""
    init_child(log_level, log_format, parent, "finalise_worker")
    os.nice(NICENESS)


class QueueFull(Exception):
    """The finalisation queue holds ``queue_size`` jobs: submit again once there is room."""


class PoolStopped(Exception):
    """The pool stopped before this job ran."""


@dataclass(frozen=True)
class FinaliseJob:
    """What a pool process needs to finalise one recording (pickled to it: keep it small)."""

    parts: str
    output_dir: str
    stem: str
    call: CallInfo
    fmt: str
    channels: str
    participants: tuple[ParticipantInfo, ...] = ()
    remove_parts: bool = False
    """Remove the parts folder once the recording is final (here, not on the SIP process's
    event loop: a recursive delete of a folder of files)."""


@dataclass(frozen=True)
class FinaliseDone:
    """A job's result as it comes back: the recording (its sidecar's content left out: it is
    on disk) and the process that wrote it."""

    recording: FinalisedRecording
    pid: int


def run_job(job: FinaliseJob) -> FinaliseDone:
    """Finalise one recording (in a pool process, or a thread when the pool has no process)."""
    result = finalise_call(
        job.parts,
        output_dir=job.output_dir,
        stem=job.stem,
        call=job.call,
        fmt=job.fmt,
        channels=job.channels,
        participants=job.participants,
        remove_parts=job.remove_parts,
    )
    return FinaliseDone(replace(result, metadata={}), os.getpid())


@dataclass
class Submitted:
    """A job in the pool: its result, and whether this submission joined a job already there."""

    future: asyncio.Future[FinaliseDone]
    joined: bool = False


@dataclass
class _Job:
    key: str
    job: FinaliseJob
    future: asyncio.Future[FinaliseDone]


class FinalisePool:
    """Finalisation jobs, queued and run in worker processes (see the module docstring)."""

    def __init__(
        self,
        workers: int = 1,
        queue_size: int = 1000,
        *,
        log_level: str = "info",
        log_format: str = "json",
        on_room: Callable[[], None] | None = None,
        run: Callable[[FinaliseJob], FinaliseDone] = run_job,
    ) -> None:
        self.workers = max(workers, 0)
        self.queue_size = max(queue_size, 1)
        self.on_room = on_room
        self._run = run
        self._log_level, self._log_format = log_level, log_format
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[str, _Job] = {}
        """Queued and running jobs by key."""
        self._wakeup: asyncio.Event | None = None
        self._dispatchers: list[asyncio.Task[None]] = []
        self._executor: Executor | None = None
        self.running = 0
        self.done = 0
        self.restarts = 0
        """Times a broken process pool was replaced."""
        self.full = 0
        """Submissions refused because the queue was full."""
        self.stopped = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _new_executor(self) -> Executor | None:
        if self.workers == 0:
            return None  # the event loop's default executor
        with signals_blocked():  # its queue's semaphores start multiprocessing's resource
            # tracker process: it ignores SIGINT and SIGTERM itself, a SIGHUP stays blocked
            return ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_finaliser,
                initargs=(self._log_level, self._log_format, os.getpid()),
            )

    def start(self) -> None:
        """Start the dispatchers; the processes start with the first job, never at a set
        time: a process importing numpy takes a core for a while, which a node starting and
        recovering its calls, or a media worker restarting mid-call, needs (tests
        test_recording_continuity, test_worker_crash). Inside the event loop. The first
        :meth:`submit` starts a pool never started."""
        if self._dispatchers:
            return
        self.stopped = False
        self._wakeup = asyncio.Event()
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        self._dispatchers = [
            loop.create_task(self._dispatch()) for _ in range(self.workers or THREADS)
        ]
        log.info("finalisation_pool_started", workers=self.workers, queue_size=self.queue_size)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Fail the jobs not started (:class:`PoolStopped`), give running ones ``timeout``
        seconds, then terminate the processes. Bounded: a stop never waits longer."""
        self.stopped = True
        while self._queue:
            item = self._queue.popleft()
            self._jobs.pop(item.key, None)
            if not item.future.done():
                item.future.set_exception(PoolStopped("the node stopped before this finalisation"))
        if self._wakeup is not None:
            self._wakeup.set()  # idle dispatchers see the stop
        if self._dispatchers:
            _, running = await asyncio.wait(self._dispatchers, timeout=timeout)
            abandoned = self.running
            for task in running:
                task.cancel()
            await asyncio.gather(*self._dispatchers, return_exceptions=True)
            if abandoned:  # their calls stay finalising: the next start finishes them
                log.warning("finalisations_abandoned", jobs=abandoned, waited_s=timeout)
        self._dispatchers = []
        executor, self._executor = self._executor, None
        if isinstance(executor, ProcessPoolExecutor):
            _kill(executor)  # a job left running would hold the exit until it ends
        for item in list(self._jobs.values()):
            if not item.future.done():
                item.future.set_exception(PoolStopped("the node stopped during this finalisation"))
        self._jobs.clear()

    # -- jobs ----------------------------------------------------------------------------------

    def parts_in_flight(self) -> list[str]:
        """The parts folders of the jobs queued or running."""
        return [item.job.parts for item in self._jobs.values()]

    @property
    def depth(self) -> int:
        """Jobs waiting for a process (not running yet)."""
        return len(self._queue)

    def has_room(self) -> bool:
        """Whether a new job would be taken now."""
        return len(self._queue) < self.queue_size

    def submit(self, key: str, job: FinaliseJob) -> Submitted:
        """Queue a job; the same ``key`` queued or running is joined, not queued again.

        Raises :class:`QueueFull` when the queue is full, :class:`PoolStopped` once stopped.
        """
        if self.stopped:
            raise PoolStopped("the finalisation pool is stopped")
        if self._wakeup is None:
            self.start()
        assert self._wakeup is not None
        item = self._jobs.get(key)
        if item is not None:
            return Submitted(item.future, joined=True)
        if len(self._queue) >= self.queue_size:
            self.full += 1
            raise QueueFull(f"{len(self._queue)} finalisations queued")
        item = _Job(key, job, asyncio.get_running_loop().create_future())
        self._jobs[key] = item
        self._queue.append(item)
        self._wakeup.set()
        return Submitted(item.future)

    async def _dispatch(self) -> None:
        """Run queued jobs one at a time (one dispatcher per process: the executor never holds
        more than it runs, so a broken pool takes only the running jobs with it)."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while not self.stopped:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._queue.popleft()
            if self.on_room is not None:
                self.on_room()  # a place in the queue: what waits for one can come
            executor = self._executor
            self.running += 1
            try:
                if isinstance(executor, ProcessPoolExecutor):
                    with signals_blocked():  # the submission may spawn a process
                        future = executor.submit(self._run, item.job)
                    done = await asyncio.wrap_future(future)
                else:
                    done = await loop.run_in_executor(executor, self._run, item.job)
            except BrokenProcessPool as exc:
                self._replace(executor)
                self._finish(item, error=exc)
            except Exception as exc:
                self._finish(item, error=exc)
            else:
                self.done += 1
                self._finish(item, result=done)
            finally:
                self.running -= 1

    def _finish(
        self, item: _Job, *, result: FinaliseDone | None = None, error: BaseException | None = None
    ) -> None:
        if self._jobs.get(item.key) is item:
            del self._jobs[item.key]
        if item.future.done():
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            assert result is not None
            item.future.set_result(result)

    def _replace(self, broken: Executor | None) -> None:
        """A pool process died: every later job of that executor would fail, so a new one
        takes its place (once, whichever dispatcher saw it first)."""
        if self.stopped or broken is not self._executor:
            return
        self.restarts += 1
        log.error("finalisation_pool_restarted", workers=self.workers, restarts=self.restarts)
        if isinstance(broken, ProcessPoolExecutor):
            _kill(broken)  # its jobs failed with it (retried); its other processes live on
        self._executor = self._new_executor()

    def pids(self) -> list[int]:
        """The pool's process ids (tests, diagnostics)."""
        processes: Any = getattr(self._executor, "_processes", None) or {}
        return sorted(int(p) for p in processes)


def _kill(executor: ProcessPoolExecutor) -> None:
    """Shut an executor down and SIGKILL its processes: they ignore the node's signals
    (``child_process``), so the SIGTERM of ``terminate()`` would leave them running, and the
    interpreter's exit joins them (a node whose pool broke or whose job was abandoned would
    never exit)."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)
