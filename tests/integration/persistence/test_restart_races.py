"""Restart races: requests in the dialog of a call the restarted node owns but has not restored
yet. Listeners come up before recovery (so nothing is lost), which leaves a window, a few
milliseconds long when Redis answers and as long as the outage when it does not, in which the
node does not know the dialog. An SRC's BYE in that window must not be answered 481 ("no such
dialog"): the SRC would drop the call while the node, once recovered, records it on until
session_timeout.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.node_process import NodeProcess
from tests.integration.persistence.harness import (
    ByeOutcome,
    NodeSpec,
    Processes,
    RedisServer,
    call_up,
    kill_node,
    launch_node,
    log_tail,
    send_bye_until_final,
    sigterm,
    unique_prefix,
    wait_session,
)

pytestmark = pytest.mark.integration


def _order(node: NodeProcess) -> list[str]:
    wanted = {"sip_listening", "unknown_dialog", "call_recovered", "call_ended", "node_started"}
    return [str(e["event"]) for e in node.lines if e.get("event") in wanted]


def test_bye_racing_the_restart_is_never_answered_481(
    redis_server: RedisServer, procs: Processes
) -> None:
    """A BYE arriving while the restarted node is still recovering (listeners bound, calls not
    yet restored) must not get 481: the dialog is the node's, only not loaded yet. Sent every
    half millisecond from before the restart, so that the first one the node reads lands in
    that window if the window exists."""
    spec = NodeSpec(node_id="rec-1", redis_url=redis_server.url, prefix=unique_prefix("race"))
    node, _sipp, session_id, stored = call_up(spec, redis_server, procs)
    kill_node(node)
    outcome = ByeOutcome()
    sender = threading.Thread(
        target=send_bye_until_final,
        args=(spec.sip_port, stored.call["dialog"]),
        kwargs={"interval": 0.0005, "timeout": 15.0, "outcome": outcome},
        daemon=True,
    )
    sender.start()
    second = procs.node(launch_node(spec))
    sender.join(16)
    assert outcome.finals, f"no final response to {outcome.sent} BYEs\n{log_tail(second)}"
    assert 481 not in outcome.statuses, (
        f"BYE of a call this node owns answered 481 during restart: {outcome.finals}; "
        f"node events in order: {_order(second)}"
    )
    assert outcome.statuses[-1] == 200, outcome.finals
    second.wait_for_event("call_ended", session_id=session_id)
    wait_session(redis_server.client(), spec.prefix, session_id, status="ended")
    assert sigterm(second) == 0, log_tail(second)
    print(f"\nrestart race: {outcome.sent} BYEs sent, finals (s, status) {outcome.finals}")


def test_restart_while_redis_is_down_keeps_dialogs_answerable(procs: Processes) -> None:
    """The node restarts while its store is unreachable (a host reboot where Redis comes up
    later). It serves SIP at once, but cannot know its calls yet: an SRC's BYE (retransmitted
    every 500 ms) must not be answered 481 meanwhile; once Redis is back the call is recovered,
    the BYE answered 200 and the session ended in Redis."""
    redis_server = RedisServer(persist=True)  # the record must survive the Redis restart
    try:
        spec = NodeSpec(node_id="rec-1", redis_url=redis_server.url, prefix=unique_prefix("cold"))
        node, _sipp, session_id, stored = call_up(spec, redis_server, procs)
        kill_node(node)
        redis_server.kill()
        outcome = ByeOutcome()
        sender = threading.Thread(
            target=send_bye_until_final,
            args=(spec.sip_port, stored.call["dialog"]),
            kwargs={"interval": 0.5, "timeout": 15.0, "outcome": outcome},
            daemon=True,
        )
        second = procs.node(launch_node(spec))
        second.wait_for_event("store_unavailable")
        sender.start()
        time.sleep(1.5)
        redis_server.start()
        up_at = time.monotonic()
        recovered = second.wait_for_event("call_recovered", timeout=10, session_id=session_id)
        recovered_s = time.monotonic() - up_at
        assert recovered["ports"] == stored.call["media"]["ports"]
        sender.join(16)
        assert 481 not in outcome.statuses, (
            f"BYE of a call this node owns answered 481 while its store was down: "
            f"{outcome.finals}; node events in order: {_order(second)}"
        )
        assert outcome.statuses and outcome.statuses[-1] == 200, outcome.finals
        second.wait_for_event("call_ended", session_id=session_id)
        final = wait_session(redis_server.client(), spec.prefix, session_id, status="ended")
        assert final.call["recoveries"] == 1
        assert sigterm(second) == 0, log_tail(second)
        print(
            f"\ncold restart: redis up -> call_recovered {recovered_s:.2f}s; "
            f"BYE finals (s, status) {outcome.finals}"
        )
    finally:
        redis_server.stop()
