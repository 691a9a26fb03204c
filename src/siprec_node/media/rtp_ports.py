"""RTP/RTCP sockets of the node's calls, bound before the SDP answer names their ports.

``reserve`` takes an even port from the allocator and binds its RTP and RTCP sockets at once, so
the answer never advertises a port some other process holds (a port that fails to bind is
quarantined and the next one tried). ``take`` hands the bound sockets to a media engine, which
owns them from then on; the port stays allocated to the call until ``release``.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

import structlog

from siprec_node.media.port_allocator import PortAllocator, PortsExhausted

log = structlog.get_logger("siprec_node.media.rtp_ports")

RESERVE_ATTEMPTS = 16
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""Errors of the process or the system, not of the port: the port is not quarantined."""


@dataclass
class _Reserved:
    port: int
    rtp: socket.socket | None
    rtcp: socket.socket | None


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
                rtp, rtcp = self._bind_pair(port)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    # not the port's fault: it goes back as it was, and no other port is tried
                    self.allocator.unallocate(port)
                    log.warning("rtp_port_not_bound", port=port, error=str(exc))
                    raise PortsExhausted(f"cannot bind RTP sockets: {exc}") from exc
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
            rtp, rtcp = self._bind_pair(port)
        except OSError as exc:
            log.warning("rtp_port_not_reclaimed", port=port, error=str(exc))
            self.allocator.release(port, time.monotonic())
            return False
        self._reserved[port] = _Reserved(port, rtp, rtcp)
        return True

    def _bind_pair(self, port: int) -> tuple[socket.socket, socket.socket]:
        rtp = self._bind(port)
        try:
            return rtp, self._bind(port + 1)
        except OSError:
            rtp.close()
            raise

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

    def holds(self, port: int) -> bool:
        """Whether ``port`` is one of the node's calls' ports now."""
        return port in self._reserved

    def take(self, port: int) -> tuple[socket.socket, socket.socket]:
        """Hand the bound RTP and RTCP sockets of ``port`` over (the caller owns them now).

        A port whose sockets were already handed over (their engine died) is bound again.
        """
        reserved = self._reserved[port]
        if reserved.rtp is None or reserved.rtcp is None:
            rtp, rtcp = self._bind_pair(port)
        else:
            rtp, rtcp = reserved.rtp, reserved.rtcp
        reserved.rtp = reserved.rtcp = None
        return rtp, rtcp

    def release(self, ports: list[int], now: float) -> None:
        """Close the sockets of ``ports`` and give the ports back (after the cooldown)."""
        for port in ports:
            reserved = self._reserved.pop(port, None)
            if reserved is None:
                continue
            for sock in (reserved.rtp, reserved.rtcp):
                if sock is not None:  # never handed over (the call ended before its answer)
                    sock.close()
            self.allocator.release(port, now)

    @property
    def reserved(self) -> int:
        """How many RTP ports are bound now."""
        return len(self._reserved)

    def close(self) -> None:
        """Close every socket still held here (shutdown)."""
        self.release(list(self._reserved), time.monotonic())
