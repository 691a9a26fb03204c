"""What only Redis shows: key layout, TTLs, index hygiene, SCAN not KEYS, outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from siprec_node.session import (
    CorruptRecord,
    RedisSessionStore,
    SessionNotFound,
    SessionState,
    SessionStatus,
    StoreUnavailable,
)
from tests.redis_server import RedisProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def raw(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_server: RedisProcess) -> AsyncIterator[RedisSessionStore]:
    s = RedisSessionStore(redis_server.url, prefix=f"it:{uuid.uuid4().hex[:8]}:")
    yield s
    await s.close()


async def keys_of(raw: aioredis.Redis, store: RedisSessionStore) -> set[str]:
    return {k async for k in raw.scan_iter(match=store.prefix + "*")}


async def test_key_layout_and_ttl(raw: aioredis.Redis, store: RedisSessionStore) -> None:
    state = SessionState(id="s1", node_id="rec-1", status=SessionStatus.ACTIVE)
    await store.save(state)
    await store.update_heartbeat("rec-1")
    base = store.prefix + "{siprec}:"
    assert await keys_of(raw, store) == {
        base + "session:s1",
        base + "index:active",
        base + "index:node:rec-1",
        base + "nodes",
    }
    record = await raw.hgetall(base + "session:s1")
    assert set(record) == {"data", "version", "node", "status", "activity"}
    assert (record["version"], record["node"], record["status"]) == ("1", "rec-1", "active")
    assert SessionState.from_json(record["data"]).id == "s1"
    assert 86_000 < await raw.ttl(base + "session:s1") <= 86_400
    assert await raw.ttl(base + "index:active") == -1  # indexes never expire wholesale
    score = await raw.zscore(base + "index:active", "s1")
    assert score == int(record["activity"])
    assert await raw.zscore(base + "index:node:rec-1", "s1") == score
    # All keys hash to the same cluster slot.
    slots = {key_slot(k.encode()) for k in await keys_of(raw, store)}
    assert len(slots) == 1


async def test_ttl_none_persists(redis_server: RedisProcess, raw: aioredis.Redis) -> None:
    async with RedisSessionStore(redis_server.url, prefix="persist:", ttl=None) as store:
        await store.save(SessionState(id="p"))
        assert await raw.ttl(store.session_key("p")) == -1
        await store.delete("p")


async def test_expired_ids_are_pruned_from_the_indexes(
    redis_server: RedisProcess, raw: aioredis.Redis
) -> None:
    store = RedisSessionStore(
        redis_server.url, prefix=f"exp:{uuid.uuid4().hex[:8]}:", ttl=timedelta(milliseconds=200)
    )
    for i in range(4):
        await store.save(SessionState(id=f"e{i}", node_id="n"))
    await asyncio.sleep(0.35)
    assert await raw.zcard(store.active_index_key) == 4  # expiry alone leaves the ids
    assert await store.list_active() == []
    assert await raw.zcard(store.active_index_key) == 0
    assert await store.list_by_node("n") == []
    assert await raw.zcard(store.node_index_key("n")) == 0
    assert await keys_of(raw, store) == set()
    await store.close()


async def test_listing_uses_scan_never_keys(
    redis_server: RedisProcess, store: RedisSessionStore
) -> None:
    for i in range(30):
        await store.save(SessionState(id=f"k{i}", status=SessionStatus.ENDED))
    before = redis_server.info("commandstats")
    assert len(await store.list_all()) == 30
    await store.list_active()
    await store.list_by_node("")
    after = redis_server.info("commandstats")
    assert "cmdstat_keys" not in after
    assert after["cmdstat_scan"] != before.get("cmdstat_scan")


def command_calls(server: RedisProcess) -> int:
    """Commands executed so far, INFO itself excluded."""
    total = 0
    for name, value in server.info("commandstats").items():
        if name != "cmdstat_info":
            total += int(value.split(",")[0].split("=")[1])
    return total


@pytest.mark.parametrize("sessions", [10, 2000])
async def test_heartbeat_is_one_command_whatever_the_number_of_sessions(
    redis_server: RedisProcess, store: RedisSessionStore, sessions: int
) -> None:
    for i in range(sessions):
        await store.save(SessionState(id=f"h{i}", node_id="busy"))
    await store.update_heartbeat("busy")  # connection set up
    before = command_calls(redis_server)
    await store.update_heartbeat("busy")
    assert command_calls(redis_server) - before == 1


async def test_scripts_are_reloaded_after_script_flush(
    raw: aioredis.Redis, store: RedisSessionStore
) -> None:
    state = SessionState(id="f")
    await store.save(state)
    await raw.script_flush()
    await store.save(state)
    assert (await store.load("f")).version == 2


async def test_a_corrupt_record_raises_on_load_and_is_skipped_by_listing(
    raw: aioredis.Redis, store: RedisSessionStore
) -> None:
    good, bad = SessionState(id="good"), SessionState(id="bad")
    await store.save(good)
    await store.save(bad)
    await raw.hset(store.session_key("bad"), "data", "{not json")
    with pytest.raises(CorruptRecord):
        await store.load("bad")
    assert [s.id for s in await store.list_active()] == ["good"]
    assert [s.id for s in await store.list_all()] == ["good"]
    assert await store.delete("bad")


async def test_unreachable_server_raises_store_unavailable() -> None:
    store = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    assert await store.ping() is False
    with pytest.raises(StoreUnavailable):
        await store.save(SessionState())
    with pytest.raises(StoreUnavailable):
        await store.load("x")
    with pytest.raises(StoreUnavailable):
        await store.list_active()
    await store.close()


async def test_outage_and_recovery() -> None:
    server = RedisProcess()
    port = server.port
    store = RedisSessionStore(server.url, socket_timeout=0.5)
    try:
        await store.save(SessionState(id="x"))
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.update_heartbeat("n")
        assert await store.ping() is False
        server = RedisProcess(port=port)  # a fresh, empty server on the same port
        assert await store.ping() is True
        with pytest.raises(SessionNotFound):
            await store.load("x")
        await store.save(SessionState(id="x"))
    finally:
        await store.close()
        server.stop()
