"""The recorder under mangled INVITEs: every request is answered once, nothing leaks, no crash.

Hypothesis mangles a real SIPREC INVITE line by line (drop, duplicate, replace, truncate,
insert bytes). Whatever arrives, the handler must not raise, every message it sends must parse,
the INVITE transaction gets at most one final response (exactly one once a 100 went out), a 200
means a call holding exactly the ports its SDP names, anything else means no call and no port,
and 64*T1 later (no ACK) nothing is left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_handler_harness import (
    METADATA_PARTIAL,
    MULTIPART_TYPE,
    SBC,
    T1,
    Dialogue,
    Harness,
    SdpView,
    audio_m_line,
    multipart,
    sdp,
    two_stream_sdp,
)

TRICKY_LINES = [
    "",
    " ",
    "Content-Length: 5",
    "Content-Length: -1",
    "Content-Length: 99999999999",
    "Content-Type: text/plain",
    "Content-Type: multipart/mixed",
    "Content-Type: multipart/mixed;boundary=",
    "Require: siprec, foo",
    "Session-Expires: abc",
    "Session-Expires: 30",
    "Max-Forwards: 0",
    "CSeq: 1 BYE",
    "CSeq: 99999999999 INVITE",
    "Via: SIP/2.0/UDP",
    "Via: garbage",
    "From: <sip:",
    "To: ;tag=",
    "Call-ID:",
    "Contact: <sip:sbc@127.0.0.1:5099;+sip.src",
    "m=video 0 RTP/AVP 96",
    "m=audio 0 RTP/AVP 0",
    "m=audio x RTP/AVP 0",
    "a=inactive",
    "c=IN IP4 0.0.0.0",
    "<participant participant_id=",
    "--siprec-boundary-77--",
    "\x00",
    "\u00e9\u00e8",
]


@st.composite
def mangled_invite(draw: st.DrawFn) -> bytes:
    data = Dialogue("fuzz@sbc").siprec_invite()
    lines = data.split(b"\r\n")
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "duplicate", "replace", "insert"]))
        if action == "drop":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "replace":
            lines[index] = draw(st.sampled_from(TRICKY_LINES)).encode()
        else:
            lines.insert(index, draw(st.binary(max_size=12)))
    mangled = b"\r\n".join(lines)
    if draw(st.booleans()):
        mangled = mangled[: draw(st.integers(0, len(mangled)))]
    return mangled


async def _scenario(data: bytes) -> None:
    async with Harness() as h:
        h.strict = False
        h.handler.on_message(data, Dialogue("fuzz@sbc").source)
        await h.handler.idle()
        sent = h.take()  # every message was parsed by the harness when sent
        if h.unparsed:  # only a best-effort error answer to a request that did not parse
            assert h.handler.stats["malformed"] == 1
            assert len(h.unparsed) == 1 and sent == []
            assert h.unparsed[0].startswith((b"SIP/2.0 4", b"SIP/2.0 5"))
        invite_responses = [s.response for s in sent if s.response.cseq.method == "INVITE"]
        finals = [r for r in invite_responses if r.status >= 200]
        assert len(finals) <= 1, [r.status for r in invite_responses]
        if any(r.status == 100 for r in invite_responses):
            assert len(finals) == 1
        if finals and finals[0].status == 200:
            assert len(h.handler.calls) == 1
            answer = SdpView.parse(finals[0].body)
            held = {answer.port(i) for i in range(len(answer.media))} - {0}
            assert h.handler.media.reserved == len(held)
        else:
            assert h.handler.calls == {}
            assert h.handler.media.reserved == 0
        h.advance(64 * T1 + 1)
        await h.handler.idle()
        assert h.handler.calls == {}
        assert h.handler.media.reserved == 0


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mangled_invite())
def test_mangled_invites_are_answered_once_and_leak_nothing(data: bytes) -> None:
    asyncio.run(_scenario(data))


@st.composite
def mangled_reinvite(draw: st.DrawFn) -> tuple[str, bytes]:
    """A mangled in-dialog request (re-INVITE or UPDATE); the To tag is filled in later."""
    method = draw(st.sampled_from(["INVITE", "UPDATE"]))
    dialogue = Dialogue("fuzz-mid@sbc", to_tag="TO-TAG", cseq=2)
    data = dialogue.request(
        method,
        body=multipart(two_stream_sdp(directions=("sendonly", "inactive"), version=2)),
        content_type=MULTIPART_TYPE,
    )
    lines = data.split(b"\r\n")
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(1, len(lines) - 1))  # keep the request line
        action = draw(st.sampled_from(["drop", "duplicate", "replace"]))
        if action == "drop":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        else:
            lines[index] = draw(st.sampled_from(TRICKY_LINES)).encode()
    return method, b"\r\n".join(lines)


async def _midcall_scenario(method: str, data: bytes) -> None:
    async with Harness() as h:
        h.strict = False
        dialogue, ok = await h.confirmed_call("fuzz-mid@sbc")
        assert ok.to.tag is not None
        h.handler.on_message(data.replace(b"TO-TAG", ok.to.tag.encode()), dialogue.source)
        await h.handler.idle()
        sent = h.take()
        finals = [s.response for s in sent if s.response.status >= 200]
        assert len(finals) <= 1
        if finals and finals[0].status == 200 and finals[0].body:
            answer = SdpView.parse(finals[0].body)
            held = {answer.port(i) for i in range(len(answer.media))} - {0}
            assert h.handler.media.reserved >= len(held)
        if h.handler.calls:
            dialogue.cseq = 10
            assert [s.response.status for s in h.feed(dialogue.bye())] == [200]
        assert h.handler.calls == {}
        assert h.handler.media.reserved == 0
        h.advance(64 * T1 + 1)
        assert h.handler.media.reserved == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_reinvite())
def test_mangled_midcall_requests_leave_the_call_consistent(case: tuple[str, bytes]) -> None:
    asyncio.run(_midcall_scenario(*case))


# ---------------------------------------------------------------------------------------------
# Random sequences of what SRCs do, on a few calls at once

ACTIONS = [
    "invite",
    "ack",
    "bye",
    "bye-low-cseq",
    "cancel",
    "reinvite-same",
    "reinvite-hold",
    "reinvite-relabel",
    "reinvite-delayed",
    "update-metadata",
    "info",
    "options",
    "retransmit",
    "advance",
    "garbage",
]


@dataclass
class _Src:
    """What the fake SRC knows about one of its calls."""

    dialogue: Dialogue
    invite: bytes
    invite_branch: str


async def _run_sequence(steps: list[tuple[str, int, float]]) -> None:
    async with Harness() as h:
        h.strict = False
        calls: list[_Src] = []
        last = b""
        for action, which, seconds in steps:
            src = calls[which % len(calls)] if calls else None
            d = src.dialogue if src else None
            data = b""
            if action == "invite" or src is None or d is None:
                dialogue = Dialogue(f"seq-{len(calls)}@sbc")
                data = dialogue.siprec_invite()
                calls.append(_Src(dialogue, data, dialogue.branches[-1]))
            elif action == "ack":
                data = d.ack()
            elif action == "bye":
                data = d.bye()
            elif action == "bye-low-cseq":
                data = d.bye(cseq=1)
            elif action == "cancel":
                data = d.request(
                    "CANCEL", branch=src.invite_branch, cseq=1, to_tag=None, contact=None
                )
            elif action.startswith("reinvite"):
                offer = {
                    "reinvite-same": two_stream_sdp(),
                    "reinvite-hold": two_stream_sdp(directions=("inactive", "sendonly")),
                    "reinvite-relabel": sdp(audio_m_line(30000, "7"), audio_m_line(30002, "2")),
                    "reinvite-delayed": "",
                }[action]
                body = multipart(offer) if offer else b""
                data = d.request(
                    "INVITE",
                    cseq=d.next_cseq(),
                    body=body,
                    content_type=MULTIPART_TYPE if body else None,
                )
            elif action == "update-metadata":
                data = d.request(
                    "UPDATE",
                    cseq=d.next_cseq(),
                    body=METADATA_PARTIAL.encode(),
                    content_type="application/rs-metadata+xml",
                )
            elif action == "info":
                data = d.request("INFO", cseq=d.next_cseq(), contact=None)
            elif action == "options":
                data = Dialogue("seq-options@sbc").request("OPTIONS", contact=None)
            elif action == "retransmit":
                data = last or src.invite
            elif action == "advance":
                h.advance(seconds)
            else:
                data = b"\x16\x03\x01 not SIP" * which
            if data:
                last = data
                h.handler.on_message(data, SBC)
                await h.handler.idle()
            for sent in h.take():
                response = sent.response
                if response.status != 200 or response.cseq.method != "INVITE":
                    continue
                for known in calls:
                    if response.call_id == known.dialogue.call_id and not known.dialogue.to_tag:
                        known.dialogue.to_tag = response.to.tag
            # Invariant: the bound ports are exactly those of the live calls, none shared.
            held = [p for call in h.handler.calls.values() for p in call.ports]
            assert len(held) == len(set(held))
            assert h.handler.media.reserved == len(held)
        for src in calls:
            if src.dialogue.to_tag is not None:
                h.handler.on_message(src.dialogue.bye(), SBC)
        h.advance(64 * T1 + 10)
        await h.handler.idle()
        assert h.handler.calls == {}
        assert h.handler.media.reserved == 0
        assert h.handler.snapshots is not None
        assert await h.handler.snapshots.flush(timeout=5)
        assert await h.store.list() == []  # every snapshot ended up final


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(ACTIONS),
            st.integers(0, 3),
            st.floats(0.1, 40.0, allow_nan=False),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_random_src_behaviour_keeps_ports_and_store_consistent(
    steps: list[tuple[str, int, float]],
) -> None:
    asyncio.run(_run_sequence(steps))
