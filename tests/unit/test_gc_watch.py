"""The garbage collector's pauses: timed per generation, exported, the long ones reported."""

from __future__ import annotations

import gc

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
