"""RTP port allocation: even RTP ports (RTCP on the next odd one) with a reuse cooldown.

The cooldown keeps a freed port out of circulation for a while so that late packets of a finished
call never land in the next call's recording. Sans-I/O: the caller passes ``now``; whether a port
can really be bound is checked by the media layer, which reports failures with :meth:`quarantine`.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import deque
from dataclasses import dataclass


class PortsExhausted(Exception):
    """No RTP port is free in the configured range."""


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of ports; only even ports are handed out as RTP ports."""

    port_min: int
    port_max: int

    def __post_init__(self) -> None:
        if not 0 < self.port_min <= self.port_max <= 65535:
            raise ValueError(f"bad port range {self.port_min}-{self.port_max}")

    @property
    def rtp_ports(self) -> range:
        """Every even port whose RTCP companion (port + 1) is still inside the range."""
        first = self.port_min + (self.port_min % 2)
        return range(first, self.port_max, 2)


class PortAllocator:
    """Hands out even RTP ports from a range, least recently used first."""

    def __init__(self, ports: PortRange, cooldown: float = 10.0) -> None:
        self._range = ports
        self._cooldown = cooldown
        self._free: deque[int] = deque(ports.rtp_ports)
        self._cooling: list[tuple[float, int]] = []  # heap of (available_at, port)
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many RTP ports the range holds."""
        return len(self._range.rtp_ports)

    @property
    def in_use(self) -> int:
        """How many ports are allocated now."""
        return len(self._in_use)

    def available(self, now: float) -> int:
        """How many ports could be allocated at ``now``."""
        self._release_cooled(now)
        return len(self._free)

    def allocate(self, now: float) -> int:
        """Take a free RTP port; raises :class:`PortsExhausted` when none is left."""
        self._release_cooled(now)
        if not self._free:
            raise PortsExhausted(
                f"no free RTP port in {self._range.port_min}-{self._range.port_max}"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def reserve(self, port: int) -> bool:
        """Mark a specific port as used (restart recovery re-binding a call's ports).

        Returns False when the port is outside the range or already in use.
        """
        if port not in self._range.rtp_ports or port in self._in_use:
            return False
        try:
            self._free.remove(port)
        except ValueError:
            self._cooling = [(t, p) for t, p in self._cooling if p != port]
            heapq.heapify(self._cooling)
        self._in_use.add(port)
        return True

    def unallocate(self, port: int) -> None:
        """Undo :meth:`allocate` for a port that was never used: free again at once, first in
        line (no cooldown: no packet can be on its way to it)."""
        if port not in self._in_use:
            return
        self._in_use.discard(port)
        self._free.appendleft(port)

    def release(self, port: int, now: float) -> None:
        """Give a port back; it becomes available again after the cooldown."""
        if port not in self._in_use:
            return
        self._in_use.discard(port)
        heapq.heappush(self._cooling, (now + self._cooldown, port))

    def quarantine(self, port: int, now: float, duration: float = 60.0) -> None:
        """Take a port that failed to bind out of circulation for ``duration`` seconds."""
        self._in_use.discard(port)
        with contextlib.suppress(ValueError):
            self._free.remove(port)
        heapq.heappush(self._cooling, (now + duration, port))

    def _release_cooled(self, now: float) -> None:
        while self._cooling and self._cooling[0][0] <= now:
            _, port = heapq.heappop(self._cooling)
            if port not in self._in_use:
                self._free.append(port)
