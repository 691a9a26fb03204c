"""Redis outage mid-call: SIP keeps being served, readiness says 503, snapshots wait in the
node; when Redis is back on the same port the node catches up, readiness says 200 again, and
the session's final snapshot (``ended``) is in Redis.

Redis comes back in two ways. ``persisted``: it runs with an append-only file fsynced at every
write, the configuration a store of live calls should have, so it reloads the `active` record
and the final snapshot is an active -> ended transition. ``empty``: it kept nothing (a
replacement instance, or one run without persistence), so the node's pending final snapshot
recreates the record on its own. Both must end with the session ``ended`` in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.node_process import free_port
from tests.integration.persistence.harness import (
    NodeSpec,
    Processes,
    RedisServer,
    cli_nodes,
    cli_sessions,
    http_get,
    launch_node,
    log_tail,
    sigterm,
    sip_options,
    start_sipp,
    trigger_bye,
    unique_prefix,
    wait_http_status,
    wait_session,
)
from tests.redis_server import redis_available

pytestmark = pytest.mark.integration

OUTAGE_S = 3.5
"""How long Redis stays down: longer than node_ttl (3 s) and several snapshot retries."""


@pytest.fixture(params=[pytest.param(True, id="persisted"), pytest.param(False, id="empty")])
def outage_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test alone (the test kills it and starts it again)."""
    if not redis_available():
        pytest.fail("redis-server is not installed: the persistence tests need it")
    server = RedisServer(persist=request.param)
    yield server
    server.stop()


def test_node_rides_out_a_redis_outage(outage_redis: RedisServer, procs: Processes) -> None:
    redis_server = outage_redis
    spec = NodeSpec(
        node_id="rec-1",
        redis_url=redis_server.url,
        prefix=unique_prefix("outage"),
        http_port=free_port(),
    )
    assert spec.http_port is not None
    client = redis_server.client()
    node = procs.node(launch_node(spec))
    wait_http_status(spec.http_port, "/readyz", 200, timeout=10)

    sipp = procs.sipp(start_sipp("persist_bye_on_trigger.xml", spec.sip_port))
    active = node.wait_for_event("call_active", timeout=10)
    call_id, session_id = str(active["call_id"]), str(active["session_id"])
    before = wait_session(client, spec.prefix, session_id, status="active", timeout=5)

    # Outage.
    redis_server.kill()
    down_at = time.monotonic()
    unready_s, body = wait_http_status(spec.http_port, "/readyz", 503, timeout=10)
    assert "store not answering" in body.get("problems", []), body
    assert sip_options(spec.sip_port) == 200
    assert http_get(spec.http_port, "/healthz")[0] == 200

    # The SRC ends the call while the store is down: answered at once, snapshot kept pending.
    trigger_bye(sipp, call_id, spec.sip_port)
    code = sipp.wait(15)
    assert code == 0, f"{sipp.explain()}\n--- node\n{log_tail(node)}"
    ended = node.wait_for_event("call_ended", session_id=session_id)
    assert ended["reason"] == "BYE from SRC"
    failing = node.wait_for_event("snapshot_store_failing", timeout=10)
    assert int(failing["backlog"]) >= 1, failing  # type: ignore[call-overload]
    # Keep it down past node_ttl, so that heartbeats fail too and the backoff grows.
    while time.monotonic() - down_at < OUTAGE_S:
        assert http_get(spec.http_port, "/readyz")[0] == 503
        assert sip_options(spec.sip_port) == 200
        time.sleep(0.25)
    assert node.proc.poll() is None

    # Redis back on the same port.
    redis_server.start()
    up_at = time.monotonic()
    outage_s = up_at - down_at
    node.wait_for_event("snapshot_store_recovered", timeout=15)
    caught_up_s = time.monotonic() - up_at
    ready_s, _ = wait_http_status(spec.http_port, "/readyz", 200, timeout=15)
    ready_s += caught_up_s

    final = wait_session(client, spec.prefix, session_id, status="ended", node="rec-1", timeout=5)
    assert final.body["end_reason"] == "BYE from SRC", final.body
    assert final.call["status"] == "ended"
    assert not final.in_active_index and not final.owner_index
    if redis_server.persist:
        assert final.version > before.version  # the reloaded record moved on, not recreated
    listed = cli_sessions(spec)
    assert listed[session_id]["status"] == "ended", listed
    assert session_id not in cli_sessions(spec, all_=False)
    assert cli_nodes(spec)["rec-1"]["alive"] is True  # heartbeats resumed

    assert sigterm(node) == 0, log_tail(node)
    print(
        f"\noutage ({'persisted' if redis_server.persist else 'empty'}): "
        f"kill -> readyz 503 {unready_s:.2f}s; outage {outage_s:.2f}s; "
        f"redis up -> snapshot_store_recovered {caught_up_s:.2f}s, -> readyz 200 {ready_s:.2f}s"
    )
