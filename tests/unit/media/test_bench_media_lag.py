"""The event-loop lag probe the media bench reads (LocalEngine/WorkerEngine.loop_lag)."""

from __future__ import annotations

import asyncio
import time

from siprec_node.media.engine import LocalEngine, LoopLag


def test_percentiles_from_the_histogram() -> None:
    lag = LoopLag()
    for ms in [*range(1, 100), 250.0]:  # 1..99 ms and one 250 ms stall
        lag.record(ms / 1000.0)
    lag.record(-0.001)  # woken early by timer rounding: counted as on time
    s = lag.summary()
    assert s["samples"] == 101
    assert 49.0 <= s["p50_ms"] <= 50.1
    assert 98.0 <= s["p99_ms"] <= 99.1
    assert s["max_ms"] == 250.0
    for _ in range(10):
        lag.record(3.0)  # past the histogram's range: the maximum bounds the quantile
    assert lag.summary()["p99_ms"] == 3000.0
    lag.reset()
    assert lag.summary()["samples"] == 0
    assert lag.summary()["p99_ms"] == 0.0


async def test_local_engine_sees_a_blocked_loop() -> None:
    engine = LocalEngine()
    await engine.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.06)  # the loop is blocked: the probe wakes ~50 ms late
        await asyncio.sleep(0.03)
        lag = await engine.loop_lag(reset=True)
        assert lag["samples"] >= 2
        assert lag["max_ms"] >= 40.0
        assert (await engine.loop_lag())["samples"] <= 1
    finally:
        await engine.stop()
