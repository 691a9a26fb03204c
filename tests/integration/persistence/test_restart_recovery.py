"""Restart recovery (ARCHITECTURE flow step 6): a node killed mid-call and started again with
the same node id, SIP port and RTP range picks the call back up from Redis, answers the SRC's
BYE from the restored dialog (200, never 481), and ends the session in the store."""

from __future__ import annotations

import time

import pytest

from tests.integration.persistence.harness import (
    NodeSpec,
    Processes,
    RedisServer,
    call_up,
    cli_sessions,
    kill_node,
    launch_node,
    log_tail,
    port_is_bound_udp,
    sigterm,
    start_sipp,
    trigger_bye,
    unique_prefix,
    wait_session,
)

pytestmark = pytest.mark.integration


def test_killed_node_restarts_and_answers_bye_of_recovered_call(
    redis_server: RedisServer, procs: Processes
) -> None:
    spec = NodeSpec(node_id="rec-1", redis_url=redis_server.url, prefix=unique_prefix("restart"))
    client = redis_server.client()
    first = procs.node(launch_node(spec))
    sipp = procs.sipp(start_sipp("persist_bye_on_trigger.xml", spec.sip_port))

    active = first.wait_for_event("call_active", timeout=10)
    call_id, session_id = str(active["call_id"]), str(active["session_id"])
    offered = first.wait_for_event("call_offered", call_id=call_id)
    offered_ports = [s["port"] for s in offered["streams"]]  # type: ignore[union-attr]
    assert len(offered_ports) == 2
    wait_session(client, spec.prefix, session_id, status="active", node="rec-1", timeout=5)

    # Crash: no BYE, no final snapshot, no goodbye to the store.
    kill_node(first)
    killed_at = time.monotonic()
    assert sipp.proc.poll() is None, sipp.explain()

    stored = wait_session(client, spec.prefix, session_id, status="active", node="rec-1")
    assert stored.in_active_index and stored.owner_index
    assert stored.call["recoveries"] == 0
    assert stored.call["media"]["ports"] == offered_ports
    listed = cli_sessions(spec, all_=False)  # live sessions only
    assert session_id in listed, listed
    assert listed[session_id]["status"] == "active"
    assert listed[session_id]["node_id"] == "rec-1"
    assert listed[session_id]["call_id"] == call_id

    # Same node id, SIP port, RTP range and working directory.
    second = procs.node(launch_node(spec))
    recovered = second.wait_for_event("call_recovered", timeout=10, session_id=session_id)
    recovery_s = time.monotonic() - killed_at
    assert recovered["call_id"] == call_id
    assert recovered["status"] == "active"
    assert recovered["ports"] == offered_ports, (recovered, offered_ports)
    assert recovered["lost_ports"] == []
    assert second.wait_for_event("calls_recovered")["count"] == 1
    for port in offered_ports:
        assert port_is_bound_udp(port), f"restored RTP port {port} is not bound again"

    # The SRC ends the call: the restarted node answers from the restored dialog.
    trigger_bye(sipp, call_id, spec.sip_port)
    code = sipp.wait(15)
    assert code == 0, f"{sipp.explain()}\n--- node\n{log_tail(second)}"
    ended = second.wait_for_event("call_ended", session_id=session_id)
    assert ended["status"] == "ended" and ended["reason"] == "BYE from SRC", ended
    assert not second.events("unknown_dialog"), second.events("unknown_dialog")

    final = wait_session(client, spec.prefix, session_id, status="ended", node="rec-1")
    assert final.body["end_reason"] == "BYE from SRC"
    assert final.call["recoveries"] == 1
    assert final.call["media"]["ports"] == offered_ports
    assert not final.in_active_index and not final.owner_index
    listed = cli_sessions(spec)
    assert listed[session_id]["status"] == "ended"
    assert session_id not in cli_sessions(spec, all_=False)

    assert sigterm(second) == 0, log_tail(second)
    print(f"\nrestart: kill -> call_recovered {recovery_s:.2f}s")


def test_bye_sent_while_node_is_down_is_answered_after_restart(
    redis_server: RedisServer, procs: Processes
) -> None:
    """The SRC ends the call while the recorder is dead; its BYE retransmissions (T1 = 500 ms,
    doubling) reach the restarted node, which answers 200 from the recovered dialog."""
    spec = NodeSpec(node_id="rec-1", redis_url=redis_server.url, prefix=unique_prefix("down"))
    node, sipp, session_id, stored = call_up(spec, redis_server, procs)
    kill_node(node)
    trigger_bye(sipp, stored.call["call_id"], spec.sip_port)  # first BYE hits a closed port
    time.sleep(0.3)
    second = procs.node(launch_node(spec))
    second.wait_for_event("call_recovered", session_id=session_id)
    code = sipp.wait(20)
    assert code == 0, f"{sipp.explain()}\n--- node\n{log_tail(second)}"
    ended = second.wait_for_event("call_ended", session_id=session_id)
    assert ended["reason"] == "BYE from SRC"
    final = wait_session(redis_server.client(), spec.prefix, session_id, status="ended")
    assert final.call["recoveries"] == 1
    assert sigterm(second) == 0, log_tail(second)
