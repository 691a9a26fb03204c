"""The garbage collector's pauses in the SIP process (and each media worker): timed, exported,
and reported when long.

A full collection walks every tracked object of the process, and a node with 2,000 live calls
holds about 600,000 of them: bench/sipcall measured full collections of 0.4 s (p50) to 1.6 s,
during which nothing answers SIP (an INVITE waits, a BYE is taken late and the recording runs
long). ``gc.callbacks`` time each collection; the callback only records (it runs wherever an
allocation triggers the collector, logging inside it could re-enter the logger), and the event
loop reports the long ones (``gc_pause`` warnings) every few seconds.

:func:`freeze_startup` moves the objects made at start-up (modules, classes, configuration:
about 95,000) out of the collector's reach for good, so full collections walk the calls' objects
only.

That still left a full collection of 150-400 ms every ~700 new calls at 2,000 live (CPython
collects the oldest generation once it has grown by a quarter since the last full collection;
each call leaves ~110 tracked objects alive while it lasts), which is both ~10 % of the SIP
process's CPU per call and an INVITE or BYE waiting that long. So the objects that survive are
*aged* out of the collector's reach too (:meth:`GcWatch.age`): every ``AGE_INTERVAL`` seconds a
young collection (generations 0 and 1) frees the young cycles, then ``gc.freeze()`` moves every
survivor to the permanent generation; the automatic collections then walk at most a second's
worth of survivors. Frozen objects are still freed by reference counting as usual (a call's
objects are, when it ends: its full collections free a handful of objects at most); only a
reference cycle that became garbage after its objects were frozen waits, for the full
collection of everything, frozen included, made every ``FULL_INTERVAL`` seconds
(:meth:`GcWatch.full`, one ``gc_full_collection`` line saying how long it took and what it
freed). ``siprec_gc_frozen_objects`` says how many objects were frozen at start-up or after the
last full collection: counting them walks them all (``gc.get_freeze_count`` took 36 ms with
2,000 live calls), so nothing counts them more often.

A media worker does the same: with 4,000 streams open it tracks ~250,000 objects (~51 a
stream) and, with 100 calls a second coming and going, CPython made a full collection of
~140 ms about every 20 s, during which the worker read no RTP and opened no stream (INVITEs
wait for their streams' ``open``). Aged, its longest collection took 2 ms.
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
AGE_INTERVAL = 1.0
"""Seconds between two freezes of the survivors of a young collection."""
FULL_INTERVAL = 600.0
"""Seconds between two full collections of every object, frozen ones included."""
SIP_HINT = "a full collection walks every live call's objects: SIP waits meanwhile"


def freeze_startup() -> int:
    """Collect once, then freeze every object alive (start-up's); returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcWatch(Collector):
    """Times the collector's pauses (install once per process) and exports them."""

    def __init__(self, long_pause: float = LONG_PAUSE, hint: str = SIP_HINT) -> None:
        self.long_pause = long_pause
        self.hint = hint
        """What a long pause held up (the ``hint`` of ``gc_pause``)."""
        self.frozen = 0
        """Frozen objects counted at start-up (the node sets it) or after the last :meth:`full`."""
        self.full_collections = 0
        self.full_collected = 0
        """Objects the full collections of :meth:`full` freed (cycles that waited for them)."""
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
                hint=self.hint,
            )
        return len(long)

    def summary(self) -> dict[str, Any]:
        """The figures so far: collections and seconds by generation, the longest pause (ms),
        the objects frozen at start-up or at the last full collection."""
        return {
            "collections": list(self.count),
            "seconds": [round(s, 6) for s in self.seconds],
            "longest_ms": round(self.longest * 1000, 3),
            "frozen": self.frozen,
            "full_collections": self.full_collections,
        }

    @staticmethod
    def age() -> None:
        """Free the young cycles, then freeze every object alive (both cheap: the young
        generations only, and a merge of lists)."""
        gc.collect(1)
        gc.freeze()

    def full(self) -> int:
        """Collect everything, frozen objects included, then freeze the survivors again; the
        number of objects freed (logged with the time it took)."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        took = time.perf_counter() - started
        self.frozen = gc.get_freeze_count()
        self.full_collections += 1
        self.full_collected += collected
        log.info(
            "gc_full_collection", ms=round(took * 1000, 1), collected=collected, frozen=self.frozen
        )
        return collected

    def start_reporting(
        self,
        interval: float = REPORT_INTERVAL,
        *,
        age_interval: float | None = AGE_INTERVAL,
        full_interval: float = FULL_INTERVAL,
    ) -> None:
        """From the running event loop: report long pauses every ``interval`` seconds and,
        unless ``age_interval`` is None, age the survivors every ``age_interval`` seconds and
        collect everything every ``full_interval`` (module docstring)."""

        async def every() -> None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            report_due, full_due = now + interval, now + full_interval
            tick = interval if age_interval is None else min(interval, age_interval)
            while True:
                await asyncio.sleep(tick)
                now = loop.time()
                if age_interval is not None:
                    if now >= full_due:
                        self.full()
                        # from its end: a full collection can outlast a short interval
                        full_due = loop.time() + full_interval
                    else:
                        self.age()
                if now >= report_due:
                    report_due = now + interval
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
        frozen = GaugeMetricFamily(
            "siprec_gc_frozen_objects",
            "Objects out of the collector's reach, counted at start-up or the last full collection",
        )
        frozen.add_metric([], self.frozen)
        yield frozen
