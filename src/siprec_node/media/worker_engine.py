"""Media worker processes: :class:`WorkerEngine`, the :class:`~siprec_node.media.engine.MediaEngine`
that records in other processes.

The SIP process keeps binding every socket (``media/engine.py``) and passes them to the workers
(SCM_RIGHTS) over one control socket each (:class:`~siprec_node.media.control.ControlChannel`);
each worker (``media/worker.py``) runs a :class:`~siprec_node.media.engine.LocalEngine` for the
calls given to it. This module supervises them: spawning, the request/reply protocol with its
timeouts, and the restart of a worker that died, whose streams the owner then re-opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from siprec_node.media import fastpath
from siprec_node.media.control import ControlChannel

if TYPE_CHECKING:
    from siprec_node.media.engine import StreamSpec

# The engine's logger, as before this module was split from media/engine.py: the same name on
# every media-engine event.
log = structlog.get_logger("siprec_node.media.engine")


class WorkerDied(Exception):
    """The worker process handling a request exited (its control socket reached end of file)."""


class MediaTimeout(TimeoutError):
    """A worker answered nothing at all for ``REPLY_TIMEOUT`` while a request waited (it is
    hung, not dead: it is not restarted for that)."""


REPLY_TIMEOUT = 10.0
"""How long a request waits while its worker answers nothing (seconds). Replies to any request
count as progress, so a request queued behind thousands of others waits as long as the worker
keeps working through them."""


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    ready: asyncio.Future[None]
    """Done when the worker has said it reads its control socket."""
    channel: ControlChannel | None = None
    sessions: set[str] = field(default_factory=set)
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    alive: bool = True
    last_progress: float = 0.0
    """Event-loop time of the last message from the worker (or of its start)."""


class WorkerEngine:
    """Media worker processes; all streams of a call go to one worker.

    ``on_worker_died(index, sessions)`` is awaited when a worker exits unexpectedly, after it
    was restarted: the owner re-opens those sessions' streams (with fresh sockets on the same
    ports), which continue the same files. Requests go through each worker's
    :class:`~siprec_node.media.control.ControlChannel`, in order, waiting for room rather than
    failing when the socket is full; only the worker's exit fails them (:class:`WorkerDied`).
    """

    def __init__(
        self,
        workers: int,
        *,
        log_level: str = "info",
        log_format: str = "json",
        on_worker_died: Callable[[int, set[str]], Awaitable[None]] | None = None,
        receive_path: str = "auto",
        receive_interval: float = 0.0,
    ) -> None:
        if workers < 1:
            raise ValueError("WorkerEngine needs at least one worker")
        if receive_interval < 0:
            raise ValueError("receive_interval must not be negative")
        fastpath.module(receive_path)  # refuse "c" here rather than in every worker
        self.receive_path = receive_path
        self.receive_interval = receive_interval
        self.count = workers
        self._log_level = log_level
        self._log_format = log_format
        self.on_worker_died = on_worker_died
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._session_worker: dict[str, int] = {}
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0

    async def start(self) -> None:
        """Spawn the workers and wait until each is ready to take streams."""
        for index in range(self.count):
            self._workers.append(self._spawn(index))
        await asyncio.gather(*(self._wait_ready(w) for w in self._workers))

    async def _wait_ready(self, worker: _Worker, timeout: float = 20.0) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(worker.ready), timeout)
        except TimeoutError:
            log.error("media_worker_not_ready", worker=worker.index, waited_s=timeout)

    def _spawn(self, index: int) -> _Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "siprec_node.media.worker",
                "--fd",
                str(child.fileno()),
                "--index",
                str(index),
                "--log-level",
                self._log_level,
                "--log-format",
                self._log_format,
                "--receive-path",
                self.receive_path,
                "--receive-interval",
                repr(self.receive_interval),
            ],
            pass_fds=[child.fileno()],
            env=env,
        )
        child.close()
        loop = asyncio.get_running_loop()
        worker = _Worker(index, proc, parent, ready=loop.create_future())
        worker.last_progress = loop.time()
        worker.channel = ControlChannel(
            parent,
            functools.partial(self._on_message, worker),
            functools.partial(self._lost, worker),
            max_fds=0,
        )
        log.info("media_worker_started", worker=index, pid=proc.pid)
        return worker

    def worker_for(self, session_id: str) -> _Worker:
        """The worker that records ``session_id`` (assigned on first use: least loaded)."""
        index = self._session_worker.get(session_id)
        if index is None:
            index = min(range(len(self._workers)), key=lambda i: len(self._workers[i].sessions))
            self._session_worker[session_id] = index
            self._workers[index].sessions.add(session_id)
        return self._workers[index]

    def _on_message(
        self, worker: _Worker, message: dict[str, Any], fds: list[int], truncated: bool
    ) -> None:
        for fd in fds:  # workers send none
            os.close(fd)
        worker.last_progress = asyncio.get_running_loop().time()
        if message.get("ready"):
            if not worker.ready.done():
                worker.ready.set_result(None)
            return
        future = worker.pending.pop(int(message.get("id") or 0), None)
        if future is not None and not future.done():
            future.set_result(message)

    def _lost(self, worker: _Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        worker.sock.close()
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerDied(f"media worker {worker.index} exited"))
        worker.pending.clear()
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        code = worker.proc.poll()
        sessions = set(worker.sessions)
        log.error(
            "media_worker_died",
            worker=worker.index,
            pid=worker.proc.pid,
            exit_code=code,
            sessions=sorted(sessions),
        )
        self.restarts += 1
        replacement = self._spawn(worker.index)
        replacement.sessions = sessions
        self._workers[worker.index] = replacement
        if self.on_worker_died is not None:
            task = loop.create_task(self._after_restart(replacement, sessions))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _after_restart(self, replacement: _Worker, sessions: set[str]) -> None:
        # Streams are re-opened only once the new worker reads its socket: ports bound any
        # earlier would queue RTP in the kernel, and those packets would be placed by the late
        # time they are read.
        await self._wait_ready(replacement)
        assert self.on_worker_died is not None
        await self.on_worker_died(replacement.index, sessions)

    async def _request(
        self, worker: _Worker, message: dict[str, Any], fds: list[int] | None = None
    ) -> dict[str, Any]:
        if not worker.alive or worker.channel is None:
            raise WorkerDied(f"media worker {worker.index} is not running")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        message["id"] = request_id
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        worker.pending[request_id] = future

        def sent(error: BaseException | None) -> None:
            if error is None:
                return
            worker.pending.pop(request_id, None)
            if not future.done():
                if isinstance(error, ConnectionResetError):
                    error = WorkerDied(f"media worker {worker.index} exited")
                future.set_exception(error)

        handle = worker.channel.send(message, fds or (), sent)
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(asyncio.shield(future), REPLY_TIMEOUT)
                    break
                except TimeoutError:
                    if future.done() or loop.time() - worker.last_progress < REPLY_TIMEOUT:
                        continue
                    raise MediaTimeout(
                        f"media worker {worker.index} answered nothing for {REPLY_TIMEOUT:g} s"
                    ) from None
        except BaseException:
            # Given up (timeout, cancelled): a message not yet sent must not go out later with
            # descriptor numbers its sender is about to close.
            worker.pending.pop(request_id, None)
            if worker.channel is not None:
                worker.channel.withdraw(handle)
            if not future.done():
                future.cancel()
            raise
        if not reply.get("ok"):
            raise RuntimeError(f"media worker {worker.index}: {reply.get('error')}")
        return reply

    async def open_stream(self, spec: StreamSpec, rtp: socket.socket, rtcp: socket.socket) -> None:
        """Hand the sockets to the call's worker; this process closes its copies."""
        worker = self.worker_for(spec.session_id)
        try:
            await self._request(
                worker, {"op": "open", "spec": _spec_message(spec)}, [rtp.fileno(), rtcp.fileno()]
            )
        finally:
            rtp.close()
            rtcp.close()

    async def update_stream(self, spec: StreamSpec) -> None:
        """Tell the call's worker about the payload types a re-INVITE added."""
        await self._request(
            self.worker_for(spec.session_id), {"op": "update", "spec": _spec_message(spec)}
        )

    async def set_sources(self, session_id: str, index: int, sources: list[str] | None) -> None:
        """Change the addresses a stream takes packets from."""
        await self._request(
            self.worker_for(session_id),
            {"op": "sources", "session_id": session_id, "index": index, "sources": sources},
        )

    async def pause(self, session_id: str, index: int, at: float) -> None:
        """Pause one stream."""
        await self._request(
            self.worker_for(session_id),
            {"op": "pause", "session_id": session_id, "index": index, "at": at},
        )

    async def resume(self, session_id: str, index: int, at: float) -> None:
        """Resume one stream."""
        await self._request(
            self.worker_for(session_id),
            {"op": "resume", "session_id": session_id, "index": index, "at": at},
        )

    async def close_call(self, session_id: str, at: float) -> dict[int, dict[str, Any]]:
        """Close a call's streams in its worker."""
        index = self._session_worker.pop(session_id, None)
        if index is None:
            return {}
        worker = self._workers[index]
        worker.sessions.discard(session_id)
        reply = await self._request(worker, {"op": "close", "session_id": session_id, "at": at})
        return {int(k): v for k, v in reply.get("stats", {}).items()}

    async def stats(self, session_id: str) -> dict[int, dict[str, Any]]:
        """Live statistics of a call's streams."""
        if session_id not in self._session_worker:
            return {}
        reply = await self._request(
            self.worker_for(session_id), {"op": "stats", "session_id": session_id}
        )
        return {int(k): v for k, v in reply.get("stats", {}).items()}

    async def activity(self) -> dict[str, dict[int, int]]:
        """Every open stream's datagram counter: one request per running worker."""
        out: dict[str, dict[int, int]] = {}
        for worker in self._workers:
            if worker.alive:
                reply = await self._request(worker, {"op": "activity"})
                for session_id, streams in reply.get("activity", {}).items():
                    out[session_id] = {int(k): int(v) for k, v in streams.items()}
        return out

    async def loop_lag(self, reset: bool = False) -> list[dict[str, Any]]:
        """Each running worker's event-loop lag (``worker`` and ``pid`` added to the figures
        of :meth:`LocalEngine.loop_lag`), its C receiver's counters (``receiver``) and its
        garbage collector's figures (``gc``: :meth:`GcWatch.summary`); ``reset`` starts a new
        lag window in each."""
        out = []
        for worker in self._workers:
            if worker.alive:
                reply = await self._request(worker, {"op": "lag", "reset": reset})
                out.append(
                    {
                        "worker": worker.index,
                        "pid": worker.proc.pid,
                        **reply["lag"],
                        "receiver": reply.get("receiver"),
                        "gc": reply.get("gc"),
                    }
                )
        return out

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.proc.pid for w in self._workers if w.alive]

    def begin_stop(self) -> None:
        """The node is shutting down: a worker that exits from now on is not restarted (its
        calls are finalised from what its files hold)."""
        self._stopping = True

    async def stop(self) -> None:
        """Ask every worker to close its files and exit; kill the ones that do not."""
        self._stopping = True
        for worker in self._workers:
            if worker.alive:
                with contextlib.suppress(Exception):
                    await self._request(worker, {"op": "stop"})
        for worker in self._workers:
            try:
                await asyncio.get_running_loop().run_in_executor(None, worker.proc.wait, 5)
            except subprocess.TimeoutExpired:
                log.warning("media_worker_killed", worker=worker.index, pid=worker.proc.pid)
                worker.proc.kill()
            if worker.alive:
                worker.alive = False
                if worker.channel is not None:
                    worker.channel.close()
                worker.sock.close()


def _spec_message(spec: StreamSpec) -> dict[str, Any]:
    """A stream spec's fields for a control message: a shallow copy, since the channel encodes
    the message as it is queued (``dataclasses.asdict`` deep-copied the negotiated stream,
    40-140 µs a stream on the SIP process's loop, two streams a call)."""
    return dict(vars(spec))
