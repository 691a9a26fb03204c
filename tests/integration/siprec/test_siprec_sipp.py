"""SIPREC calls from SIPp, shaped like what real SRCs send (shared/INTEROP.md), against the node.

Each test runs one scenario of ``tests/sipp`` (which checks the responses itself), then checks in
Python the SDP we answered (from SIPp's message trace) and what the node understood: its JSON log
events (``call_offered``, ``call_updated``, ``call_ended``...) and, at the scenarios'
checkpoints, ``GET /sessions``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.integration.siprec.harness import (
    Media,
    Recorder,
    Sdp,
    SipMessage,
    SippRun,
    run_scenario,
)

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]


# ------------------------------------------------------------------------------------ helpers


def assert_recorded(
    media: Media,
    label: str | None,
    codec: str,
    direction: str = "recvonly",
    *,
    formats: list[str] | None = None,
) -> None:
    """An m-line we answered for recording: a real port, label echoed, the offer's first
    decodable codec first (RFC 3264 §6.1) and, when given, exactly these payload types."""
    assert media.kind == "audio", media
    assert media.port > 0 and media.port % 2 == 0, media
    assert media.label == label, media
    assert media.direction == direction, media
    assert media.codecs[0] == codec, media
    if formats is not None:
        assert media.formats == formats, media


def participants(session: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(p["id"], p["name"], p["aor"]) for p in session["participants"]]


def participant_ids(session: dict[str, Any]) -> list[str]:
    return [p["id"] for p in session["participants"]]


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


def checkpoint(run: SippRun, recorder: Recorder, event: str, *, skip: int = 0) -> dict[str, Any]:
    """Wait until the node logged ``event`` for the call, read its /sessions entry, release."""
    recorder.wait_for_event(event, call_id=run.call_id, skip=skip)
    try:
        return recorder.session(run.call_id)
    finally:
        run.release()


def finish(run: SippRun) -> None:
    outcome = run.finish()
    assert outcome.ok, outcome.explain()


def assert_ended(recorder: Recorder, run: SippRun, reason: str = "BYE from SRC") -> None:
    ended = recorder.wait_for_event("call_ended", call_id=run.call_id)
    assert ended["status"] == "ended", ended
    assert ended["reason"] == reason, ended
    assert len(recorder.events("call_ended", call_id=run.call_id)) == 1


def assert_ack_taken(run: SippRun) -> None:
    """No 200 to the INVITE arrived after the ACK (one may cross it: a retransmitted INVITE is
    answered again), so the node took the ACK. The scenario pauses past the first 2xx
    retransmission (T1 = 500 ms) to give one the time to show."""
    messages = [m for m in run.messages if m.header("Call-ID") == run.call_id]
    ack = only([m for m in messages if m.direction == "sent" and m.method == "ACK"])
    assert ack.at is not None
    late = [
        m
        for m in messages
        if m.direction == "received"
        and m.method == "INVITE"
        and m.status == 200
        and m.at is not None
        and (m.at - ack.at).total_seconds() > 0.2
    ]
    assert not late, "the 200 is still retransmitted: the ACK was not taken"


def answer_200(run: SippRun) -> SipMessage:
    """The (first) 200 to the initial INVITE."""
    response = run.responses("INVITE", 200)[0]
    assert "+sip.srs" in (response.header("Contact") or ""), response.headers
    assert "siprec" in (response.header("Supported") or ""), response.headers
    return response


# --------------------------------------------------------------------------- a) two streams


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_labelled_streams(recorder: Recorder, transport: str) -> None:
    run = run_scenario("siprec_two_streams.xml", recorder, transport)
    sdp = answer_200(run).sdp
    assert [m.label for m in sdp.media] == ["1", "2"]
    # each stream answers its own offer's order: 0 8 101, then 8 0 101
    assert_recorded(sdp.media[0], "1", "PCMU/8000", formats=["0", "8", "101"])
    assert_recorded(sdp.media[1], "2", "PCMA/8000", formats=["8", "0", "101"])
    assert sdp.media[0].port != sdp.media[1].port
    offered = recorder.wait_for_event("call_offered", call_id=run.call_id)
    assert offered["siprec"] is True
    assert offered["transport"] == {"u1": "udp", "t1": "tcp"}[transport]
    assert offered["streams"] == [
        {"label": "1", "port": sdp.media[0].port, "codec": "PCMU", "direction": "recvonly"},
        {"label": "2", "port": sdp.media[1].port, "codec": "PCMA", "direction": "recvonly"},
    ]
    recorder.wait_for_event("call_active", call_id=run.call_id)
    assert_ended(recorder, run)


# ------------------------------------------------------------------ b) BroadWorks mixed stream


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_broadworks_mixed_stream_without_require(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_broadworks_mixed.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_active")
        finish(run)
    assert session["siprec"] is True  # no Require: Contact ;src and the recording-session part
    assert participants(session) == [
        ("bw-part-caller", "Grace Hopper", "sip:+14085550101@bw.example.net"),
        ("bw-part-callee", "Alan Turing", "tel:+14085550202"),
    ]
    media = only(answer_200(run).sdp.media)
    assert_recorded(media, "1", "PCMU/8000", formats=["0", "8", "101"])
    offered = recorder.wait_for_event("call_offered", call_id=run.call_id)
    assert offered["siprec"] is True
    assert offered["streams"] == [
        {"label": "1", "port": media.port, "codec": "PCMU", "direction": "recvonly"}
    ]
    assert_ended(recorder, run)


# ----------------------------------------------------------------- c) Webex metadata first


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_webex_metadata_part_first_opus_offered_first(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_webex_metadata_first.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_active")
        finish(run)
    assert participants(session) == [
        ("wxc-p-1", "Ada Lovelace", "sip:ada@wxc.example.com"),
        ("wxc-p-2", "Charles Babbage", "sip:+33155550123@wxc.example.com"),
    ]
    media = only(answer_200(run).sdp.media)
    # the offer's order, under the payload types the SRC gave: opus first, as Webex offers it
    assert_recorded(media, "1", "opus/48000/2", formats=["111", "0", "101"])
    offered = recorder.wait_for_event("call_offered", call_id=run.call_id)
    stream = only(offered["streams"])
    assert stream["label"] == "1" and stream["port"] == media.port
    assert stream["codec"] == "opus"
    assert_ended(recorder, run)


# ------------------------------------------------------------------- d) pause and resume


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pause_and_resume_by_reinvite(recorder: Recorder, transport: str) -> None:
    run = run_scenario("siprec_pause_resume.xml", recorder, transport)
    answers = run.answers()
    assert len(answers) == 6
    expected = ["recvonly", "recvonly", "inactive", "recvonly", "inactive", "recvonly"]
    first = answers[0]
    for sdp, direction in zip(answers, expected, strict=True):
        assert [m.label for m in sdp.media] == ["1", "2"]
        assert [m.direction for m in sdp.media] == [direction, direction], sdp
        assert sdp.ports == first.ports, "ports must not move across re-offers"
        assert [m.codecs[0] for m in sdp.media] == ["PCMU/8000", "PCMA/8000"]
        assert sdp.session_id == first.session_id
    # o= version: unchanged for the identical re-offer, +1 at each change of the answer
    base = first.version
    assert [a.version for a in answers] == [base, base, base + 1, base + 2, base + 3, base + 4]

    updates = recorder.events("call_updated", call_id=run.call_id)
    assert [u["method"] for u in updates] == ["INVITE"] * 5
    assert [sorted(u["changes"]) for u in updates] == [
        [],
        ["stream 1 paused", "stream 2 paused"],
        ["stream 1 resumed", "stream 2 resumed"],
        ["stream 1 paused", "stream 2 paused"],
        ["stream 1 resumed", "stream 2 resumed"],
    ]
    for update, direction in zip(updates, expected[1:], strict=True):
        assert [s["direction"] for s in update["streams"]] == [direction, direction]
        assert [s["port"] for s in update["streams"]] == [m.port for m in first.media]
    assert_ended(recorder, run)


# ------------------------------------------------------------- e) metadata-only UPDATEs


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metadata_only_updates(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_metadata_update.xml", recorder, transport=transport) as run:
        seen = [checkpoint(run, recorder, "call_active")]
        for skip in range(3):
            seen.append(checkpoint(run, recorder, "call_updated", skip=skip))
        finish(run)
    alice, bob, carol, dave = (f"{n}-7f3a" for n in ("alice", "bob", "carol", "dave"))
    assert participant_ids(seen[0]) == [alice, bob]
    assert participant_ids(seen[1]) == [alice, bob, carol]
    # partial update: Dave joins, Bob leaves (disassociated; still named, he was heard before)
    assert {alice, carol, dave} <= set(participant_ids(seen[2]))
    assert participant_ids(seen[3]) == [alice, carol, dave]
    names = {p["id"]: p["name"] for p in seen[3]["participants"]}
    assert names[dave] == "Dave Bowman"
    # the streams never moved
    ports = [s["port"] for s in seen[0]["streams"]]
    for session in seen:
        assert [s["port"] for s in session["streams"]] == ports
        assert [s["direction"] for s in session["streams"]] == ["recvonly", "recvonly"]

    updates = run.responses("UPDATE")
    assert [r.status for r in updates] == [200, 200, 200]
    for response in updates:
        assert response.body.strip() == "", "a metadata-only UPDATE is answered without SDP"
        assert response.header("Content-Type") is None or "sdp" not in response.header(
            "Content-Type"
        )
    logged = recorder.events("call_updated", call_id=run.call_id)
    assert [(u["method"], u["changes"]) for u in logged] == [("UPDATE", ["metadata"])] * 3
    assert_ended(recorder, run)


# ---------------------------------------------------------- f) SDP-only re-INVITE keeps ports


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdp_only_reinvite_keeps_ports_and_metadata(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_reinvite_sdp_only.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_updated")
        finish(run)
    first, second = run.answers()
    assert second.ports == first.ports
    assert [m.direction for m in second.media] == ["recvonly", "recvonly"]
    assert second.version == first.version  # our answer did not change
    assert participant_ids(session) == ["so-p1", "so-p2"]
    update = only(recorder.events("call_updated", call_id=run.call_id))
    assert update["method"] == "INVITE"
    assert "metadata" not in update["changes"]
    assert [s["port"] for s in update["streams"]] == [m.port for m in first.media]
    assert_ended(recorder, run)


# ---------------------------------------------------------------- g) stream added mid-call


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_third_stream_added_by_reinvite(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_add_stream.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_updated")
        finish(run)
    first, second = run.answers()
    assert [m.label for m in second.media] == ["1", "2", "3"]
    for media in second.media:
        assert_recorded(media, media.label, "PCMU/8000")
    assert second.ports["1"] == first.ports["1"]
    assert second.ports["2"] == first.ports["2"]
    assert second.ports["3"] not in (first.ports["1"], first.ports["2"])
    assert second.version == first.version + 1
    update = only(recorder.events("call_updated", call_id=run.call_id))
    assert "stream 3 added" in update["changes"] and "metadata" in update["changes"]
    assert [s["label"] for s in update["streams"]] == ["1", "2", "3"]
    assert [s["label"] for s in session["streams"]] == ["1", "2", "3"]
    assert participant_ids(session) == ["as-p1", "as-p2", "as-p3"]
    assert_ended(recorder, run)


# ---------------------------------------------------------------------- h) video refused


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_video_refused_audio_recorded(recorder: Recorder, transport: str) -> None:
    run = run_scenario("siprec_video_refused.xml", recorder, transport)
    audio1, video, audio3 = answer_200(run).sdp.media
    assert_recorded(audio1, "1", "PCMU/8000")
    assert_recorded(audio3, "3", "PCMA/8000")
    assert video.kind == "video" and video.port == 0, video
    assert video.label == "2"
    offered = recorder.wait_for_event("call_offered", call_id=run.call_id)
    streams = offered["streams"]
    assert [s["label"] for s in streams] == ["1", "2", "3"]
    assert "refused" not in streams[0] and "refused" not in streams[2]
    assert streams[1]["port"] == 0 and streams[1].get("refused")
    assert_ended(recorder, run)


# ---------------------------------------------------------------------- i) unknown dialog


def test_bye_for_unknown_dialog_gets_481(recorder: Recorder) -> None:
    run = run_scenario("bye_unknown_dialog.xml", recorder)
    assert only(run.responses()).status == 481
    recorder.wait_for_event("unknown_dialog", call_id=run.call_id, method="BYE")


# --------------------------------------------------------------------- j) unsupported body


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unsupported_body_gets_415_with_accept(recorder: Recorder, transport: str) -> None:
    run = run_scenario("unsupported_body.xml", recorder, transport)
    response = only(run.responses())
    assert response.status == 415
    accepted = [t.strip() for t in (response.header("Accept") or "").split(",")]
    assert "application/sdp" in accepted
    assert "multipart/mixed" in accepted
    rejected = recorder.wait_for_event("invite_rejected", call_id=run.call_id)
    assert rejected["status"] == 415
    assert not recorder.events("call_offered", call_id=run.call_id)


# ------------------------------------------------------------------ k) more SRC families


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metaswitch_quirks(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_metaswitch.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_active")
        finish(run)
    media = only(answer_200(run).sdp.media)
    # offered 8 0 101, answered in that order; no direction offered (sendrecv): recvonly
    assert_recorded(media, "1", "PCMA/8000", formats=["8", "0", "101"])
    assert session["siprec"] is True
    assert participants(session) == [
        ("msw-part-a", "Mary Somerville", "sip:+441632960001@msw.example.org"),
        ("msw-part-b", "Charles Wheatstone", "sip:+441632960002@msw.example.org"),
    ]
    assert_ended(recorder, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metaswitch_call_stopped_by_operator(recorder: Recorder, transport: str) -> None:
    """Our BYE finds the SRC through the Contact that lacked its closing '>'."""
    with SippRun("siprec_metaswitch_stopped.xml", recorder, transport=transport) as run:
        recorder.wait_for_event("call_active", call_id=run.call_id)
        session_id = recorder.session(run.call_id)["session_id"]
        assert recorder.post(f"/sessions/{session_id}/stop") == 200
        finish(run)
    bye = only([m for m in run.messages if m.direction == "received" and m.method == "BYE"])
    assert bye.start_line.startswith(f"BYE sip:msw-rec@127.0.0.1:{run.port}"), bye.start_line
    assert bye.header("Call-ID") == run.call_id
    assert_ended(recorder, run, reason="stopped by operator")
    answered = recorder.wait_for_event("response_received", call_id=run.call_id, method="BYE")
    assert answered["status"] == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_avaya_placeholder_replaced_by_update(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_avaya.xml", recorder, transport=transport) as run:
        before = checkpoint(run, recorder, "call_active")
        after = checkpoint(run, recorder, "call_updated")
        finish(run)
    media = only(answer_200(run).sdp.media)
    assert_recorded(media, "10", "PCMU/8000", formats=["0", "8", "101"])
    assert participant_ids(before) == ["av-agent", "av-placeholder"]
    assert participants(after) == [
        ("av-agent", "Agent 4101", "sip:4101@avaya.example.com"),
        ("av-customer", "Customer", "sip:+13125550147@avaya.example.com"),
    ]
    update = only(run.responses("UPDATE"))
    assert update.status == 200 and update.body.strip() == ""
    assert [s["label"] for s in after["streams"]] == ["10"]
    assert after["streams"][0]["port"] == media.port
    assert_ended(recorder, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_acme_packet_large_labels_and_older_draft(recorder: Recorder, transport: str) -> None:
    with SippRun("siprec_acme.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_active")
        finish(run)
    sdp = answer_200(run).sdp
    assert [m.label for m in sdp.media] == ["16777227", "16777228"]
    for media in sdp.media:
        assert_recorded(media, media.label, "PCMU/8000")
    assert participants(session) == [
        ("acme-p-calling", "Hedy Lamarr", "sip:+12025550111@acme.example.com"),
        ("acme-p-called", "George Antheil", "sip:+12025550199@acme.example.com"),
    ]
    assert_ended(recorder, run)


def test_cisco_cube_plain_sdp(recorder: Recorder) -> None:
    with SippRun("cube_plain_sdp.xml", recorder) as run:
        session = checkpoint(run, recorder, "call_active")
        finish(run)
    first, second = run.answers()
    media = only(first.media)
    assert_recorded(media, None, "PCMU/8000")
    assert second.ports == first.ports
    assert only(second.media).direction == "recvonly"
    offered = recorder.wait_for_event("call_offered", call_id=run.call_id)
    assert offered["siprec"] is False  # a trunk fork, recorded all the same
    # no metadata: participants are the caller and callee of From and To
    assert [(p["name"], p["aor"]) for p in session["participants"]] == [
        ("Ella Fitzgerald", "sip:+16175550123@cube.example.com"),
        ("Louis Armstrong", "sip:+16175550188@cube.example.com"),
    ]
    assert_ended(recorder, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cucm_delayed_offer(recorder: Recorder, transport: str) -> None:
    with SippRun("cucm_delayed_offer.xml", recorder, transport=transport) as run:
        session = checkpoint(run, recorder, "call_active")
        finish(run)
    offer = answer_200(run).sdp
    media = only(offer.media)
    assert media.port > 0 and media.direction == "recvonly", media
    assert "PCMU/8000" in media.codecs
    stream = only(session["streams"])
    assert stream["port"] == media.port
    assert stream["codec"] == "PCMU"  # taken from the SRC's answer in the ACK
    assert stream["direction"] == "recvonly"
    assert_ended(recorder, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cucm_delayed_offer_reinvite(recorder: Recorder, transport: str) -> None:
    """A re-INVITE without SDP mid-call: we offer again, the SRC answers in the ACK."""
    with SippRun("cucm_delayed_offer_reinvite.xml", recorder, transport=transport) as run:
        first = checkpoint(run, recorder, "call_active")
        recorder.wait_for_event("call_updated", call_id=run.call_id)
        # nothing is logged for an ACK of a re-INVITE: poll until the answer shows, or give up
        deadline = time.monotonic() + 2
        while True:
            second = recorder.session(run.call_id)
            if second["streams"][0]["codec"] == "PCMA" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        run.release()
        finish(run)
    offers = run.answers()  # our two offers, in the 200s
    assert len(offers) == 2
    assert offers[1].ports == offers[0].ports
    assert only(offers[1].media).direction == "recvonly"
    assert only(first["streams"])["codec"] == "PCMU"
    # the answer in the second ACK is what is recorded now
    assert only(second["streams"]) == {
        "label": None,
        "port": offers[0].media[0].port,
        "codec": "PCMA",
        "direction": "recvonly",
    }
    assert_ended(recorder, run)


def test_session_timer_refresh(recorder: Recorder) -> None:
    run = run_scenario("siprec_session_timer.xml", recorder)
    first, refresh = run.answers()
    assert refresh.ports == first.ports and refresh.version == first.version
    for response in run.responses(status=200):
        if response.method in ("INVITE", "UPDATE"):
            assert response.header("Session-Expires") == "1800;refresher=uac", response.headers
    update = only(run.responses("UPDATE"))
    assert update.body.strip() == ""
    assert not recorder.events("request_timeout", call_id=run.call_id)
    assert_ended(recorder, run)


def test_bye_before_ack(recorder: Recorder) -> None:
    run = run_scenario("siprec_bye_before_ack.xml", recorder)
    assert [(r.method, r.status) for r in run.responses()] == [("INVITE", 200), ("BYE", 200)]
    assert_ended(recorder, run)


def test_ack_with_other_cseq_and_bye_with_lower_cseq(recorder: Recorder) -> None:
    run = run_scenario("siprec_sloppy_ack_bye.xml", recorder)
    assert_ack_taken(run)
    recorder.wait_for_event("call_active", call_id=run.call_id)
    assert not recorder.events("ack_timeout", call_id=run.call_id)
    assert [(r.method, r.status) for r in run.responses()] == [
        ("INVITE", 200),
        ("INFO", 200),
        ("BYE", 200),
    ]
    assert_ended(recorder, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_undecodable_codec_refused_per_stream(recorder: Recorder, transport: str) -> None:
    run = run_scenario("siprec_codec_refused_per_stream.xml", recorder, transport)
    g728, g722, pcma = answer_200(run).sdp.media
    assert g728.port == 0 and g728.label == "1", g728
    assert_recorded(g722, "2", "G722/8000")  # G.722's RTP clock rate is 8000 (RFC 3551)
    assert g722.formats == ["9", "2", "101"]  # G.726-32 on PT 2 decoded too
    assert_recorded(pcma, "3", "PCMA/8000")
    offered = recorder.wait_for_event("call_offered", call_id=run.call_id)
    assert [(s["label"], s["codec"]) for s in offered["streams"]] == [
        ("1", None),
        ("2", "G722"),
        ("3", "PCMA"),
    ]
    assert offered["streams"][0].get("refused")
    assert_ended(recorder, run)


def test_ack_and_bye_without_to_tag(recorder: Recorder) -> None:
    run = run_scenario("siprec_no_to_tag.xml", recorder)
    assert_ack_taken(run)
    recorder.wait_for_event("call_active", call_id=run.call_id)
    assert [(r.method, r.status) for r in run.responses()] == [("INVITE", 200), ("BYE", 200)]
    assert_ended(recorder, run)


# --------------------------------------------------------------- AudioCodes: bare LF bodies
# SIPp turns every line ending into CRLF, even inside variables: this one is sent by hand.

_AUDIOCODES_SDP = """v=0
o=AudiocodesGW 1923 2810 IN IP4 127.0.0.1
s=Phone-Call
c=IN IP4 127.0.0.1
t=0 0
m=audio 48700 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=label:1
a=sendonly
m=audio 48702 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=label:2
a=sendonly
"""

_AUDIOCODES_METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>complete</datamode>
<session session_id="ac-s-1"><sipSessionID>ac-1f;remote=ac-2e</sipSessionID></session>
<participant participant_id="ac-p-1">
<nameID aor="sip:1001@ac.example.com"><name>Barbara Liskov</name></nameID>
</participant>
<participant participant_id="ac-p-2">
<nameID aor="sip:1002@ac.example.com"><name>Leslie Lamport</name></nameID>
</participant>
<stream stream_id="ac-st-1" session_id="ac-s-1"><label>1</label></stream>
<stream stream_id="ac-st-2" session_id="ac-s-1"><label>2</label></stream>
<participantstreamassoc participant_id="ac-p-1"><send>ac-st-1</send></participantstreamassoc>
<participantstreamassoc participant_id="ac-p-2"><send>ac-st-2</send></participantstreamassoc>
</recording>
"""


class RawUdpSrc:
    """A hand-written SRC over one UDP socket, for bytes SIPp cannot send."""

    def __init__(self, recorder: Recorder, eol: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", recorder.sip_port)
        self.eol = eol
        self.call_id = f"audiocodes-{time.monotonic_ns()}@127.0.0.1"
        self.to_tag: str | None = None

    def request(self, method: str, cseq: int, body: bytes = b"", content_type: str = "") -> bytes:
        to = f"<sip:srs@127.0.0.1:{self.target[1]}>" + (
            f";tag={self.to_tag}" if self.to_tag else ""
        )
        headers = [
            f"{method} sip:srs@127.0.0.1:{self.target[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-ac-{method}-{cseq}",
            f"From: <sip:ac-src@127.0.0.1:{self.port}>;tag=ac{self.port}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:ac-src@127.0.0.1:{self.port}>;+sip.src",
            "Max-Forwards: 70",
            "User-Agent: Mediant SW/v.7.40A",
        ]
        if method == "INVITE":
            headers.append("Require: siprec")
        if content_type:
            headers.append(f"Content-Type: {content_type}")
        headers.append(f"Content-Length: {len(body)}")
        return (self.eol.join(headers) + self.eol + self.eol).encode() + body

    def exchange(self, data: bytes, final_for: str | None) -> SipMessage | None:
        """Send (retransmitting like UDP must) until a final response for ``final_for``."""
        self.sock.sendto(data, self.target)
        if final_for is None:
            return None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                raw = self.sock.recv(65535)
            except TimeoutError:
                self.sock.sendto(data, self.target)
                continue
            message = SipMessage.parse("received", raw.decode("utf-8", "replace"))
            if message.method == final_for and (message.status or 0) >= 200:
                return message
        raise AssertionError(f"no final response to {final_for}")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("whole_message", [False, True], ids=["lf-body", "lf-everywhere"])
def test_audiocodes_bare_lf_body(recorder: Recorder, whole_message: bool) -> None:
    """Multipart body with bare LF line endings; Content-Length counts those bytes exactly."""
    src = RawUdpSrc(recorder, "\n" if whole_message else "\r\n")
    try:
        body = (
            "--ac-boundary\nContent-Type: application/sdp\n\n"
            + _AUDIOCODES_SDP
            + "\n--ac-boundary\nContent-Type: application/rs-metadata+xml\n"
            + "Content-Disposition: recording-session\n\n"
            + _AUDIOCODES_METADATA
            + "--ac-boundary--\n"
        ).encode()
        assert b"\r" not in body
        invite = src.request("INVITE", 1, body, "multipart/mixed;boundary=ac-boundary")
        response = src.exchange(invite, "INVITE")
        assert response is not None and response.status == 200, response
        src.to_tag = (response.header("To") or "").split(";tag=")[1].split(";")[0]
        sdp = Sdp.parse(response.body)
        assert [m.label for m in sdp.media] == ["1", "2"]
        for media in sdp.media:
            assert_recorded(media, media.label, "PCMA/8000")
        src.exchange(src.request("ACK", 1), None)
        recorder.wait_for_event("call_active", call_id=src.call_id)
        session = recorder.session(src.call_id)
        assert participant_ids(session) == ["ac-p-1", "ac-p-2"]
        bye = src.exchange(src.request("BYE", 2), "BYE")
        assert bye is not None and bye.status == 200
    finally:
        src.close()
    ended = recorder.wait_for_event("call_ended", call_id=src.call_id)
    assert ended["status"] == "ended"
