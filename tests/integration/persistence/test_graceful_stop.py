"""Graceful stop: SIGTERM with a live call sends a BYE to the SRC, leaves the session ``ended``
("recorder shutting down") in Redis, exits 0, and the node stops counting as alive once its
heartbeat is older than node_ttl. A second node of the fleet has nothing to take over."""

from __future__ import annotations

import time

import pytest

from tests.integration.persistence.harness import (
    Processes,
    RedisServer,
    cli_nodes,
    cli_sessions,
    fleet_of_two,
    launch_node,
    log_tail,
    sigterm,
    start_sipp,
    wait_session,
)

pytestmark = pytest.mark.integration

HEARTBEAT_S = 1.0
NODE_TTL_S = 3.0


def test_sigterm_ends_live_call_and_leaves_store_consistent(
    redis_server: RedisServer, procs: Processes
) -> None:
    spec, peer_spec = fleet_of_two(redis_server.url, "graceful")
    prefix = spec.prefix
    client = redis_server.client()
    node = procs.node(launch_node(spec))
    peer = procs.node(launch_node(peer_spec))

    sipp = procs.sipp(start_sipp("persist_graceful.xml", spec.sip_port))
    active = node.wait_for_event("call_active", timeout=10)
    session_id = str(active["session_id"])
    wait_session(client, prefix, session_id, status="active", node="rec-1", timeout=5)

    stop_at = time.monotonic()
    code = sigterm(node)
    exited_s = time.monotonic() - stop_at
    assert code == 0, log_tail(node)
    assert sipp.wait(10) == 0, f"{sipp.explain()}\n--- node\n{log_tail(node)}"
    ended = node.wait_for_event("call_ended", session_id=session_id)
    assert ended["status"] == "ended" and ended["reason"] == "recorder shutting down", ended
    node.wait_for_event("node_stopped")

    # The final snapshot was flushed before exit: no waiting here.
    final = wait_session(client, prefix, session_id, status="ended", node="rec-1", timeout=0.5)
    assert final.body["end_reason"] == "recorder shutting down", final.body
    assert not final.in_active_index and not final.owner_index
    assert session_id not in cli_sessions(peer_spec, all_=False)

    # Not alive once its last heartbeat is older than node_ttl.
    deadline = stop_at + NODE_TTL_S + HEARTBEAT_S + 2.0
    nodes = cli_nodes(peer_spec)
    while nodes.get("rec-1", {}).get("alive") and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = cli_nodes(peer_spec)
    dead_s = time.monotonic() - stop_at
    assert not nodes.get("rec-1", {}).get("alive", False), nodes
    assert nodes["rec-2"]["alive"] is True, nodes

    # rec-2 has run takeover since rec-1 went silent: the ended session is not touched.
    time.sleep(2 * HEARTBEAT_S)
    assert not peer.events("takeover_adopted"), peer.events("takeover_adopted")
    after = wait_session(client, prefix, session_id, status="ended", node="rec-1")
    assert after.version == final.version
    assert after.body["end_reason"] == "recorder shutting down"

    assert sigterm(peer) == 0, log_tail(peer)
    print(f"\ngraceful: SIGTERM -> exit {exited_s:.2f}s, -> not alive {dead_s:.2f}s")
