"""Where RTP is received and recorded: in this process, or in media worker processes.

The SIP process binds every RTP/RTCP socket itself (so the SDP answer never names a port that
could not be bound) and hands the sockets to an engine together with what the stream negotiated.
:class:`LocalEngine` records them on this event loop; :class:`WorkerEngine` passes the sockets
(SCM_RIGHTS) to worker processes, each owning the calls given to it, so that signalling latency
never depends on media load and a worker crash loses only that worker's streams (it is restarted
and its streams re-opened, continuing the same files).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from siprec_node.media import fastpath
from siprec_node.media.control import ControlChannel
from siprec_node.media.loop_lag import LoopLag
from siprec_node.media.stream_file import info_file_name, media_file_name
from siprec_node.media.stream_recorder import StreamRecorder
from siprec_node.siprec.sdp_answer import NegotiatedStream

log = structlog.get_logger("siprec_node.media.engine")

TICK_INTERVAL = 1.0
"""How often each recorder is ticked (seconds): its Python-path buffer flushed, held packets
expired, the C fast path's progress taken over and the sidecar rewritten when due."""
TICK_SLICES = 10
"""The streams are ticked a slice at a time, TICK_SLICES slices per TICK_INTERVAL, so that no
pass over thousands of recorders (each may rewrite its JSON) blocks the receive loop for long:
a loop blocked for a second queues a second of RTP, later placed as if it had come late."""
# asyncio's default 256 KiB read buffer costs an mmap/munmap per datagram; RTP needs ~1.5 KiB.
RECV_SIZE = 4096


@dataclass(frozen=True)
class StreamSpec:
    """What a recorder needs to know about one stream (JSON-safe, crosses process bounds)."""

    session_id: str
    index: int
    negotiated: dict[str, Any]
    parts_dir: str
    epoch: float
    sources: list[str] | None = None
    """IP addresses whose packets the stream takes (``media.source_check``); None: any."""

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the stream within the node."""
        return (self.session_id, self.index)


class MediaEngine(Protocol):
    """Receives and records the streams handed to it."""

    async def start(self) -> None:
        """Start receiving (workers are spawned here)."""

    async def open_stream(self, spec: StreamSpec, rtp: socket.socket, rtcp: socket.socket) -> None:
        """Record ``spec`` from the two bound sockets (the engine owns them from now on; when
        opening fails, nothing of the stream is left open)."""

    async def set_sources(self, session_id: str, index: int, sources: list[str] | None) -> None:
        """Change the addresses a stream takes packets from (a re-INVITE moved its media)."""

    async def update_stream(self, spec: StreamSpec) -> None:
        """An open stream was renegotiated (re-INVITE): record the payload types it added."""

    async def pause(self, session_id: str, index: int, at: float) -> None:
        """Stop recording a stream (SDP hold / operator pause) from wall-clock ``at``."""

    async def resume(self, session_id: str, index: int, at: float) -> None:
        """Record a paused stream again from ``at``."""

    async def close_call(self, session_id: str, at: float) -> dict[int, dict[str, Any]]:
        """Close every stream of a call; returns their statistics by stream index."""

    async def stats(self, session_id: str) -> dict[int, dict[str, Any]]:
        """Live statistics of a call's streams."""

    async def activity(self) -> dict[str, dict[int, int]]:
        """Every open stream's datagram counter, by session id and stream index (one cheap
        batched read for the RTP timeout; no per-packet messages)."""

    def begin_stop(self) -> None:
        """The node is shutting down: nothing is restarted from now on."""

    async def stop(self) -> None:
        """Close everything (files are closed cleanly)."""


def allowed_addresses(sources: list[str] | None) -> frozenset[str] | None:
    """The textual forms a source address of ``sources`` takes in ``recvfrom`` (IPv4 also as
    IPv4-mapped IPv6, for dual-stack sockets); None (no check) for None."""
    if sources is None:
        return None
    out: set[str] = set()
    for text in sources:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        out.add(address.compressed)
        if isinstance(address, ipaddress.IPv4Address):
            out.add(f"::ffff:{address.compressed}")
    return frozenset(out)


class _Gate:
    """The Python path's source check: packets from other addresses are only counted."""

    __slots__ = ("allowed", "foreign")

    def __init__(self, sources: list[str] | None) -> None:
        self.allowed = allowed_addresses(sources)
        self.foreign = 0


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, float], None], gate: _Gate) -> None:
        self.on_datagram = on_datagram
        self.gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):
            transport.max_size = RECV_SIZE  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        allowed = self.gate.allowed
        if allowed is not None and addr[0] not in allowed:
            self.gate.foreign += 1
            return
        self.on_datagram(data, time.time())


@dataclass
class _Open:
    spec: StreamSpec
    recorder: StreamRecorder
    gate: _Gate
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)  # read by the C receiver
    write_errors: int = 0
    """Failed writes when the first was logged (0: none logged yet)."""


class LocalEngine:
    """Records on the current event loop (``media.workers = 0``, and inside each worker).

    ``receive_path`` (``media.receive_path``): with the C extension (``auto`` where built, or
    ``c``) one ``_rtprecv.Receiver`` reads every socket in batches and takes in-order G.711
    packets itself, handing the rest to the recorders; ``python`` (or no extension) gives each
    socket a datagram endpoint of the event loop.
    """

    def __init__(self, receive_path: str = "auto") -> None:
        self._fast = fastpath.module(receive_path)
        self._rx: Any = None  # the _rtprecv.Receiver, from start() on
        self._streams: dict[tuple[str, int], _Open] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._lag = LoopLag()
        self._lag_task: asyncio.Task[None] | None = None

    @property
    def receive_path(self) -> str:
        """``c`` or ``python``: how this engine reads its sockets."""
        return "python" if self._fast is None else "c"

    async def start(self) -> None:
        """Start the receiver, the periodic tick (file headers, buffers, stream JSON) and the
        lag probe."""
        loop = asyncio.get_running_loop()
        if self._fast is not None and self._rx is None:
            self._rx = self._fast.Receiver()
            loop.add_reader(self._rx.fileno(), self._drain)
        if self._ticker is None:
            self._ticker = loop.create_task(self._tick_forever())
        if self._lag_task is None:
            self._lag.reset()
            self._lag_task = loop.create_task(self._lag.run())

    def _drain(self) -> None:
        handed = self._rx.drain()
        if handed is None:
            return
        for handler, data, arrival in handed:
            try:
                handler(data, arrival)
            except Exception:
                log.exception("rtp_datagram_failed")

    async def loop_lag(self, reset: bool = False) -> dict[str, Any]:
        """This loop's wake-up lag (see :class:`LoopLag`); ``reset`` starts a new window."""
        summary = self._lag.summary()
        if reset:
            self._lag.reset()
        return summary

    async def _tick_forever(self) -> None:
        turn = 0
        while True:
            await asyncio.sleep(TICK_INTERVAL / TICK_SLICES)
            streams = list(self._streams.values())
            now = time.time()
            for stream in streams[turn % TICK_SLICES :: TICK_SLICES]:
                try:
                    self._count_foreign(stream)
                    stream.recorder.tick(now)
                except Exception:
                    log.exception("recorder_tick_failed", session_id=stream.spec.session_id)
                _report_write_errors(stream)
            turn += 1

    def _count_foreign(self, opened: _Open) -> None:
        """Hand the packets the source check dropped since last time to the recorder."""
        count, opened.gate.foreign = opened.gate.foreign, 0
        if self._rx is not None:
            for sock in opened.sockets:
                count += self._rx.foreign(sock.fileno())
        if count:
            opened.recorder.count_foreign(count)

    async def open_stream(self, spec: StreamSpec, rtp: socket.socket, rtcp: socket.socket) -> None:
        """Create the recorder (continuing existing files) and start receiving.

        All or nothing: when any step fails, what it took is released (sockets closed, the
        recorder closed, files it created removed) and the error raised.
        """
        if spec.key in self._streams:
            rtp.close()
            rtcp.close()
            return
        parts = Path(spec.parts_dir)
        negotiated = NegotiatedStream.from_dict(spec.negotiated)
        created = [
            path
            for path in (
                parts / media_file_name(negotiated.index, negotiated.codec or ""),
                parts / info_file_name(negotiated.index),
            )
            if not path.exists()
        ]
        opened: _Open | None = None
        try:
            recorder = StreamRecorder(
                negotiated, parts, spec.epoch, fast=self._fast if self._rx is not None else None
            )
            opened = _Open(spec, recorder, _Gate(spec.sources))
            self._streams[spec.key] = opened
            await self._receive(opened, rtp, rtcp)
        except BaseException:
            self._discard(spec, opened, rtp, rtcp, created)
            raise
        if self._streams.get(spec.key) is not opened:
            # the call was closed while its endpoints were being created: nothing may stay open
            self._discard(spec, opened, rtp, rtcp, [])

    async def _receive(self, opened: _Open, rtp: socket.socket, rtcp: socket.socket) -> None:
        recorder = opened.recorder
        rx = self._rx
        if rx is not None:
            sources = opened.spec.sources
            for sock, handler, fast in (
                (rtp, recorder.on_rtp, recorder.fast_stream),
                (rtcp, recorder.on_rtcp, None),
            ):
                sock.setblocking(False)
                rx.add(sock.fileno(), handler, fast, sources)
                opened.sockets.append(sock)
            return
        loop = asyncio.get_running_loop()
        for sock, handler in ((rtp, recorder.on_rtp), (rtcp, recorder.on_rtcp)):
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(
                lambda h=handler: _Receiver(h, opened.gate), sock=sock
            )
            opened.transports.append(transport)

    async def update_stream(self, spec: StreamSpec) -> None:
        """Record the payload types a re-INVITE added to an open stream."""
        opened = self._streams.get(spec.key)
        if opened is not None:
            added = opened.recorder.accept(NegotiatedStream.from_dict(spec.negotiated))
            if added:
                log.info(
                    "stream_formats_added",
                    session_id=spec.session_id,
                    index=spec.index,
                    payload_types=added,
                )

    def _discard(
        self,
        spec: StreamSpec,
        opened: _Open | None,
        rtp: socket.socket,
        rtcp: socket.socket,
        created: list[Path],
    ) -> None:
        """Undo a failed (or overtaken) open: nothing of the stream stays open or created."""
        if opened is not None and self._streams.get(spec.key) is opened:
            del self._streams[spec.key]
        if opened is not None:
            for transport in opened.transports:
                transport.close()
            for sock in opened.sockets:
                if self._rx is not None:
                    self._rx.remove(sock.fileno())
            with contextlib.suppress(Exception):
                opened.recorder.close(time.time())
        rtp.close()
        rtcp.close()
        for path in created:
            for name in (path, path.with_name(path.name + ".tmp")):
                with contextlib.suppress(OSError):
                    name.unlink()

    async def set_sources(self, session_id: str, index: int, sources: list[str] | None) -> None:
        """Change the addresses a stream takes packets from."""
        opened = self._streams.get((session_id, index))
        if opened is None:
            return
        opened.gate.allowed = allowed_addresses(sources)
        if self._rx is not None:
            for sock in opened.sockets:
                self._rx.set_sources(sock.fileno(), sources)

    async def pause(self, session_id: str, index: int, at: float) -> None:
        """Pause one stream."""
        opened = self._streams.get((session_id, index))
        if opened is not None:
            opened.recorder.pause(at)

    async def resume(self, session_id: str, index: int, at: float) -> None:
        """Resume one stream."""
        opened = self._streams.get((session_id, index))
        if opened is not None:
            opened.recorder.resume(at)

    async def close_call(self, session_id: str, at: float) -> dict[int, dict[str, Any]]:
        """Stop receiving and close the files of every stream of ``session_id``."""
        out: dict[int, dict[str, Any]] = {}
        for key in [k for k in self._streams if k[0] == session_id]:
            opened = self._streams.pop(key)
            self._count_foreign(opened)
            for transport in opened.transports:
                transport.close()
            for sock in opened.sockets:
                self._rx.remove(sock.fileno())
                sock.close()
            opened.recorder.close(at)
            _report_write_errors(opened)
            out[key[1]] = _stats_dict(opened.recorder)
        return out

    async def stats(self, session_id: str) -> dict[int, dict[str, Any]]:
        """Live statistics of a call's streams."""
        out = {}
        for key, opened in self._streams.items():
            if key[0] == session_id:
                self._count_foreign(opened)
                out[key[1]] = _stats_dict(opened.recorder)
        return out

    async def activity(self) -> dict[str, dict[int, int]]:
        """Every open stream's datagram counter (see :meth:`MediaEngine.activity`)."""
        out: dict[str, dict[int, int]] = {}
        for (session_id, index), opened in self._streams.items():
            out.setdefault(session_id, {})[index] = opened.recorder.received
        return out

    @property
    def open_streams(self) -> int:
        """How many streams are being recorded."""
        return len(self._streams)

    def begin_stop(self) -> None:
        """Nothing to prepare: this engine restarts nothing."""

    async def stop(self) -> None:
        """Close every stream cleanly and stop ticking."""
        now = time.time()
        for session_id in {k[0] for k in self._streams}:
            await self.close_call(session_id, now)
        for task in (self._ticker, self._lag_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._lag_task = None
        if self._rx is not None:
            asyncio.get_running_loop().remove_reader(self._rx.fileno())
            self._rx.close()
            self._rx = None

    def receiver_stats(self) -> dict[str, Any] | None:
        """The C receiver's counters (datagrams, taken by the fast path, handed to Python)."""
        return None if self._rx is None else dict(self._rx.stats())


def _report_write_errors(opened: _Open) -> None:
    """Log once per stream when its writes start failing (disk full): never once per packet.
    The counts go into its JSON, its close statistics and the recording's verdict."""
    if opened.write_errors:
        return
    count, _, error = opened.recorder.write_errors()
    if count:
        opened.write_errors = count
        log.error(
            "stream_write_failed",
            session_id=opened.spec.session_id,
            index=opened.spec.index,
            error=error,
            parts=opened.spec.parts_dir,
        )


def _stats_dict(recorder: StreamRecorder) -> dict[str, Any]:
    stats = recorder.stats()
    if hasattr(stats, "__dataclass_fields__"):
        return asdict(stats)
    return dict(stats)


# ----------------------------------------------------------------------------------- workers


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
    ) -> None:
        if workers < 1:
            raise ValueError("WorkerEngine needs at least one worker")
        fastpath.module(receive_path)  # refuse "c" here rather than in every worker
        self.receive_path = receive_path
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
                worker, {"op": "open", "spec": asdict(spec)}, [rtp.fileno(), rtcp.fileno()]
            )
        finally:
            rtp.close()
            rtcp.close()

    async def update_stream(self, spec: StreamSpec) -> None:
        """Tell the call's worker about the payload types a re-INVITE added."""
        await self._request(
            self.worker_for(spec.session_id), {"op": "update", "spec": asdict(spec)}
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
        of :meth:`LocalEngine.loop_lag`); ``reset`` starts a new window in each."""
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
                worker.proc.kill()
            if worker.alive:
                worker.alive = False
                if worker.channel is not None:
                    worker.channel.close()
                worker.sock.close()
