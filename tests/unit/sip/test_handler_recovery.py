"""The recorder after a restart (same node id, same store) and after a takeover of a dead node."""

from __future__ import annotations

import asyncio
from pathlib import Path

from siprec_node.sip.call import CallStatus

from .test_handler_harness import (
    MULTIPART_TYPE,
    SBC,
    Dialogue,
    Harness,
    SdpView,
    final,
    multipart,
    statuses,
    two_stream_sdp,
)


async def crash(h: Harness) -> None:
    """Stop a node the hard way: sockets closed, no BYE, no final snapshot."""
    assert h.handler.snapshots is not None
    assert await h.handler.snapshots.flush(timeout=5)
    await h.handler.engine.stop()  # the RTP sockets the engine holds close with the process
    h.handler.media.close()
    await asyncio.sleep(0.01)  # asyncio closes a transport's socket on the next loop iteration


def successor(h: Harness, node_id: str = "test-node") -> Harness:
    """A node on the same store and port range."""
    return Harness(
        call_store=h.store,
        node_id=node_id,
        port_min=h.config.port_min,
        port_max=h.config.port_max,
    )


async def test_restarted_node_answers_in_dialog_requests_of_its_calls() -> None:
    async with Harness() as first:
        dialogue, ok = await first.confirmed_call("restart-1@sbc")
        session_id = first.only_call()
        await crash(first)
        async with successor(first) as second:
            assert await second.handler.recover() == [session_id]
            assert second.handler.calls.keys() == {session_id}
            answer = SdpView.parse(ok.body)
            assert sorted(second.handler.calls[session_id].ports) == sorted(
                [answer.port(0), answer.port(1)]
            )
            assert second.handler.media.reserved == 2
            recovered = await second.snapshot(session_id)
            assert recovered.status == CallStatus.ACTIVE
            assert recovered.recoveries == 1

            # A re-INVITE with the same offer gets the very same answer (ports, o= line).
            dialogue.next_cseq()
            again = final(
                await second.feed_and_settle(
                    dialogue.request(
                        "INVITE", body=multipart(two_stream_sdp()), content_type=MULTIPART_TYPE
                    )
                )
            )
            assert again.status == 200
            assert again.to.tag == ok.to.tag
            assert SdpView.parse(again.body).origin == answer.origin
            assert again.body == ok.body
            assert second.feed(dialogue.ack(cseq=dialogue.cseq)) == []

            assert statuses(second.feed(dialogue.bye())) == [200]
            assert second.handler.calls == {}
            assert second.handler.media.reserved == 0
            assert (await second.snapshot(session_id)).status == CallStatus.ENDED


async def test_a_call_answered_but_not_acknowledged_is_confirmed_by_a_late_ack() -> None:
    async with Harness() as first:
        dialogue, _ = await first.answered_call("restart-ack@sbc")
        session_id = first.only_call()
        await crash(first)
        async with successor(first) as second:
            assert await second.handler.recover() == [session_id]
            assert second.feed(dialogue.ack()) == []
            assert (await second.snapshot(session_id)).status == CallStatus.ACTIVE


async def test_a_call_not_answered_before_the_crash_is_closed_as_failed() -> None:
    async with Harness() as first:
        gate = asyncio.Event()
        real_sync = first.handler.call_media.sync

        async def never_ready(session_id: str, *args: object, **kwargs: object) -> list[str]:
            await gate.wait()
            return await real_sync(session_id, *args, **kwargs)  # type: ignore[arg-type]

        first.handler.call_media.sync = never_ready  # type: ignore[method-assign]
        first.handler.on_message(Dialogue("restart-early@sbc").siprec_invite(), SBC)
        await asyncio.sleep(0)
        session_id = first.only_call()
        state = first.handler.calls[session_id].media_state
        assert state is not None
        parts = Path(state.parts)  # as if the streams had opened before the crash
        parts.mkdir(parents=True)
        (parts / "stream-0.wav").write_bytes(b"RIFF")
        await crash(first)
        try:
            async with successor(first) as second:
                assert await second.handler.recover() == []
                assert second.handler.calls == {}
                failed = await second.snapshot(session_id)
                assert failed.status == CallStatus.FAILED
                assert failed.end_reason
                assert not parts.exists()  # nothing to finalise: its parts are gone
        finally:
            gate.set()


async def test_calls_of_another_node_are_not_recovered() -> None:
    async with Harness() as first:
        await first.confirmed_call("other-node@sbc")
        await crash(first)
        async with successor(first, node_id="someone-else") as second:
            assert await second.handler.recover() == []
            assert second.handler.calls == {}


async def test_taken_over_call_answers_bye_200_and_other_requests_481() -> None:
    async with Harness() as first:
        dialogue, _ = await first.confirmed_call("takeover@sbc")
        data = await first.snapshot(first.only_call())
        await crash(first)
        async with successor(first, node_id="survivor") as second:
            second.handler.adopt_finished(data, "node dead")
            info = dialogue.request("INFO", cseq=dialogue.next_cseq(), contact=None)
            assert statuses(second.feed(info)) == [481]
            assert statuses(second.feed(dialogue.bye())) == [200]
            assert statuses(second.feed(dialogue.bye(to_tag=None))) == [200]
