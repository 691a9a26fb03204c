"""The recorder mid-call: re-INVITE, UPDATE, INFO, delayed offer, and SIP over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from siprec_node.sip.call import CallStatus
from siprec_node.sip.message import SipResponse

from .test_handler_harness import (
    METADATA,
    METADATA_PARTIAL,
    MULTIPART_TYPE,
    SBC,
    SBC_TCP,
    T1,
    Dialogue,
    Harness,
    SdpView,
    audio_m_line,
    final,
    multipart,
    sdp,
    statuses,
    two_stream_sdp,
)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as made:
        yield made


async def reinvite(
    h: Harness,
    dialogue: Dialogue,
    body: bytes | None,
    content_type: str | None = MULTIPART_TYPE,
    headers: tuple[tuple[str, str], ...] = (),
) -> SipResponse:
    """A re-INVITE with the next CSeq; returns its final response (the ACK is not sent)."""
    dialogue.next_cseq()
    data = dialogue.request(
        "INVITE",
        body=body or b"",
        content_type=content_type if body else None,
        headers=headers,
    )
    return final(await h.feed_and_settle(data))


def ports(view: SdpView) -> list[int]:
    return [view.port(i) for i in range(len(view.media))]


# ---------------------------------------------------------------------------------------------
# re-INVITE


async def test_reinvite_with_the_same_offer_keeps_ports_and_version(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("re-same@sbc")
    before = SdpView.parse(ok.body)
    again = await reinvite(h, dialogue, multipart(two_stream_sdp(version=2)))
    assert again.status == 200
    assert again.to.tag == ok.to.tag
    assert again.headers.get("Content-Type") == "application/sdp"
    after = SdpView.parse(again.body)
    assert ports(after) == ports(before)
    assert after.origin == before.origin  # same session id, unchanged version
    assert again.body == ok.body
    assert "+sip.srs" in (again.headers.get("Contact") or "")
    assert h.feed(dialogue.ack(cseq=dialogue.cseq)) == []  # the re-INVITE's ACK
    assert h.advance(10.0) == []
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.status == CallStatus.ACTIVE
    assert h.handler.media.reserved == 2


async def test_reinvite_putting_one_stream_inactive(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("re-hold@sbc")
    before = SdpView.parse(ok.body)
    held = await reinvite(
        h, dialogue, multipart(two_stream_sdp(directions=("sendonly", "inactive"), version=2))
    )
    assert held.status == 200
    view = SdpView.parse(held.body)
    assert [view.direction(0), view.direction(1)] == ["recvonly", "inactive"]
    assert [view.label(0), view.label(1)] == ["1", "2"]
    assert ports(view) == ports(before)
    assert view.origin[1] == before.origin[1]
    assert view.version == before.version + 1
    assert h.feed(dialogue.ack(cseq=dialogue.cseq)) == []
    snapshot = await h.snapshot(h.only_call())
    paused = {s["label"]: s["paused"] for s in snapshot.recording["session"]["streams"]}
    assert paused == {"1": False, "2": True}

    resumed = await reinvite(h, dialogue, multipart(two_stream_sdp(version=3)))
    view = SdpView.parse(resumed.body)
    assert [view.direction(0), view.direction(1)] == ["recvonly", "recvonly"]
    assert view.version == before.version + 2
    assert ports(view) == ports(before)


async def test_old_style_hold_is_answered_inactive(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("re-c0@sbc")
    held = sdp(audio_m_line(30000, "1"), audio_m_line(30002, "2"), host="0.0.0.0", version=2)
    answer = SdpView.parse((await reinvite(h, dialogue, multipart(held))).body)
    assert [answer.direction(0), answer.direction(1)] == ["inactive", "inactive"]
    assert ports(answer) == ports(SdpView.parse(ok.body))


async def test_reinvite_adding_a_stream_gets_a_new_port(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("re-add@sbc")
    three = sdp(
        audio_m_line(30000, "1"), audio_m_line(30002, "2"), audio_m_line(30004, "3"), version=2
    )
    answer = SdpView.parse((await reinvite(h, dialogue, multipart(three))).body)
    assert len(answer.media) == 3
    old = ports(SdpView.parse(ok.body))
    assert ports(answer)[:2] == old
    assert ports(answer)[2] not in old and ports(answer)[2] % 2 == 0
    assert h.handler.media.reserved == 3
    assert statuses(h.feed(dialogue.bye())) == [200]
    assert h.handler.media.reserved == 0


async def test_reinvite_relabelling_a_stream_frees_every_port_at_the_end(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("re-label@sbc")
    relabelled = sdp(audio_m_line(30000, "3"), audio_m_line(30002, "2"), version=2)
    answer = SdpView.parse((await reinvite(h, dialogue, multipart(relabelled))).body)
    assert [answer.label(0), answer.label(1)] == ["3", "2"]
    assert answer.port(1) == SdpView.parse(ok.body).port(1)  # label 2 keeps its port
    assert h.handler.media.reserved == 3  # label 1's port is kept in case the stream comes back
    assert statuses(h.feed(dialogue.bye())) == [200]
    assert h.handler.media.reserved == 0  # including the port of the stream that left


async def test_reinvite_with_session_expires_echoes_it_with_require_timer(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("re-timer@sbc")
    refresh = await reinvite(
        h,
        dialogue,
        multipart(two_stream_sdp()),
        headers=(("Session-Expires", "1800;refresher=uac"), ("Supported", "timer")),
    )
    assert refresh.status == 200
    assert (refresh.headers.get("Session-Expires") or "").split(";")[0] == "1800"
    assert "timer" in refresh.headers.tokens("Require")


async def test_reinvite_with_an_older_cseq_is_500(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("re-cseq@sbc")
    dialogue.cseq = 5
    assert (await reinvite(h, dialogue, multipart(two_stream_sdp()))).status == 200
    dialogue.cseq = 2  # reinvite() sends 3
    assert (await reinvite(h, dialogue, multipart(two_stream_sdp()))).status == 500
    assert len(h.handler.calls) == 1


async def test_reinvite_with_an_unsupported_body_is_415_and_the_call_goes_on(
    h: Harness,
) -> None:
    dialogue, ok = await h.confirmed_call("re-415@sbc")
    refused = await reinvite(h, dialogue, b"hello\r\n", content_type="text/plain")
    assert refused.status == 415
    assert "application/sdp" in refused.headers.tokens("Accept")
    assert refused.to.tag == ok.to.tag  # in-dialog: our tag, not a new one
    again = await reinvite(h, dialogue, multipart(two_stream_sdp()))
    assert again.status == 200
    assert ports(SdpView.parse(again.body)) == ports(SdpView.parse(ok.body))


async def test_reinvite_for_an_unknown_dialog_is_481(h: Harness) -> None:
    stray = Dialogue("re-unknown@sbc", to_tag="feedface", cseq=1)
    assert (await reinvite(h, stray, multipart(two_stream_sdp()))).status == 481


async def test_delayed_offer_reinvite_takes_the_answer_from_the_ack(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("re-delayed@sbc")
    offer = await reinvite(h, dialogue, None)
    assert offer.status == 200
    view = SdpView.parse(offer.body)
    assert [view.direction(0), view.direction(1)] == ["recvonly", "recvonly"]
    assert ports(view) == ports(SdpView.parse(ok.body))
    answer = sdp(audio_m_line(30010, "1"), audio_m_line(30012, "2"), version=2).encode()
    ack = dialogue.ack(cseq=dialogue.cseq, body=answer, content_type="application/sdp")
    assert h.feed(ack) == []
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.recording["awaiting_answer"] is False
    streams = snapshot.media["streams"]
    assert [s["accepted"] for s in streams] == [True, True]
    assert [s["remote_port"] for s in streams] == [30010, 30012]
    assert [s["codec"] for s in streams] == ["PCMU", "PCMU"]


# ---------------------------------------------------------------------------------------------
# UPDATE and INFO


async def test_metadata_only_update_is_answered_without_a_body(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("upd-meta@sbc")
    update = dialogue.request(
        "UPDATE",
        body=METADATA_PARTIAL.encode(),
        content_type="application/rs-metadata+xml",
        headers=[("Content-Disposition", "recording-session")],
        cseq=dialogue.next_cseq(),
    )
    sent = h.feed(update)
    assert statuses(sent) == [200]
    ok = sent[0].response
    assert ok.body == b""  # RFC 3311: no offer in the UPDATE, no answer in its 200
    assert "Content-Type" not in ok.headers
    snapshot = await h.snapshot(h.only_call())
    names = {p["name"] for p in snapshot.recording["session"]["participants"]}
    assert "Carol" in names
    streams = snapshot.recording["session"]["streams"]
    carol = "Q2Fyb2wtcGFydGljaXBhbnQ="
    by_label = {s["label"]: s["participant_ids"] for s in streams}
    assert by_label == {"1": ["srfBElmCRp2QB23b7Mpk0w=="], "2": [carol]}  # Bob stopped sending
    assert [s["accepted"] for s in snapshot.media["streams"]] == [True, True]


async def test_update_with_sdp_gets_an_answer_on_the_same_ports(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("upd-sdp@sbc")
    update = dialogue.request(
        "UPDATE",
        body=multipart(two_stream_sdp(directions=("inactive", "inactive"), version=2)),
        content_type=MULTIPART_TYPE,
        cseq=dialogue.next_cseq(),
    )
    sent = h.feed(update)
    assert statuses(sent) == [200]
    view = SdpView.parse(sent[0].response.body)
    assert [view.direction(0), view.direction(1)] == ["inactive", "inactive"]
    assert ports(view) == ports(SdpView.parse(ok.body))


async def test_info_in_dialog_is_200(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("info@sbc")
    info = dialogue.request("INFO", cseq=dialogue.next_cseq(), contact=None)
    assert statuses(h.feed(info)) == [200]
    assert len(h.handler.calls) == 1


async def test_update_for_an_unknown_dialog_is_481(h: Harness) -> None:
    stray = Dialogue("upd-unknown@sbc", to_tag="0badcafe")
    update = stray.request(
        "UPDATE", body=METADATA.encode(), content_type="application/rs-metadata+xml", cseq=2
    )
    assert statuses(h.feed(update)) == [481]


# ---------------------------------------------------------------------------------------------
# Delayed offer (Cisco CUCM): the INVITE has no SDP


async def test_delayed_offer_gets_our_recvonly_offer_and_the_ack_answers(h: Harness) -> None:
    dialogue = Dialogue("delayed@cucm", contact="<sip:cucm@127.0.0.1:5099>")
    sent = await h.feed_and_settle(dialogue.request("INVITE", to_tag=None))
    assert statuses(sent) == [100, 200]
    ok = sent[-1].response
    assert ok.headers.get("Content-Type") == "application/sdp"
    offer = SdpView.parse(ok.body)
    assert len(offer.media) >= 1
    assert all(offer.direction(i) == "recvonly" for i in range(len(offer.media)))
    assert all(h.config.port_min <= p < h.config.port_max for p in ports(offer))
    assert "0" in offer.media[0]["formats"]  # PCMU offered
    session_id = h.only_call()
    waiting = await h.snapshot(session_id)
    assert waiting.status == CallStatus.CONNECTING
    assert waiting.recording["awaiting_answer"] is True

    dialogue.to_tag = ok.to.tag
    answer = sdp(audio_m_line(31000, None, "sendonly")).encode()
    assert h.feed(dialogue.ack(body=answer, content_type="application/sdp")) == []
    active = await h.snapshot(session_id)
    assert active.status == CallStatus.ACTIVE
    assert active.recording["awaiting_answer"] is False
    stream = active.media["streams"][0]
    assert stream["accepted"] is True
    assert stream["remote_port"] == 31000
    assert stream["codec"] == "PCMU"
    assert h.advance(10.0) == []


async def test_delayed_offer_ack_without_answer_still_confirms(h: Harness) -> None:
    dialogue = Dialogue("delayed-noanswer@cucm", contact="<sip:cucm@127.0.0.1:5099>")
    ok = final(await h.feed_and_settle(dialogue.request("INVITE", to_tag=None)))
    dialogue.to_tag = ok.to.tag
    assert h.feed(dialogue.ack()) == []
    assert (await h.snapshot(h.only_call())).status == CallStatus.ACTIVE


# ---------------------------------------------------------------------------------------------
# TCP


async def test_tcp_call_answers_on_the_connection_and_never_retransmits(h: Harness) -> None:
    dialogue, ok = await h.answered_call("tcp-1@sbc", source=SBC_TCP)
    assert all(s.destination == SBC_TCP for s in h.sent)
    assert all(s.destination.connection_id == 7 for s in h.sent)
    assert "transport=tcp" in (ok.headers.get("Contact") or "")
    assert h.advance(20.0) == []  # reliable transport: no 200 retransmission
    assert h.feed(dialogue.ack(), SBC_TCP) == []
    assert (await h.snapshot(h.only_call())).status == CallStatus.ACTIVE
    bye = h.feed(dialogue.bye(), SBC_TCP)
    assert statuses(bye) == [200]
    assert bye[0].destination == SBC_TCP
    assert h.advance(60.0) == []


async def test_tcp_call_without_ack_still_fails_at_64_t1(h: Harness) -> None:
    await h.answered_call("tcp-2@sbc", source=SBC_TCP)
    session_id = h.only_call()
    sent = h.advance(64 * T1 + 0.01)
    # no retransmitted 200 on TCP; at Timer L one BYE ends the session, on the same connection
    assert [(s.message.method, s.destination) for s in sent] == [("BYE", SBC_TCP)]  # type: ignore[union-attr]
    assert h.handler.calls == {}
    assert h.handler.media.reserved == 0
    assert (await h.snapshot(session_id)).status == CallStatus.FAILED


async def test_tcp_options_answers_on_the_connection(h: Harness) -> None:
    dialogue = Dialogue("tcp-options@sbc", source=SBC_TCP)
    sent = h.feed(dialogue.request("OPTIONS", contact=None), SBC_TCP)
    assert statuses(sent) == [200]
    assert sent[0].destination == SBC_TCP


async def test_udp_responses_follow_rport(h: Harness) -> None:
    """The SBC's Via says 5099 but the datagram came from a NAT port: answer the NAT port."""
    natted = SBC.__class__("udp", "127.0.0.1", 40000)
    sent = h.feed(Dialogue("nat@sbc").request("OPTIONS", contact=None), natted)
    assert sent[0].destination == natted
    assert sent[0].response.top_via.params.get("rport") == "40000"
    assert SBC.port != natted.port
