"""Per-source limits, sans-I/O: token buckets and a log throttle, both bounded in memory.

:class:`TokenBuckets` meters events (new INVITEs) per source address; :class:`LogThrottle`
lets a limit that is hit thousands of times a second log one line per source per interval,
saying how many hits the line stands for. Both keep at most ``max_keys`` sources (least
recently seen dropped first), so a flood from many addresses cannot grow them without bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict

DEFAULT_MAX_KEYS = 65536


class TokenBuckets:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up.

    A key not seen before (or dropped as least recently seen) starts with a full bucket.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``: 0.0 when there was one, else seconds until there is."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class LogThrottle:
    """Decides which hits of a limit get a log line: the first per key per ``interval``."""

    def __init__(self, interval: float = 10.0, *, max_keys: int = 4096) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # logged at, suppressed

    def hit(self, key: str, now: float) -> int | None:
        """Record a hit; returns the hits suppressed since the last line if this one should be
        logged, ``None`` if it should not."""
        last = self._seen.pop(key, None)
        if last is None or now - last[0] >= self.interval:
            self._seen[key] = (now, 0)
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            return 0 if last is None else last[1]
        self._seen[key] = (last[0], last[1] + 1)
        return None


def retry_after(wait: float) -> int:
    """A Retry-After value (whole seconds, at least 1) for a wait in seconds."""
    return max(1, math.ceil(wait))
