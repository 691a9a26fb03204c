"""The metadata parser against the corpus in tests/data/metadata (one document per dialect)."""

from __future__ import annotations

from pathlib import Path

import pytest

from siprec_node.siprec.errors import MetadataError
from siprec_node.siprec.metadata import RecordingMetadata
from siprec_node.siprec.metadata_parser import parse_metadata

CORPUS = Path(__file__).resolve().parents[2] / "data" / "metadata"


def load(name: str) -> RecordingMetadata:
    return parse_metadata((CORPUS / name).read_bytes())


def sends(metadata: RecordingMetadata) -> dict[str, list[str]]:
    return {a.participant_id: a.send for a in metadata.participant_stream_assocs}


def labels_to_aors(metadata: RecordingMetadata) -> dict[str, list[str | None]]:
    return {s.label or "": [p.aor for p in metadata.senders(s.id)] for s in metadata.streams}


def test_rfc7865_complete_example() -> None:
    md = load("rfc7865_complete.xml")
    assert md.data_mode == "complete"
    assert md.warnings == []
    assert [g.id for g in md.groups] == ["Gq3xBv0eQ8uSd1TnKp2rLA=="]
    assert md.groups[0].associate_time == "2023-03-14T09:26:53Z"
    assert md.groups[0].extensions == [
        '<desk xmlns="http://example.com/trading">\n      <floor>4</floor>\n'
        "      <book>rates</book>\n    </desk>"
    ]
    (session,) = md.sessions
    assert session.id == "Sx7bV2mQ4kR9dLp1Zw0yHg=="
    assert session.group_refs == ["Gq3xBv0eQ8uSd1TnKp2rLA=="]
    assert session.sip_session_ids == [
        "5f1c2ab0e9d84f7a9c33a1b2c4d5e6f7; remote=00000000000000000000000000000000"
    ]
    alice, bob = md.participants
    assert alice.id == "Pa1cE9sKq2WmTn4Rb8vXjQ=="
    assert alice.aor == "sip:alice@atlanta.example.com"
    assert [(n.text, n.lang) for n in alice.name_ids[0].names] == [
        ("Alice Liddell", "en"),
        ("Alice L.", "fr"),
    ]
    assert alice.display_name == "Alice Liddell"
    assert len(alice.extensions) == 1 and "<trader>A-17</trader>" in alice.extensions[0]
    assert bob.aor == "sip:bob@biloxi.example.com"
    assert [(s.label, s.session_id) for s in md.streams] == [
        ("96", session.id),
        ("97", session.id),
        ("98", session.id),
        ("99", session.id),
    ]
    assert labels_to_aors(md) == {
        "96": [alice.aor],
        "97": [alice.aor],
        "98": [bob.aor],
        "99": [bob.aor],
    }
    assert md.stream_assoc(bob.id) is not None
    assert md.stream_assoc(bob.id).recv == ["St1aUAAMm5GRQKSCMVvLyl==", "St2ai1Pz3to5hGk8fuXl+P=="]
    assert [(a.session_id, a.associate_time) for a in md.session_recording_assocs] == [
        (session.id, "2023-03-14T09:26:53Z")
    ]
    assert [(a.participant_id, a.associate_time) for a in md.participant_session_assocs] == [
        (alice.id, "2023-03-14T09:26:53Z"),
        (bob.id, "2023-03-14T09:26:54Z"),
    ]


def test_rfc7865_partial_update_document() -> None:
    md = load("rfc7865_partial.xml")
    assert md.data_mode == "partial"
    assert md.participants == [] and md.streams == []
    assert sends(md) == {
        "Pb0bY7hJd3UeMz5Qc6wNfA==": [],
        "Pa1cE9sKq2WmTn4Rb8vXjQ==": ["St1aUAAMm5GRQKSCMVvLyl=="],
    }
    (psa,) = md.participant_session_assocs
    assert psa.disassociate_time == "2023-03-14T09:31:02Z"
    assert psa.associate_time is None


def test_metaswitch_namespace_without_version_and_id_attributes() -> None:
    md = load("metaswitch.xml")
    assert md.warnings == []
    assert [p.id for p in md.participants] == ["msw-part-1", "msw-part-2"]
    assert [s.id for s in md.sessions] == ["msw-sess-7c1e"]
    (stream,) = md.streams
    assert (stream.id, stream.label, stream.session_id) == ("msw-strm-1", "1", "msw-sess-7c1e")
    # one mixed stream: both parties send on label 1
    assert [p.id for p in md.senders_for_label("1")] == ["msw-part-1", "msw-part-2"]
    assert [a.session_id for a in md.session_recording_assocs] == ["msw-sess-7c1e"]
    assert [(a.participant_id, a.session_id) for a in md.participant_session_assocs] == [
        ("msw-part-1", "msw-sess-7c1e"),
        ("msw-part-2", "msw-sess-7c1e"),
    ]
    (extension,) = md.extensions
    assert extension.startswith('<msw:callInfo xmlns:msw="http://www.metaswitch.com/ns/siprec">')
    assert '<msw:subscriber dn="441632960001"/>' in extension


def test_broadworks_recording_metadata_root() -> None:
    md = load("broadworks.xml")
    assert md.data_mode == "complete"
    caller, callee = md.participants
    assert caller.id == "bw-p-caller"
    assert caller.aor == "sip:+12125550143@as.example.net"  # scheme added
    assert caller.display_name == "Pat Caller"
    assert callee.aor == "sip:2001@as.example.net"
    assert callee.display_name is None
    assert sends(md) == {"bw-p-caller": ["bw-s-1"], "bw-p-callee": ["bw-s-2"]}
    assert [(s.id, s.label, s.mode, s.session_id) for s in md.streams] == [
        ("bw-s-1", "1", "separate", "bw-3f9a2c71"),
        ("bw-s-2", "2", "separate", "bw-3f9a2c71"),
    ]
    assert labels_to_aors(md) == {"1": [caller.aor], "2": [callee.aor]}
    assert md.session_recording_assocs == []
    assert any("URI scheme" in w for w in md.warnings)


def test_webex_single_mixed_stream() -> None:
    md = load("webex_mixed.xml")
    (stream,) = md.streams
    assert (stream.label, stream.mode) == ("1", "mixed")
    assert [p.aor for p in md.senders_for_label("1")] == ["tel:+14085550110", "tel:4085550199"]


def test_avaya_duplicate_stream_with_empty_id_and_placeholder() -> None:
    md = load("avaya_invite.xml")
    assert md.data_mode == "complete"  # from camelCase <dataMode>
    assert [(s.id, s.label) for s in md.streams] == [("av-str-10", "10")]
    assert any("without an id" in w for w in md.warnings)
    assert [p.aor for p in md.senders_for_label("10")] == [
        "sip:3001@cm.example.org",
        "sip:unknown@invalid",
    ]
    assert md.groups[0].id == "av-grp-0001"
    assert md.sessions[0].group_refs == ["av-grp-0001"]


def test_acme_older_draft_with_apkt_extension_data() -> None:
    md = load("acme_draft.xml")
    assert md.warnings == []
    (session,) = md.sessions
    assert session.extensions == [
        '<apkt:ucid xmlns:apkt="http://acmepacket.com/siprec/extensiondata">'
        "00FA080018D2A1678E3F21;encoding=hex</apkt:ucid>",
        '<apkt:callerOrig xmlns:apkt="http://acmepacket.com/siprec/extensiondata">'
        "true</apkt:callerOrig>",
    ]
    # the session's own <associate-time> becomes its association with the recording
    assert [(a.session_id, a.associate_time) for a in md.session_recording_assocs] == [
        (session.id, "2025-01-20T13:02:44")
    ]
    caller, callee = md.participants
    assert (caller.aor, caller.display_name) == ("sip:+16175550100@trunk.example.com", "Boston MA")
    assert (callee.aor, callee.display_name) == ("sip:4455@pbx.example.com", "Helpdesk")
    assert caller.extensions[:2] == [
        '<apkt:callingParty xmlns:apkt="http://acmepacket.com/siprec/extensiondata">'
        "true</apkt:callingParty>",
        '<apkt:realm xmlns:apkt="http://acmepacket.com/siprec/extensiondata">'
        "core-access</apkt:realm>",
    ]
    assert "&lt;sip:+16175550100@trunk.example.com&gt;" in caller.extensions[2]
    # <participant id session> with its own <send>/<recv> and times
    assert [
        (a.participant_id, a.session_id, a.associate_time) for a in md.participant_session_assocs
    ] == [
        (caller.id, session.id, "2025-01-20T13:02:44"),
        (callee.id, session.id, "2025-01-20T13:02:44"),
    ]
    assert labels_to_aors(md) == {"16777227": [caller.aor], "16777228": [callee.aor]}
    assert md.stream_assoc(caller.id).recv == ["Ax4Lf1Hs8Nc6Uj3Qo0Zi2g=="]


def test_any_prefix_for_the_recording_namespace() -> None:
    md = load("prefixed.xml")
    assert md.warnings == []
    assert [p.display_name for p in md.participants] == ["Carol", None]
    assert labels_to_aors(md) == {
        "1": ["sip:carol@chicago.example.com"],
        "2": ["sip:dave@denver.example.com"],
    }


def test_no_namespace_no_datamode_no_associations() -> None:
    md = load("no_namespace.xml")
    assert md.data_mode == "complete"
    assert "metadata without a namespace" in md.warnings
    assert md.participants[0].aor == "sip:erin@example.org"
    assert md.session_recording_assocs == []
    assert md.participant_session_assocs == []
    assert labels_to_aors(md) == {"a1": ["sip:erin@example.org"], "a2": ["sip:frank@example.org"]}
    assert [p.id for p in md.active_participants()] == ["nn-a", "nn-b"]


@pytest.mark.parametrize(
    "name",
    ["not_well_formed.xml", "entity_expansion.xml", "external_entity.xml", "doctype_only.xml"],
)
def test_invalid_documents_are_400(name: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_metadata((CORPUS / "invalid" / name).read_bytes())
    assert info.value.status == 400


def test_size_limit() -> None:
    document = (CORPUS / "rfc7865_complete.xml").read_bytes()
    assert parse_metadata(document, max_size=len(document)).participants
    with pytest.raises(MetadataError, match="exceeds"):
        parse_metadata(document, max_size=len(document) - 1)
    big = b"<recording>" + b"<!-- padding -->" * 20000 + b"</recording>"
    with pytest.raises(MetadataError):
        parse_metadata(big)


@pytest.mark.parametrize("document", [b"", b"   ", b"not xml at all", b"<recording>"])
def test_garbage_is_400(document: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_metadata(document)


def test_text_input_with_an_encoding_declaration() -> None:
    text = (CORPUS / "acme_draft.xml").read_text(encoding="utf-8")
    assert parse_metadata(text).participants[0].display_name == "Boston MA"
    latin = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><recording><participant id="p">'
        '<nameID aor="sip:j@x"><name>José</name></nameID></participant></recording>'
    )
    assert parse_metadata(latin).participants[0].display_name == "José"
    assert parse_metadata(latin.encode("iso-8859-1")).participants[0].display_name == "José"


def test_unexpected_content_is_accepted_with_warnings() -> None:
    document = b"""<?xml version="1.0"?>
<other xmlns="urn:example:unknown">
  <datamode>sometimes</datamode>
  <participant><nameID aor="sip:x@example.com"/></participant>
  <stream stream_id="s1"><label>1</label><colour>blue</colour></stream>
  <stream><label>2</label></stream>
  <stream/>
  <participantstreamassoc><send>s1</send></participantstreamassoc>
  <sessionrecordingassoc/>
  <participantsessionassoc/>
</other>"""
    md = parse_metadata(document)
    assert md.data_mode == "complete"
    assert md.participants[0].id == "participant-1"
    assert [(s.id, s.label) for s in md.streams] == [("s1", "1"), ("label-2", "2")]
    assert md.streams[0].extensions == ['<colour xmlns="urn:example:unknown">blue</colour>']
    assert md.participant_stream_assocs == []
    joined = " | ".join(md.warnings)
    for expected in (
        "unexpected root element <other>",
        "unknown metadata namespace",
        "unknown data mode",
        "<participant> without an id",
        "unknown element <colour>",
        "stream without an id or a label ignored",
        "participantstreamassoc without a participant id",
        "sessionrecordingassoc without a session id",
        "participantsessionassoc without a participant id",
    ):
        assert expected in joined


def test_extension_serialisation_keeps_namespaces() -> None:
    document = b"""<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <participant participant_id="p1">
    <x:info xmlns:x="urn:example:x" x:kind="a" xml:lang="en"><plain>1</plain></x:info>
  </participant>
</recording>"""
    (extension,) = parse_metadata(document).participants[0].extensions
    assert extension == (
        '<x:info xmlns:x="urn:example:x" xmlns="urn:ietf:params:xml:ns:recording:1"'
        ' x:kind="a" xml:lang="en"><plain>1</plain></x:info>'
    )


def test_extension_with_unqualified_children_keeps_them_unqualified() -> None:
    document = b'<recording><ext xmlns="urn:e"><a xmlns="">1</a><b>2</b></ext></recording>'
    (extension,) = parse_metadata(document).extensions
    assert extension == '<ns0:ext xmlns:ns0="urn:e"><a>1</a><ns0:b>2</ns0:b></ns0:ext>'


def test_vendor_identifiers_from_extension_data() -> None:
    """Oracle/Acme put the UCID in apkt extension data; it becomes a vendor id of the call."""
    from pathlib import Path

    from siprec_node.siprec.metadata_parser import parse_metadata

    data = (Path(__file__).parents[2] / "data" / "metadata" / "acme_draft.xml").read_bytes()
    ids = parse_metadata(data).vendor_identifiers()
    assert ids["UCID"] == "00FA080018D2A1678E3F21;encoding=hex"
    assert (
        parse_metadata(
            (Path(__file__).parents[2] / "data" / "metadata" / "rfc7865_complete.xml").read_bytes()
        ).vendor_identifiers()
        == {}
    )


def test_hostile_documents_are_refused_with_a_reason_and_warnings_are_capped() -> None:
    from siprec_node.siprec.errors import MetadataError, MetadataLimitExceeded
    from siprec_node.siprec.metadata_parser import MAX_DEPTH, MAX_WARNINGS

    ns = "urn:ietf:params:xml:ns:recording:1"
    for declaration in ('encoding="x"', 'encoding="UTF-7"', 'encoding="rot13"'):
        with pytest.raises(MetadataError, match="unsupported encoding"):
            parse_metadata(f'<?xml version="1.0" {declaration}?><recording xmlns="{ns}"/>'.encode())
    deep = "<x>" * (MAX_DEPTH + 1) + "</x>" * (MAX_DEPTH + 1)
    with pytest.raises(MetadataError, match="nested deeper"):
        parse_metadata(f'<recording xmlns="{ns}">{deep}</recording>'.encode())
    kept = (
        "<x>" * (MAX_DEPTH - 2) + "y" + "</x>" * (MAX_DEPTH - 2)
    )  # written back without recursion
    assert parse_metadata(f'<recording xmlns="{ns}">{kept}</recording>'.encode()).extensions
    with pytest.raises(MetadataLimitExceeded, match="more than 10 elements"):
        parse_metadata(
            f'<recording xmlns="{ns}">{"<x/>" * 10}</recording>'.encode(), max_elements=10
        )
    ids = " ".join(f"s{i}" for i in range(20))
    text_ids = (
        f'<recording xmlns="{ns}"><participant id="p"><send>{ids}</send></participant></recording>'
    )
    with pytest.raises(MetadataLimitExceeded):
        parse_metadata(text_ids.encode(), max_elements=10)
    unknown = "".join(f"<u{i}/>" for i in range(MAX_WARNINGS + 10))
    many = parse_metadata(f'<recording xmlns="{ns}">{unknown}</recording>'.encode())
    assert len(many.warnings) == MAX_WARNINGS + 1
    assert many.warnings[-1] == "10 more warnings not kept"
    assert len(many.extensions) == MAX_WARNINGS + 10  # nothing lost but the warnings


@pytest.mark.parametrize(
    "document",
    [
        # a DTD however it is spelt or encoded: refused before anything in it is read
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>'.encode(
            "utf-16"
        ),
        b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><r/>',
        b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>',
        b'<!DOCTYPE r PUBLIC "-//x//y" "http://127.0.0.1:9/x.dtd"><r/>',
        # no DTD, no entity: an entity reference is not well-formed
        b'<recording xmlns="urn:ietf:params:xml:ns:recording:1">&undefined;</recording>',
    ],
)
def test_dtds_and_entities_are_refused(document: bytes) -> None:
    with pytest.raises(MetadataError) as info:
        parse_metadata(document)
    assert info.value.status == 400
