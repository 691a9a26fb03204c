"""A media worker ages its objects out of the garbage collector's reach, as the SIP process
does (``gc_watch``): with thousands of streams open, a full collection would stop its RTP
reads and stream opens for a tenth of a second and more."""

from __future__ import annotations

import asyncio

from siprec_node.media.worker_engine import WorkerEngine


async def test_a_worker_freezes_its_start_up_and_ages_the_survivors_every_second() -> None:
    engine = WorkerEngine(1)
    await engine.start()
    try:
        (first,) = await engine.loop_lag()
        await asyncio.sleep(2.6)
        (later,) = await engine.loop_lag()
    finally:
        await engine.stop()
    gc = later["gc"]
    assert gc["frozen"] > 10_000  # start-up's modules, classes and functions
    # an idle worker allocates next to nothing: its generation-1 collections are the aging
    # ones, one a second
    assert gc["collections"][1] - first["gc"]["collections"][1] >= 2
    assert gc["full_collections"] == 0 and gc["collections"][2] == 0
