"""The recorder with a real (in-process) media engine: whatever fails while a call's media opens,
everything taken for the call is released — engine streams, sockets, ports, and the parts
folder of a call that was never answered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from siprec_node.media.engine import StreamSpec
from siprec_node.recorder.call_media import CallMedia
from siprec_node.siprec.sdp_answer import NegotiatedStream

from .test_handler_dialog import cancel_for
from .test_handler_harness import SBC, Dialogue, Harness, statuses


class GatedOpen:
    """Holds every ``engine.open_stream`` until the gate opens; ``fail`` names stream indexes
    whose open raises once let through."""

    def __init__(self, harness: Harness, fail: set[int] | None = None) -> None:
        self.gate = asyncio.Event()
        self.started: list[int] = []
        self.fail = fail or set()
        engine = harness.handler.engine
        self._real = engine.open_stream
        engine.open_stream = self  # type: ignore[method-assign]

    async def __call__(self, spec: StreamSpec, rtp: Any, rtcp: Any) -> None:
        self.started.append(spec.index)
        await self.gate.wait()
        if spec.index in self.fail:
            rtp.close()
            rtcp.close()
            raise OSError(24, "Too many open files")
        await self._real(spec, rtp, rtcp)


def _parts(h: Harness) -> list[Path]:
    return [p for p in Path(h.config.recording_dir).rglob("*.parts") if p.is_dir()]


async def test_cancel_while_the_streams_open_closes_them_and_removes_the_parts() -> None:
    async with Harness() as h:
        gated = GatedOpen(h)
        dialogue = Dialogue("cancel-open@sbc")
        h.handler.on_message(dialogue.siprec_invite(), SBC)
        for _ in range(5):
            await asyncio.sleep(0)
        assert sorted(gated.started) == [0, 1]  # both opens in flight
        sent = h.feed(cancel_for(dialogue, dialogue.branches[-1]))
        assert 487 in statuses(sent)
        gated.gate.set()  # the opens complete after the CANCEL
        await h.handler.idle()
        assert 200 not in statuses(h.take())
        assert h.handler.engine.open_streams == 0  # type: ignore[attr-defined]
        assert h.handler.media.reserved == 0
        assert _parts(h) == []


async def test_opens_failing_half_way_give_503_and_release_the_others() -> None:
    async with Harness() as h:
        gated = GatedOpen(h, fail={1})
        gated.gate.set()
        sent = await h.feed_and_settle(Dialogue("half@sbc").siprec_invite())
        assert statuses(sent) == [100, 503]
        await h.handler.idle()
        assert h.handler.engine.open_streams == 0  # type: ignore[attr-defined]
        assert h.handler.media.reserved == 0
        assert h.handler.calls == {}
        assert _parts(h) == []
        gated.fail.clear()  # the node records the next call
        _, ok = await h.answered_call("after@sbc")
        assert ok.status == 200


def _stream(address: str | None) -> NegotiatedStream:
    return NegotiatedStream(
        index=0,
        label="1",
        media="audio",
        accepted=True,
        port=1,
        proto="RTP/AVP",
        remote_address=address,
    )


@pytest.mark.parametrize(
    ("policy", "sdp", "peer", "earlier", "expected"),
    [
        ("any", "192.0.2.1", "198.51.100.1", None, None),
        ("strict", "192.0.2.1", "198.51.100.1", None, ["192.0.2.1"]),
        ("signalling", "192.0.2.1", "198.51.100.1", None, ["192.0.2.1", "198.51.100.1"]),
        ("signalling", "192.0.2.1", "192.0.2.1", None, ["192.0.2.1"]),
        # a host name or a hold names no sender: the SIP peer stands in, even when strict
        ("strict", "sbc.example.com", "198.51.100.1", None, ["198.51.100.1"]),
        ("strict", "0.0.0.0", "198.51.100.1", ["192.0.2.1"], ["198.51.100.1", "192.0.2.1"]),
        # a re-INVITE moved the media: the old address keeps being accepted
        ("strict", "192.0.2.9", "198.51.100.1", ["192.0.2.1"], ["192.0.2.9", "192.0.2.1"]),
        ("strict", "::ffff:192.0.2.1", None, None, ["192.0.2.1"]),
    ],
)
def test_sources_for_each_policy(
    policy: str, sdp: str, peer: str | None, earlier: list[str] | None, expected: object
) -> None:
    media = CallMedia(None, None, policy)  # type: ignore[arg-type]
    assert media.sources_for(_stream(sdp), peer, earlier) == expected


def test_sources_are_bounded() -> None:
    media = CallMedia(None, None, "strict")  # type: ignore[arg-type]
    earlier = [f"192.0.2.{n}" for n in range(20)]
    assert len(media.sources_for(_stream("198.51.100.1"), None, earlier) or []) == 8


async def test_reinvite_moving_the_media_address_updates_the_stream_sources() -> None:
    from .test_handler_harness import MULTIPART_TYPE, audio_m_line, final, multipart, sdp

    async with Harness(source_check="strict") as h:
        dialogue, _ = await h.confirmed_call("move@sbc")
        session_id = h.only_call()
        engine = h.handler.engine
        opened = engine._streams[(session_id, 0)]  # type: ignore[attr-defined]
        assert opened.gate.allowed == {"127.0.0.1", "::ffff:127.0.0.1"}
        dialogue.next_cseq()
        moved = sdp(audio_m_line(30000, "1"), audio_m_line(30002, "2"), host="127.0.0.5", version=2)
        ok = final(
            await h.feed_and_settle(
                dialogue.request("INVITE", body=multipart(moved), content_type=MULTIPART_TYPE)
            )
        )
        assert ok.status == 200
        await h.handler.idle()
        assert opened.gate.allowed == {
            "127.0.0.5",
            "::ffff:127.0.0.5",
            "127.0.0.1",
            "::ffff:127.0.0.1",
        }
        state = h.handler.calls[session_id].media_state
        assert state is not None and state.sources[0] == ["127.0.0.5", "127.0.0.1"]
