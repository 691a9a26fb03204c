"""The control channel between the SIP process and a media worker: one end of a socket pair.

Messages are JSON objects, one per SOCK_SEQPACKET datagram; the RTP/RTCP sockets of an ``open``
ride along as SCM_RIGHTS. Both ends send through an unbounded queue, in order: a full socket
buffer (``EAGAIN``: the peer's receive queue holds ``net.unix.max_dgram_qlen`` messages, or too
many descriptors are in flight) only makes the queue wait for the socket to become writable, so
a burst of thousands of requests is neither lost nor reordered. The channel is closed only by
the peer going away (end of file, ``EPIPE``, ``ECONNRESET``), which is how a dead worker shows.
A message too large for the socket fails alone (``EMSGSIZE``) and the channel goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

CONTROL_MAX = 1 << 20
"""Largest control message read (bytes); replies are bounded far below by the streams a call
may have (``media.max_streams_per_call``)."""
RETRY_DELAY = 0.005
"""How long a sender waits before trying again when the kernel refuses without a way to be
told when to retry (``ETOOMANYREFS``: descriptors in flight over the limit; ``ENOBUFS``)."""
_WAIT = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
_RETRY_LATER = (errno.ETOOMANYREFS, errno.ENOBUFS, errno.ENOMEM)

Done = Callable[[BaseException | None], None]
"""Told whether a queued message went out (None) or why it could not (it alone failed)."""


class MessageTooLarge(Exception):
    """A control message the socket cannot carry (``EMSGSIZE``); the channel goes on."""


class ControlChannel:
    """Sends and receives control messages on ``sock`` (non-blocking, owned from now on).

    ``on_message(message, fds, truncated)`` is called for each message received, in order;
    ``fds`` are the descriptors that came with it (the callee owns them), ``truncated`` says
    that some could not be received (the receiver is out of descriptors: the kernel closed
    them). ``on_closed()`` is called once, when the peer has gone.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[dict[str, Any], list[int], bool], None],
        on_closed: Callable[[], None],
        *,
        max_fds: int = 2,
    ) -> None:
        self.sock = sock
        self.on_message = on_message
        self.on_closed = on_closed
        self.max_fds = max_fds
        self.closed = False
        self.sent = 0
        self.received = 0
        self.waits = 0
        """How many times a send found the socket full and waited (back-pressure)."""
        self._queue: deque[tuple[bytes, Sequence[int], Done | None]] = deque()
        self._writing = False
        self._retry: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def queued(self) -> int:
        """Messages waiting for room in the socket."""
        return len(self._queue)

    def send(
        self, message: dict[str, Any], fds: Sequence[int] = (), done: Done | None = None
    ) -> object:
        """Queue ``message`` (with ``fds``, which must stay open until ``done`` is told or the
        message is withdrawn); returns a handle for :meth:`withdraw`."""
        if self.closed:
            raise ConnectionResetError("control channel closed")
        entry = (json.dumps(message, default=str).encode(), list(fds), done)
        self._queue.append(entry)
        if len(self._queue) == 1 and not self._writing and self._retry is None:
            self._flush()
        return entry

    def withdraw(self, handle: object) -> bool:
        """Take a message that has not gone out yet off the queue (its sender gave up and
        will close its descriptors); False when it was sent already."""
        try:
            self._queue.remove(handle)  # type: ignore[arg-type]
        except ValueError:
            return False
        return True

    def _flush(self) -> None:
        self._retry = None
        queue = self._queue
        while queue and not self.closed:
            payload, fds, done = queue[0]
            try:
                if fds:
                    socket.send_fds(self.sock, [payload], fds)
                else:
                    self.sock.send(payload)
            except OSError as exc:
                if exc.errno in _WAIT:
                    self.waits += 1
                    self._want_write(True)
                    return
                if exc.errno in _RETRY_LATER:
                    self.waits += 1
                    self._want_write(False)
                    self._retry = self._loop.call_later(RETRY_DELAY, self._flush)
                    return
                if exc.errno == errno.EMSGSIZE:
                    queue.popleft()
                    if done is not None:
                        done(MessageTooLarge(f"control message of {len(payload)} bytes"))
                    continue
                self._lost()  # EPIPE, ECONNRESET, ...: the peer is gone
                return
            queue.popleft()
            self.sent += 1
            if done is not None:
                done(None)
        self._want_write(False)

    def _want_write(self, wanted: bool) -> None:
        if wanted and not self._writing:
            self._loop.add_writer(self.sock.fileno(), self._flush)
            self._writing = True
        elif not wanted and self._writing:
            self._loop.remove_writer(self.sock.fileno())
            self._writing = False

    def _on_readable(self) -> None:
        while not self.closed:
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, CONTROL_MAX, self.max_fds)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds, flags = b"", [], 0
            if not data:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._lost()
                return
            self.received += 1
            truncated = bool(flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC))
            try:
                message = json.loads(data)
            except ValueError:
                message = {"op": "?", "error": "unreadable control message"}
                truncated = True
            self.on_message(message, list(fds), truncated)

    def _lost(self, notify: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self._want_write(False)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        failed = list(self._queue)
        self._queue.clear()
        for _, _, done in failed:
            if done is not None:
                done(ConnectionResetError("control channel closed"))
        if notify:
            self.on_closed()

    def close(self) -> None:
        """Stop using the socket (queued messages are dropped, their senders told) and close it;
        ``on_closed`` is not called."""
        self._lost(notify=False)
        self.sock.close()
