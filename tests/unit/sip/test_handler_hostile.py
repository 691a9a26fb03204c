"""The recorder under hostile requests: source policy on every method, bounded caches, parse
errors answered 4xx with a reason, and our own bugs answered 500, counted and logged."""

from __future__ import annotations

import ipaddress

import pytest
from structlog.testing import capture_logs

from siprec_node.recorder import CallDriver, HandlerConfig
from siprec_node.sip import call_control
from siprec_node.sip.call_policy import ADVERTISE_CACHE_SIZE
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.recording import RecordingOffer
from siprec_node.sip.transaction import Address

from .test_handler_harness import (
    METADATA,
    SBC,
    Dialogue,
    Harness,
    final,
    multipart,
    statuses,
    two_stream_sdp,
)

OUTSIDE = Address("udp", "127.0.0.9", 5099)
ONLY_LOOPBACK_ONE = {"allow_sources": (ipaddress.ip_network("127.0.0.1/32"),)}


def _invite_with_metadata(call_id: str, metadata: str) -> bytes:
    return Dialogue(call_id).siprec_invite(body=multipart(two_stream_sdp(), metadata))


@pytest.mark.parametrize("method", ["OPTIONS", "BYE", "INFO", "UPDATE", "MESSAGE", "FOO"])
async def test_allow_sources_applies_to_every_request(method: str) -> None:
    async with Harness(**ONLY_LOOPBACK_ONE) as h:
        outsider = Dialogue("acl@sbc", source=OUTSIDE)
        sent = h.feed(outsider.request(method, contact=None, to_tag="x"), OUTSIDE)
        assert statuses(sent) == [403]
        assert sent[0].response.reason == "Source Not Allowed"
        assert sent[0].destination.host == OUTSIDE.host
        assert h.handler.stats["forbidden"] == 1
        # the same request from an allowed source is served as before
        inside = Dialogue("acl@sbc")
        expected = 200 if method == "OPTIONS" else None
        answer = statuses(h.feed(inside.request(method, contact=None, to_tag=None), SBC))
        assert answer != [403]
        if expected is not None:
            assert answer == [expected]


async def test_out_of_dialog_options_without_to_tag_is_refused_from_outside() -> None:
    async with Harness(**ONLY_LOOPBACK_ONE) as h:
        sent = h.feed(
            Dialogue("ping@sbc", source=OUTSIDE).request("OPTIONS", contact=None), OUTSIDE
        )
        assert statuses(sent) == [403]
        assert sent[0].response.to.tag is not None


async def test_cancel_from_outside_is_refused() -> None:
    async with Harness(**ONLY_LOOPBACK_ONE) as h:
        outsider = Dialogue("cancel@sbc", source=OUTSIDE)
        sent = h.feed(outsider.request("CANCEL", contact=None, to_tag=None), OUTSIDE)
        assert statuses(sent) == [403]


async def test_invite_from_outside_still_gets_100_then_403_and_nothing_is_held() -> None:
    async with Harness(**ONLY_LOOPBACK_ONE) as h:
        sent = await h.feed_and_settle(Dialogue("in@sbc", source=OUTSIDE).siprec_invite(), OUTSIDE)
        assert statuses(sent) == [100, 403]
        assert h.handler.calls == {} and h.handler.media.reserved == 0
        assert h.handler.stats["forbidden"] == 1


def test_advertise_cache_is_bounded_and_keeps_the_recently_used() -> None:
    lookups: list[str] = []

    def local_address(peer: str) -> str:
        lookups.append(peer)
        return "127.0.0.1"

    handler = CallDriver(HandlerConfig(node_id="n", media_workers=0), local_address=local_address)
    addressing = handler.core.addressing
    size = ADVERTISE_CACHE_SIZE
    addressing.advertised_host("10.0.0.1")
    for i in range(3 * size):
        addressing.advertised_host(f"10.1.{i // 256}.{i % 256}")
        if i % 100 == 0:
            addressing.advertised_host("10.0.0.1")  # kept warm: never evicted
    assert len(addressing.cache) == size
    before = len(lookups)
    addressing.advertised_host("10.0.0.1")
    assert len(lookups) == before  # still cached
    addressing.advertised_host("10.1.0.0")  # the oldest: evicted long ago
    assert len(lookups) == before + 1


@pytest.mark.parametrize(
    ("name", "metadata", "reason"),
    [
        ("unknown encoding", METADATA.replace('encoding="UTF-8"', 'encoding="x"'), "encoding"),
        ("UTF-7", METADATA.replace('encoding="UTF-8"', 'encoding="UTF-7"'), "encoding"),
        ("not a text codec", METADATA.replace('encoding="UTF-8"', 'encoding="rot13"'), "encoding"),
        (
            "nested 1,000 deep",
            METADATA.replace("</recording>", "<x>" * 1000 + "</x>" * 1000 + "</recording>"),
            "nested deeper",
        ),
    ],
)
async def test_hostile_metadata_is_400_with_a_reason(name: str, metadata: str, reason: str) -> None:
    async with Harness() as h:
        sent = await h.feed_and_settle(_invite_with_metadata(f"{name}@sbc", metadata))
        response = final(sent)
        assert response.status == 400, name
        assert reason in response.reason
        assert h.handler.calls == {} and h.handler.media.reserved == 0
        assert h.handler.stats["internal_errors"] == 0


async def test_metadata_over_the_element_limit_is_400_and_counted() -> None:
    ids = "".join(f"<id>s{i}</id>" for i in range(300))
    metadata = METADATA.replace("</recording>", f"<x>{ids}</x></recording>")
    async with Harness(max_metadata_elements=200) as h:
        response = final(await h.feed_and_settle(_invite_with_metadata("many@sbc", metadata)))
        assert response.status == 400
        assert "more than 200 elements" in response.reason
        assert h.handler.stats["metadata_limit_exceeded"] == 1
        assert h.handler.calls == {} and h.handler.media.reserved == 0
    async with Harness(max_metadata_elements=400) as h:  # within the limit: recorded
        assert (
            final(await h.feed_and_settle(_invite_with_metadata("ok@sbc", metadata))).status == 200
        )


async def test_stream_ids_in_send_text_count_against_the_limit() -> None:
    ids = " ".join(f"s{i}" for i in range(500))
    metadata = METADATA.replace("</recording>", "")
    metadata += f'<participant participant_id="p9"><send>{ids}</send></participant></recording>'
    async with Harness(max_metadata_elements=200) as h:
        response = final(await h.feed_and_settle(_invite_with_metadata("text-ids@sbc", metadata)))
        assert response.status == 400
        assert h.handler.stats["metadata_limit_exceeded"] == 1


async def test_metadata_limit_applies_to_updates_too() -> None:
    ids = "".join(f"<id>s{i}</id>" for i in range(300))
    async with Harness(max_metadata_elements=200) as h:
        dialogue, _ = await h.confirmed_call("upd@sbc")
        body = METADATA.replace("</recording>", f"<x>{ids}</x></recording>").encode()
        sent = h.feed(
            dialogue.request(
                "UPDATE",
                cseq=dialogue.next_cseq(),
                body=body,
                content_type="application/rs-metadata+xml",
            )
        )
        assert statuses(sent) == [400]
        assert h.handler.stats["metadata_limit_exceeded"] == 1
        assert len(h.handler.calls) == 1  # the call goes on


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "90\u0663"])
async def test_session_expires_with_non_ascii_or_huge_digits_is_400(value: str) -> None:
    async with Harness() as h:
        invite = Dialogue("se@sbc").siprec_invite(headers=[("Session-Expires", value)])
        sent = await h.feed_and_settle(invite)
        assert final(sent).status == 400
        assert h.handler.stats["internal_errors"] == 0


async def test_sdp_with_unicode_digit_port_is_400_not_500() -> None:
    body = multipart(two_stream_sdp().replace("m=audio 30000", "m=audio \u00b2"))
    async with Harness() as h:
        sent = await h.feed_and_settle(Dialogue("sdp@sbc").siprec_invite(body=body))
        response = final(sent)
        assert response.status == 400
        assert "port" in response.reason
        assert h.handler.stats["internal_errors"] == 0


async def test_rport_with_unicode_digits_is_answered_at_the_source_port() -> None:
    async with Harness() as h:
        data = (
            Dialogue("rport@sbc")
            .request("OPTIONS", contact=None)
            .replace(b";rport", b";rport=\xc2\xb2")
        )
        sent = h.feed(data)
        assert statuses(sent) == [200]
        assert sent[0].destination.port == SBC.port


async def test_a_parse_error_met_while_handling_is_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cls: type, request: object, **kwargs: object) -> RecordingOffer:
        raise SipParseError("bad Contact: 'x'")

    monkeypatch.setattr(RecordingOffer, "from_request", classmethod(broken))
    async with Harness() as h:
        sent = await h.feed_and_settle(Dialogue("late@sbc").siprec_invite())
        assert statuses(sent) == [100, 400]
        assert "bad Contact" in sent[-1].response.reason
        assert h.handler.stats["internal_errors"] == 0
        assert h.handler.calls == {} and h.handler.media.reserved == 0


async def test_our_own_bug_is_500_counted_and_logged_with_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(cls: type, request: object, **kwargs: object) -> RecordingOffer:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(RecordingOffer, "from_request", classmethod(broken))
    async with Harness() as h:
        with capture_logs() as logs:
            sent = await h.feed_and_settle(Dialogue("bug@sbc").siprec_invite())
        assert statuses(sent) == [100, 500]
        assert h.handler.stats["internal_errors"] == 1
        failed = [e for e in logs if e["event"] == "event_failed"]
        assert failed and failed[0]["exc_info"] is True and failed[0]["log_level"] == "error"
        assert h.handler.calls == {} and h.handler.media.reserved == 0
        # the node keeps serving
        assert statuses(h.feed(Dialogue("after@sbc").request("OPTIONS", contact=None))) == [200]


async def test_a_parser_bug_is_answered_500_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("parser bug")

    monkeypatch.setattr(call_control, "parse_message", broken)
    async with Harness() as h:
        with capture_logs() as logs:
            sent = h.feed(Dialogue("p@sbc").request("OPTIONS", contact=None))
        assert h.handler.stats["internal_errors"] == 1
        assert statuses(sent) == [500]
        assert any(e["event"] == "parse_failed" and e.get("exc_info") for e in logs)


async def test_a_failing_handler_task_is_counted_and_logged_with_its_traceback() -> None:
    async def broken() -> None:
        raise RuntimeError("a bug in a task")

    async with Harness() as h:
        with capture_logs() as logs:
            h.handler._spawn(broken())
            await h.handler.idle()
        assert h.handler.stats["internal_errors"] == 1
        failed = [e for e in logs if e["event"] == "handler_task_failed"]
        assert failed and isinstance(failed[0]["exc_info"], RuntimeError)
