"""asyncio SIP transports: UDP, TCP and TLS listeners that only move bytes.

Everything that understands SIP lives elsewhere: datagrams and framed stream messages are handed
to one callback together with an :class:`Address` saying where they came from, and
:meth:`SipTransports.send` delivers bytes to an :class:`Address` — over the stream connection a
request came on when it is still open (RFC 3261 §18.2.2), otherwise over a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.framing import FramedMessage, FramingError, KeepAlivePing, StreamFramer
from siprec_node.sip.transaction import Address

log = structlog.get_logger("siprec_node.sip.transport")

MessageCallback = Callable[[bytes, Address], None]

STREAM_READ_SIZE = 65536
CONNECT_TIMEOUT = 5.0
# A stream connection with no traffic this long is closed (SRCs send CRLF keep-alives).
IDLE_TIMEOUT = 600.0


@dataclass(frozen=True)
class BoundListener:
    """A listener as bound (port 0 resolved to the real port)."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])  # type: ignore[call-overload]
        self.owner.deliver(data, Address("udp", host, port, None))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send: nothing to do on a connectionless socket.
        log.debug("udp_error", error=str(exc))


class _StreamConnection:
    """One TCP/TLS connection: framing in, writes out."""

    def __init__(
        self,
        owner: SipTransports,
        conn_id: int,
        transport: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.owner = owner
        self.id = conn_id
        self.transport = transport
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.framer = StreamFramer(max_size=owner.max_message_size)

    @property
    def address(self) -> Address:
        return Address(self.transport, self.peer[0], self.peer[1], self.id)

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def serve(self) -> None:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(STREAM_READ_SIZE), IDLE_TIMEOUT)
                if not data:
                    break
                for item in self.framer.feed(data):
                    if isinstance(item, FramedMessage):
                        self.owner.deliver(item.data, self.address)
                    elif isinstance(item, KeepAlivePing):
                        self.write(item.REPLY)  # RFC 5626 §3.5.1: CRLFCRLF ping, CRLF pong
                    elif isinstance(item, FramingError):
                        log.warning(
                            "stream_framing_error",
                            peer=f"{self.peer[0]}:{self.peer[1]}",
                            transport=self.transport,
                            error=item.error.reason,
                        )
                        self.owner.deliver_framing_error(item.data, item.error, self.address)
                        return
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("stream_closed", peer=f"{self.peer[0]}:{self.peer[1]}", reason=str(exc))
        finally:
            self.owner.forget(self)
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


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
    ) -> None:
        self._on_message = on_message
        self._on_framing_error = on_framing_error
        self.max_message_size = max_message_size
        self._tls_server = tls_server
        self._tls_client = tls_client
        self._udp: list[tuple[BoundListener, _UdpProtocol]] = []
        self._servers: list[asyncio.Server] = []
        self._conns: dict[int, _StreamConnection] = {}
        self._by_peer: dict[tuple[str, str, int], _StreamConnection] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
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
        elif transport in ("tcp", "tls"):
            ctx = self._tls_server if transport == "tls" else None
            if transport == "tls" and ctx is None:
                raise ValueError("a tls listener needs sip.tls.cert_file and sip.tls.key_file")

            async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                conn = self._register(transport, reader, writer)
                await conn.serve()

            server = await asyncio.start_server(
                accept, host, port, ssl=ctx, reuse_address=True, limit=self.max_message_size
            )
            self._servers.append(server)
            bound = BoundListener(transport, host, int(server.sockets[0].getsockname()[1]))
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self.listeners.append(bound)
        log.info("sip_listening", listener=str(bound))
        return bound

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
        ctx = self._tls_client if dest.transport == "tls" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(dest.host, dest.port, ssl=ctx, limit=self.max_message_size),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("connect_failed", dest=f"{dest.host}:{dest.port}", error=str(exc))
            return
        conn = self._register(dest.transport, reader, writer)
        conn.write(data)
        await conn.serve()

    def _register(
        self, transport: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _StreamConnection:
        conn = _StreamConnection(self, next(self._ids), transport, reader, writer)
        self._conns[conn.id] = conn
        self._by_peer[(transport, conn.peer[0], conn.peer[1])] = conn
        return conn

    def forget(self, conn: _StreamConnection) -> None:
        """Drop a closed connection from the tables."""
        self._conns.pop(conn.id, None)
        key = (conn.transport, conn.peer[0], conn.peer[1])
        if self._by_peer.get(key) is conn:
            del self._by_peer[key]

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def connection_count(self) -> int:
        """Open stream connections."""
        return len(self._conns)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for server in self._servers:
            server.close()
        for _, protocol in self._udp:
            if protocol.transport is not None:
                protocol.transport.close()
        for conn in list(self._conns.values()):
            conn.writer.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        self._servers.clear()
        self._udp.clear()
