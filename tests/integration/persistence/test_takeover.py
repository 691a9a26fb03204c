"""Takeover (ARCHITECTURE flow step 7): two nodes share one Redis; one is SIGKILLed mid-call;
the survivor sees its heartbeat expire, claims and fails the session ("node rec-1 died"), and
answers the BYE of that dialog when the SRC fails over to it (200, not 481)."""

from __future__ import annotations

import time

import pytest

from tests.integration.persistence.harness import (
    Processes,
    RedisServer,
    cli_nodes,
    cli_sessions,
    fleet_of_two,
    kill_node,
    launch_node,
    log_tail,
    sigterm,
    start_sipp,
    trigger_bye,
    wait_session,
)

pytestmark = pytest.mark.integration

HEARTBEAT_S = 1.0
NODE_TTL_S = 3.0


def test_surviving_node_takes_over_and_answers_failed_over_bye(
    redis_server: RedisServer, procs: Processes
) -> None:
    spec1, spec2 = fleet_of_two(redis_server.url, "takeover")
    prefix = spec1.prefix
    client = redis_server.client()
    rec1 = procs.node(launch_node(spec1))
    rec2 = procs.node(launch_node(spec2))

    sipp = procs.sipp(start_sipp("persist_bye_on_trigger.xml", spec1.sip_port))
    active = rec1.wait_for_event("call_active", timeout=10)
    call_id, session_id = str(active["call_id"]), str(active["session_id"])
    stored = wait_session(client, prefix, session_id, status="active", node="rec-1", timeout=5)
    dialog = stored.call["dialog"]
    nodes = cli_nodes(spec2)
    assert nodes["rec-1"]["alive"] and nodes["rec-2"]["alive"], nodes

    kill_node(rec1)
    killed_at = time.monotonic()

    # Dead after node_ttl without a heartbeat; rec-2 notices at its next tick.
    bound = NODE_TTL_S + 2 * HEARTBEAT_S + 1.0
    adopted = rec2.wait_for_event("takeover_adopted", timeout=bound + 5, session_id=session_id)
    takeover_s = time.monotonic() - killed_at
    assert takeover_s <= bound, f"takeover took {takeover_s:.2f}s (bound {bound}s)"
    assert adopted["call_id"] == call_id

    failed = wait_session(client, prefix, session_id, status="failed", node="rec-2", timeout=5)
    failed_s = time.monotonic() - killed_at
    assert failed.body["end_reason"] == "node rec-1 died", failed.body
    assert not failed.in_active_index and not failed.owner_index
    # the SRC (SIPp) sent no RTP: the recording finalised by rec-2 says so, in the same record
    assert failed.body["verdict"] == {
        "status": "problems",
        "problems": [{"kind": "no_rtp", "streams": [0, 1]}],
    }, failed.body["verdict"]
    listed = cli_sessions(spec2)
    row = listed[session_id]
    assert (row["status"], row["node_id"], row["end_reason"]) == (
        "failed",
        "rec-2",
        "node rec-1 died",
    ), row
    assert session_id not in cli_sessions(spec2, all_=False)
    nodes = cli_nodes(spec2)
    assert nodes["rec-1"]["alive"] is False, nodes
    assert nodes["rec-2"]["alive"] is True, nodes

    # The SRC fails over: the BYE of the dead node's dialog goes to rec-2.
    trigger_bye(sipp, call_id, spec2.sip_port)
    code = sipp.wait(15)
    assert code == 0, f"{sipp.explain()}\n--- rec-2\n{log_tail(rec2)}"
    bye = rec2.wait_for_event("bye_for_finished_call", call_id=call_id)
    assert bye["session_id"] == session_id
    assert dialog["call_id"] == call_id
    assert not rec2.events("unknown_dialog"), rec2.events("unknown_dialog")
    # Exactly once: one adoption, and the record is not rewritten by the BYE.
    assert len([e for e in rec2.events("takeover_adopted") if e["session_id"] == session_id]) == 1
    after = wait_session(client, prefix, session_id, status="failed", node="rec-2")
    assert after.version == failed.version, (after.version, failed.version)

    assert sigterm(rec2) == 0, log_tail(rec2)
    print(f"\ntakeover: kill -> takeover_adopted {takeover_s:.2f}s, -> failed {failed_s:.2f}s")
