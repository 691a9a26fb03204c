"""The recorder: CANCEL, BYE and ACK, including the sloppy forms real SRCs send (INTEROP.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from siprec_node.sip.call import CallStatus

from .test_handler_harness import (
    SBC,
    T1,
    Dialogue,
    Harness,
    SdpView,
    final,
    statuses,
)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as made:
        yield made


class GatedMediaOpen:
    """Stands in for ``call_media.sync`` (opening the streams before the 200): blocks until the
    test opens the gate."""

    def __init__(self, harness: Harness) -> None:
        self.gate = asyncio.Event()
        self.calls: list[str] = []
        self._real = harness.handler.call_media.sync
        harness.handler.call_media.sync = self  # type: ignore[method-assign]

    async def __call__(self, session_id: str, *args: object, **kwargs: object) -> list[str]:
        self.calls.append(session_id)
        await self.gate.wait()
        return await self._real(session_id, *args, **kwargs)  # type: ignore[arg-type]

    async def __aenter__(self) -> GatedMediaOpen:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gate.set()  # never leave the answer task blocked (the harness waits for it)


def cancel_for(dialogue: Dialogue, invite_branch: str) -> bytes:
    """A CANCEL as RFC 3261 §9.1 builds it: the INVITE's branch, CSeq number and To."""
    return dialogue.request("CANCEL", branch=invite_branch, cseq=1, to_tag=None, contact=None)


# ---------------------------------------------------------------------------------------------
# CANCEL


async def test_cancel_before_the_answer_gets_200_and_the_invite_487(h: Harness) -> None:
    async with GatedMediaOpen(h) as media:
        dialogue = Dialogue("cancel-1@sbc")
        h.handler.on_message(dialogue.siprec_invite(), SBC)
        invite_branch = dialogue.branches[-1]
        assert statuses(h.take()) == [100]
        await asyncio.sleep(0)  # the answer task is now waiting on the media
        assert len(media.calls) == 1
        session_id = h.only_call()
        assert h.handler.media.reserved == 2

        sent = h.feed(cancel_for(dialogue, invite_branch))
        assert sorted((s.response.cseq.method, s.response.status) for s in sent) == [
            ("CANCEL", 200),
            ("INVITE", 487),
        ]
        terminated = next(s.response for s in sent if s.response.status == 487)
        assert terminated.to.tag
        assert terminated.top_via.branch == invite_branch
        assert h.handler.calls == {}
        assert h.handler.media.reserved == 0
        assert h.handler.stats["calls_failed"] == 1

        media.gate.set()  # the media comes up late: no 200 must follow the 487
        await h.handler.idle()
        assert h.take() == []
        snapshot = await h.snapshot(session_id)
        assert snapshot.status == CallStatus.FAILED
        assert snapshot.end_reason is not None and "cancel" in snapshot.end_reason.lower()

        # The ACK for the 487 (same branch, the 487's To tag) is absorbed and stops its
        # retransmissions; a late CANCEL retransmission gets the same 200.
        ack = dialogue.request("ACK", branch=invite_branch, cseq=1, to_tag=terminated.to.tag)
        assert h.feed(ack) == []
        cancel_ok = next(s for s in sent if s.response.cseq.method == "CANCEL")
        assert [s.data for s in h.feed(cancel_for(dialogue, invite_branch))] == [cancel_ok.data]
        assert h.advance(40.0) == []
        assert h.handler.media.reserved == 0


async def test_487_is_retransmitted_until_its_ack(h: Harness) -> None:
    async with GatedMediaOpen(h) as media:
        dialogue = Dialogue("cancel-2@sbc")
        h.handler.on_message(dialogue.siprec_invite(), SBC)
        invite_branch = dialogue.branches[-1]
        await asyncio.sleep(0)
        h.take()
        sent = h.feed(cancel_for(dialogue, invite_branch))
        terminated = next(s for s in sent if s.response.status == 487)
        resent = h.advance(3 * T1)
        assert [s.data for s in resent] == [terminated.data] * 2  # at T1, then 2*T1 later
        ack = dialogue.request(
            "ACK", branch=invite_branch, cseq=1, to_tag=terminated.response.to.tag
        )
        assert h.feed(ack) == []
        assert h.advance(40.0) == []
        media.gate.set()
        await h.handler.idle()
        assert h.take() == []


async def test_cancel_after_the_200_changes_nothing(h: Harness) -> None:
    dialogue, _ok = await h.answered_call("cancel-3@sbc")
    invite_branch = dialogue.branches[-1]
    sent = h.feed(cancel_for(dialogue, invite_branch))
    assert [(s.response.cseq.method, s.response.status) for s in sent] == [("CANCEL", 200)]
    assert len(h.handler.calls) == 1
    assert h.feed(dialogue.ack()) == []
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.status == CallStatus.ACTIVE
    assert statuses(h.feed(dialogue.bye())) == [200]


async def test_cancel_matching_no_invite_is_481(h: Harness) -> None:
    stray = Dialogue("cancel-4@sbc")
    sent = h.feed(stray.request("CANCEL", cseq=1, to_tag=None, contact=None))
    assert statuses(sent) == [481]
    assert sent[0].response.cseq.method == "CANCEL"
    assert sent[0].response.to.tag


async def test_cancel_of_a_rejected_invite_gets_200_only(h: Harness) -> None:
    h.handler.draining = True
    dialogue = Dialogue("cancel-5@sbc")
    assert statuses(await h.feed_and_settle(dialogue.siprec_invite())) == [100, 503]
    sent = h.feed(cancel_for(dialogue, dialogue.branches[-1]))
    assert [(s.response.cseq.method, s.response.status) for s in sent] == [("CANCEL", 200)]


async def test_operator_stop_before_the_answer_refuses_the_invite(h: Harness) -> None:
    async with GatedMediaOpen(h) as media:
        dialogue = Dialogue("stop-early@sbc")
        h.handler.on_message(dialogue.siprec_invite(), SBC)
        await asyncio.sleep(0)
        assert statuses(h.take()) == [100]
        session_id = h.only_call()
        h.handler.stop_call(session_id)
        sent = h.take()
        assert [type(s.message).__name__ for s in sent] == ["SipResponse"]  # no BYE
        refusal = sent[0].response
        assert refusal.status >= 400 and refusal.cseq.method == "INVITE"
        assert refusal.to.tag
        assert h.handler.calls == {}
        assert h.handler.media.reserved == 0
        media.gate.set()
        await h.handler.idle()
        assert h.take() == []  # no 200 after the refusal
        assert (await h.snapshot(session_id)).is_final


# ---------------------------------------------------------------------------------------------
# BYE


async def test_bye_for_an_unknown_dialog_is_481(h: Harness) -> None:
    stray = Dialogue("bye-unknown@sbc", to_tag="not-ours")
    sent = h.feed(stray.bye())
    assert statuses(sent) == [481]
    assert sent[0].destination == SBC


async def test_bye_with_a_to_tag_of_another_dialog_is_481(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("bye-tag@sbc")
    wrong = Dialogue("bye-tag@sbc", to_tag="deadbeef", cseq=dialogue.cseq)
    assert statuses(h.feed(wrong.bye())) == [481]
    assert len(h.handler.calls) == 1
    assert statuses(h.feed(dialogue.bye())) == [200]


async def test_bye_before_the_ack_ends_the_call(h: Harness) -> None:
    dialogue, _ = await h.answered_call("bye-early@sbc")
    session_id = h.only_call()
    assert statuses(h.feed(dialogue.bye())) == [200]
    assert h.handler.calls == {}
    assert h.handler.media.reserved == 0
    snapshot = await h.snapshot(session_id)
    assert snapshot.status == CallStatus.ENDED
    # A late ACK for the 200 does not bring the call back.
    assert h.feed(dialogue.ack()) == []
    assert (await h.snapshot(session_id)).status == CallStatus.ENDED


async def test_bye_retransmission_gets_the_same_200(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("bye-dup@sbc")
    bye = dialogue.bye()
    first = h.feed(bye)
    assert statuses(first) == [200]
    assert [s.data for s in h.feed(bye)] == [first[0].data]
    assert h.handler.stats["calls_ended"] == 1


async def test_bye_with_a_lower_cseq_is_accepted(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("bye-cseq@sbc")
    assert statuses(h.feed(dialogue.request("INFO", cseq=10, contact=None))) == [200]
    session_id = h.only_call()
    assert statuses(h.feed(dialogue.bye(cseq=3))) == [200]  # INTEROP: lower than 10
    assert h.handler.calls == {}
    assert (await h.snapshot(session_id)).status == CallStatus.ENDED


async def test_bye_without_to_tag_is_matched_by_call_id_and_from_tag(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("bye-notag@sbc")
    assert statuses(h.feed(dialogue.bye(to_tag=None))) == [200]
    assert h.handler.calls == {}


async def test_a_lower_cseq_on_other_requests_is_500(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("info-cseq@sbc")
    assert statuses(h.feed(dialogue.request("INFO", cseq=10, contact=None))) == [200]
    assert statuses(h.feed(dialogue.request("INFO", cseq=4, contact=None))) == [500]
    assert len(h.handler.calls) == 1


# ---------------------------------------------------------------------------------------------
# ACK


async def test_ack_without_to_tag_confirms_the_call(h: Harness) -> None:
    dialogue, _ = await h.answered_call("ack-notag@sbc")
    assert h.feed(dialogue.ack(to_tag=None)) == []
    assert (await h.snapshot(h.only_call())).status == CallStatus.ACTIVE
    assert h.advance(10.0) == []  # and stops the 200's retransmissions


async def test_ack_with_another_cseq_number_confirms_the_call(h: Harness) -> None:
    dialogue, _ = await h.answered_call("ack-cseq@sbc")
    assert h.feed(dialogue.ack(cseq=7)) == []
    assert (await h.snapshot(h.only_call())).status == CallStatus.ACTIVE
    assert h.advance(10.0) == []


async def test_ack_with_another_from_display_name_confirms_the_call(h: Harness) -> None:
    dialogue, _ = await h.answered_call("ack-display@sbc")
    ack = dialogue.ack().replace(b'"Recording SBC" <', b'"SBC (leg 2)" <')
    assert h.feed(ack) == []
    assert (await h.snapshot(h.only_call())).status == CallStatus.ACTIVE
    assert h.advance(10.0) == []


async def test_ack_for_an_unknown_dialog_is_ignored(h: Harness) -> None:
    _dialogue, _ = await h.confirmed_call("ack-stray@sbc")
    stray = Dialogue("ack-stray-other@sbc", to_tag="whatever")
    assert h.feed(stray.ack()) == []
    assert len(h.handler.calls) == 1


async def test_duplicate_ack_changes_nothing(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("ack-dup@sbc")
    session_id = h.only_call()
    before = await h.snapshot(session_id)
    assert h.feed(dialogue.ack()) == []
    after = await h.snapshot(session_id)
    assert after.version == before.version


async def test_contact_without_closing_bracket_is_accepted(h: Harness) -> None:
    dialogue = Dialogue("contact@sbc", contact="<sip:sbc@127.0.0.1:5099;transport=udp;+sip.src")
    sent = await h.feed_and_settle(dialogue.siprec_invite())
    ok = final(sent)
    assert ok.status == 200
    dialogue.to_tag = ok.to.tag
    assert len(SdpView.parse(ok.body).media) == 2
    assert h.feed(dialogue.ack()) == []
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.status == CallStatus.ACTIVE
    assert snapshot.dialog["remote_target"].startswith("sip:sbc@127.0.0.1:5099")
    assert statuses(h.feed(dialogue.bye())) == [200]
