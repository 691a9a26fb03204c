"""The garbage collector's pauses: timed per generation, exported, the long ones reported."""

from __future__ import annotations

import asyncio
import gc
import itertools

from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from siprec_node.gc_watch import GcWatch, freeze_startup


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_collections_are_timed_exported_and_the_long_ones_reported() -> None:
    watch = GcWatch(long_pause=0.0)  # every collection counts as long here
    watch.install()
    gc.disable()  # the cycles wait for the full collection below
    try:
        for _ in range(20_000):
            _Node()
        gc.collect()
    finally:
        gc.enable()
        watch.uninstall()
    assert watch.count[2] >= 1 and watch.seconds[2] > 0 and watch.longest > 0
    with capture_logs() as logs:
        reported = watch.report()
    pauses = [e for e in logs if e["event"] == "gc_pause"]
    assert reported == len(pauses) >= 1
    full = [p for p in pauses if p["generation"] == 2]
    assert full and max(p["collected"] for p in full) >= 20_000  # the cycles made above
    assert watch.report() == 0  # reported once
    registry = CollectorRegistry()
    registry.register(watch)
    text = generate_latest(registry).decode()
    assert 'siprec_gc_pauses_total{generation="2"}' in text
    assert "siprec_gc_pause_max_seconds" in text
    counted = watch.count[2]
    gc.collect()
    assert watch.count[2] == counted  # uninstalled: no longer timed


def test_short_pauses_are_counted_but_not_reported() -> None:
    watch = GcWatch(long_pause=60.0)
    watch.install()
    try:
        gc.collect()
    finally:
        watch.uninstall()
    assert watch.count[2] == 1 and watch.report() == 0


def test_start_up_objects_are_frozen_out_of_later_collections() -> None:
    try:
        frozen = freeze_startup()
        assert frozen > 10_000 and gc.get_freeze_count() == frozen  # this process's modules
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_aging_freezes_survivors_and_the_full_collection_frees_cycles_left_frozen() -> None:
    watch = GcWatch()
    kept = [_Node() for _ in range(1000)]
    try:
        watch.age()
        frozen = gc.get_freeze_count()
        assert frozen >= 1000
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(node) in tracked for node in kept)  # out of every collection
        gc.collect()
        assert gc.get_freeze_count() == frozen
        freed = gc.collect()
        del kept  # cycles, now garbage, frozen: no ordinary collection frees them
        assert gc.collect() == freed == 0
        with capture_logs() as logs:
            collected = watch.full()
        assert collected >= 1000 and watch.full_collected == collected
        assert [e["event"] for e in logs] == ["gc_full_collection"]
        assert logs[0]["collected"] == collected and logs[0]["frozen"] == watch.frozen > 0
    finally:
        gc.unfreeze()


async def test_the_loop_ages_every_interval_and_collects_everything_every_full_interval() -> None:
    # Waits for events, not for a wall-clock window: in a full test run the process holds
    # ~220,000 objects and one full collection takes ~0.2 s, longer than the intervals here.
    watch = GcWatch()
    ages: list[float] = []
    fulls: list[float] = []
    loop = asyncio.get_running_loop()
    age, full = watch.age, watch.full

    def counted_age() -> None:
        ages.append(loop.time())
        age()

    def counted_full() -> int:
        fulls.append(loop.time())
        return full()

    watch.age = counted_age  # type: ignore[method-assign]
    watch.full = counted_full  # type: ignore[method-assign]
    try:
        with capture_logs() as logs:
            watch.start_reporting(0.05, age_interval=0.01, full_interval=0.1)
            deadline = loop.time() + 30
            while len(fulls) < 3 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            watch.uninstall()
        assert gc.get_freeze_count() > 0  # aged
        logged = [e for e in logs if e["event"] == "gc_full_collection"]
        assert len(fulls) >= 3 and watch.full_collections == len(logged) == len(fulls)
        for before, after in itertools.pairwise(fulls):
            assert after - before >= 0.1
            assert any(before < t < after for t in ages)  # aged in between, not collected
    finally:
        gc.unfreeze()


async def test_without_aging_nothing_is_frozen() -> None:
    gc.unfreeze()
    watch = GcWatch()
    watch.start_reporting(0.01, age_interval=None)
    await asyncio.sleep(0.05)
    watch.uninstall()
    assert gc.get_freeze_count() == 0 and watch.full_collections == 0
