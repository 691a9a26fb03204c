"""RecordingSession: participants tied to streams by label, pause state, snapshots."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from siprec_node.siprec.metadata import RecordingMetadata
from siprec_node.siprec.metadata_parser import parse_metadata
from siprec_node.siprec.multipart import extract_body
from siprec_node.siprec.recording_session import Party, RecordingSession, recognize_siprec
from siprec_node.siprec.sdp_answer import SdpAnswer, SdpAnswerer

DATA = Path(__file__).resolve().parents[2] / "data"


def metadata(name: str) -> RecordingMetadata:
    return parse_metadata((DATA / "metadata" / name).read_bytes())


def answer(name: str, srs: SdpAnswerer | None = None) -> SdpAnswer:
    srs = srs or SdpAnswerer("192.0.2.10", lambda index, label: 20000 + 2 * index)
    return srs.answer((DATA / "sdp" / name).read_bytes())


# -- recognising SIPREC ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("require", "contacts", "dispositions"),
    [
        (["siprec"], [], []),
        (["100rel, SipRec"], [], []),
        ([], ["<sip:src@192.0.2.5:5060>;+sip.src"], []),
        ([], ["<sip:src@192.0.2.5:5060;transport=tcp;+sip.src>"], []),  # Avaya: inside <>
        ([], ["<sip:src@192.0.2.5:5060>;+sip.src;expires=60"], []),
        ([], ["<sip:msw@198.51.100.20;transport=udp>;+sip.src"], []),
        ([], ["<sip:msw@198.51.100.20;transport=udp;+sip.src"], []),  # Metaswitch: no '>'
        ([], ["<sip:bw@203.0.113.44:5060>;src"], []),  # BroadWorks
        ([], ["<sip:bw@203.0.113.44:5060>;src;audio"], []),
        ([], [], ["recording-session"]),
        ([], [], ["Recording-Session ; handling=required"]),
    ],
)
def test_recognize_siprec_signs(
    require: list[str], contacts: list[str], dispositions: list[str]
) -> None:
    assert recognize_siprec(require, contacts, dispositions)


@pytest.mark.parametrize(
    ("require", "contacts", "dispositions"),
    [
        ([], [], []),
        (["100rel", "timer"], ["<sip:src@192.0.2.5>"], ["session;handling=required"]),
        ([], ["<sip:srs@192.0.2.5>;+sip.srs"], []),
        ([], ["<sip:a@192.0.2.5>;srcport=5060"], []),
        ([], ["<sip:a@192.0.2.5>;+sip.srcx"], []),
        (["siprecx"], [], ["recording-sessions"]),
    ],
)
def test_recognize_siprec_negatives(
    require: list[str], contacts: list[str], dispositions: list[str]
) -> None:
    assert not recognize_siprec(require, contacts, dispositions)


def test_body_part_disposition_feeds_recognition() -> None:
    body = (
        b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b\r\n"
        b"Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session"
        b"\r\n\r\n<recording/>\r\n--b--\r\n"
    )
    extracted = extract_body("multipart/mixed;boundary=b", body)
    assert recognize_siprec([], [], extracted.dispositions)


# -- participants and streams ---------------------------------------------------------------


def test_acme_labels_map_to_participants() -> None:
    session = RecordingSession("call-1", metadata=metadata("acme_draft.xml"))
    session.update_streams(answer("acme_two_streams.sdp").streams)
    first = session.participant_for_label("16777227")
    second = session.participant_for_label("16777228")
    assert first is not None and second is not None
    assert (first.name, first.aor, first.source) == (
        "Boston MA",
        "sip:+16175550100@trunk.example.com",
        "metadata",
    )
    assert (second.name, second.aor) == ("Helpdesk", "sip:4455@pbx.example.com")
    assert session.streams_by_participant() == {first.id: [0], second.id: [1]}


def test_metaswitch_mixed_stream_carries_both_participants() -> None:
    session = RecordingSession(metadata=metadata("metaswitch.xml"))
    session.update_streams(answer("metaswitch_mixed.sdp").streams)
    (stream,) = session.streams
    assert [p.id for p in session.participants_for_stream(stream)] == ["msw-part-1", "msw-part-2"]


def test_without_metadata_caller_is_first_stream_and_callee_second() -> None:
    session = RecordingSession(
        "cube-call",
        caller=Party("Alice", "sip:alice@example.com"),
        callee=Party(None, "sip:+15550100@example.com"),
    )
    session.update_streams(answer("acme_two_streams.sdp").streams)
    first, second = session.streams
    assert [(p.id, p.name, p.aor, p.source) for p in session.participants_for_stream(first)] == [
        ("caller", "Alice", "sip:alice@example.com", "sip")
    ]
    assert [p.aor for p in session.participants_for_stream(second)] == ["sip:+15550100@example.com"]


def test_refused_streams_are_skipped_in_positional_mapping() -> None:
    session = RecordingSession(caller=Party("A", "sip:a@x"), callee=Party("B", "sip:b@x"))
    # G.729 left out of the allow-list: its stream is refused
    allow = SdpAnswerer("192.0.2.10", lambda i, label: 20000 + 2 * i, codecs=("PCMU", "PCMA"))
    session.update_streams(answer("g729_beside_pcmu.sdp", allow).streams)
    refused, recorded = session.streams
    assert not refused.recorded
    assert session.participants_for_stream(refused) == []
    assert [p.id for p in session.participants_for_stream(recorded)] == ["caller"]


def test_metadata_without_matching_labels_falls_back_to_active_participants() -> None:
    session = RecordingSession(metadata=metadata("no_namespace.xml"))  # labels a1/a2
    session.update_streams(answer("cube_plain.sdp").streams)  # no label at all
    assert [p.id for p in session.participants_for_stream(session.streams[0])] == ["nn-a"]


def test_avaya_update_replaces_placeholder_participant() -> None:
    session = RecordingSession(metadata=metadata("avaya_invite.xml"))
    session.update_streams(answer("avaya_label10.sdp").streams)
    (stream,) = session.streams
    before = [p.aor for p in session.participants_for_stream(stream)]
    assert before == ["sip:3001@cm.example.org", "sip:unknown@invalid"]
    session.apply_metadata(metadata("avaya_update.xml"))
    after = [p.aor for p in session.participants_for_stream(stream)]
    assert after == ["sip:3001@cm.example.org", "sip:+13125550123@carrier.example.com"]


def test_partial_updates_move_a_label_to_a_new_participant() -> None:
    session = RecordingSession(metadata=metadata("update_sequence/00_invite.xml"))
    session.update_streams(answer("audiocodes_two_labels_lf.sdp").streams)
    assert session.participant_for_label("2").id == "seq-bob"
    for name in ("01_bob_held.xml", "02_carol_joins.xml", "03_bob_leaves.xml"):
        session.apply_metadata(metadata(f"update_sequence/{name}"))
    assert session.participant_for_label("2").id == "seq-carol"
    assert session.participant_for_label("1").id == "seq-alice"
    assert session.participant_for_label("3") is None


def test_pause_state_follows_hold_and_operator() -> None:
    srs = SdpAnswerer("192.0.2.10", lambda index, label: 20000 + 2 * index)
    session = RecordingSession()
    session.update_streams(answer("acme_two_streams.sdp", srs).streams)
    assert not session.paused
    held_offer = (
        (DATA / "sdp" / "acme_two_streams.sdp").read_bytes().replace(b"sendonly", b"inactive")
    )
    session.update_streams(srs.answer(held_offer).streams)
    assert session.paused
    session.update_streams(answer("acme_two_streams.sdp", srs).streams)
    session.set_paused(True, label="16777228")
    assert [s.paused for s in session.streams] == [False, True]
    assert not session.paused
    session.set_paused(True)
    assert session.paused
    session.set_paused(False, index=0)
    assert session.stream(index=0).paused is False
    assert session.stream(label="nope") is None


def test_snapshot_round_trip_is_json_safe() -> None:
    session = RecordingSession(
        "call-7", caller=Party("A", "sip:a@x"), metadata=metadata("acme_draft.xml")
    )
    session.update_streams(answer("srtp_offer.sdp").streams)
    session.set_paused(True, index=0)
    data = json.loads(json.dumps(session.to_dict()))
    assert uuid.UUID(data["session_id"])
    # label 1 is not in this metadata: the first recorded stream is the first participant
    assert data["streams"][0]["participant_ids"] == ["Ap7Zr4LcQy2Xb9Nw1Fs6kA=="]
    restored = RecordingSession.from_dict(data)
    # the same JSON (its lists are tuples in memory: see RecordingSession.to_dict)
    assert json.loads(json.dumps(restored.to_dict())) == data
    assert restored.metadata == session.metadata
    assert restored.streams[0].negotiated.srtp == session.streams[0].negotiated.srtp
    assert restored.streams[0].paused


def test_session_ids_are_unique_uuids() -> None:
    ids = {RecordingSession().session_id for _ in range(5)}
    assert len(ids) == 5
    assert all(uuid.UUID(i).version == 4 for i in ids)
