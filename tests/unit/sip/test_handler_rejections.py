"""The recorder: INVITEs it refuses, and messages it cannot parse (the node keeps serving)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from siprec_node.sip.message import SipResponse
from siprec_node.sip.transaction import Address

from .test_handler_harness import (
    SBC,
    SBC_TCP,
    T1,
    Dialogue,
    Harness,
    audio_m_line,
    final,
    multipart,
    sdp,
    statuses,
)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as made:
        yield made


VIDEO_ONLY = sdp(
    "m=video 30004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:3\r\na=sendonly\r\n"
)


@dataclass(frozen=True)
class Rejection:
    """One way to get an INVITE refused, and what the refusal must carry."""

    status: int
    invite: Callable[[Dialogue], bytes]
    config: dict[str, object] = field(default_factory=dict)
    draining: bool = False
    fill: bool = False  # set up one call first (capacity)
    check: Callable[[SipResponse], None] = lambda response: None


def _retry_after(response: SipResponse) -> None:
    assert (response.headers.get("Retry-After") or "").isdigit()


def _unsupported_foo(response: SipResponse) -> None:
    assert response.headers.tokens("Unsupported") == {"foo"}


def _accept(response: SipResponse) -> None:
    accept = response.headers.tokens("Accept")
    assert "application/sdp" in accept
    assert "multipart/mixed" in accept


def _min_se(response: SipResponse) -> None:
    assert response.headers.get("Min-SE") == "90"


REJECTIONS: dict[str, Rejection] = {
    "over capacity": Rejection(
        503, lambda d: d.siprec_invite(), {"max_sessions": 1}, fill=True, check=_retry_after
    ),
    "source not allowed": Rejection(
        403,
        lambda d: d.siprec_invite(),
        {"allow_sources": (ipaddress.ip_network("10.0.0.0/8"),)},
    ),
    "unknown Require": Rejection(
        420,
        lambda d: d.siprec_invite(headers=[("Require", "foo")]),
        check=_unsupported_foo,
    ),
    "text/plain body": Rejection(
        415,
        lambda d: d.request("INVITE", body=b"record me please\r\n", content_type="text/plain"),
        check=_accept,
    ),
    "only video": Rejection(
        488, lambda d: d.siprec_invite(body=multipart(VIDEO_ONLY)), check=lambda r: None
    ),
    "Session-Expires too small": Rejection(
        422,
        lambda d: d.siprec_invite(headers=[("Session-Expires", "60")]),
        check=_min_se,
    ),
    "Max-Forwards 0": Rejection(483, lambda d: d.siprec_invite(max_forwards="0")),
    "draining": Rejection(503, lambda d: d.siprec_invite(), draining=True, check=_retry_after),
}


@pytest.mark.parametrize("case", REJECTIONS.values(), ids=REJECTIONS.keys())
async def test_rejected_invite(case: Rejection) -> None:
    async with Harness(**case.config) as h:
        if case.fill:
            await h.confirmed_call("filler@sbc")
        reserved = h.handler.media.reserved
        calls = dict(h.handler.calls)
        h.handler.draining = case.draining
        dialogue = Dialogue("rejected@sbc")
        sent = await h.feed_and_settle(case.invite(dialogue))
        invite_branch = dialogue.branches[-1]

        assert statuses(sent) == [100, case.status]
        refusal = sent[-1].response
        assert sent[-1].destination == SBC
        assert refusal.to.tag  # a final response to an out-of-dialog INVITE is tagged
        assert refusal.cseq.method == "INVITE"
        assert refusal.top_via.branch == invite_branch
        case.check(refusal)
        assert h.handler.calls == calls  # no call created
        assert h.handler.media.reserved == reserved  # no port held
        assert h.handler.stats["calls_started"] == len(calls)

        # Unacknowledged, the refusal is retransmitted (Timer G); the ACK (same branch, the
        # refusal's To tag) is absorbed by the transaction and stops that. No response to it.
        assert [s.data for s in h.advance(T1)] == [sent[-1].data]
        ack = dialogue.request("ACK", branch=invite_branch, cseq=1, to_tag=refusal.to.tag)
        assert h.feed(ack) == []
        assert h.advance(40.0) == []
        assert h.handler.calls == calls


async def test_allowed_source_is_accepted() -> None:
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8"))
    async with Harness(allow_sources=networks) as h:
        _, ok = await h.answered_call("allowed@sbc")
        assert ok.status == 200


async def test_capacity_frees_up_when_a_call_ends() -> None:
    async with Harness(max_sessions=1) as h:
        first, _ = await h.confirmed_call("cap-1@sbc")
        busy = Dialogue("cap-2@sbc")
        assert statuses(await h.feed_and_settle(busy.siprec_invite())) == [100, 503]
        assert statuses(h.feed(first.bye())) == [200]
        _, ok = await h.answered_call("cap-3@sbc")
        assert ok.status == 200


async def test_honoured_require_options_are_accepted(h: Harness) -> None:
    dialogue = Dialogue("require-ok@sbc")
    invite = dialogue.siprec_invite(headers=[("Require", "timer, 100rel")])
    ok = final(await h.feed_and_settle(invite))
    assert ok.status == 200


async def test_plain_sdp_invite_is_recorded_from_from_and_to(h: Harness) -> None:
    """A SIP trunk fork: no SIPREC sign, plain SDP; participants come from From/To."""
    dialogue = Dialogue("trunk@sbc", contact="<sip:trunk@127.0.0.1:5099>")
    body = sdp(audio_m_line(30000, None, None)).encode()
    ok = final(
        await h.feed_and_settle(
            dialogue.request("INVITE", body=body, content_type="application/sdp", to_tag=None)
        )
    )
    assert ok.status == 200
    assert b"a=recvonly" in ok.body
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.recording["is_siprec"] is False
    participants = snapshot.recording["session"]["participants"]
    assert [p["aor"] for p in participants] == ["sip:sbc@example.com", "sip:srs@example.com"]


async def test_video_beside_audio_is_refused_with_port_0(h: Harness) -> None:
    dialogue = Dialogue("video@sbc")
    offer = sdp(
        audio_m_line(30000, "1"),
        "m=video 30004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:3\r\na=sendonly\r\n",
        audio_m_line(30002, "2"),
    )
    ok = final(await h.feed_and_settle(dialogue.siprec_invite(body=multipart(offer))))
    assert ok.status == 200
    lines = [line for line in ok.body.decode().split("\r\n") if line.startswith("m=")]
    assert len(lines) == 3
    assert lines[1].startswith("m=video 0 ")
    assert not lines[0].startswith("m=audio 0 ") and not lines[2].startswith("m=audio 0 ")
    assert h.handler.media.reserved == 2


async def test_no_ports_left_is_503(h: Harness) -> None:
    base = h.config.port_min + 100  # a slice of the port range no other harness of ours uses
    async with Harness(port_min=base, port_max=base + 4) as tiny:  # two RTP ports
        await tiny.confirmed_call("ports-1@sbc")
        assert tiny.handler.media.reserved == 2
        dialogue = Dialogue("ports-2@sbc")
        sent = await tiny.feed_and_settle(dialogue.siprec_invite())
        assert statuses(sent) == [100, 503]
        assert sent[-1].response.headers.get("Retry-After")
        assert len(tiny.handler.calls) == 1


# ---------------------------------------------------------------------------------------------
# Malformed messages


def _broken_content_length(dialogue: Dialogue) -> bytes:
    return dialogue.request(
        "OPTIONS", body=b"v=0\r\n", content_type="application/sdp", content_length="400"
    )


MALFORMED: dict[str, Callable[[Dialogue], bytes]] = {
    "Content-Length beyond the body": lambda d: d.siprec_invite(content_length="99999"),
    "Content-Length not a number": lambda d: d.siprec_invite(content_length="12a"),
    "CSeq method mismatch": lambda d: d.request("INVITE", cseq_method="BYE"),
    "OPTIONS with a bad Content-Length": _broken_content_length,
}


@pytest.mark.parametrize("build", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_gets_400_and_the_node_keeps_serving(
    h: Harness, build: Callable[[Dialogue], bytes]
) -> None:
    live, _ = await h.confirmed_call("live@sbc")
    broken = Dialogue("broken@sbc")
    other = Address("udp", "127.0.0.1", 5123)
    sent = h.feed(build(broken), other)
    assert statuses(sent) == [400]
    response = sent[0].response
    assert sent[0].destination == other  # back to the sender
    assert response.call_id == "broken@sbc"
    assert response.top_via.branch == broken.branches[-1]
    assert response.to.tag
    assert h.handler.stats["malformed"] == 1
    assert len(h.handler.calls) == 1
    assert statuses(h.feed(live.bye())) == [200]
    assert h.handler.calls == {}


GARBAGE = [
    b"\x00\x01\x02\x03 not sip at all",
    b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes(range(256)) * 4,
    b"INVITE sip:srs@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n",  # no Via at all
]


@pytest.mark.parametrize("data", GARBAGE, ids=["binary", "crlf", "http", "bytes", "no-via"])
async def test_garbage_gets_no_answer_and_the_node_keeps_serving(h: Harness, data: bytes) -> None:
    live, _ = await h.confirmed_call("live@sbc")
    assert h.feed(data) == []
    assert h.handler.stats["malformed"] == 1
    assert statuses(h.feed(live.bye())) == [200]
    assert h.handler.calls == {}


async def test_malformed_ack_gets_no_answer(h: Harness) -> None:
    dialogue, _ = await h.answered_call("ack-broken@sbc")
    assert h.feed(dialogue.ack(content_length="77")) == []
    # The 200 keeps being retransmitted: the broken ACK did not count.
    assert statuses(h.advance(T1)) == [200]


async def test_malformed_over_tcp_answers_on_the_same_connection(h: Harness) -> None:
    dialogue = Dialogue("tcp-broken@sbc", source=SBC_TCP)
    sent = h.feed(dialogue.request("OPTIONS", content_length="x"), SBC_TCP)
    assert statuses(sent) == [400]
    assert sent[0].destination == SBC_TCP


async def test_responses_from_the_network_are_ignored(h: Harness) -> None:
    response = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnot-ours\r\n"
        b"From: <sip:srs@example.com>;tag=a\r\nTo: <sip:sbc@example.com>;tag=b\r\n"
        b"Call-ID: stray@sbc\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert h.feed(response) == []
    assert h.handler.stats["responses"] == 1


async def test_unsupported_methods(h: Harness) -> None:
    dialogue = Dialogue("methods@sbc")
    sent = h.feed(dialogue.request("SUBSCRIBE", headers=[("Event", "dialog")]))
    assert statuses(sent) == [405]
    assert "invite" in sent[0].response.headers.tokens("Allow")
    sent = h.feed(dialogue.request("FROBNICATE"))
    assert statuses(sent) == [501]
