"""RTP timeout through the real node (one media worker, ``media.rtp_timeout = 1s``).

The SRC is the hand-written client of ``tests/integration/media/src_client.py``: it sends two
G.711 legs in real time, then stops sending RTP as a crashed SRC would, and answers (or not) the
node's in-dialog OPTIONS probe. What must be seen:

* 481 to the probe: the call is ended and finalised within ``rtp_timeout`` + the check interval
  + the probe's round trip, with ``end_reason`` ``rtp_timeout_probe_481``, no BYE from the node,
  and the sidecar's streams with every packet sent;
* no answer: ended once Timer F has passed, ``rtp_timeout_probe_timeout`` (the node runs with
  ``sip.timer_t1 = 100ms``, so Timer F is 64*T1 = 6.4 s: the key is honoured);
* 200: the call is kept, flagged ``stalled`` (admin API), probed again a timeout later;
* a held call (``a=inactive`` re-INVITE): never probed, however long its silence;
* RTP flowing for several timeouts: never probed.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.media.src_client import RtpLeg, SrcCall, alaw_encode, tone, ulaw_encode
from tests.integration.node_process import NodeProcess, free_port, start_node
from tests.integration.sip.probed_src import ProbedSrc, method_of

pytestmark = pytest.mark.integration

RTP_TIMEOUT = 1.0
CHECK = 0.25  # check_interval(1 s)
T1 = 0.1
TIMER_F = 64 * T1
ENV = {
    "SIPREC_MEDIA__RTP_TIMEOUT": f"{RTP_TIMEOUT}s",
    "SIPREC_NODE__DRAIN_GRACE": "0s",
    "SIPREC_SIP__TIMER_T1": f"{T1}s",
}


def legs(seconds: float) -> list[RtpLeg]:
    return [
        RtpLeg(0, ulaw_encode(tone(440, seconds)), ssrc=0x1111),
        RtpLeg(8, alaw_encode(tone(1000, seconds)), ssrc=0x2222),
    ]


def place_call(node: NodeProcess, seconds: float) -> tuple[ProbedSrc, list[RtpLeg], float]:
    """A call streaming ``seconds`` of RTP, then silent; returns when its RTP stopped."""
    call = ProbedSrc(node.sip_port)
    call.invite()
    sent = legs(seconds)
    call.stream(sent, seconds)
    return call, sent, time.monotonic()


def sidecar(node: NodeProcess, call: SrcCall, timeout: float = 20) -> dict[str, Any]:
    done = node.wait_for_event("recording_finalised", timeout=timeout, call_id=call.call_id)
    return json.loads(Path(str(done["sidecar"])).read_text())


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert found, text
    return float(found.group(1))


@pytest.fixture(scope="module")
def node() -> Any:
    port = free_port((socket.SOCK_STREAM,))
    made = start_node(env=ENV, http_port=port)
    made.http_port = port  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        assert made.stop() == 0, "\n".join(made.raw[-40:])


def test_probe_answered_481_ends_and_finalises_the_call(node: NodeProcess) -> None:
    call, sent, silent_from = place_call(node, 3 * RTP_TIMEOUT)  # three timeouts of RTP first
    try:
        got = call.next_request(RTP_TIMEOUT + 3)
        assert got is not None, "no probe"
        options, at = got
        assert method_of(options) == "OPTIONS", options
        waited = at - silent_from
        assert RTP_TIMEOUT - 0.1 <= waited <= RTP_TIMEOUT + CHECK + 0.75, waited
        assert f"Call-ID: {call.call_id}" in options
        call.respond(options, 481, "Call/Transaction Does Not Exist")
        data = sidecar(node, call)
        finalised = time.monotonic() - silent_from
        assert finalised <= RTP_TIMEOUT + CHECK + 3.0, finalised
        assert call.next_request(1.0) is None  # no BYE after a 481
    finally:
        call.close()
    ended = node.wait_for_event("call_ended", call_id=call.call_id)
    assert ended["reason"] == "rtp_timeout_probe_481", ended
    assert data["end_reason"] == "rtp_timeout_probe_481"
    assert [s["packets"] for s in data["streams"]] == [leg.sent for leg in sent], data["streams"]
    assert data["duration_s"] >= 3 * RTP_TIMEOUT - 0.1
    print(
        f"\nrtp timeout 481: probe {waited:.2f}s after the last RTP, finalised at {finalised:.2f}s"
    )


def test_probe_answered_200_keeps_the_call_stalled_and_probes_again(node: NodeProcess) -> None:
    call, _, _ = place_call(node, 1.0)
    try:
        options, first = call.next_request(RTP_TIMEOUT + 3) or ("", 0.0)
        assert method_of(options) == "OPTIONS", options
        call.respond(options, 200, "OK")
        node.wait_for_event("call_stalled", call_id=call.call_id, timeout=5)
        port = node.http_port  # type: ignore[attr-defined]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sessions", timeout=5) as response:
            live = [s for s in json.loads(response.read()) if s["call_id"] == call.call_id]
        assert [[f["kind"] for f in s["flags"]] for s in live] == [["stalled"]], live
        assert live[0]["flags"][0]["probes"] == 1, live
        again, second = call.next_request(RTP_TIMEOUT + 3) or ("", 0.0)
        assert method_of(again) == "OPTIONS", again
        assert RTP_TIMEOUT - 0.1 <= second - first <= RTP_TIMEOUT + CHECK + 0.75
        call.respond(again, 200, "OK")
        time.sleep(0.3)
        assert call.bye() == 200
    finally:
        call.close()
    ended = node.wait_for_event("call_ended", call_id=call.call_id)
    assert ended["reason"] == "BYE from SRC", ended
    assert sidecar(node, call)["end_reason"] == "BYE from SRC"


def test_a_held_call_is_never_probed(node: NodeProcess) -> None:
    port = node.http_port  # type: ignore[attr-defined]
    probes_before = metric(port, "siprec_rtp_timeout_probes_total")
    call, _, _ = place_call(node, 1.0)
    try:
        call.reinvite("inactive")
        assert call.next_request(6 * RTP_TIMEOUT) is None  # six timeouts of silence on hold
        assert call.bye() == 200
    finally:
        call.close()
    assert node.wait_for_event("call_ended", call_id=call.call_id)["reason"] == "BYE from SRC"
    assert not [e for e in node.events("rtp_timeout") if e.get("call_id") == call.call_id]
    assert metric(port, "siprec_rtp_timeout_probes_total") == probes_before


def test_rtp_flowing_is_never_probed(node: NodeProcess) -> None:
    call = ProbedSrc(node.sip_port)
    call.invite()
    try:
        call.stream(legs(5 * RTP_TIMEOUT), 5 * RTP_TIMEOUT)
        assert call.next_request(0.1) is None
        assert call.bye() == 200
    finally:
        call.close()
    assert node.wait_for_event("call_ended", call_id=call.call_id)["reason"] == "BYE from SRC"
    assert not [e for e in node.events("rtp_timeout") if e.get("call_id") == call.call_id]


def test_unanswered_probe_ends_the_call_after_timer_f(node: NodeProcess) -> None:
    call, sent, silent_from = place_call(node, 1.0)
    try:
        options, _ = call.next_request(RTP_TIMEOUT + 3) or ("", 0.0)
        assert method_of(options) == "OPTIONS", options
        bye = None
        while bye is None:  # the probe's retransmissions go unanswered
            got = call.next_request(TIMER_F + 5)
            assert got is not None, "the node never gave up"
            if method_of(got[0]) == "BYE":
                bye = got
            else:
                assert method_of(got[0]) == "OPTIONS", got[0]
        call.respond(bye[0], 200, "OK")  # a best-effort BYE after the timeout
        elapsed = bye[1] - silent_from
        assert RTP_TIMEOUT + TIMER_F - 0.5 <= elapsed <= RTP_TIMEOUT + CHECK + TIMER_F + 2, elapsed
        data = sidecar(node, call)
    finally:
        call.close()
    assert data["end_reason"] == "rtp_timeout_probe_timeout"
    assert [s["packets"] for s in data["streams"]] == [leg.sent for leg in sent]
    assert metric(node.http_port, "siprec_rtp_timeout_ended_total") >= 2  # type: ignore[attr-defined]
    print(f"\nrtp timeout, no answer: BYE {elapsed:.1f}s after the last RTP (Timer F {TIMER_F} s)")
