"""Fuzz harness of the whole INVITE path, sans-I/O: bytes → SIP parser → multipart → metadata →
SDP → answer, through the real recorder (the harness of ``test_handler_harness``).

Seeds are the INVITEs of ``tests/data/sip`` (each also run unchanged); cases mutate their head,
their body, or rebuild the body from mutated ``tests/data/sdp`` and ``tests/data/metadata``
files, and mostly fix Content-Length so that the mutations reach past the framing. Whatever
arrives: the handler raises nothing, never answers 500 nor counts an internal error (every parse
error is a 4xx), the INVITE gets exactly one final response once a 100 went out, a 200 means a
call holding exactly the ports its answer names, anything else no call and no port, and 64*T1
later nothing is left.
"""

from __future__ import annotations

import asyncio
import re

from hypothesis import given
from hypothesis import strategies as st

from siprec_node.sip.message import HEADER_END
from siprec_node.siprec.multipart import BodyPart, build_multipart
from tests.fuzzing import corpus, fuzz_settings, mutated, with_examples

from .test_handler_fuzz import TRICKY_LINES
from .test_handler_harness import SBC, T1, Harness, SdpView

INVITES = [seed for seed in corpus("sip", ".sip") if seed.lstrip(b"\r\n").startswith(b"INVITE ")]
SDPS = corpus("sdp", ".sdp")
METADATA = corpus("metadata", ".xml")
_CONTENT_LENGTH = re.compile(rb"^(Content-Length|l)[ \t]*:.*$", re.I | re.M)
_CONTENT_TYPE = re.compile(rb"^(Content-Type|c)[ \t]*:.*$", re.I | re.M)


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    match = HEADER_END.search(data)
    assert match is not None
    return data[: match.start()], data[match.start() : match.end()], data[match.end() :]


def _with_length(head: bytes, body: bytes) -> bytes:
    value = b"Content-Length: " + str(len(body)).encode()
    if _CONTENT_LENGTH.search(head):
        return _CONTENT_LENGTH.sub(lambda _: value, head, count=1)
    return head + b"\r\n" + value


@st.composite
def invites(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(INVITES))
    head, blank, body = _split(seed)
    mode = draw(st.sampled_from(["body", "rebuild", "head", "both"]))
    if mode in ("body", "both"):
        body = draw(mutated([body]))
    if mode == "rebuild":
        parts = [
            BodyPart("application/sdp", draw(mutated(SDPS))),
            BodyPart("application/rs-metadata+xml", draw(mutated(METADATA)), "recording-session"),
        ]
        if draw(st.booleans()):
            parts.reverse()  # Webex sends the metadata first
        content_type, body = build_multipart(parts, boundary="fuzz-boundary")
        header = b"Content-Type: " + content_type.encode()
        head = _CONTENT_TYPE.sub(lambda _: header, head, count=1)
        if not _CONTENT_TYPE.search(head):
            head += b"\r\n" + header
    if mode in ("head", "both"):
        lines = head.split(b"\r\n") if b"\r\n" in head else head.split(b"\n")
        for _ in range(draw(st.integers(1, 3)) if len(lines) > 1 else 0):
            index = draw(st.integers(1, len(lines) - 1))  # keep the request line
            action = draw(st.sampled_from(["drop", "duplicate", "replace"]))
            if action == "drop" and len(lines) > 2:
                del lines[index]
            elif action == "duplicate":
                lines.insert(index, lines[index])
            else:
                lines[index] = draw(st.sampled_from(TRICKY_LINES)).encode()
        head = b"\r\n".join(lines)
    if draw(st.integers(0, 9)) > 0:  # mostly keep the framing right, to reach the body parsers
        head = _with_length(head, body)
    return head + blank + body


async def _scenario(data: bytes) -> None:
    async with Harness() as h:
        h.strict = False
        h.handler.on_message(data, SBC)
        await h.handler.idle()
        sent = h.take()
        assert h.handler.stats["internal_errors"] == 0
        assert not any(s.response.status == 500 for s in sent)
        assert not any(raw.startswith(b"SIP/2.0 500") for raw in h.unparsed)
        invite = [s.response for s in sent if s.response.cseq.method == "INVITE"]
        finals = [r for r in invite if r.status >= 200]
        assert len(finals) <= 1, [r.status for r in invite]
        if any(r.status == 100 for r in invite):
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


@fuzz_settings(250)
@given(invites())
@with_examples(INVITES)
def test_invite_path_fuzz(data: bytes) -> None:
    asyncio.run(_scenario(data))
