"""RTP/RTCP sockets of the node's calls, bound before the SDP answer names their ports.

``reserve`` takes an even port from the allocator and binds its RTP and RTCP sockets at once, so
the answer never advertises a port some other process holds (a port that fails to bind is
quarantined and the next one tried). ``open`` starts receiving on a call's sockets; until the
recording pipeline consumes the packets, every stream counts what arrives (packets, bytes, SSRC,
payload types, first and last arrival) from the 12-byte RTP header alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import time
from dataclasses import dataclass, field

import structlog

from siprec_node.media.port_allocator import PortAllocator, PortsExhausted

log = structlog.get_logger("siprec_node.media.rtp_ports")

_RTP_HEADER = struct.Struct("!BBHII")
# asyncio's default 256 KiB read buffer costs an mmap/munmap per datagram; RTP needs ~1.5 KiB.
RECV_SIZE = 4096
RESERVE_ATTEMPTS = 16


@dataclass
class StreamCounters:
    """What arrived on one RTP port (and its RTCP companion)."""

    packets: int = 0
    bytes: int = 0
    rtcp_packets: int = 0
    malformed: int = 0
    ssrc: int | None = None
    payload_types: set[int] = field(default_factory=set)
    first_arrival: float | None = None
    last_arrival: float | None = None
    source: tuple[str, int] | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-safe view."""
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "rtcp_packets": self.rtcp_packets,
            "malformed": self.malformed,
            "ssrc": self.ssrc,
            "payload_types": sorted(self.payload_types),
            "source": f"{self.source[0]}:{self.source[1]}" if self.source else None,
        }


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, counters: StreamCounters, rtcp: bool) -> None:
        self.counters = counters
        self.rtcp = rtcp

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Lower the per-read buffer (see RECV_SIZE); the attribute is private to asyncio's
        # selector transport, hence the guard.
        if hasattr(transport, "max_size"):
            transport.max_size = RECV_SIZE  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        c = self.counters
        if self.rtcp:
            c.rtcp_packets += 1
            return
        if len(data) < 12 or data[0] >> 6 != 2:
            c.malformed += 1
            return
        _, second, _, _, ssrc = _RTP_HEADER.unpack_from(data)
        now = time.monotonic()
        if c.first_arrival is None:
            c.first_arrival = now
            c.source = (str(addr[0]), int(addr[1]))  # type: ignore[call-overload]
        c.last_arrival = now
        c.packets += 1
        c.bytes += len(data)
        c.ssrc = ssrc
        c.payload_types.add(second & 0x7F)


@dataclass
class _Reserved:
    port: int
    rtp: socket.socket
    rtcp: socket.socket
    counters: StreamCounters = field(default_factory=StreamCounters)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)


class RtpPorts:
    """Binds, receives on and releases the RTP/RTCP socket pairs of the node's calls."""

    def __init__(self, allocator: PortAllocator, host: str = "0.0.0.0") -> None:
        self.allocator = allocator
        self.host = host
        self._reserved: dict[int, _Reserved] = {}

    def reserve(self, now: float) -> int:
        """Allocate an even port and bind RTP and RTCP sockets on it; raises PortsExhausted."""
        for _ in range(RESERVE_ATTEMPTS):
            port = self.allocator.allocate(now)
            try:
                rtp = self._bind(port)
            except OSError as exc:
                self._quarantine(port, now, exc)
                continue
            try:
                rtcp = self._bind(port + 1)
            except OSError as exc:
                rtp.close()
                self._quarantine(port, now, exc)
                continue
            self._reserved[port] = _Reserved(port, rtp, rtcp)
            return port
        raise PortsExhausted(f"no bindable RTP port after {RESERVE_ATTEMPTS} attempts")

    def reclaim(self, port: int) -> bool:
        """Bind a specific port again (restart recovery: a call keeps its ports).

        False when the port is outside the range, already held, or cannot be bound.
        """
        if port in self._reserved or not self.allocator.reserve(port):
            return False
        try:
            rtp = self._bind(port)
            try:
                rtcp = self._bind(port + 1)
            except OSError:
                rtp.close()
                raise
        except OSError as exc:
            log.warning("rtp_port_not_reclaimed", port=port, error=str(exc))
            self.allocator.release(port, time.monotonic())
            return False
        self._reserved[port] = _Reserved(port, rtp, rtcp)
        return True

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _quarantine(self, port: int, now: float, exc: OSError) -> None:
        level = "info" if exc.errno == errno.EADDRINUSE else "warning"
        getattr(log, level)("rtp_port_unavailable", port=port, error=str(exc))
        self.allocator.quarantine(port, now)

    async def open(self, ports: list[int]) -> None:
        """Start receiving on reserved ports (idempotent)."""
        loop = asyncio.get_running_loop()
        for port in ports:
            reserved = self._reserved.get(port)
            if reserved is None or reserved.transports:
                continue
            for sock, is_rtcp in ((reserved.rtp, False), (reserved.rtcp, True)):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda r=reserved, rtcp=is_rtcp: _RtpProtocol(r.counters, rtcp), sock=sock
                )
                reserved.transports.append(transport)

    def release(self, ports: list[int], now: float) -> None:
        """Close the sockets of ``ports`` and give the ports back (after the cooldown)."""
        for port in ports:
            reserved = self._reserved.pop(port, None)
            if reserved is None:
                continue
            for transport in reserved.transports:
                transport.close()
            if not reserved.transports:
                reserved.rtp.close()
                reserved.rtcp.close()
            self.allocator.release(port, now)

    def counters(self, port: int) -> StreamCounters | None:
        """What arrived on ``port`` so far (None when the port is not reserved)."""
        reserved = self._reserved.get(port)
        return reserved.counters if reserved else None

    @property
    def reserved(self) -> int:
        """How many RTP ports are bound now."""
        return len(self._reserved)

    def close(self) -> None:
        """Close every socket (shutdown)."""
        for port in list(self._reserved):
            with contextlib.suppress(Exception):
                self.release([port], time.monotonic())
