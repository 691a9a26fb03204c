"""RedisSessionStore construction: URL forms, key layout. Nothing here talks to a server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from siprec_node.session import RedisSessionStore


async def test_standalone_url_and_spec_constructor() -> None:
    store = RedisSessionStore(
        "redis://:s3cret@10.1.2.3:6380/2", prefix="voice:sessions:", ttl=timedelta(hours=24)
    )
    client = store._client
    assert isinstance(client, Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "10.1.2.3",
        6380,
        2,
        "s3cret",
    )
    assert not store.is_cluster
    await store.close()


async def test_sentinel_url() -> None:
    store = RedisSessionStore(
        "redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/3?sentinel_password=sp"
    )
    sentinel = store._sentinel
    assert sentinel is not None
    hosts = [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in sentinel.sentinels
    ]
    assert hosts == [("s1", 26379), ("s2", 26379), ("::1", 26380)]
    assert sentinel.sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
    pool = store._client.connection_pool
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "pw"
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"],
        ["127.0.0.1:7000", " 127.0.0.1:7001 "],
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    ],
)
async def test_cluster_urls(url: str | list[str]) -> None:
    store = RedisSessionStore(url)
    assert isinstance(store._client, RedisCluster)
    assert store.is_cluster
    ports = sorted(n.port for n in store._client.nodes_manager.startup_nodes.values())
    assert ports == [7000, 7001]
    await store.close()


async def test_a_list_is_always_a_cluster_even_of_one_seed() -> None:
    store = RedisSessionStore(["redis://:pw@127.0.0.1:7000"])
    assert store.is_cluster
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x", "scheme"),
        ("redis+sentinel://h:1", "service name"),
        ("redis+sentinel://h:1/svc/zero", "db must be an integer"),
        ("redis+sentinel:///svc", "no sentinel host"),
        ("redis+cluster:///", "no cluster node"),
        ("redis+cluster://h:port", "bad port"),
        ([], "empty list"),
        (["redis://a:1", "http://b:2"], "must be host:port or redis://"),
        (["a:1", "b:x"], "bad port"),
    ],
)
def test_bad_urls_name_the_problem(url: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisSessionStore(url)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="ttl"):
        RedisSessionStore(ttl=timedelta(0))
    with pytest.raises(ValueError, match="hash_tag"):
        RedisSessionStore(hash_tag="a}b")


async def test_key_layout() -> None:
    store = RedisSessionStore(prefix="voice:sessions:")
    assert store.session_key("abc") == "voice:sessions:{siprec}:session:abc"
    assert store.active_index_key == "voice:sessions:{siprec}:index:active"
    assert store.node_index_key("rec-1") == "voice:sessions:{siprec}:index:node:rec-1"
    assert store.nodes_key == "voice:sessions:{siprec}:nodes"
    # No session id can produce an index key: they live under different namespaces.
    assert store.session_key("index:active") != store.active_index_key
    await store.close()
