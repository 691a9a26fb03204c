"""RFC 3261 §13/§15 and RFC 4028 rules the handler keeps around the ACK and session timers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from siprec_node.sip.message import SipRequest

from .test_handler_harness import (
    METADATA,
    MULTIPART_TYPE,
    T1,
    Dialogue,
    Harness,
    SdpView,
    multipart,
    statuses,
    two_stream_sdp,
)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as made:
        yield made


def requests(sent: list) -> list[SipRequest]:  # type: ignore[type-arg]
    return [s.message for s in sent if isinstance(s.message, SipRequest)]


async def test_bye_before_ack_stops_the_200_retransmissions(h: Harness) -> None:
    dialogue, _ = await h.answered_call("bye-first@sbc")
    assert statuses(h.feed(dialogue.bye())) == [200]
    assert h.advance(64 * T1) == []  # the 200 is no longer retransmitted


async def test_operator_stop_before_the_ack_waits_for_it(h: Harness) -> None:
    dialogue, _ = await h.answered_call("stop-early@sbc")
    session_id = h.only_call()
    h.handler.stop_call(session_id)
    assert requests(h.take()) == []  # §15: no BYE before the ACK
    assert h.handler.calls == {}  # the recording itself ends at once
    byes = requests(h.feed(dialogue.ack()))
    assert [b.method for b in byes] == ["BYE"]
    assert "stopped by operator" in (byes[0].headers.get("Reason") or "")


async def test_operator_stop_without_ack_sends_bye_at_timer_h(h: Harness) -> None:
    await h.answered_call("stop-no-ack@sbc")
    h.handler.stop_call(h.only_call())
    sent = h.advance(64 * T1 + 0.01)
    assert "BYE" in [r.method for r in requests(sent)]


async def test_metadata_only_reinvite_gets_an_offer(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("meta-reinvite@sbc")
    before = SdpView.parse(ok.body)
    sent = h.feed(
        dialogue.request(
            "INVITE",
            cseq=dialogue.next_cseq(),
            body=METADATA.encode(),
            content_type="application/rs-metadata+xml",
            headers=[("Content-Disposition", "recording-session")],
        )
    )
    assert statuses(sent) == [200]
    offer = SdpView.parse(sent[0].response.body)
    assert [offer.port(i) for i in range(2)] == [before.port(i) for i in range(2)]
    assert [offer.direction(i) for i in range(2)] == ["recvonly", "recvonly"]


async def test_no_session_timer_when_the_src_does_not_support_it(h: Harness) -> None:
    dialogue = Dialogue("no-timer@sbc")
    invite = dialogue.request(
        "INVITE",
        body=multipart(two_stream_sdp()),
        content_type=MULTIPART_TYPE,
        headers=[("Require", "siprec"), ("Session-Expires", "1800")],
        to_tag=None,
    )
    sent = await h.feed_and_settle(invite)
    ok = next(s.response for s in sent if s.response.status == 200)
    assert ok.headers.get("Session-Expires") is None
    assert "timer" not in ok.headers.tokens("Require")


async def test_session_timer_refresher_uac_requires_timer(h: Harness) -> None:
    dialogue = Dialogue("timer-uac@sbc")
    sent = await h.feed_and_settle(
        dialogue.siprec_invite(headers=[("Session-Expires", "1800;refresher=uac")])
    )
    ok = next(s.response for s in sent if s.response.status == 200)
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert "timer" in ok.headers.tokens("Require")


async def test_session_timer_refresher_uas_is_kept(h: Harness) -> None:
    dialogue = Dialogue("timer-uas@sbc")
    sent = await h.feed_and_settle(
        dialogue.siprec_invite(headers=[("Session-Expires", "1800;refresher=uas")])
    )
    ok = next(s.response for s in sent if s.response.status == 200)
    assert ok.headers.get("Session-Expires") == "1800;refresher=uas"
    assert "timer" not in ok.headers.tokens("Require")
    dialogue.to_tag = ok.to.tag
    h.feed(dialogue.ack())
    h.handler.refresh_session(h.only_call())  # what the loop timer does at half the interval
    updates = requests(h.take())
    assert [u.method for u in updates] == ["UPDATE"]
    assert updates[0].headers.get("Session-Expires") == "1800;refresher=uas"
    assert updates[0].body == b""


async def test_cancel_200_carries_the_invite_to_tag(h: Harness) -> None:
    dialogue, ok = await h.answered_call("cancel-tag@sbc")
    cancel = dialogue.request(
        "CANCEL", cseq=1, to_tag=None, contact=None, branch=dialogue.branches[0]
    )
    sent = h.feed(cancel)
    assert statuses(sent) == [200]
    assert sent[0].response.to.tag == ok.to.tag


async def test_in_dialog_request_without_to_tag_is_answered_with_ours(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("no-to-tag@sbc")
    sent = h.feed(dialogue.bye(to_tag=None))
    assert statuses(sent) == [200]
    assert sent[0].response.to.tag == ok.to.tag


async def test_operator_metadata_request_sends_update(h: Harness) -> None:
    dialogue, ok = await h.confirmed_call("meta-request@sbc")
    h.handler.request_metadata(h.only_call())
    updates = requests(h.take())
    assert [u.method for u in updates] == ["UPDATE"]
    update = updates[0]
    assert update.headers.get("Content-Type") == "application/rs-metadata-request"
    assert (update.headers.get("Content-Disposition") or "").startswith("recording-session")
    assert update.to.tag == dialogue.from_tag and update.from_.tag == ok.to.tag
    assert update.body


async def test_metadata_request_refused_before_the_ack(h: Harness) -> None:
    await h.answered_call("meta-early@sbc")
    with pytest.raises(ValueError, match="not established"):
        h.handler.request_metadata(h.only_call())


async def test_unknown_dialog_while_recovering_gets_503_not_481(h: Harness) -> None:
    h.handler.recovering = True
    stranger = Dialogue("not-yet-recovered@sbc")
    stranger.to_tag = "ours-after-restart"
    sent = h.feed(stranger.bye())
    assert statuses(sent) == [503]
    assert sent[0].response.headers.get("Retry-After") == "1"
    await h.handler.recover()  # nothing stored: recovery completes, 481 from now on
    assert statuses(h.feed(stranger.bye())) == [481]


async def test_vendor_identifiers_reach_the_snapshot(h: Harness) -> None:
    """Cisco's GUID from a header and Oracle's UCID from metadata extension data."""
    from pathlib import Path

    acme = (Path(__file__).parents[2] / "data" / "metadata" / "acme_draft.xml").read_text()
    dialogue = Dialogue("vendor-ids@sbc")
    sent = await h.feed_and_settle(
        dialogue.siprec_invite(
            body=multipart(two_stream_sdp(), metadata=acme),
            headers=[("Cisco-Guid", "1234-5678")],
        )
    )
    assert statuses(sent)[-1] == 200
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.vendor_ids["Cisco-Guid"] == "1234-5678"
    assert snapshot.vendor_ids["UCID"] == "00FA080018D2A1678E3F21;encoding=hex"
