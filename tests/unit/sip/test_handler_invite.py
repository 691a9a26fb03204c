"""CallDriver: OPTIONS, the SIPREC INVITE and its 200, snapshots, 2xx retransmission, timeouts."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator

import pytest

from siprec_node.recorder import CallDriver, HandlerConfig
from siprec_node.sip.call import CallStatus, MemoryCallStore
from siprec_node.sip.message import SipRequest

from .test_handler_harness import (
    SBC,
    START,
    T1,
    T2,
    Dialogue,
    Harness,
    SdpView,
    Sent,
    final,
    statuses,
)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as made:
        yield made


def assert_port_bound(port: int) -> None:
    """``port`` is held by the node: binding it again on 127.0.0.1 fails."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(OSError) as failed:
            probe.bind(("127.0.0.1", port))
        assert failed.value.errno == errno.EADDRINUSE
    finally:
        probe.close()


# ---------------------------------------------------------------------------------------------
# OPTIONS


async def test_options_answers_200_with_capabilities(h: Harness) -> None:
    sent = h.feed(Dialogue("options-1@sbc").request("OPTIONS", contact=None))
    assert statuses(sent) == [200]
    ok = sent[0].response
    assert sent[0].destination == SBC
    allow = ok.headers.tokens("Allow")
    assert {"invite", "ack", "bye", "cancel", "options", "update"} <= allow
    accept = ok.headers.tokens("Accept")
    assert {"application/sdp", "application/rs-metadata+xml", "multipart/mixed"} <= accept
    assert "siprec" in ok.headers.tokens("Supported")
    assert ok.to.tag  # RFC 3261 §8.2.6.2: the UAS adds a To tag to responses other than 100
    assert ok.call_id == "options-1@sbc"
    assert h.handler.calls == {}


async def test_options_while_draining_is_503_with_retry_after(h: Harness) -> None:
    h.handler.draining = True
    sent = h.feed(Dialogue("options-2@sbc").request("OPTIONS", contact=None))
    assert statuses(sent) == [503]
    response = sent[0].response
    assert response.headers.get("Retry-After") == str(h.config.retry_after)
    assert response.to.tag is not None


async def test_options_in_a_dialog_keeps_its_to_tag(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("options-dialog@sbc")
    sent = h.feed(dialogue.request("OPTIONS", cseq=dialogue.next_cseq(), contact=None))
    assert statuses(sent) == [200]
    assert sent[0].response.to.tag == ok.to.tag


async def test_options_retransmission_gets_the_same_answer(h: Harness) -> None:
    data = Dialogue("options-3@sbc").request("OPTIONS", contact=None)
    first = h.feed(data)
    again = h.feed(data)
    assert [s.data for s in again] == [s.data for s in first]
    assert h.handler.stats["requests"] == 2


# ---------------------------------------------------------------------------------------------
# The answer


async def test_siprec_invite_gets_100_then_a_recvonly_200(h: Harness) -> None:
    dialogue = Dialogue("invite-1@sbc")
    h.handler.on_message(dialogue.siprec_invite(), SBC)
    trying = h.take()
    assert statuses(trying) == [100]  # at once, before the media is ready
    assert trying[0].response.to.tag is None
    await h.handler.idle()
    sent = h.take()
    assert statuses(sent) == [200]
    ok = sent[0].response
    assert sent[0].destination == SBC

    assert ok.to.tag
    assert ok.headers.get("Content-Type") == "application/sdp"
    contact = ok.headers.get("Contact") or ""
    assert "+sip.srs" in contact
    assert "siprec" in ok.headers.tokens("Supported")
    assert "Require" not in ok.headers  # no timer asked for

    answer = SdpView.parse(ok.body)
    assert len(answer.media) == 2
    assert [answer.label(0), answer.label(1)] == ["1", "2"]
    assert [answer.direction(0), answer.direction(1)] == ["recvonly", "recvonly"]
    ports = [answer.port(0), answer.port(1)]
    assert all(p != 0 and p % 2 == 0 for p in ports)
    assert ports[0] != ports[1]
    assert all(h.config.port_min <= p < h.config.port_max for p in ports)
    assert answer.connection == "IN IP4 127.0.0.1"
    for index in (0, 1):
        assert answer.media[index]["formats"][0] in ("0", "8")  # one of the offered codecs
    for port in ports:
        assert_port_bound(port)
        assert_port_bound(port + 1)  # RTCP
    assert h.handler.media.reserved == 2
    assert h.handler.stats["calls_started"] == 1


async def test_snapshot_goes_connecting_active_ended(h: Harness) -> None:
    dialogue, ok = await h.answered_call("lifecycle@sbc")
    session_id = h.only_call()

    connecting = await h.snapshot(session_id)
    assert connecting.status == CallStatus.CONNECTING
    assert connecting.call_id == "lifecycle@sbc"
    assert connecting.node_id == "test-node"
    assert connecting.from_uri == "sip:sbc@example.com"
    assert connecting.dialog["local_tag"] == ok.to.tag
    assert connecting.dialog["remote_tag"] == dialogue.from_tag
    assert connecting.dialog["call_id"] == "lifecycle@sbc"
    recording = connecting.recording["session"]
    assert recording["metadata"] is not None
    names = {p["name"] for p in recording["participants"]}
    assert names == {"Alice", "Bob"}
    by_label = {s["label"]: s["participant_ids"] for s in recording["streams"]}
    assert by_label == {"1": ["srfBElmCRp2QB23b7Mpk0w=="], "2": ["zSfPoSvdSDCmU3A3TRDxAw=="]}
    answer = SdpView.parse(ok.body)
    assert connecting.media["ports"] == sorted([answer.port(0), answer.port(1)])
    assert [s["label"] for s in connecting.media["streams"]] == ["1", "2"]
    assert [c.status for c in await h.store.list()] == [CallStatus.CONNECTING]

    assert h.feed(dialogue.ack()) == []
    active = await h.snapshot(session_id)
    assert active.status == CallStatus.ACTIVE
    assert active.started_at is not None
    assert active.version > connecting.version

    assert statuses(h.feed(dialogue.bye())) == [200]
    ended = await h.snapshot(session_id)
    assert ended.status == CallStatus.ENDED
    assert ended.ended_at is not None and ended.end_reason
    assert ended.dialog["state"] == "terminated"
    assert await h.store.list() == []  # final snapshots are not live
    assert h.handler.calls == {}
    assert h.handler.media.reserved == 0
    assert h.handler.stats["calls_ended"] == 1


async def test_session_expires_in_the_invite_is_echoed_with_require_timer(h: Harness) -> None:
    dialogue = Dialogue("timer-1@sbc")
    sent = await h.feed_and_settle(
        dialogue.siprec_invite(headers=[("Session-Expires", "1800;refresher=uac")])
    )
    ok = final(sent)
    assert ok.status == 200
    assert (ok.headers.get("Session-Expires") or "").split(";")[0] == "1800"
    assert "timer" in ok.headers.tokens("Require")


async def test_default_store_is_used_when_none_is_configured() -> None:
    handler = CallDriver(HandlerConfig(node_id="n"), send=lambda data, dest: None)
    assert isinstance(handler.store, MemoryCallStore)


async def test_configured_store_is_used_even_when_empty(h: Harness) -> None:
    # An empty MemoryCallStore is falsy (it has __len__): it must still be the one used.
    assert h.handler.store is h.store
    await h.answered_call("store@sbc")
    assert await h.snapshot(h.only_call())


# ---------------------------------------------------------------------------------------------
# 2xx retransmission (RFC 3261 §13.3.1.4) and Timer L


def retransmissions_of_200(sent: list[Sent]) -> list[float]:
    return [s.at for s in sent if s.response.status == 200]


async def test_200_is_retransmitted_on_t1_doubling_up_to_t2_until_the_ack(h: Harness) -> None:
    dialogue, _ok = await h.answered_call("retrans-1@sbc")
    first = h.sent[-1]
    assert first.at == START
    resent = h.advance(20.0)
    times = retransmissions_of_200(resent)
    assert times[:5] == [START + 0.5, START + 1.5, START + 3.5, START + 7.5, START + 11.5]
    gaps = [b - a for a, b in zip([START, *times], times, strict=False)]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, 8 * T1]
    assert all(gap == T2 for gap in gaps[4:])
    assert all(s.data == first.data for s in resent)  # the very same 200
    assert all(s.destination == SBC for s in resent)

    assert h.feed(dialogue.ack()) == []
    assert h.advance(60.0) == []  # the ACK stopped them, and Timer L does not end the call
    assert len(h.handler.calls) == 1
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.status == CallStatus.ACTIVE


async def test_without_ack_the_call_fails_at_64_t1_and_its_ports_are_freed(h: Harness) -> None:
    dialogue, _ok = await h.answered_call("no-ack@sbc")
    session_id = h.only_call()
    assert h.handler.media.reserved == 2
    h.advance(64 * T1 - 0.01)
    assert len(h.handler.calls) == 1  # still waiting
    at_timeout = h.advance(0.02)
    assert h.handler.calls == {}
    assert h.handler.media.reserved == 0
    # RFC 3261 §13.3.1.4: no ACK within 64*T1 ends the session with a BYE.
    byes = [s.message for s in at_timeout if isinstance(s.message, SipRequest)]
    assert [b.method for b in byes] == ["BYE"]
    assert byes[0].headers.get("To") is not None and "no ACK" in (
        byes[0].headers.get("Reason") or ""
    )
    failed = await h.snapshot(session_id)
    assert failed.status == CallStatus.FAILED
    assert failed.end_reason is not None and "ACK" in failed.end_reason
    assert h.handler.stats["calls_failed"] == 1
    later = h.advance(60.0)  # only the BYE's own retransmissions (nobody answers it here)
    assert {s.message.method for s in later} <= {"BYE"}  # type: ignore[union-attr]
    # A BYE for the dead dialog is answered 481.
    assert statuses(h.feed(dialogue.bye())) == [481]


# ---------------------------------------------------------------------------------------------
# INVITE retransmissions


async def test_invite_retransmitted_before_the_200_makes_one_call(h: Harness) -> None:
    dialogue = Dialogue("dup-1@sbc")
    invite = dialogue.siprec_invite()
    h.handler.on_message(invite, SBC)
    assert statuses(h.take()) == [100]
    h.handler.on_message(invite, SBC)  # the SBC's Timer A fired before our 200
    assert statuses(h.take()) == [100]  # the last provisional, again
    await h.handler.idle()
    assert statuses(h.take()) == [200]
    assert h.handler.stats["calls_started"] == 1
    assert len(h.handler.calls) == 1
    assert h.handler.media.reserved == 2


async def test_invite_retransmitted_after_the_200_gets_the_200_again(h: Harness) -> None:
    dialogue = Dialogue("dup-2@sbc")
    invite = dialogue.siprec_invite()
    sent = await h.feed_and_settle(invite)
    ok = sent[-1]
    assert ok.response.status == 200
    again = await h.feed_and_settle(invite)
    assert [s.data for s in again] == [ok.data]
    assert h.handler.stats["calls_started"] == 1
    assert len(h.handler.calls) == 1
    # Once acknowledged, a late copy of the INVITE is absorbed.
    dialogue.to_tag = ok.response.to.tag
    assert h.feed(dialogue.ack()) == []
    assert await h.feed_and_settle(invite) == []
    assert h.handler.stats["calls_started"] == 1


async def test_two_calls_get_distinct_ports_and_dialogs(h: Harness) -> None:
    first, ok1 = await h.confirmed_call("pair-1@sbc")
    second, ok2 = await h.confirmed_call("pair-2@sbc")
    ports1 = {SdpView.parse(ok1.body).port(i) for i in (0, 1)}
    ports2 = {SdpView.parse(ok2.body).port(i) for i in (0, 1)}
    assert not ports1 & ports2
    assert ok1.to.tag != ok2.to.tag
    assert len(h.handler.calls) == 2
    assert statuses(h.feed(first.bye())) == [200]
    assert len(h.handler.calls) == 1
    assert statuses(h.feed(second.bye())) == [200]
    assert h.handler.media.reserved == 0


# ---------------------------------------------------------------------------------------------
# The injected clock


async def test_an_injected_clock_leaves_timers_to_the_caller(h: Harness) -> None:
    h.now = 0.0  # far behind the event loop's clock: a deadline put on the loop would fire now
    fired = 0
    on_timer = h.handler.on_timer

    def counting() -> None:
        nonlocal fired
        fired += 1
        on_timer()

    h.handler.on_timer = counting  # type: ignore[method-assign]
    await h.answered_call("clock@sbc")
    h.now = 0.6  # Timer G is due on the injected clock
    await asyncio.sleep(0.02)
    assert fired == 0
    assert h.take() == []
    h.handler.on_timer()
    assert statuses(h.take()) == [200]


# ---------------------------------------------------------------------------------------------
# Routing: Record-Route, Contact


async def test_record_route_is_copied_into_the_200_and_kept_as_route_set(h: Harness) -> None:
    dialogue = Dialogue("rr@sbc")
    routes = ("<sip:192.0.2.40;lr;did=a1b>", "<sip:192.0.2.41;lr>")
    invite = dialogue.siprec_invite(headers=[("Record-Route", r) for r in routes])
    ok = final(await h.feed_and_settle(invite))
    assert ok.headers.get_all("Record-Route") == list(routes)
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.dialog["route_set"] == list(routes)
    assert snapshot.dialog["remote_target"] == "sip:sbc@127.0.0.1:5099"


# ---------------------------------------------------------------------------------------------
# Calls ended from our side (operator stop, drain)


def bye_response(bye: SipRequest, status: int = 200) -> bytes:
    """The SBC's response to a BYE the node sent."""
    fields = [f"SIP/2.0 {status} OK"]
    fields += [f"Via: {v}" for v in bye.headers.get_all("Via")]
    fields += [f"{n}: {bye.headers.get(n)}" for n in ("From", "To", "Call-ID", "CSeq")]
    return ("\r\n".join([*fields, "Content-Length: 0"]) + "\r\n\r\n").encode()


async def test_stop_call_sends_bye_in_the_dialog_until_answered(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("stop@sbc")
    session_id = h.only_call()
    h.handler.stop_call(session_id)
    sent = h.take()
    assert len(sent) == 1 and isinstance(sent[0].message, SipRequest)
    bye = sent[0].message
    assert sent[0].destination == SBC  # the SBC's Contact
    assert bye.method == "BYE"
    assert bye.uri == "sip:sbc@127.0.0.1:5099"
    assert bye.call_id == "stop@sbc"
    assert bye.from_.tag == ok.to.tag
    assert bye.to.tag == dialogue.from_tag
    assert bye.cseq.number == 1
    assert h.handler.calls == {}
    assert h.handler.media.reserved == 0
    snapshot = await h.snapshot(session_id)
    assert snapshot.status == CallStatus.ENDED
    assert snapshot.end_reason == "stopped by operator"

    assert [s.data for s in h.advance(T1)] == [sent[0].data]  # Timer E
    assert h.feed(bye_response(bye)) == []
    assert h.advance(40.0) == []
    assert statuses(h.feed(dialogue.bye())) == [481]  # the SBC's own BYE crossed ours


async def test_drain_refuses_new_calls_and_byes_live_ones(h: Harness) -> None:
    await h.confirmed_call("drain-1@sbc")
    await h.handler.drain(grace=0.0)
    sent = h.take()
    assert [type(s.message).__name__ for s in sent] == ["SipRequest"]
    assert sent[0].message.call_id == "drain-1@sbc"
    assert h.handler.calls == {}
    refused = await h.feed_and_settle(Dialogue("drain-2@sbc").siprec_invite())
    assert statuses(refused) == [100, 503]
    assert refused[-1].response.headers.get("Retry-After")
    assert not h.handler.ready
