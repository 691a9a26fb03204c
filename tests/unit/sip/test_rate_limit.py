"""TokenBuckets and LogThrottle: per-source limits with bounded memory."""

from __future__ import annotations

import pytest

from siprec_node.sip.rate_limit import LogThrottle, TokenBuckets, retry_after


def test_burst_then_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert buckets.take("a", 0.25) == pytest.approx(0.25)
    assert buckets.take("a", 0.5) == 0.0
    assert buckets.take("b", 0.5) == 0.0  # another source has its own bucket


def test_refused_takes_do_not_pile_up_debt() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    assert buckets.take("a", 0.0) == 0.0
    for _ in range(100):
        assert buckets.take("a", 0.1) > 0
    assert buckets.take("a", 1.0) == 0.0


def test_refill_capped_at_burst() -> None:
    buckets = TokenBuckets(rate=10.0, burst=2)
    buckets.take("a", 0.0)
    results = [buckets.take("a", 1000.0) for _ in range(3)]
    assert results[:2] == [0.0, 0.0] and results[2] > 0


def test_buckets_bounded_least_recent_dropped() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=100)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(buckets) == 100
    assert buckets.take("10.0.3.231", 0.0) > 0  # the most recent one is still metered


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate=1, burst=0)


def test_log_throttle_once_per_interval_with_suppressed_count() -> None:
    throttle = LogThrottle(interval=10.0)
    assert throttle.hit("a", 0.0) == 0
    assert [throttle.hit("a", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert throttle.hit("b", 5.0) == 0
    assert throttle.hit("a", 10.0) == 3  # the line says how many hits it stands for
    assert throttle.hit("a", 11.0) is None


def test_retry_after_whole_seconds() -> None:
    assert [retry_after(w) for w in (0.01, 1.0, 1.2, 7.9)] == [1, 1, 2, 8]
