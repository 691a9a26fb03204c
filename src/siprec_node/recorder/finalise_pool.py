"""The finalisation pool: recordings are finalised in worker processes of their own.

Finalisation (decode, VAD, encode, sidecar, fsync) costs milliseconds to seconds of CPU per call;
run in threads of the SIP process it competes with the event loop for the GIL. The pool runs it
in ``recording.finalise_workers`` processes (``recorder/finalise_worker.py``), fed from a queue of
at most ``recording.finalise_queue`` jobs:

- A job is keyed by its session id. Submitting a key that is queued or running joins that job
  (same result, ``joined`` set) instead of finalising the recording a second time.
- A full queue raises :class:`QueueFull`: the caller keeps the call ``finalising`` (the store
  says so) and submits it again when ``on_room`` is called, as each job leaves the queue
  (``recorder/finalisations.py``).
- One dispatcher task per process hands it one job at a time over a socket pair, on the event
  loop: the SIP process runs no thread for the pool (``concurrent.futures``'s process pool ran
  two, a manager and a queue feeder, which took 16 % of the SIP process's samples at 100 calls/s
  in bench/e2e, contending with the event loop for the interpreter).
- A process that dies (SIGKILL, segfault, out of memory) fails the job it was running with
  :class:`FinaliserDied`, which its caller retries with backoff; the dispatcher starts a new
  process for its next job (``finalisation_pool_restarted``). The other processes go on.
- :meth:`FinalisePool.stop` gives running jobs ``timeout`` seconds, then kills their processes;
  jobs not started fail with :class:`PoolStopped` (their calls stay ``finalising`` in the store,
  for the next start or a surviving node).

Processes start when the node answers its first call (:meth:`FinalisePool.warm`) or with the
first job they are given, whichever comes first, log through the node's structlog set-up,
ignore the terminal's and systemd's signals as media workers do (the node stops them) and die
with the node (:mod:`siprec_node.child_process`). ``workers=0`` runs jobs in threads of the SIP
process instead (the default executor; embedding and tests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from siprec_node.child_process import signals_blocked
from siprec_node.media.finalise import CallInfo, FinalisedRecording, ParticipantInfo, finalise_call
from siprec_node.recorder.finalise_worker import HEADER, NICENESS, function_name

log = structlog.get_logger("siprec_node.recorder.finalise_pool")

__all__ = [
    "NICENESS",
    "FinaliseDone",
    "FinaliseJob",
    "FinalisePool",
    "FinaliserDied",
    "PoolStopped",
    "QueueFull",
    "run_job",
]

THREADS = 4
"""Jobs run at once when ``workers`` is 0 (threads of the SIP process)."""

STOP_TIMEOUT = 5.0
"""Seconds :meth:`FinalisePool.stop` gives running jobs before it kills their processes."""

EXIT_WAIT = 2.0
"""Seconds a stopping pool gives idle processes to exit (they do at once) before it kills them."""


class QueueFull(Exception):
    """The finalisation queue holds ``queue_size`` jobs: submit again once there is room."""


class PoolStopped(Exception):
    """The pool stopped before this job ran."""


class FinaliserDied(Exception):
    """The finalisation process running this job died before it answered."""


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


@dataclass
class _Process:
    """A finalisation process and the node's end of its socket."""

    proc: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    busy: bool = False

    def gone(self) -> bool:
        return self.reader.at_eof() or self.proc.poll() is not None


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
        # a process is given the function by name: a module-level one (checked now, not at
        # the first job)
        self._run_name = function_name(run) if self.workers else ""
        self._log_level, self._log_format = log_level, log_format
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[str, _Job] = {}
        """Queued and running jobs by key."""
        self._wakeup: asyncio.Event | None = None
        self._dispatchers: list[asyncio.Task[None]] = []
        self._processes: list[_Process] = []
        self.running = 0
        self.done = 0
        self.restarts = 0
        """Pool processes that died and were replaced."""
        self.full = 0
        """Submissions refused because the queue was full."""
        self.stopped = False
        self._warm = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatchers; the processes start with :meth:`warm` or the first job, never
        at a set time: a process importing numpy takes a core for a while, which a node starting
        and recovering its calls, or a media worker restarting mid-call, needs (tests
        test_recording_continuity, test_worker_crash). Inside the event loop. The first
        :meth:`submit` starts a pool never started."""
        if self._dispatchers:
            return
        self.stopped = False
        self._wakeup = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._dispatchers = [
            loop.create_task(self._dispatch()) for _ in range(self.workers or THREADS)
        ]
        log.info("finalisation_pool_started", workers=self.workers, queue_size=self.queue_size)

    def warm(self) -> None:
        """Start the processes now rather than with the first job (the driver calls this when
        it answers a call). A process takes about a second of CPU to import the finalisation
        code: at the first job that second fell among the first calls' endings and their
        successors' INVITEs (bench/e2e at 50 calls/s: ~1 % of the calls answered in 50-100 ms,
        the run's p99), at the first answer it falls where the node has the fewest calls."""
        if self.workers and not self._warm and self._wakeup is not None:
            self._warm = True
            self._wakeup.set()

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Fail the jobs not started (:class:`PoolStopped`), give running ones ``timeout``
        seconds, then kill their processes. Bounded: a stop never waits much longer."""
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
        await self._end_processes()
        for item in list(self._jobs.values()):
            if not item.future.done():
                item.future.set_exception(PoolStopped("the node stopped during this finalisation"))
        self._jobs.clear()

    async def _end_processes(self) -> None:
        """Idle processes exit when their socket closes; one still running a job is killed (it
        ignores the node's signals, and a node must not wait for its job to end)."""
        processes, self._processes = self._processes, []
        for process in processes:
            if process.busy:
                with contextlib.suppress(OSError):
                    process.proc.kill()
            process.writer.close()
        if not processes:
            return

        def reap() -> None:
            deadline = time.monotonic() + EXIT_WAIT
            for process in processes:
                try:
                    process.proc.wait(max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    log.warning("finalisation_process_killed", pid=process.proc.pid)
                    process.proc.kill()
                    process.proc.wait()

        await asyncio.get_running_loop().run_in_executor(None, reap)

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
        """Run queued jobs one at a time, in a process of this dispatcher's own (or a thread
        when the pool has no process)."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        process: _Process | None = None
        warmed = False
        while not self.stopped:
            if not self._queue:
                if self._warm and not warmed and process is None:
                    warmed = True  # once: a process that fails to start waits for a job
                    try:
                        process = await self._spawn()
                    except Exception as exc:
                        log.warning("finalisation_process_not_started", error=repr(exc))
                    continue
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._queue.popleft()
            if self.on_room is not None:
                self.on_room()  # a place in the queue: what waits for one can come
            self.running += 1
            try:
                if not self.workers:
                    done = await loop.run_in_executor(None, self._run, item.job)
                else:
                    if process is not None and process.gone():  # died while idle
                        await self._lost(process)
                        process = None
                    if process is None:
                        process = await self._spawn()
                    try:
                        done = await self._call(process, item.job)
                    except FinaliserDied:
                        process = None  # reaped: a new one for the next job
                        raise
            except Exception as exc:
                self._finish(item, error=exc)
            else:
                self.done += 1
                self._finish(item, result=done)
            finally:
                self.running -= 1

    async def _spawn(self) -> _Process:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with signals_blocked():  # until the process ignores the node's signals itself
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "siprec_node.recorder.finalise_worker",
                        "--fd",
                        str(child.fileno()),
                        "--run",
                        self._run_name,
                        "--parent",
                        str(os.getpid()),
                        "--log-level",
                        self._log_level,
                        "--log-format",
                        self._log_format,
                    ],
                    pass_fds=[child.fileno()],
                )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        process = _Process(proc, reader, writer)
        self._processes.append(process)
        log.info("finalisation_process_started", pid=proc.pid)
        return process

    async def _call(self, process: _Process, job: FinaliseJob) -> FinaliseDone:
        """Send ``job`` to ``process`` and wait for its answer."""
        payload = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)
        process.busy = True  # left set if cancelled (a stop): the process is then killed
        try:
            process.writer.write(HEADER.pack(len(payload)) + payload)
            await process.writer.drain()
            (size,) = HEADER.unpack(await process.reader.readexactly(HEADER.size))
            answer = await process.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            status = await self._lost(process)
            raise FinaliserDied(
                f"finalisation process {process.proc.pid} died ({status}) during this job"
            ) from exc
        process.busy = False
        try:
            ok, value = pickle.loads(answer)
        except Exception as exc:  # an exception class that does not unpickle
            raise RuntimeError(
                f"the finalisation process's answer did not unpickle: {exc}"
            ) from exc
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def _lost(self, process: _Process) -> str:
        """A process died: reap it, say so, return how it ended; its dispatcher starts a new one
        for its next job."""
        if process in self._processes:
            self._processes.remove(process)
        process.writer.close()
        with contextlib.suppress(OSError):
            process.proc.kill()  # one that closed its socket but lives on
        code = await asyncio.get_running_loop().run_in_executor(None, process.proc.wait)
        status = _exit_status(code)
        self.restarts += 1
        log.error(
            "finalisation_pool_restarted",
            pid=process.proc.pid,
            exit=status,
            workers=self.workers,
            restarts=self.restarts,
        )
        return status

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

    def pids(self) -> list[int]:
        """The pool's process ids (tests, diagnostics)."""
        return sorted(p.proc.pid for p in self._processes if p.proc.poll() is None)


def _exit_status(code: int) -> str:
    """How a process ended, for the log: ``exit 1``, ``killed by SIGKILL``."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
