"""The recorder: offers with more audio m-lines than ``max_streams_per_call`` get 488 with a
Warning and leave nothing allocated; an offer that fails after ports were taken gives them back."""

from __future__ import annotations

import pytest

from .test_handler_harness import (
    MULTIPART_TYPE,
    Dialogue,
    Harness,
    audio_m_line,
    final,
    multipart,
    sdp,
    statuses,
)


def _many(count: int, first_port: int = 30000) -> bytes:
    if count > 100:  # as an attacker packs them: one datagram, the shortest m-lines
        return multipart(
            sdp(*(f"m=audio {first_port + 2 * i} RTP/AVP 0\r\n" for i in range(count)))
        )
    return multipart(sdp(*(audio_m_line(first_port + 2 * i, str(i + 1)) for i in range(count))))


@pytest.mark.parametrize("count", [9, 1000])
async def test_invite_over_the_stream_limit_is_488_with_a_warning(count: int) -> None:
    async with Harness(max_streams_per_call=8) as h:
        dialogue = Dialogue(f"many-{count}@sbc")
        sent = await h.feed_and_settle(dialogue.siprec_invite(body=_many(count)))
        assert statuses(sent) == [100, 488]
        refusal = sent[-1].response
        warning = refusal.headers.get("Warning") or ""
        assert warning.startswith("399 ")
        assert f"{count} offered, at most 8" in warning
        assert h.handler.calls == {}
        assert h.handler.media.reserved == 0
        assert h.handler.media.allocator.in_use == 0
        assert h.handler.stats["too_many_streams"] == 1
        assert h.handler.stats["rejected"] == 1


async def test_invite_at_the_stream_limit_is_recorded() -> None:
    async with Harness(max_streams_per_call=3) as h:
        dialogue = Dialogue("three@sbc")
        ok = final(await h.feed_and_settle(dialogue.siprec_invite(body=_many(3))))
        assert ok.status == 200
        assert h.handler.media.reserved == 3


async def test_disabled_and_video_m_lines_do_not_count() -> None:
    async with Harness(max_streams_per_call=2) as h:
        offer = sdp(
            audio_m_line(30000, "1"),
            "m=audio 0 RTP/AVP 0\r\na=label:9\r\n",
            "m=video 30004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:3\r\n",
            audio_m_line(30002, "2"),
        )
        invite = Dialogue("mixed@sbc").siprec_invite(body=multipart(offer))
        ok = final(await h.feed_and_settle(invite))
        assert ok.status == 200


async def test_reinvite_adding_streams_over_the_limit_is_488_and_the_call_goes_on() -> None:
    async with Harness(max_streams_per_call=2) as h:
        dialogue, _ = await h.confirmed_call("grow@sbc")
        reserved = h.handler.media.reserved
        call = h.handler.calls[h.only_call()]
        before = call.recording.answerer.to_dict()
        dialogue.next_cseq()
        refusal = final(
            await h.feed_and_settle(
                dialogue.request("INVITE", body=_many(5), content_type=MULTIPART_TYPE)
            )
        )
        assert refusal.status == 488
        assert "5 offered, at most 2" in (refusal.headers.get("Warning") or "")
        assert h.handler.media.reserved == reserved
        assert call.recording.answerer.to_dict() == before
        assert h.handler.stats["too_many_streams"] == 1
        assert statuses(h.feed(dialogue.bye())) == [200]
        await h.handler.idle()
        assert h.handler.media.reserved == 0


async def test_reinvite_failing_after_taking_ports_gives_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An offer that fails half-way (after the answerer took ports for new streams): 500 or
    4xx, and the ports and the answerer are as before."""
    async with Harness() as h:
        dialogue, _ = await h.confirmed_call("fail@sbc")
        call = h.handler.calls[h.only_call()]
        reserved = h.handler.media.reserved
        in_use = h.handler.media.allocator.in_use
        before = call.recording.answerer.to_dict()
        answerer_type = type(call.recording.answerer)
        real = answerer_type._answer_media
        seen: list[int] = []

        def failing(self, offer, index, media, used):  # type: ignore[no-untyped-def]
            seen.append(index)
            if index == 3:
                raise ValueError("broken m-line")
            return real(self, offer, index, media, used)

        monkeypatch.setattr(answerer_type, "_answer_media", failing)
        dialogue.next_cseq()
        response = final(
            await h.feed_and_settle(
                dialogue.request("INVITE", body=_many(4), content_type=MULTIPART_TYPE)
            )
        )
        assert response.status == 400
        assert seen == [0, 1, 2, 3]  # stream 2 (new) took a port before stream 3 failed
        assert h.handler.media.reserved == reserved
        assert h.handler.media.allocator.in_use == in_use
        assert call.recording.answerer.to_dict() == before


async def test_invite_failing_after_taking_ports_gives_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Harness() as h:
        from siprec_node.siprec.sdp_answer import SdpAnswerer

        real = SdpAnswerer._answer_media

        def failing(self, offer, index, media, used):  # type: ignore[no-untyped-def]
            if index == 2:
                raise ValueError("broken m-line")
            return real(self, offer, index, media, used)

        monkeypatch.setattr(SdpAnswerer, "_answer_media", failing)
        sent = await h.feed_and_settle(Dialogue("fail-invite@sbc").siprec_invite(body=_many(3)))
        assert statuses(sent) == [100, 400]
        assert h.handler.media.reserved == 0
        assert h.handler.media.allocator.in_use == 0
