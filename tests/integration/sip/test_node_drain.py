"""Drain with ``node.drain_grace = 2s``, through the real node, started by SIGTERM or by
``POST /drain``.

During the grace: new INVITEs get 503 with Retry-After, ``/readyz`` is 503, a call whose SRC
sends BYE ends normally (its BYE answered 200, no BYE from the node). At the end of the grace the
node sends BYE to the call still live. SIGTERM then exits 0; ``POST /drain`` leaves the node
running (still refusing calls) until it is stopped.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.integration.media.src_client import RtpLeg, alaw_encode, tone, ulaw_encode
from tests.integration.node_process import NodeProcess, free_port, start_node
from tests.integration.sip.probed_src import ProbedSrc, method_of

pytestmark = pytest.mark.integration

GRACE = 2.0
TOKEN = "drain-token"


def http(node: NodeProcess, path: str, method: str = "GET", token: str | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}{path}",  # type: ignore[attr-defined]
        method=method,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def drain_node() -> NodeProcess:
    port = free_port((socket.SOCK_STREAM,))
    node = start_node(
        env={"SIPREC_NODE__DRAIN_GRACE": f"{GRACE}s", "SIPREC_NODE__DRAIN_DEADLINE": "10s"},
        http_port=port,
        http_token=TOKEN,
    )
    node.http_port = port  # type: ignore[attr-defined]
    return node


def live_call(node: NodeProcess, n: int) -> tuple[ProbedSrc, threading.Thread]:
    call = ProbedSrc(node.sip_port)
    call.invite()
    legs = [
        RtpLeg(0, ulaw_encode(tone(440, 8)), ssrc=0x300 + n),
        RtpLeg(8, alaw_encode(tone(1000, 8)), ssrc=0x400 + n),
    ]
    thread = threading.Thread(target=call.stream, args=(legs, 6.0), daemon=True)
    thread.start()
    return call, thread


def check_grace(node: NodeProcess, started: float) -> tuple[ProbedSrc, ProbedSrc]:
    """What must hold between the start of the drain and the end of the grace."""
    ending, staying = node.calls  # type: ignore[attr-defined]
    node.wait_for_event("draining", timeout=2)  # the signal is handled by then
    # a new call is refused while draining, with Retry-After
    newcomer = ProbedSrc(node.sip_port)
    try:
        status, reply = newcomer.offer()
    finally:
        newcomer.close()
    assert status == 503, reply
    assert "\r\nRetry-After: " in reply, reply
    assert http(node, "/readyz")[0] == 503
    # the SRC that ends its call within the grace: BYE answered 200, nothing from the node
    time.sleep(0.3)
    assert ending.bye() == 200
    assert time.monotonic() - started < GRACE
    assert ending.next_request(0.2) is None
    # the other gets the node's BYE once the grace is over
    got = staying.next_request(GRACE + 3)
    assert got is not None, "no BYE at the end of the grace"
    bye, at = got
    assert method_of(bye) == "BYE", bye
    assert GRACE - 0.1 <= at - started <= GRACE + 1.0, at - started
    staying.respond(bye, 200, "OK")
    return ending, staying


def check_ends(node: NodeProcess, ending: ProbedSrc, staying: ProbedSrc, refused: int) -> None:
    first = node.wait_for_event("call_ended", call_id=ending.call_id)
    assert first["reason"] == "BYE from SRC", first
    second = node.wait_for_event("call_ended", call_id=staying.call_id)
    assert second["reason"] == "recorder shutting down", second
    for call in (ending, staying):
        node.wait_for_event("recording_finalised", call_id=call.call_id)
    rejected = [e for e in node.events("invite_rejected") if e.get("status") == 503]
    assert [e["reason"] for e in rejected] == ["Draining"] * refused, rejected


@pytest.mark.parametrize("how", ["sigterm", "post"])
def test_drain_grace_lets_calls_end_then_byes_the_rest(how: str) -> None:
    node = drain_node()
    threads: list[threading.Thread] = []
    calls: list[ProbedSrc] = []
    try:
        for n in range(2):
            call, thread = live_call(node, n)
            calls.append(call)
            threads.append(thread)
        node.calls = calls  # type: ignore[attr-defined]
        time.sleep(0.5)
        assert http(node, "/readyz")[0] == 200
        started = time.monotonic()
        if how == "sigterm":
            node.proc.send_signal(signal.SIGTERM)
        else:
            assert http(node, "/drain", "POST")[0] == 401  # the admin API's token
            status, body = http(node, "/drain", "POST", token=TOKEN)
            assert status == 202 and body == {"draining": True, "live_calls": 2}, body
        ending, staying = check_grace(node, started)
        if how == "sigterm":
            assert node.proc.wait(10) == 0, "\n".join(node.raw[-40:])
            node.wait_for_event("drained")
        else:
            node.wait_for_event("drained", timeout=5)
            assert node.proc.poll() is None  # still running, still refusing calls
            assert http(node, "/readyz")[0] == 503
            assert http(node, "/drain", "POST", token=TOKEN)[0] == 202  # idempotent
            late = ProbedSrc(node.sip_port)
            try:
                assert late.offer()[0] == 503
            finally:
                late.close()
            stop_at = time.monotonic()
            assert node.stop() == 0, "\n".join(node.raw[-40:])
            assert time.monotonic() - stop_at < 3.0  # nothing left to drain
        check_ends(node, ending, staying, refused=1 if how == "sigterm" else 2)
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
        for thread in threads:
            thread.join(8)
        for call in calls:
            call.close()
