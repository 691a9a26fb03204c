"""A media worker process: records the streams the SIP process hands it over a control socket.

Started by :class:`~siprec_node.media.worker_engine.WorkerEngine` as
``python -m siprec_node.media.worker --fd N``. Requests are JSON datagrams on a SOCK_SEQPACKET
socket (:mod:`~siprec_node.media.control`; the RTP/RTCP sockets of an ``open`` ride along as
SCM_RIGHTS), handled one at a time in the order sent, except that a request may overtake
other calls' ``close`` requests (:func:`next_request`); each gets a JSON reply with the same
``id``. The worker exits when the control socket closes (its parent is gone) or on ``stop``,
closing every file cleanly first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import socket
import time
from signal import SIG_IGN, SIGHUP, SIGINT, SIGTERM, signal
from typing import Any

import structlog

from siprec_node import event_loop
from siprec_node.gc_watch import GcWatch, freeze_startup
from siprec_node.log import configure_logging
from siprec_node.media.control import ControlChannel, MessageTooLarge
from siprec_node.media.engine import LocalEngine, StreamSpec

log = structlog.get_logger("siprec_node.media.worker")


_Request = tuple[dict[str, Any], list[int], bool, float]
"""A request as queued: message, descriptors, whether some were lost, when it arrived."""

JUMP_SCAN = 256
"""How far into the queue a request is looked for past waiting ``close`` requests."""

CLOSE_PATIENCE = 1.0
"""Seconds a ``close`` lets other calls' requests go ahead of it (then it goes first: a
worker that falls behind for good still closes every call)."""


def _session_of(message: dict[str, Any]) -> str | None:
    spec = message.get("spec")
    if isinstance(spec, dict):
        return spec.get("session_id")
    return message.get("session_id")


def next_request(requests: collections.deque[_Request], now: float) -> _Request:
    """Take the next request to serve from a non-empty queue: the first one, unless ``close``
    requests come first, the oldest of them younger than ``CLOSE_PATIENCE``, in which case the
    first request after them that is not of one of their calls (nor ``stop``) goes ahead.

    The SRC's answer to an INVITE waits for its streams' ``open``; a ``close`` has seconds to
    spare (its call is over; its statistics go into a recording finalised later). Under a
    burst of call endings, opens queued behind hundreds of closes made INVITE→200 take seconds.
    Requests of one call never overtake each other, and ``stop`` overtakes nothing.
    """
    head = requests[0]
    if head[0].get("op") == "close" and now - head[3] < CLOSE_PATIENCE:
        closing: set[str | None] = set()
        for i, request in enumerate(itertools.islice(requests, JUMP_SCAN)):
            op = request[0].get("op")
            session = _session_of(request[0])
            if op != "close":
                if op != "stop" and session not in closing:
                    del requests[i]
                    return request
                break
            closing.add(session)
    return requests.popleft()


class _Control:
    """Serves requests one at a time (in :func:`next_request`'s order), replying through the
    channel's queue."""

    def __init__(
        self, sock: socket.socket, engine: LocalEngine, gc_watch: GcWatch | None = None
    ) -> None:
        self.engine = engine
        self.gc_watch = gc_watch
        self.done = asyncio.Event()
        self.requests: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self.channel = ControlChannel(sock, self._received, self.done.set, max_fds=2)

    def _received(self, message: dict[str, Any], fds: list[int], truncated: bool) -> None:
        self.requests.append((message, fds, truncated, time.monotonic()))
        self._arrived.set()

    async def serve(self) -> None:
        """Handle requests until ``stop`` or the end of the channel."""
        while not self.done.is_set():
            if not self.requests:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            message, fds, truncated, _ = next_request(self.requests, time.monotonic())
            reply = await self.handle(message, fds, truncated)
            self._reply(reply)
            if message.get("op") == "stop":
                self.done.set()

    def _reply(self, reply: dict[str, Any]) -> None:
        def sent(error: BaseException | None) -> None:
            if isinstance(error, MessageTooLarge):  # that reply alone fails, the caller hears why
                log.error("media_reply_too_large", op=reply.get("op"), error=str(error))
                with contextlib.suppress(ConnectionResetError):
                    self.channel.send({"id": reply.get("id"), "ok": False, "error": str(error)})

        with contextlib.suppress(ConnectionResetError):  # the SIP process is gone: done is set
            self.channel.send(reply, (), sent)

    async def handle(
        self, message: dict[str, Any], fds: list[int], truncated: bool
    ) -> dict[str, Any]:
        """Run one request; its reply (``ok`` false with the error when it failed)."""
        reply: dict[str, Any] = {"id": message.get("id"), "ok": True}
        op = message.get("op")
        try:
            if truncated:
                raise OSError("request lost its descriptors (this worker has run out of them?)")
            if op == "open":
                spec = StreamSpec(**message["spec"])
                if len(fds) != 2:
                    raise ValueError(f"open needs 2 descriptors, got {len(fds)}")
                rtp = socket.socket(fileno=fds.pop(0))
                rtcp = socket.socket(fileno=fds.pop(0))
                await self.engine.open_stream(spec, rtp, rtcp)
            elif op == "update":
                await self.engine.update_stream(StreamSpec(**message["spec"]))
            elif op == "sources":
                await self.engine.set_sources(
                    message["session_id"], message["index"], message["sources"]
                )
            elif op == "pause":
                await self.engine.pause(message["session_id"], message["index"], message["at"])
            elif op == "resume":
                await self.engine.resume(message["session_id"], message["index"], message["at"])
            elif op == "close":
                reply["stats"] = await self.engine.close_call(message["session_id"], message["at"])
            elif op == "stats":
                reply["stats"] = await self.engine.stats(message["session_id"])
            elif op == "activity":
                reply["activity"] = await self.engine.activity()
            elif op == "lag":
                reply["lag"] = await self.engine.loop_lag(bool(message.get("reset")))
                reply["receiver"] = self.engine.receiver_stats()
                if self.gc_watch is not None:
                    reply["gc"] = self.gc_watch.summary()
            elif op == "stop":
                await self.engine.stop()
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:
            log.exception("media_request_failed", op=op)
            reply = {"id": message.get("id"), "ok": False, "error": repr(exc)}
        finally:
            for fd in fds:  # descriptors no request took
                with contextlib.suppress(OSError):
                    os.close(fd)
        return reply


async def serve(
    fd: int, index: int, receive_path: str = "auto", receive_interval: float = 0.0
) -> None:
    """Serve the control socket ``fd`` until it closes or a ``stop`` arrives."""
    sock = socket.socket(fileno=fd)
    engine = LocalEngine(receive_path, receive_interval)
    await engine.start()
    # the streams' objects are aged out of the collector's reach as the SIP process's are
    gc_watch = GcWatch(
        hint="a full collection walks every open stream's objects: RTP reads "
        "and stream opens wait meanwhile"
    )
    gc_watch.frozen = freeze_startup()
    gc_watch.install()
    gc_watch.start_reporting()
    control = _Control(sock, engine, gc_watch)
    control.channel.send({"ready": True})
    log.info("media_worker_ready", worker=index, receive_path=engine.receive_path)
    server = asyncio.get_running_loop().create_task(control.serve())
    await control.done.wait()
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server
    # the last replies (to ``stop``) go out before the socket closes
    for _ in range(200):
        if not control.channel.queued or control.channel.closed:
            break
        await asyncio.sleep(0.01)
    control.channel.close()
    await engine.stop()
    gc_watch.uninstall()
    gc_watch.report()
    log.info("media_worker_stopped", worker=index)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(prog="siprec-node media worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--receive-path", default="auto", choices=("auto", "c", "python"))
    parser.add_argument("--receive-interval", type=float, default=0.0, help="seconds")
    args = parser.parse_args(argv)
    # A terminal's Ctrl-C and systemd's control-group kill signal every process of the node at
    # once; the node's drain still needs this worker to close its calls' streams and report
    # their statistics. It leaves on the node's ``stop`` or when the control socket closes.
    for sig in (SIGINT, SIGTERM, SIGHUP):
        signal(sig, SIG_IGN)
    configure_logging(args.log_level, args.log_format)
    structlog.contextvars.bind_contextvars(worker=args.index)
    # without uvloop, stock asyncio: the engine lowers the datagram read size itself
    event_loop.run(serve(args.fd, args.index, args.receive_path, args.receive_interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
