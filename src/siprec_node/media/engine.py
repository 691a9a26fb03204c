"""Where RTP is received and recorded: in this process, or in media worker processes.

The SIP process binds every RTP/RTCP socket itself (so the SDP answer never names a port that
could not be bound) and hands the sockets to an engine together with what the stream negotiated.
:class:`LocalEngine` records them on this event loop; :class:`WorkerEngine`
(``media/worker_engine.py``, also importable from here) passes the sockets (SCM_RIGHTS) to
worker processes, each owning the calls given to it, so that signalling latency never depends
on media load and a worker crash loses only that worker's streams (it is restarted and its
streams re-opened, continuing the same files).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from siprec_node.media import fastpath
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
LAG_INTERVAL = 0.01
"""How often the event-loop lag probe sleeps (seconds); it records how late it wakes."""
_LAG_BUCKET = 0.0001  # lag histogram: 0.1 ms buckets up to 1 s (the maximum is kept exactly)
_LAG_BUCKETS = 10_000


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


WAITING_ROUNDS = 8
"""Reads of a closing stream's waiting datagrams at most (see ``LocalEngine._take_waiting``)."""


def _waiting(sock: socket.socket) -> bool:
    """Whether a datagram waits on ``sock`` (a peek, nothing taken)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing waiting
        return False
    return True


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, float], None], gate: _Gate) -> None:
        self.on_datagram = on_datagram
        self.gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):
            transport.max_size = RECV_SIZE

    def datagram_received(self, data: bytes, addr: Any) -> None:
        allowed = self.gate.allowed
        if allowed is not None and addr[0] not in allowed:
            self.gate.foreign += 1
            return
        self.on_datagram(data, time.time())


class LoopLag:
    """How late a sleeper of ``interval`` seconds wakes on this loop: p50/p99/max since start
    (or the last reset), from a fixed histogram so that memory stays constant."""

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        """Forget the samples so far."""
        self._counts = [0] * _LAG_BUCKETS
        self.samples = 0
        self.max = 0.0
        self.since = time.time()

    def record(self, lag: float) -> None:
        """One wake-up ``lag`` seconds after its deadline."""
        lag = max(lag, 0.0)
        self._counts[min(int(lag / _LAG_BUCKET), _LAG_BUCKETS - 1)] += 1
        self.samples += 1
        self.max = max(self.max, lag)

    def percentile(self, q: float) -> float:
        """Upper edge of the bucket holding the ``q`` quantile (seconds; 0 with no sample)."""
        if not self.samples:
            return 0.0
        rank = max(1, round(q * self.samples))
        seen = 0
        for bucket, count in enumerate(self._counts[:-1]):
            seen += count
            if seen >= rank:
                return min((bucket + 1) * _LAG_BUCKET, self.max)
        return self.max  # in the overflow bucket: the largest sample is the best bound known

    def summary(self) -> dict[str, Any]:
        """JSON-safe figures in milliseconds."""
        return {
            "samples": self.samples,
            "interval_ms": self.interval * 1000.0,
            "p50_ms": round(self.percentile(0.5) * 1000.0, 3),
            "p99_ms": round(self.percentile(0.99) * 1000.0, 3),
            "max_ms": round(self.max * 1000.0, 3),
            "since": self.since,
        }

    async def run(self) -> None:
        """Sleep ``interval`` over and over, recording each wake-up's lateness."""
        clock = time.monotonic
        while True:
            start = clock()
            await asyncio.sleep(self.interval)
            self.record(clock() - start - self.interval)


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

    ``receive_interval`` (``media.receive_interval``, C path only): after reading, wait this
    long (seconds) before watching the sockets again, so that each read finds a packet waiting
    on most of them instead of waking for every few (0: read as soon as one is readable).
    Arrival times are the kernel's, so timing and jitter do not change.
    """

    def __init__(self, receive_path: str = "auto", receive_interval: float = 0.0) -> None:
        if receive_interval < 0:
            raise ValueError("receive_interval must not be negative")
        self._fast = fastpath.module(receive_path)
        self._interval = receive_interval
        self._rx: Any = None  # the _rtprecv.Receiver, from start() on
        self._watch_again: asyncio.TimerHandle | None = None
        self._streams: dict[tuple[str, int], _Open] = {}
        self._calls: dict[str, dict[int, _Open]] = {}
        """The same streams by session id: a call's requests touch only its own streams."""
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
            loop.add_reader(self._rx.fileno(), self._on_readable)
        if self._ticker is None:
            self._ticker = loop.create_task(self._tick_forever())
        if self._lag_task is None:
            self._lag.reset()
            self._lag_task = loop.create_task(self._lag.run())

    def _on_readable(self) -> None:
        if self._interval <= 0:
            self._drain()
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._rx.fileno())
        try:
            self._drain()
        finally:  # a failed read must not stop the receiving
            self._watch_again = loop.call_later(self._interval, self._paced)

    def _paced(self) -> None:
        """Read on a timer while packets keep coming; watch the sockets again once a read
        finds none. (Adding and removing the receiver's epoll descriptor from the loop's costs
        the kernel a walk over every socket in it: not something to do each interval.)"""
        self._watch_again = None
        if self._rx is None:
            return
        before = self._rx.datagrams
        try:
            self._drain()
        finally:
            self._pace_next(before)

    def _pace_next(self, before: int) -> None:
        if self._rx is None:
            return
        loop = asyncio.get_running_loop()
        if self._rx.datagrams != before:
            self._watch_again = loop.call_later(self._interval, self._paced)
        else:
            loop.add_reader(self._rx.fileno(), self._on_readable)

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
        negotiated = NegotiatedStream.from_dict(spec.negotiated)
        created: list[Path] = []  # the files the recorder creates: removed if opening fails
        # another stream of the call open here knows the call's folder: no need to look
        sibling = next(iter(self._calls.get(spec.session_id, {}).values()), None)
        made = None
        if sibling is not None and sibling.spec.parts_dir == spec.parts_dir:
            made = sibling.recorder.parts_dir_made
        opened: _Open | None = None
        try:
            recorder = StreamRecorder(
                negotiated,
                spec.parts_dir,
                spec.epoch,
                fast=self._fast if self._rx is not None else None,
                parts_dir_made=made,
                created=created,
            )
            opened = _Open(spec, recorder, _Gate(spec.sources))
            self._add(opened)
            await self._receive(opened, rtp, rtcp)
        except BaseException:
            self._discard(spec, opened, rtp, rtcp, created)
            raise
        if self._streams.get(spec.key) is not opened:
            # the call was closed while its endpoints were being created: nothing may stay open
            self._discard(spec, opened, rtp, rtcp, [])

    def _add(self, opened: _Open) -> None:
        spec = opened.spec
        self._streams[spec.key] = opened
        self._calls.setdefault(spec.session_id, {})[spec.index] = opened

    def _remove(self, opened: _Open) -> None:
        spec = opened.spec
        del self._streams[spec.key]
        call = self._calls[spec.session_id]
        del call[spec.index]
        if not call:
            del self._calls[spec.session_id]

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
                functools.partial(_Receiver, handler, opened.gate), sock=sock
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
            self._remove(opened)
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
            self._take_waiting(opened)
            opened.recorder.pause(at)

    async def resume(self, session_id: str, index: int, at: float) -> None:
        """Resume one stream."""
        opened = self._streams.get((session_id, index))
        if opened is not None:
            self._take_waiting(opened)  # what came while paused stays out
            opened.recorder.resume(at)

    async def close_call(self, session_id: str, at: float) -> dict[int, dict[str, Any]]:
        """Stop receiving and close the files of every stream of ``session_id``."""
        out: dict[int, dict[str, Any]] = {}
        streams = list(self._calls.get(session_id, {}).items())
        for _, opened in streams:
            self._take_waiting(opened)
        for index, opened in streams:
            self._remove(opened)
            self._count_foreign(opened)
            for transport in opened.transports:
                transport.close()
            for sock in opened.sockets:
                self._rx.remove(sock.fileno())
                sock.close()
            opened.recorder.close(at)
            _report_write_errors(opened)
            out[index] = _stats_dict(opened.recorder)
        return out

    def _take_waiting(self, opened: _Open) -> None:
        """Record the datagrams waiting on a closing stream's sockets: they came before the
        close (the SRC's last audio before its BYE) but a busy worker had not read them yet,
        and closing the sockets would drop them."""
        if self._rx is not None:
            for _ in range(WAITING_ROUNDS):  # each drain reads up to 128 per ready socket
                if not any(_waiting(sock) for sock in opened.sockets):
                    return
                self._drain()
            return
        for transport in opened.transports:
            wrapped = transport.get_extra_info("socket")
            protocol = transport.get_protocol()
            if wrapped is None or not isinstance(protocol, _Receiver):
                continue
            # asyncio lends a wrapper without recvfrom: read through a duplicate descriptor
            with socket.fromfd(wrapped.fileno(), wrapped.family, wrapped.type) as sock:
                for _ in range(WAITING_ROUNDS * 128):
                    try:
                        data, addr = sock.recvfrom(RECV_SIZE, socket.MSG_DONTWAIT)
                    except OSError:  # BlockingIOError: nothing (more) waiting
                        break
                    protocol.datagram_received(data, addr)

    async def stats(self, session_id: str) -> dict[int, dict[str, Any]]:
        """Live statistics of a call's streams."""
        out = {}
        for index, opened in self._calls.get(session_id, {}).items():
            self._count_foreign(opened)
            out[index] = _stats_dict(opened.recorder)
        return out

    async def activity(self) -> dict[str, dict[int, int]]:
        """Every open stream's datagram counter (see :meth:`MediaEngine.activity`)."""
        return {
            session_id: {index: opened.recorder.received for index, opened in call.items()}
            for session_id, call in self._calls.items()
        }

    @property
    def open_streams(self) -> int:
        """How many streams are being recorded."""
        return len(self._streams)

    def begin_stop(self) -> None:
        """Nothing to prepare: this engine restarts nothing."""

    async def stop(self) -> None:
        """Close every stream cleanly and stop ticking."""
        now = time.time()
        for session_id in list(self._calls):
            await self.close_call(session_id, now)
        for task in (self._ticker, self._lag_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._lag_task = None
        if self._watch_again is not None:
            self._watch_again.cancel()
            self._watch_again = None
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
    return recorder.stats().to_dict()
