"""How late an event loop wakes a sleeper: the media workers' measure of their own load."""

from __future__ import annotations

import asyncio
import time
from typing import Any

LAG_INTERVAL = 0.01
"""How often the event-loop lag probe sleeps (seconds); it records how late it wakes."""
_LAG_BUCKET = 0.0001  # lag histogram: 0.1 ms buckets up to 1 s (the maximum is kept exactly)
_LAG_BUCKETS = 10_000


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
