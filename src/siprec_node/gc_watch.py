"""The garbage collector's pauses in the SIP process: timed, exported, and reported when long.

A full collection walks every tracked object of the process, and a node with 2,000 live calls
holds about 600,000 of them: bench/sipcall measured full collections of 0.4 s (p50) to 1.6 s,
during which nothing answers SIP (an INVITE waits, a BYE is taken late and the recording runs
long). ``gc.callbacks`` time each collection; the callback only records (it runs wherever an
allocation triggers the collector, logging inside it could re-enter the logger), and the event
loop reports the long ones (``gc_pause`` warnings) every few seconds.

:func:`freeze_startup` moves the objects made at start-up (modules, classes, configuration:
about 95,000) out of the collector's reach for good, so full collections walk the calls' objects
only.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("siprec_node.gc_watch")

LONG_PAUSE = 0.1
"""Seconds: a collection at least this long is reported (``gc_pause``)."""
REPORT_INTERVAL = 5.0


def freeze_startup() -> int:
    """Collect once, then freeze every object alive (start-up's); returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcWatch(Collector):
    """Times the collector's pauses (install once per process) and exports them."""

    def __init__(self, long_pause: float = LONG_PAUSE) -> None:
        self.long_pause = long_pause
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self._long: list[tuple[int, float, int]] = []
        self._started = 0.0
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Start timing collections (``gc.callbacks``)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop timing collections and reporting them."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        self.count[generation] += 1
        self.seconds[generation] += took
        self.longest = max(self.longest, took)
        if took >= self.long_pause and len(self._long) < 1000:
            self._long.append((generation, took, int(info.get("collected", 0))))

    def report(self) -> int:
        """Log the long pauses recorded since the last report; how many."""
        long, self._long = self._long, []
        for generation, took, collected in long:
            log.warning(
                "gc_pause",
                generation=generation,
                ms=round(took * 1000, 1),
                collected=collected,
                hint="a full collection walks every live call's objects: SIP waits meanwhile",
            )
        return len(long)

    def start_reporting(self, interval: float = REPORT_INTERVAL) -> None:
        """Report long pauses from the running event loop every ``interval`` seconds."""

        async def every() -> None:
            while True:
                await asyncio.sleep(interval)
                self.report()

        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(every())

    def collect(self) -> Iterator[Metric]:
        """``siprec_gc_pauses_total``, ``siprec_gc_pause_seconds_total`` by generation, and
        the longest pause."""
        pauses = CounterMetricFamily(
            "siprec_gc_pauses", "Garbage collections of the SIP process", labels=["generation"]
        )
        seconds = CounterMetricFamily(
            "siprec_gc_pause_seconds",
            "Time the SIP process stood still in garbage collections",
            labels=["generation"],
        )
        for generation in range(3):
            pauses.add_metric([str(generation)], self.count[generation])
            seconds.add_metric([str(generation)], self.seconds[generation])
        yield pauses
        yield seconds
        longest = GaugeMetricFamily(
            "siprec_gc_pause_max_seconds", "The longest garbage collection of the SIP process"
        )
        longest.add_metric([], self.longest)
        yield longest
