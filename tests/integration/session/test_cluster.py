"""The store on a three-master Redis Cluster: the whole conformance suite, plus slot checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from siprec_node.session import RedisSessionStore, SessionState, SessionStatus
from tests.redis_server import ClusterSetup
from tests.unit.session.backends import Backend, RedisBackend
from tests.unit.session.test_store_conformance import *  # noqa: F403  (re-run on Cluster)

pytestmark = pytest.mark.integration


@pytest.fixture
async def backend(cluster_setup: ClusterSetup) -> AsyncIterator[Backend]:
    """Overrides the conformance suite's backend: stores on the cluster (list of node URLs)."""
    made = RedisBackend(cluster_setup.urls, name="cluster")
    yield made
    await made.aclose()


async def test_every_key_of_a_store_is_in_one_slot(cluster_setup: ClusterSetup) -> None:
    url = "redis+cluster://" + ",".join(u.removeprefix("redis://") for u in cluster_setup.urls)
    store = RedisSessionStore(url, prefix="slots:")
    raw = RedisCluster.from_url(cluster_setup.urls[0], decode_responses=True)
    try:
        for i in range(20):
            await store.save(SessionState(id=f"s{i}", node_id=f"node-{i % 4}"))
            await store.update_heartbeat(f"node-{i % 4}")
        assert await store.claim("s1", "node-1", "node-2")
        keys = [k async for k in raw.scan_iter(match="slots:*")]
        assert len(keys) == 20 + 1 + 4 + 1  # records, active index, node indexes, nodes
        assert len({key_slot(k.encode()) for k in keys}) == 1
        assert len(await store.list_all()) == 20
    finally:
        await store.close()
        await raw.aclose()


async def test_distinct_hash_tags_spread_fleets_over_shards(cluster_setup: ClusterSetup) -> None:
    stores = [
        RedisSessionStore(cluster_setup.urls, prefix="fleet:", hash_tag=tag)
        for tag in ("a", "b", "c")
    ]
    try:
        slots = {key_slot(s.active_index_key.encode()) for s in stores}
        assert len(slots) == 3
        for s in stores:
            await s.save(SessionState(id="same-id", status=SessionStatus.ACTIVE))
            assert [x.id for x in await s.list_active()] == ["same-id"]
    finally:
        for s in stores:
            await s.close()
