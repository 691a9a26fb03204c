"""Applying complete snapshots and partial updates, and metadata snapshots to JSON."""

from __future__ import annotations

import json
from pathlib import Path

from siprec_node.siprec.metadata import (
    Participant,
    ParticipantSessionAssoc,
    RecordingMetadata,
    apply_update,
)
from siprec_node.siprec.metadata_parser import parse_metadata

CORPUS = Path(__file__).resolve().parents[2] / "data" / "metadata"


def load(name: str) -> RecordingMetadata:
    return parse_metadata((CORPUS / name).read_bytes())


def senders_by_label(md: RecordingMetadata) -> dict[str, list[str]]:
    return {s.label or "": [p.id for p in md.senders(s.id)] for s in md.streams}


def test_rfc7865_partial_update_merges_by_id() -> None:
    base = load("rfc7865_complete.xml")
    update = load("rfc7865_partial.xml")
    state = apply_update(base, update)
    alice, bob = "Pa1cE9sKq2WmTn4Rb8vXjQ==", "Pb0bY7hJd3UeMz5Qc6wNfA=="
    assert state.data_mode == "complete"
    assert [p.id for p in state.participants] == [alice, bob]  # nobody removed
    assert len(state.streams) == 4
    assert state.stream_assoc(bob).send == []  # bob lost his <send>
    assert state.stream_assoc(bob).recv == ["St1aUAAMm5GRQKSCMVvLyl=="]
    assert state.stream_assoc(alice).send == ["St1aUAAMm5GRQKSCMVvLyl=="]
    psa = {a.participant_id: a for a in state.participant_session_assocs}
    assert psa[bob].associate_time == "2023-03-14T09:26:54Z"  # kept
    assert psa[bob].disassociate_time == "2023-03-14T09:31:02Z"  # added
    assert [p.id for p in state.active_participants()] == [alice]
    # inputs untouched
    assert base.stream_assoc(bob).send != []
    assert update.data_mode == "partial"


def test_six_metadata_only_updates_in_a_row() -> None:
    files = sorted((CORPUS / "update_sequence").glob("*.xml"))
    assert len(files) == 7  # the INVITE's snapshot then six updates
    state = parse_metadata(files[0].read_bytes())
    history = []
    for path in files[1:]:
        state = apply_update(state, parse_metadata(path.read_bytes()))
        history.append(
            (
                [p.id for p in state.active_participants()],
                senders_by_label(state),
            )
        )
    assert history == [
        # 1: bob held, still in the session but sending nothing
        (["seq-alice", "seq-bob"], {"1": ["seq-alice"], "2": []}),
        # 2: carol joins on label 2
        (["seq-alice", "seq-bob", "seq-carol"], {"1": ["seq-alice"], "2": ["seq-carol"]}),
        # 3: bob leaves
        (["seq-alice", "seq-carol"], {"1": ["seq-alice"], "2": ["seq-carol"]}),
        # 4: dave conferenced in, mixed with carol
        (
            ["seq-alice", "seq-carol", "seq-dave"],
            {"1": ["seq-alice"], "2": ["seq-carol", "seq-dave"]},
        ),
        # 5: dave leaves
        (["seq-alice", "seq-carol"], {"1": ["seq-alice"], "2": ["seq-carol"]}),
        # 6: complete snapshot replaces everything
        (["seq-alice", "seq-carol"], {"1": ["seq-alice"], "2": ["seq-carol"]}),
    ]
    assert [p.id for p in state.participants] == ["seq-alice", "seq-carol"]
    assert state.participant("seq-alice").display_name == "Alice Smith"


def test_partial_update_replaces_a_participants_names() -> None:
    state = parse_metadata((CORPUS / "update_sequence" / "00_invite.xml").read_bytes())
    for name in ("01_bob_held.xml", "02_carol_joins.xml", "03_bob_leaves.xml"):
        state = apply_update(state, load(f"update_sequence/{name}"))
    state = apply_update(state, load("update_sequence/04_dave_conferenced.xml"))
    alice = state.participant("seq-alice")
    assert alice is not None
    assert [n.text for name_id in alice.name_ids for n in name_id.names] == ["Alice Smith"]
    bob = state.participant("seq-bob")
    assert bob is not None and bob.display_name == "Bob"  # left, but still described


def test_avaya_complete_update_replaces_the_placeholder() -> None:
    state = apply_update(load("avaya_invite.xml"), load("avaya_update.xml"))
    assert [p.id for p in state.participants] == ["av-p-agent", "av-p-customer"]
    assert [p.aor for p in state.senders_for_label("10")] == [
        "sip:3001@cm.example.org",
        "sip:+13125550123@carrier.example.com",
    ]
    assert state.warnings == []


def test_partial_without_a_snapshot_becomes_the_state_with_a_warning() -> None:
    state = apply_update(None, load("rfc7865_partial.xml"))
    assert state.data_mode == "complete"
    assert "partial metadata update without a prior snapshot" in state.warnings


def test_association_without_session_id_updates_the_participants_associations() -> None:
    base = RecordingMetadata(
        participants=[Participant("p")],
        participant_session_assocs=[ParticipantSessionAssoc("p", "s", associate_time="t0")],
    )
    update = RecordingMetadata(
        data_mode="partial",
        participant_session_assocs=[ParticipantSessionAssoc("p", None, disassociate_time="t1")],
    )
    state = apply_update(base, update)
    assert state.participant_session_assocs == [
        ParticipantSessionAssoc("p", "s", associate_time="t0", disassociate_time="t1")
    ]


def test_extensions_are_merged_without_duplicates() -> None:
    base = load("metaswitch.xml")
    update = RecordingMetadata(data_mode="partial", extensions=[*base.extensions, "<x:y/>"])
    assert apply_update(base, update).extensions == [*base.extensions, "<x:y/>"]


def test_to_dict_is_json_safe_and_round_trips() -> None:
    for name in ("rfc7865_complete.xml", "acme_draft.xml", "broadworks.xml", "avaya_invite.xml"):
        md = load(name)
        data = json.loads(json.dumps(md.to_dict()))
        assert RecordingMetadata.from_dict(data) == md
