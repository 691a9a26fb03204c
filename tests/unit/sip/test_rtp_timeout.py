"""RTP timeout: the sans-I/O decisions on a fake clock, then the handler acting on them (the
OPTIONS probe in the dialog, the call ended with the reason, the stalled flag, holds)."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from siprec_node.sip.call import CallStatus
from siprec_node.sip.message import SipRequest
from siprec_node.sip.rtp_timeout import (
    STALLED,
    EndCall,
    MarkStalled,
    RtpTimeout,
    SendProbe,
    check_interval,
)
from tests.conftest import skip_unless_c_receive_path
from tests.unit.sip.test_handler_harness import (
    MULTIPART_TYPE,
    Dialogue,
    Harness,
    final,
    multipart,
    two_stream_sdp,
)

TIMEOUT = 1.0

# ---------------------------------------------------------------------------------------------
# The decisions


def test_silence_of_every_live_stream_for_the_timeout_sends_one_probe() -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    assert watch.observe("s", {0: 10, 1: 7}, 100.0) == []
    assert watch.observe("s", {0: 10, 1: 7}, 100.9) == []
    assert watch.observe("s", {0: 10, 1: 7}, 101.0) == [SendProbe("s")]
    assert watch.probing("s")
    # no second probe while the first waits for its answer
    assert watch.observe("s", {0: 10, 1: 7}, 105.0) == []
    assert (watch.timeouts, watch.probes) == (1, 1)


def test_packets_on_any_live_stream_restart_the_count() -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    watch.observe("s", {0: 10, 1: 7}, 100.0)
    assert watch.observe("s", {0: 10, 1: 8}, 100.8) == []  # one leg still sends
    assert watch.observe("s", {0: 10, 1: 8}, 101.5) == []
    assert watch.observe("s", {0: 10, 1: 8}, 101.8) == [SendProbe("s")]


def test_a_call_with_every_stream_paused_is_never_probed() -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    watch.observe("s", {0: 10, 1: 7}, 100.0)
    for t in range(101, 200):
        assert watch.observe("s", {}, float(t)) == []  # on hold: no live stream
    # resumed: the silence is counted from the resume, not from the hold
    assert watch.observe("s", {0: 10, 1: 7}, 200.0) == []
    assert watch.observe("s", {0: 10, 1: 7}, 200.5) == []
    assert watch.observe("s", {0: 10, 1: 7}, 201.0) == [SendProbe("s")]


def test_a_change_of_the_live_streams_restarts_the_count() -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    watch.observe("s", {0: 10, 1: 7}, 100.0)
    assert watch.observe("s", {0: 10}, 100.9) == []  # stream 1 put on hold
    assert watch.observe("s", {0: 10}, 101.5) == []
    assert watch.observe("s", {0: 10}, 101.9) == [SendProbe("s")]


@pytest.mark.parametrize(
    ("status", "reason", "bye"),
    [
        (481, "rtp_timeout_probe_481", False),
        (408, "rtp_timeout_probe_408", True),
        (None, "rtp_timeout_probe_timeout", True),
    ],
)
def test_probe_failures_end_the_call(status: int | None, reason: str, bye: bool) -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    watch.observe("s", {0: 1}, 0.0)
    assert watch.observe("s", {0: 1}, 1.0) == [SendProbe("s")]
    assert watch.probe_answered("s", 100, 1.1) == []  # provisional: still waiting
    assert watch.probe_answered("s", status, 2.0) == [EndCall("s", reason, bye=bye)]
    assert not watch.watching("s")
    assert watch.ended == 1


@pytest.mark.parametrize("status", [200, 405, 501])
def test_an_answered_probe_keeps_the_call_stalled_and_probes_again(status: int) -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    watch.observe("s", {0: 1}, 0.0)
    assert watch.observe("s", {0: 1}, 1.0) == [SendProbe("s")]
    assert watch.probe_answered("s", status, 1.2) == [MarkStalled("s", 1, 1.2)]
    assert watch.observe("s", {0: 1}, 2.1) == []  # counted again from the answer
    assert watch.observe("s", {0: 1}, 2.2) == [SendProbe("s")]
    # the figures follow; the call counts once as stalled
    assert watch.probe_answered("s", 200, 2.3) == [MarkStalled("s", 2, 2.3)]
    assert (watch.probes, watch.stalled, watch.ended) == (2, 1, 0)
    # RTP again, then silence again: the silence is counted from the new start
    assert watch.observe("s", {0: 2}, 3.0) == []
    assert watch.observe("s", {0: 2}, 4.0) == [SendProbe("s")]
    assert watch.probe_answered("s", 200, 4.5) == [MarkStalled("s", 3, 1.5)]


def test_action_end_ends_with_bye_and_none_does_nothing() -> None:
    end = RtpTimeout(TIMEOUT, "end")
    end.observe("s", {0: 1}, 0.0)
    assert end.observe("s", {0: 1}, 1.0) == [EndCall("s", "rtp_timeout", bye=True)]
    none = RtpTimeout(TIMEOUT, "none")
    assert none.observe("s", {0: 1}, 0.0) == []
    assert none.observe("s", {0: 1}, 1000.0) == []
    assert len(none) == 0


def test_answers_for_unknown_or_unprobed_calls_are_ignored_and_ended_calls_forgotten() -> None:
    watch = RtpTimeout(TIMEOUT, "probe")
    assert watch.probe_answered("nobody", 481, 0.0) == []
    watch.observe("a", {0: 1}, 0.0)
    watch.observe("b", {0: 1}, 0.0)
    assert watch.probe_answered("a", 481, 0.5) == []  # no probe out
    watch.retain({"b"})
    assert not watch.watching("a") and watch.watching("b")
    watch.forget("b")
    assert len(watch) == 0


def test_check_interval_bounds() -> None:
    assert check_interval(1.0) == 0.25
    assert check_interval(20.0) == 2.0
    assert check_interval(60.0) == 5.0
    with pytest.raises(ValueError):
        RtpTimeout(0.0)
    with pytest.raises(ValueError):
        RtpTimeout(1.0, "hang-up")


# ---------------------------------------------------------------------------------------------
# The handler acting on them


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness(rtp_timeout=TIMEOUT) as made:
        yield made


def options_response(request: SipRequest, status: int) -> bytes:
    """The SBC's answer to a request the node sent."""
    fields = [f"SIP/2.0 {status} Whatever"]
    fields += [f"Via: {v}" for v in request.headers.get_all("Via")]
    fields += [f"{n}: {request.headers.get(n)}" for n in ("From", "To", "Call-ID", "CSeq")]
    return ("\r\n".join([*fields, "Content-Length: 0"]) + "\r\n\r\n").encode()


async def silent_call(h: Harness, call_id: str) -> tuple[Dialogue, str]:
    dialogue, _ = await h.confirmed_call(call_id)
    session_id = h.only_call()
    h.handler.check_rtp({session_id: {0: 50, 1: 50}})
    return dialogue, session_id


def probe(h: Harness, session_id: str) -> SipRequest:
    """Let a timeout of silence pass; the one request sent must be the OPTIONS probe."""
    h.advance(TIMEOUT)
    h.handler.check_rtp({session_id: {0: 50, 1: 50}})
    [sent] = h.take()
    assert isinstance(sent.message, SipRequest)
    assert sent.message.method == "OPTIONS"
    return sent.message


async def test_probe_goes_in_the_dialog_and_481_ends_the_call_without_bye(h: Harness) -> None:
    dialogue, session_id = await silent_call(h, "rtp-481@sbc")
    h.advance(TIMEOUT / 2)
    h.handler.check_rtp({session_id: {0: 50, 1: 50}})
    assert h.take() == []  # not silent long enough
    options = probe(h, session_id)
    assert options.call_id == "rtp-481@sbc"
    assert options.to.tag == dialogue.from_tag  # the SRC's tag: a request in its dialog
    assert options.from_.tag == dialogue.to_tag
    assert h.feed(options_response(options, 481)) == []  # no BYE after 481
    await h.handler.idle()
    assert h.handler.calls == {}
    snapshot = await h.snapshot(session_id)
    assert snapshot.status == CallStatus.ENDED
    assert snapshot.end_reason == "rtp_timeout_probe_481"
    assert h.handler.rtp_timeout.ended == 1


@pytest.mark.parametrize(("status", "wait"), [(408, 0.0), (None, 64 * 0.5)])
async def test_408_or_no_answer_ends_the_call_with_a_bye(
    h: Harness, status: int | None, wait: float
) -> None:
    _, session_id = await silent_call(h, f"rtp-{status}@sbc")
    options = probe(h, session_id)
    if status is not None:
        sent = h.feed(options_response(options, status))
    else:
        sent = h.advance(wait)  # Timer F (retransmissions of the OPTIONS on the way)
        sent = [s for s in sent if s.message.method != "OPTIONS"]
    byes = [s.message for s in sent if isinstance(s.message, SipRequest)]
    assert [b.method for b in byes] == ["BYE"]
    assert h.handler.calls == {}
    snapshot = await h.snapshot(session_id)
    reason = "rtp_timeout_probe_timeout" if status is None else "rtp_timeout_probe_408"
    assert snapshot.end_reason == reason


async def test_200_keeps_the_call_flagged_stalled_and_it_is_probed_again(h: Harness) -> None:
    _, session_id = await silent_call(h, "rtp-200@sbc")
    options = probe(h, session_id)
    assert h.feed(options_response(options, 200)) == []
    assert session_id in h.handler.calls
    flagged = {"kind": STALLED, "probes": 1, "silent_s": TIMEOUT}
    assert h.handler.calls[session_id].data.flags == [flagged]
    assert (await h.snapshot(session_id)).flags == [flagged]
    again = probe(h, session_id)  # another timeout of silence, another probe
    assert again.cseq.number > options.cseq.number
    h.feed(options_response(again, 200))
    flagged = {"kind": STALLED, "probes": 2, "silent_s": 2 * TIMEOUT}
    assert h.handler.calls[session_id].data.flags == [flagged]
    assert h.handler.rtp_timeout.probes == 2


async def test_a_held_call_is_never_probed(h: Harness) -> None:
    dialogue, session_id = await silent_call(h, "rtp-hold@sbc")
    dialogue.next_cseq()
    held = dialogue.request(
        "INVITE",
        body=multipart(two_stream_sdp(directions=("inactive", "inactive"), version=2)),
        content_type=MULTIPART_TYPE,
    )
    assert final(await h.feed_and_settle(held)).status == 200
    h.feed(dialogue.ack(cseq=dialogue.cseq))
    assert all(h.handler.calls[session_id].media_state.open.values())  # every stream paused
    for _ in range(20):
        h.advance(TIMEOUT)
        h.handler.check_rtp({session_id: {0: 50, 1: 50}})
    assert h.take() == []
    assert h.handler.rtp_timeout.probes == 0


async def test_rtp_flowing_is_never_probed(h: Harness) -> None:
    _, session_id = await silent_call(h, "rtp-flowing@sbc")
    for n in range(1, 20):
        h.advance(TIMEOUT)
        h.handler.check_rtp({session_id: {0: 50 + n, 1: 50}})
    assert h.take() == []


async def test_action_end_sends_bye() -> None:
    async with Harness(rtp_timeout=TIMEOUT, rtp_timeout_action="end") as h:
        _, session_id = await silent_call(h, "rtp-end@sbc")
        h.advance(TIMEOUT)
        h.handler.check_rtp({session_id: {0: 50, 1: 50}})
        [bye] = h.take()
        assert isinstance(bye.message, SipRequest) and bye.message.method == "BYE"
        assert (await h.snapshot(session_id)).end_reason == "rtp_timeout"


async def test_an_operator_paused_call_is_never_probed_until_resumed(h: Harness) -> None:
    _, session_id = await silent_call(h, "rtp-paused@sbc")
    h.handler.set_operator_pause(session_id, True)
    await h.handler.idle()
    for _ in range(10):
        h.advance(TIMEOUT)
        h.handler.check_rtp({session_id: {0: 50, 1: 50}})
    assert h.take() == []
    h.handler.set_operator_pause(session_id, False)
    await h.handler.idle()
    h.handler.check_rtp({session_id: {0: 50, 1: 50}})  # the silence counts from the resume
    assert h.take() == []
    probe(h, session_id)


# ---------------------------------------------------------------------------------------------
# The counters the checks read: one batched read of the engine, every datagram counted


def rtp(seq: int, ssrc: int = 0x5151) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + b"\xff" * 160


@pytest.mark.parametrize("path", ["python", "c"])
async def test_engine_activity_counts_every_datagram_and_feeds_the_store(path: str) -> None:
    if path == "c":
        skip_unless_c_receive_path()
    async with Harness(rtp_timeout=TIMEOUT, media_receive_path=path, activity_interval=0.1) as h:
        _, ok = await h.confirmed_call(f"rtp-count-{path}@sbc")
        session_id = h.only_call()
        ports = [int(p) for p in re.findall(r"m=audio (\d+)", ok.body.decode())]
        before = (await h.snapshot(session_id)).last_activity
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for seq in range(1, 26):
                sender.sendto(rtp(seq), ("127.0.0.1", ports[0]))
                await asyncio.sleep(0.002)
            sender.sendto(rtp(1, ssrc=0x7777), ("127.0.0.1", ports[1]))
            for _ in range(100):
                activity = await h.handler.engine.activity()
                if activity.get(session_id) == {0: 25, 1: 1}:
                    break
                await asyncio.sleep(0.02)
        assert activity == {session_id: {0: 25, 1: 1}}
        await asyncio.sleep(0.3)  # the activity reporter's rounds (every 0.1 s here)
        stored = await h.store.load(session_id)
        assert stored is not None and stored.last_activity > before
