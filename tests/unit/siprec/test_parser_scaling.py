"""Doubling what an SRC (or an attacker) sends at most about doubles the time to read it.

One test per parser input whose size the sender chooses: metadata stream ids, unknown elements,
namespaces, repeated session ids, streams without ids, partial updates; SDP m-lines through the
answerer (labelled, unlabelled, one shared label, many session attributes); multipart parts; the
participant mapping of a recording with many streams. Each fits the log-log slope of the time
over four doublings of the input (see ``tests/scaling.py``); quadratic code measures about 2.
"""

from __future__ import annotations

import itertools

import pytest

from siprec_node.siprec.metadata import apply_update
from siprec_node.siprec.metadata_parser import parse_metadata
from siprec_node.siprec.multipart import extract_body
from siprec_node.siprec.recording_session import RecordingSession
from siprec_node.siprec.sdp_answer import SdpAnswerer
from tests.scaling import assert_linear

NS = "urn:ietf:params:xml:ns:recording:1"
UNLIMITED = 10**9


def _doc(body: str, mode: str = "complete") -> bytes:
    return f'<recording xmlns="{NS}"><datamode>{mode}</datamode>{body}</recording>'.encode()


def _parse(data: bytes) -> object:
    return parse_metadata(data, max_size=UNLIMITED, max_elements=UNLIMITED)


METADATA_INPUTS = {
    "stream ids as <id> elements": (
        lambda n: _doc(
            '<participant participant_id="p"><send>'
            + "".join(f"<id>s{i}</id>" for i in range(n))
            + "</send></participant>"
        ),
        2000,
    ),
    "stream ids in the <send> text": (
        lambda n: _doc(
            '<participant participant_id="p"><send>'
            + " ".join(f"s{i}" for i in range(n))
            + "</send></participant>"
        ),
        16000,
    ),
    "unknown elements (one warning each)": (
        lambda n: _doc("".join(f"<x{i}/>" for i in range(n))),
        500,
    ),
    "namespaces in one extension": (
        lambda n: _doc(
            "<ext>" + "".join(f'<a:x xmlns:a="urn:n{i}"/>' for i in range(n)) + "</ext>"
        ),
        500,
    ),
    "SIP session ids of one session": (
        lambda n: _doc(
            '<session session_id="s">'
            + "".join(f"<sipSessionID>id{i}</sipSessionID>" for i in range(n))
            + "</session>"
        ),
        1000,
    ),
    "streams without an id": (
        lambda n: _doc("".join(f"<stream><label>{i}</label></stream>" for i in range(n))),
        500,
    ),
    "participants with associations": (
        lambda n: _doc(
            "".join(
                f'<participant participant_id="p{i}"><nameID aor="sip:p{i}@x"/>'
                f"<send>s{i}</send></participant>"
                f'<participantsessionassoc participant_id="p{i}" session_id="c"/>'
                f'<stream stream_id="s{i}" session_id="c"><label>{i}</label></stream>'
                for i in range(n)
            )
        ),
        150,
    ),
}


@pytest.mark.parametrize("name", list(METADATA_INPUTS))
def test_metadata_parsing_is_linear(name: str) -> None:
    build, base = METADATA_INPUTS[name]
    assert_linear(build, _parse, base)


def test_partial_metadata_update_is_linear() -> None:
    def build(n: int) -> tuple[object, object]:
        current = parse_metadata(
            METADATA_INPUTS["participants with associations"][0](n),
            max_size=UNLIMITED,
            max_elements=UNLIMITED,
        )
        update = parse_metadata(
            _doc(
                "".join(
                    f'<participant participant_id="p{i}"><send>s{i}</send></participant>'
                    f'<participantsessionassoc participant_id="p{i}">'
                    "<disassociate-time>2026-12-02T10:00:00Z</disassociate-time>"
                    "</participantsessionassoc>"
                    for i in range(0, 2 * n, 2)  # half known, half new
                ),
                mode="partial",
            ),
            max_size=UNLIMITED,
            max_elements=UNLIMITED,
        )
        return current, update

    assert_linear(build, lambda pair: apply_update(*pair), 100)  # type: ignore[arg-type]


def test_recording_participant_mapping_is_linear() -> None:
    """Who is heard on each of a call's streams (snapshots, finalisation)."""

    def build(n: int) -> RecordingSession:
        session = RecordingSession("c")
        session.apply_metadata(
            parse_metadata(
                METADATA_INPUTS["participants with associations"][0](n),
                max_size=UNLIMITED,
                max_elements=UNLIMITED,
            )
        )
        ports = itertools.count(20000, 2)
        answer = SdpAnswerer("127.0.0.1", lambda i, label: next(ports)).answer(
            _sdp(n, lambda i: f"a=label:{i}" if i % 2 else "a=sendonly")
        )
        session.update_streams(answer.streams)
        return session

    assert_linear(build, lambda s: (s.to_dict(), s.streams_by_participant()), 100)


def test_stream_slots_are_found_in_constant_time() -> None:
    """The answerer's port bookkeeping alone (its per-m-line cost is otherwise so large that a
    scan of the slots per m-line hides below it until tens of thousands of m-lines): a call's
    streams, then a re-offer naming them in reverse order."""

    def run(n: int) -> None:
        ports = itertools.count(20000, 2)
        answerer = SdpAnswerer("127.0.0.1", lambda i, label: next(ports))
        used: set[int] = set()
        for i in range(n):
            answerer._slot_for(i, str(i), used)
        used = set()
        for i in range(n):
            slot = answerer._slot_for(i, str(n - 1 - i), used)
            assert slot is not None and slot.label == str(n - 1 - i)
        used = set()
        for i in range(n):  # unlabelled re-offer: matched by index
            assert answerer._slot_for(i, None, used) is not None
        assert len(answerer._slots) == n

    assert_linear(lambda n: n, run, 1000)


def _sdp(n: int, extra: object, session_attributes: int = 0) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += [f"a=x-{i}" for i in range(session_attributes)]
    for i in range(n):
        lines.append(f"m=audio {10000 + 2 * i} RTP/AVP 0 8 101")
        lines.append("a=rtpmap:101 telephone-event/8000")
        line = extra(i) if callable(extra) else extra
        if line:
            lines.append(str(line))
    return ("\r\n".join(lines) + "\r\n").encode()


def _answer_twice(offer: bytes) -> None:
    """A new call's answer, then the same offer again (a re-INVITE: every slot re-used)."""
    ports = itertools.count(20000, 2)
    answerer = SdpAnswerer("127.0.0.1", lambda i, label: next(ports))
    answerer.answer(offer)
    answerer.answer(offer)


SDP_INPUTS = {
    "m-lines with distinct labels": lambda n: _sdp(n, lambda i: f"a=label:{i}"),
    "m-lines without labels": lambda n: _sdp(n, "a=sendonly"),
    "m-lines sharing one label": lambda n: _sdp(n, "a=label:1"),
    "m-lines and as many session attributes": lambda n: _sdp(n, None, session_attributes=n),
}


@pytest.mark.parametrize("name", list(SDP_INPUTS))
def test_answering_is_linear_in_m_lines(name: str) -> None:
    assert_linear(SDP_INPUTS[name], _answer_twice, 100)


def test_multipart_splitting_is_linear_in_parts() -> None:
    def build(n: int) -> bytes:
        parts = "".join(
            f"--b\r\nContent-Type: text/plain\r\nContent-ID: <{i}>\r\n\r\npart {i}\r\n"
            for i in range(n)
        )
        sdp = "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
        return (parts + sdp + "--b--\r\n").encode()

    assert_linear(build, lambda body: extract_body("multipart/mixed;boundary=b", body), 1000)
