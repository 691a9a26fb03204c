"""The store through Redis Sentinel: the whole conformance suite, then a failover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from siprec_node.session import RedisSessionStore, SessionState, StoreUnavailable
from tests.redis_server import SentinelSetup
from tests.unit.session.backends import Backend, RedisBackend
from tests.unit.session.test_store_conformance import *  # noqa: F403  (re-run on Sentinel)

pytestmark = pytest.mark.integration


@pytest.fixture
async def backend(sentinel_setup: SentinelSetup) -> AsyncIterator[Backend]:
    """Overrides the conformance suite's backend: stores reached through the sentinel."""
    made = RedisBackend(sentinel_setup.url, name="sentinel")
    yield made
    await made.aclose()


async def test_store_follows_a_failover() -> None:
    setup = SentinelSetup()
    store = RedisSessionStore(setup.url, prefix="fo:", socket_timeout=1.0)
    try:
        state = SessionState(id="before", node_id="n")
        await store.save(state)
        await asyncio.to_thread(setup.failover)
        # The first command may hit the demoted master and fail; the store must recover.
        for _ in range(50):
            try:
                await store.save(SessionState(id="after", node_id="n"))
                break
            except StoreUnavailable:
                await asyncio.sleep(0.1)
        assert (await store.load("before")).version == 1  # replicated before the switch
        assert (await store.load("after")).version == 1
        assert setup.master_port() == setup.replica.port
    finally:
        await store.close()
        setup.stop()
