"""asyncio SIP transports: UDP, TCP and TLS listeners that only move bytes.

Everything that understands SIP lives elsewhere: datagrams and framed stream messages are handed
to one callback together with an :class:`Address` saying where they came from, and
:meth:`SipTransports.send` delivers bytes to an :class:`Address` — over the stream connection a
request came on when it is still open (RFC 3261 §18.2.2), otherwise over a new one.

Stream connections are bounded (:class:`StreamLimits`): in total and per source address, in
the time a message may take to arrive once it has started (trickling a byte at a time does not
extend it) and in the time without a complete message. The accept loop is our own so that it
can close connections over a cap before reading a byte, and back off instead of spinning when
the process runs out of descriptors. Every limit hit is counted in :attr:`SipTransports.stats`
and logged at most once per source per ``log_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import resource
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.framing import FramedMessage, FramingError, KeepAlivePing, StreamFramer
from siprec_node.sip.rate_limit import LogThrottle
from siprec_node.sip.transaction import Address, Transport

log = structlog.get_logger("siprec_node.sip.transport")

MessageCallback = Callable[[bytes, Address], None]
_STREAM_TRANSPORTS: tuple[Transport, ...] = ("tcp", "tls")

STREAM_READ_SIZE = 65536
"""Bytes read from a stream connection at once (into one buffer shared by all connections)."""
UDP_READ_SIZE = 65536 + 1
"""Largest datagram read; one byte over the UDP maximum payload so nothing is cut silently."""
CONNECT_TIMEOUT = 5.0
ACCEPT_BATCH = 64
"""Connections accepted per wake-up of a listener before other work gets the loop."""
ACCEPT_BACKOFF_MIN = 0.05
ACCEPT_BACKOFF_MAX = 1.0
EVICT_MIN_IDLE = 30.0
"""A connection that carried a complete message this recently is never evicted."""
_NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
DEFAULT_UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
"""``sip.udp_receive_buffer``: SO_RCVBUF asked for on each UDP listener, so that a burst of
INVITEs (or the retransmissions of a node that fell behind) waits in the kernel instead of
being dropped."""
DROP_CHECK_INTERVAL = 5.0
"""Seconds between two reads of the UDP listeners' kernel drop counters."""
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
"""Linux's socket memory counters (``include/uapi/linux/sock_diag.h``), drops among them."""
_SK_MEMINFO_DROPS = 8
_MEMINFO_SIZE = 4 * (_SK_MEMINFO_DROPS + 1)


@dataclass(frozen=True)
class StreamLimits:
    """Bounds on TCP/TLS connections (``sip.tcp_*`` settings)."""

    max_connections: int = 1024
    """Open connections in total; never more than half the process's descriptor limit."""
    max_connections_per_source: int = 256
    """Open connections from one IP address."""
    message_timeout: float = 10.0
    """Seconds a message may take from its first byte to its last (also the TLS handshake)."""
    idle_timeout: float = 600.0
    """Seconds without a complete message or keep-alive before a connection is closed."""
    log_interval: float = 10.0
    """A limit hit by one source is logged at most once per this many seconds."""


LIMIT_NAMES = (
    "tcp_max_connections",
    "tcp_max_connections_per_source",
    "tcp_message_timeout",
    "tcp_idle_timeout",
    "tcp_write_backlog",
    "accept_no_descriptors",
)
"""Keys of :attr:`SipTransports.stats` counting limit hits (named after the setting)."""


def descriptor_limit() -> int:
    """The process's soft limit on open descriptors (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


@dataclass(frozen=True)
class BoundListener:
    """A listener as bound (port 0 resolved to the real port)."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def set_receive_buffer(sock: Any, size: int) -> int:
    """Ask for a ``size``-byte receive buffer on ``sock``; the size the kernel reports after.

    Linux caps SO_RCVBUF at ``net.core.rmem_max`` unless the process may use SO_RCVBUFFORCE
    (CAP_NET_ADMIN), which is tried when the cap applies; it reports twice the size it was asked
    for (the kernel's bookkeeping overhead is counted in).
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    effective = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if effective < size and force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            effective = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return effective


def udp_socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on ``sock`` (its receive queue was full): the socket's
    ``sk_drops``, which ``/proc/net/udp`` lists too, read with one ``getsockopt(SO_MEMINFO)``
    (reading ``/proc/net/udp`` makes the kernel list every UDP socket of the host: thousands
    with the media sockets of live calls). None where the option is missing (not Linux)."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO_SIZE)
    except OSError:
        return None
    if len(info) < _MEMINFO_SIZE:
        return None
    return int(struct.unpack_from("I", info, 4 * _SK_MEMINFO_DROPS)[0])


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # asyncio reads each datagram into a fresh 256 KiB buffer by default; SIP needs 64 KiB.
        if hasattr(transport, "max_size"):
            transport.max_size = UDP_READ_SIZE

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])
        self.owner.deliver(data, Address("udp", host, port, None))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send: nothing to do on a connectionless socket.
        log.debug("udp_error", error=str(exc))


class _StreamListener:
    """A listening TCP/TLS socket served by :meth:`SipTransports._accept`."""

    def __init__(
        self, sock: socket.socket, transport: Transport, ctx: ssl.SSLContext | None
    ) -> None:
        self.sock = sock
        self.transport = transport
        self.ctx = ctx
        self.backoff = ACCEPT_BACKOFF_MIN
        self.paused: asyncio.TimerHandle | None = None


class _StreamConnection(asyncio.BufferedProtocol):
    """One TCP/TLS connection: framing in, writes out, its deadlines."""

    def __init__(
        self, owner: SipTransports, conn_id: int, transport: Transport, peer: tuple[str, int]
    ) -> None:
        self.owner = owner
        self.id = conn_id
        self.transport = transport
        self.peer = peer
        self.framer: StreamFramer | None = StreamFramer(max_size=owner.max_message_size)
        self.stream: asyncio.Transport | None = None
        self.setup: asyncio.Task[None] | None = None  # accept or connect, until connection_made
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self.message_started: float | None = None
        self.proven = False  # a complete message arrived (or we opened it)
        self.inbound = True
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def address(self) -> Address:
        return Address(self.transport, self.peer[0], self.peer[1], self.id)

    # ---- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream = transport  # type: ignore[assignment]
        if self.closed:  # evicted while the TLS handshake ran
            transport.abort()  # type: ignore[attr-defined]
            return
        self._arm()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.owner._read_view

    def buffer_updated(self, nbytes: int) -> None:
        framer = self.framer
        if framer is None or self.closed:
            return
        items = framer.feed(self.owner._read_view[:nbytes])
        now = self.loop.time()
        completed = False
        for item in items:
            if isinstance(item, FramedMessage):
                completed = True
                self.owner.deliver(item.data, self.address)
            elif isinstance(item, KeepAlivePing):
                self.last_activity = now
                self.write(item.REPLY)  # RFC 5626 §3.5.1: CRLFCRLF ping, CRLF pong
            elif isinstance(item, FramingError):
                log.warning(
                    "stream_framing_error",
                    peer=f"{self.peer[0]}:{self.peer[1]}",
                    transport=self.transport,
                    error=item.error.reason,
                )
                self.owner.deliver_framing_error(item.data, item.error, self.address)
                self.close()
                return
            if self.closed:  # the handler's answer overflowed the write backlog
                return
        if completed:
            self.last_activity = now
            self.owner._touch(self)
        if framer.message_pending:
            if completed or self.message_started is None:
                self.message_started = now
        else:
            self.message_started = None
        self._arm()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        log.debug(
            "stream_closed", peer=f"{self.peer[0]}:{self.peer[1]}", reason=str(exc or "closed")
        )
        self._release()

    # ---- deadlines

    def _deadline(self) -> float:
        deadline = self.last_activity + self.owner.limits.idle_timeout
        if self.message_started is not None:
            deadline = min(deadline, self.message_started + self.owner.limits.message_timeout)
        return deadline

    def _arm(self) -> None:
        """Make sure the timer fires no later than the nearest deadline (firing early is
        harmless: :meth:`_expire` re-arms), so activity costs nothing but a timestamp."""
        deadline = self._deadline()
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        limits = self.owner.limits
        started = self.message_started
        if started is not None and now >= started + limits.message_timeout:
            self.owner._limit_hit("tcp_message_timeout", self.peer[0], self.transport)
            self.abort()
        elif now >= self.last_activity + limits.idle_timeout:
            self.owner._limit_hit("tcp_idle_timeout", self.peer[0], self.transport)
            self.abort()
        else:
            self._arm()

    # ---- output and closing

    def write(self, data: bytes) -> None:
        stream = self.stream
        if stream is None or self.closed or stream.is_closing():
            return
        stream.write(data)
        if stream.get_write_buffer_size() > self.owner.max_write_backlog:
            # The peer does not read its responses: stop queueing them in memory.
            self.owner._limit_hit("tcp_write_backlog", self.peer[0], self.transport)
            self.abort()

    def close(self) -> None:
        """Close after flushing what was written (a framing error's response)."""
        if self.stream is not None:
            self.stream.close()
        self._release()

    def abort(self) -> None:
        """Close at once, discarding unsent data."""
        if self.stream is not None:
            self.stream.abort()
        elif self.setup is not None:
            self.setup.cancel()
        self._release()

    def _release(self) -> None:
        """Drop everything this connection holds; idempotent."""
        if not self.closed:
            self.closed = True
            self.owner.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.framer = None  # its buffer (up to sip.max_message_size) goes now


class SipTransports:
    """All SIP listeners of a node, delivering inbound bytes to one callback."""

    def __init__(
        self,
        on_message: MessageCallback,
        *,
        max_message_size: int = 65535,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        on_framing_error: Callable[[bytes, SipParseError, Address], None] | None = None,
        limits: StreamLimits | None = None,
        udp_receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER,
        drop_check_interval: float = DROP_CHECK_INTERVAL,
    ) -> None:
        self._on_message = on_message
        self.udp_receive_buffer = udp_receive_buffer
        self.drop_check_interval = drop_check_interval
        self._udp_sockets: list[socket.socket] = []
        self.udp_datagrams_dropped = 0
        """Datagrams the kernel dropped on the UDP listeners (receive queue full), as of the
        last :meth:`check_udp_drops`."""
        self._drop_task: asyncio.Task[None] | None = None
        self._on_framing_error = on_framing_error
        self.max_message_size = max_message_size
        self.max_write_backlog = max(1 << 20, 4 * max_message_size)
        self.limits = limits or StreamLimits()
        self._tls_server = tls_server
        self._tls_client = tls_client
        self._udp: list[tuple[BoundListener, _UdpProtocol]] = []
        self._listeners: list[_StreamListener] = []
        self._conns: dict[int, _StreamConnection] = {}
        self._by_peer: dict[tuple[str, str, int], _StreamConnection] = {}
        # Eviction order: connections that never completed a message, oldest first; then the
        # others, least recently active first.
        self._unproven: OrderedDict[int, _StreamConnection] = OrderedDict()
        self._proven: OrderedDict[int, _StreamConnection] = OrderedDict()
        self._per_source: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._read_buffer = bytearray(STREAM_READ_SIZE)
        self._read_view = memoryview(self._read_buffer)
        self._throttle = LogThrottle(self.limits.log_interval)
        self.stats: dict[str, int] = {name: 0 for name in LIMIT_NAMES}
        self.stats["tcp_evicted"] = 0
        self.listeners: list[BoundListener] = []

    async def listen(self, transport: str, host: str, port: int) -> BoundListener:
        """Bind one listener; returns it with the real port when ``port`` was 0."""
        loop = asyncio.get_running_loop()
        transport = transport.lower()
        if transport == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            udp_transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port), family=family
            )
            sockname = udp_transport.get_extra_info("sockname")
            bound = BoundListener("udp", host, int(sockname[1]))
            self._udp.append((bound, protocol))
            self._tune_udp(udp_transport.get_extra_info("socket"), bound)
        elif transport in _STREAM_TRANSPORTS:
            ctx = self._tls_server if transport == "tls" else None
            if transport == "tls" and ctx is None:
                raise ValueError("a tls listener needs sip.tls.cert_file and sip.tls.key_file")
            sock = await _listening_socket(host, port)
            listener = _StreamListener(sock, transport, ctx)
            self._listeners.append(listener)
            loop.add_reader(sock.fileno(), self._accept, listener)
            bound = BoundListener(transport, host, int(sock.getsockname()[1]))
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self.listeners.append(bound)
        log.info("sip_listening", listener=str(bound))
        return bound

    # ---- UDP receive queue

    def _tune_udp(self, sock: Any, bound: BoundListener) -> None:
        """Enlarge a UDP listener's receive buffer and watch its kernel drop counter."""
        effective = set_receive_buffer(sock, self.udp_receive_buffer)
        fields: dict[str, Any] = {
            "listener": str(bound),
            "requested_bytes": self.udp_receive_buffer,
            "effective_bytes": effective,  # as Linux reports it: twice what it grants
        }
        if effective < self.udp_receive_buffer:
            log.warning(
                "sip_udp_receive_buffer_capped",
                hint="raise net.core.rmem_max (sysctl) to at least sip.udp_receive_buffer",
                **fields,
            )
        else:
            log.info("sip_udp_receive_buffer", **fields)
        self._udp_sockets.append(sock)
        if self._drop_task is None and self.drop_check_interval > 0:
            self._drop_task = self._spawn(self._watch_drops())

    def check_udp_drops(self) -> int:
        """Read the UDP listeners' kernel drop counters; their total (also kept in
        :attr:`udp_datagrams_dropped`)."""
        total = 0
        for sock in self._udp_sockets:
            if sock.fileno() >= 0:
                total += udp_socket_drops(sock) or 0
        # a listener closed since takes its counter with it: the total never goes back
        self.udp_datagrams_dropped = max(self.udp_datagrams_dropped, total)
        return self.udp_datagrams_dropped

    async def _watch_drops(self) -> None:
        """Log a warning for every interval in which the kernel dropped SIP datagrams."""
        while True:
            await asyncio.sleep(self.drop_check_interval)
            before = self.udp_datagrams_dropped
            total = self.check_udp_drops()
            if total > before:
                log.warning(
                    "sip_datagrams_dropped",
                    dropped=total - before,
                    total=total,
                    interval_s=self.drop_check_interval,
                    receive_buffer_bytes=self.udp_receive_buffer,
                )

    # ---- accepting

    @property
    def effective_max_connections(self) -> int:
        """``max_connections``, lowered to half the descriptor limit: RTP sockets, the store
        and the workers need descriptors too, and a call must not fail for want of one."""
        return max(1, min(self.limits.max_connections, descriptor_limit() // 2))

    def _accept(self, listener: _StreamListener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _NO_DESCRIPTORS:
                    self._pause_accepting(listener, exc)
                else:
                    log.warning("accept_failed", error=str(exc))
                return
            listener.backoff = ACCEPT_BACKOFF_MIN
            self._admit(listener, sock, addr)

    def _pause_accepting(self, listener: _StreamListener, exc: OSError) -> None:
        """Out of descriptors: stop polling the listener for a while (Linux keeps reporting it
        readable, and retrying at once would spin), count it, log it once per interval."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.sock.fileno())
        delay = listener.backoff
        listener.backoff = min(ACCEPT_BACKOFF_MAX, listener.backoff * 2)
        self._limit_hit(
            "accept_no_descriptors",
            "*",
            listener.transport,
            error=str(exc),
            descriptor_limit=descriptor_limit(),
            connections=len(self._conns),
            retry_s=delay,
        )
        listener.paused = loop.call_later(delay, self._resume_accepting, listener)

    def _resume_accepting(self, listener: _StreamListener) -> None:
        listener.paused = None
        if listener in self._listeners:
            loop = asyncio.get_running_loop()
            loop.add_reader(listener.sock.fileno(), self._accept, listener)
            self._accept(listener)

    def _admit(self, listener: _StreamListener, sock: socket.socket, addr: tuple[str, int]) -> None:
        """Take a new connection, or close it at once (before reading) when over a cap."""
        host, port = str(addr[0]), int(addr[1])
        if self._per_source.get(host, 0) >= self.limits.max_connections_per_source:
            sock.close()
            self._limit_hit(
                "tcp_max_connections_per_source",
                host,
                listener.transport,
                cap=self.limits.max_connections_per_source,
            )
            return
        cap = self.effective_max_connections
        if len(self._conns) >= cap:
            victim = self._evictable()
            if victim is None:
                sock.close()
                self._limit_hit("tcp_max_connections", host, listener.transport, cap=cap)
                return
            self.stats["tcp_evicted"] += 1
            self._limit_hit(
                "tcp_max_connections",
                victim.peer[0],
                victim.transport,
                cap=cap,
                evicted=f"{victim.peer[0]}:{victim.peer[1]}",
            )
            victim.abort()
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            return
        conn = _StreamConnection(self, next(self._ids), listener.transport, (host, port))
        self._register(conn, inbound=True)
        conn.setup = self._spawn(self._serve_accepted(conn, sock, listener.ctx))

    def _evictable(self) -> _StreamConnection | None:
        """The connection to close for a newcomer when the total cap is reached, if any."""
        if self._unproven:
            return next(iter(self._unproven.values()))
        if self._proven:
            conn = next(iter(self._proven.values()))
            if conn.loop.time() - conn.last_activity >= EVICT_MIN_IDLE:
                return conn
        return None

    async def _serve_accepted(
        self, conn: _StreamConnection, sock: socket.socket, ctx: ssl.SSLContext | None
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = self.limits.message_timeout
        try:
            # The TLS handshake is held to the message deadline (asyncio's own is 60 s).
            await asyncio.wait_for(
                loop.connect_accepted_socket(
                    lambda: conn,
                    sock,
                    ssl=ctx,
                    ssl_handshake_timeout=deadline + 1.0 if ctx is not None else None,
                ),
                deadline,
            )
        except TimeoutError:
            self._limit_hit("tcp_message_timeout", conn.peer[0], conn.transport, during="handshake")
            conn.abort()
            with contextlib.suppress(OSError):
                sock.close()
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.debug("stream_setup_failed", peer=f"{conn.peer[0]}:{conn.peer[1]}", error=str(exc))
            conn.abort()
            with contextlib.suppress(OSError):
                sock.close()
        except asyncio.CancelledError:  # evicted or shut down during the TLS handshake
            with contextlib.suppress(OSError):
                sock.close()
        finally:
            conn.setup = None

    # ---- bookkeeping

    def _register(self, conn: _StreamConnection, *, inbound: bool) -> None:
        """Add ``conn`` to the tables: an inbound one counts against its source's cap and is
        unproven until its first message; one we opened is neither."""
        self._conns[conn.id] = conn
        self._by_peer[(conn.transport, conn.peer[0], conn.peer[1])] = conn
        conn.inbound = inbound
        if inbound:
            self._per_source[conn.peer[0]] = self._per_source.get(conn.peer[0], 0) + 1
            self._unproven[conn.id] = conn
        else:
            conn.proven = True
            self._proven[conn.id] = conn

    def _touch(self, conn: _StreamConnection) -> None:
        """A complete message arrived on ``conn``: last in the eviction order."""
        if not conn.proven:
            conn.proven = True
            self._unproven.pop(conn.id, None)
            self._proven[conn.id] = conn
        elif conn.id in self._proven:
            self._proven.move_to_end(conn.id)

    def forget(self, conn: _StreamConnection) -> None:
        """Drop a closed connection from the tables (idempotent)."""
        if self._conns.pop(conn.id, None) is None:
            return
        self._unproven.pop(conn.id, None)
        self._proven.pop(conn.id, None)
        key = (conn.transport, conn.peer[0], conn.peer[1])
        if self._by_peer.get(key) is conn:
            del self._by_peer[key]
        if conn.inbound:
            left = self._per_source.get(conn.peer[0], 1) - 1
            if left > 0:
                self._per_source[conn.peer[0]] = left
            else:
                self._per_source.pop(conn.peer[0], None)

    def _limit_hit(self, limit: str, source: str, transport: str, **fields: object) -> None:
        """Count a limit hit and log it once per source per interval."""
        self.stats[limit] += 1
        loop = asyncio.get_running_loop()
        suppressed = self._throttle.hit(f"{limit}:{source}", loop.time())
        if suppressed is not None:
            log.warning(
                "sip_limit_hit",
                limit=limit,
                source=source,
                transport=transport,
                suppressed=suppressed,
                **fields,
            )

    # ---- inbound and outbound bytes

    def deliver(self, data: bytes, source: Address) -> None:
        """Hand inbound bytes to the callback, never letting its errors kill the transport."""
        try:
            self._on_message(data, source)
        except Exception:  # the node keeps serving every other call
            log.exception("message_handler_failed", peer=f"{source.host}:{source.port}")

    def deliver_framing_error(self, data: bytes, error: SipParseError, source: Address) -> None:
        """Report stream bytes whose framing was lost (the connection is closed after)."""
        if self._on_framing_error is not None:
            try:
                self._on_framing_error(data, error, source)
            except Exception:
                log.exception("framing_error_handler_failed")

    def send(self, data: bytes, dest: Address) -> None:
        """Send bytes to ``dest`` without blocking (stream connects happen in the background)."""
        if dest.transport == "udp":
            protocol = self._udp_for(dest.host)
            if protocol is None or protocol.transport is None:
                log.warning("no_udp_listener", dest=f"{dest.host}:{dest.port}")
                return
            protocol.transport.sendto(data, (dest.host, dest.port))
            return
        conn = self._conns.get(dest.connection_id or -1) or self._by_peer.get(
            (dest.transport, dest.host, dest.port)
        )
        if conn is not None:
            conn.write(data)
            return
        self._spawn(self._connect_and_send(data, dest))

    def _udp_for(self, host: str) -> _UdpProtocol | None:
        want_v6 = ":" in host
        for bound, protocol in self._udp:
            if (":" in bound.host) == want_v6:
                return protocol
        return self._udp[0][1] if self._udp else None

    async def _connect_and_send(self, data: bytes, dest: Address) -> None:
        loop = asyncio.get_running_loop()
        ctx = self._tls_client if dest.transport == "tls" else None
        conn = _StreamConnection(self, next(self._ids), dest.transport, (dest.host, dest.port))
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, dest.host, dest.port, ssl=ctx),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("connect_failed", dest=f"{dest.host}:{dest.port}", error=str(exc))
            conn.closed = True
            conn.framer = None
            return
        if conn.closed:  # lost before we got here
            return
        self._register(conn, inbound=False)
        conn.write(data)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def connection_count(self) -> int:
        """Open stream connections."""
        return len(self._conns)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            if listener.paused is not None:
                listener.paused.cancel()
            else:
                loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self._listeners.clear()
        for _, protocol in self._udp:
            if protocol.transport is not None:
                protocol.transport.close()
        for conn in list(self._conns.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        self._drop_task = None
        self._udp.clear()
        self._udp_sockets.clear()


async def _listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (like asyncio's start_server)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
