"""The recorder: sloppy SIP whose intent is unambiguous is accepted and logged once per call.

Issue 9, item 5: a BYE, ACK or CANCEL whose CSeq names another method than its request line is
handled as its request line says; recording metadata that is not well-formed XML still records
the call (participants from From/To) and flags it ``metadata_unparsed``. Genuinely malformed
messages, unsafe metadata and multipart bodies that lose the SDP keep their 4xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from siprec_node.sip.call import CallStatus
from siprec_node.sip.message import SipRequest, make_response, parse_message

from .test_handler_harness import (
    BOUNDARY,
    METADATA,
    MULTIPART_TYPE,
    SBC,
    T1,
    Dialogue,
    Harness,
    final,
    multipart,
    statuses,
    two_stream_sdp,
)

BROKEN_METADATA = METADATA[: METADATA.index("<participantstreamassoc")] + "<participantstr"


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as made:
        yield made


def tolerated(logs: list[dict[str, Any]], fault: str) -> list[dict[str, Any]]:
    """The ``sip_tolerated`` log lines about ``fault``."""
    return [e for e in logs if e.get("event") == "sip_tolerated" and e.get("fault") == fault]


class GatedMediaOpen:
    """Holds the INVITE's answer (the media open) until the test releases it."""

    def __init__(self, harness: Harness) -> None:
        self.gate = asyncio.Event()
        self._real = harness.handler.call_media.sync
        harness.handler.call_media.sync = self  # type: ignore[method-assign]

    async def __call__(self, session_id: str, *args: object, **kwargs: object) -> list[str]:
        await self.gate.wait()
        return await self._real(session_id, *args, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# CSeq method disagreeing with the request line


def test_parser_keeps_a_bye_ack_cancel_with_another_cseq_method() -> None:
    dialogue = Dialogue("parse-1@sbc", to_tag="srs-1")
    for method in ("BYE", "ACK", "CANCEL"):
        message = parse_message(dialogue.request(method, cseq=2, cseq_method="INVITE"))
        assert isinstance(message, SipRequest)
        assert message.method == method
        assert message.cseq_method_mismatch
        response = make_response(message, 200)
        # The SRC's client transaction is the request line's: the response names its method.
        assert response.headers.get("CSeq") == f"2 {method}"
        assert response.cseq.method == method


def test_a_matching_cseq_is_echoed_byte_for_byte() -> None:
    raw = Dialogue("parse-2@sbc", to_tag="srs-2").request("BYE", cseq=2)
    raw = raw.replace(b"CSeq: 2 BYE", b"CSeq: 0002   bye")
    message = parse_message(raw)
    assert isinstance(message, SipRequest) and not message.cseq_method_mismatch
    assert make_response(message, 200).headers.get("CSeq") == "0002   bye"


async def test_bye_with_an_invite_cseq_ends_the_call(h: Harness) -> None:
    dialogue, _ = await h.confirmed_call("cseq-bye@sbc")
    session_id = h.only_call()
    with capture_logs() as logs:
        sent = h.feed(dialogue.bye(cseq_method="INVITE"))
    ok = final(sent)
    assert ok.status == 200
    assert ok.headers.get("CSeq") == f"{dialogue.cseq} BYE"
    assert ok.to.tag == dialogue.to_tag
    assert h.handler.calls == {}
    snapshot = await h.snapshot(session_id)
    assert snapshot.status == CallStatus.ENDED
    assert snapshot.end_reason == "BYE from SRC"
    [line] = tolerated(logs, "cseq_method_mismatch")
    assert line["method"] == "BYE" and line["cseq"] == f"{dialogue.cseq} INVITE"
    assert line["call_id"] == "cseq-bye@sbc" and line["session_id"] == session_id
    assert h.handler.stats["malformed"] == 0


async def test_ack_with_an_invite_cseq_confirms_the_call_and_is_logged_once(h: Harness) -> None:
    dialogue, ok = await h.answered_call("cseq-ack@sbc")
    session_id = h.only_call()
    with capture_logs() as logs:
        assert h.feed(dialogue.ack(cseq_method="INVITE")) == []
        # The 200 is no longer retransmitted: the ACK was taken as the ACK it is.
        assert h.advance(10 * T1) == []
        snapshot = await h.snapshot(session_id)
        assert snapshot.status == CallStatus.ACTIVE
        # Same fault again in the same call (its BYE): one log line for the call.
        assert statuses(h.feed(dialogue.bye(cseq_method="ACK"))) == [200]
    assert ok.status == 200
    assert len(tolerated(logs, "cseq_method_mismatch")) == 1
    assert h.handler.calls == {}


async def test_cancel_with_an_invite_cseq_cancels_the_invite(h: Harness) -> None:
    h.handler.call_media.sync = GatedMediaOpen(h)  # type: ignore[method-assign]
    dialogue = Dialogue("cseq-cancel@sbc")
    h.handler.on_message(dialogue.siprec_invite(), SBC)
    invite_branch = dialogue.branches[-1]
    assert statuses(h.take()) == [100]
    await asyncio.sleep(0)
    session_id = h.only_call()
    cancel = dialogue.request(
        "CANCEL", branch=invite_branch, cseq=1, cseq_method="INVITE", to_tag=None, contact=None
    )
    with capture_logs() as logs:
        sent = h.feed(cancel)
    assert sorted((s.response.headers.get("CSeq"), s.response.status) for s in sent) == [
        ("1 CANCEL", 200),
        ("1 INVITE", 487),
    ]
    assert h.handler.calls == {}
    assert len(tolerated(logs, "cseq_method_mismatch")) == 1
    h.handler.call_media.sync.gate.set()  # type: ignore[attr-defined]
    await h.handler.idle()
    assert h.take() == []
    snapshot = await h.snapshot(session_id)
    assert snapshot.status == CallStatus.FAILED


@pytest.mark.parametrize(
    ("method", "cseq_method"), [("UPDATE", "INVITE"), ("INFO", "BYE"), ("INVITE", "UPDATE")]
)
async def test_other_methods_with_another_cseq_method_stay_400(
    h: Harness, method: str, cseq_method: str
) -> None:
    dialogue, _ = await h.confirmed_call("cseq-400@sbc")
    sent = h.feed(dialogue.request(method, cseq=dialogue.next_cseq(), cseq_method=cseq_method))
    assert statuses(sent) == [400]
    assert "CSeq method" in sent[0].response.reason
    assert len(h.handler.calls) == 1
    assert statuses(h.feed(dialogue.bye())) == [200]


# ---------------------------------------------------------------------------------------------
# Metadata that is not well-formed XML


def _invite_with_metadata(dialogue: Dialogue, metadata: str) -> bytes:
    return dialogue.siprec_invite(body=multipart(two_stream_sdp(), metadata))


@pytest.mark.parametrize(
    "metadata",
    [
        BROKEN_METADATA,
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>",
        "participant=alice; participant=bob",
    ],
    ids=["truncated", "unclosed-root", "not-xml"],
)
async def test_unparsed_metadata_still_records_the_call(h: Harness, metadata: str) -> None:
    dialogue = Dialogue("meta-broken@sbc")
    with capture_logs() as logs:
        sent = await h.feed_and_settle(_invite_with_metadata(dialogue, metadata))
    ok = final(sent)
    assert ok.status == 200
    assert ok.body.count(b"m=audio") == 2 and b"m=audio 0 " not in ok.body
    session_id = h.only_call()
    call = h.handler.calls[session_id]
    participants = call.recording.session.participants()
    assert [(p.id, p.aor) for p in participants] == [
        ("caller", "sip:sbc@example.com"),
        ("callee", "sip:srs@example.com"),
    ]
    snapshot = await h.snapshot(session_id)
    [flag] = snapshot.flags
    assert flag["kind"] == "metadata_unparsed" and "not well-formed XML" in flag["detail"]
    [line] = tolerated(logs, "metadata_unparsed")
    assert "not well-formed XML" in line["error"]
    assert line["session_id"] == session_id


async def test_unparsed_metadata_reaches_the_sidecar(h: Harness) -> None:
    dialogue = Dialogue("meta-sidecar@sbc")
    await h.feed_and_settle(_invite_with_metadata(dialogue, BROKEN_METADATA))
    dialogue.to_tag = h.handler.calls[h.only_call()].dialog.local_tag
    session_id = h.only_call()
    assert h.feed(dialogue.ack()) == []
    assert statuses(h.feed(dialogue.bye())) == [200]
    await h.handler.idle()
    snapshot = await h.snapshot(session_id)
    sidecar = Path(snapshot.media["state"]["sidecar"])
    data = json.loads(sidecar.read_text())
    assert data["verdict"]["status"] == "problems"
    assert "metadata_unparsed" in [p["kind"] for p in data["verdict"]["problems"]]
    assert [(p["id"], p["aor"]) for p in data["participants"]] == [
        ("caller", "sip:sbc@example.com"),
        ("callee", "sip:srs@example.com"),
    ]


async def test_a_good_call_is_not_flagged(h: Harness) -> None:
    await h.confirmed_call("meta-good@sbc")
    snapshot = await h.snapshot(h.only_call())
    assert snapshot.flags == []


async def test_unparsed_metadata_in_a_reinvite_keeps_the_call_and_its_participants(
    h: Harness,
) -> None:
    dialogue, _ = await h.confirmed_call("meta-reinvite@sbc")
    session_id = h.only_call()
    call = h.handler.calls[session_id]
    before = [p.aor for p in call.recording.session.participants()]
    assert before == ["sip:alice@example.com", "sip:bob@example.net"]
    with capture_logs() as logs:
        for _ in range(2):
            reinvite = dialogue.request(
                "INVITE",
                cseq=dialogue.next_cseq(),
                body=multipart(two_stream_sdp(version=2), BROKEN_METADATA),
                content_type=MULTIPART_TYPE,
            )
            sent = await h.feed_and_settle(reinvite)
            assert final(sent).status == 200
            assert h.feed(dialogue.ack(cseq=dialogue.cseq)) == []
    assert [p.aor for p in call.recording.session.participants()] == before
    assert len(tolerated(logs, "metadata_unparsed")) == 1
    snapshot = await h.snapshot(session_id)
    assert [f["kind"] for f in snapshot.flags] == ["metadata_unparsed"]
    assert snapshot.status == CallStatus.ACTIVE


async def test_unsafe_metadata_is_still_refused(h: Harness) -> None:
    evil = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]>'
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">&a;</recording>'
    )
    sent = await h.feed_and_settle(_invite_with_metadata(Dialogue("meta-evil@sbc"), evil))
    assert statuses(sent) == [100, 400]
    assert h.handler.calls == {}


async def test_a_multipart_body_that_loses_the_sdp_is_still_400(h: Harness) -> None:
    # No closing delimiter: the parts cannot be trusted, the SDP with them.
    body = multipart(two_stream_sdp(), BROKEN_METADATA).replace(f"--{BOUNDARY}--".encode(), b"")
    sent = await h.feed_and_settle(Dialogue("meta-cut@sbc").siprec_invite(body=body))
    assert statuses(sent) == [100, 400]
    assert h.handler.calls == {}
