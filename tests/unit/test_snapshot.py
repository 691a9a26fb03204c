"""CallSnapshot: the typed call snapshot both sides of the store agree on, against literal JSON."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from siprec_node.sip.call import CallData
from siprec_node.snapshot import CallSnapshot, decode_call, encode_call
from siprec_node.status import CallStatus

# A stored snapshot as written by hand from the field list (not by our encoder): times in
# RFC 3339 with Z, whole seconds without a fraction, lists as arrays, fields in declared order.
STORED = (
    '{"session_id":"s-1","call_id":"c-1@src","node_id":"rec-1","status":"active",'
    '"created_at":"2026-01-02T03:04:05.123456Z","updated_at":"2026-01-02T03:04:06Z",'
    '"started_at":"2026-01-02T03:04:05.500000Z","ended_at":null,"end_reason":null,'
    '"from_uri":"sip:alice@example.com","to_uri":"sip:srs@example.net",'
    '"from_display":"Alice","to_display":null,"vendor_ids":{"Cisco-Guid":"1234"},'
    '"dialog":{"call_id":"c-1@src","local_tag":"a","route_set":[]},'
    '"recording":{"is_siprec":true},"media":{"ports":[20000,20002]},'
    '"last_activity":"2026-01-02T03:04:07Z","recoveries":1,'
    '"turns":[{"participant":"alice","start":"2026-01-02T03:04:08+00:00","duration_ms":1200,'
    '"interrupted":false}],"flags":[{"kind":"stalled"}],"verdict":null,'
    '"transcription":{"status":"pending","error":null},"outcome":null,"version":3}'
)


def _t(second: int, micro: int = 0) -> datetime:
    return datetime(2026, 1, 2, 3, 4, second, micro, tzinfo=UTC)


EXPECTED = CallSnapshot(
    session_id="s-1",
    call_id="c-1@src",
    node_id="rec-1",
    status=CallStatus.ACTIVE,
    created_at=_t(5, 123456),
    updated_at=_t(6),
    started_at=_t(5, 500000),
    from_uri="sip:alice@example.com",
    to_uri="sip:srs@example.net",
    from_display="Alice",
    vendor_ids={"Cisco-Guid": "1234"},
    dialog={"call_id": "c-1@src", "local_tag": "a", "route_set": []},
    recording={"is_siprec": True},
    media={"ports": [20000, 20002]},
    last_activity=_t(7),
    recoveries=1,
    turns=(
        {
            "participant": "alice",
            "start": "2026-01-02T03:04:08+00:00",
            "duration_ms": 1200,
            "interrupted": False,
        },
    ),
    flags=({"kind": "stalled"},),
    transcription={"status": "pending", "error": None},
    version=3,
)


def test_a_hand_written_record_decodes_to_the_expected_snapshot() -> None:
    call = decode_call(STORED)
    assert call == EXPECTED
    assert call.status is CallStatus.ACTIVE and call.created_at.tzinfo is not None
    assert call.turns[0]["duration_ms"] == 1200 and call.is_final is False


def test_a_snapshot_encodes_to_the_hand_written_record_byte_for_byte() -> None:
    assert encode_call(EXPECTED) == STORED.encode()
    assert json.loads(STORED) == EXPECTED.to_dict()
    assert CallSnapshot.from_dict(json.loads(STORED)) == EXPECTED


def test_unknown_keys_are_ignored_and_missing_ones_get_defaults() -> None:
    call = decode_call('{"session_id":"s","call_id":"c","node_id":"n","from_the_future":1}')
    assert (call.status, call.turns, call.verdict, call.version) == ("connecting", (), None, 0)


@pytest.mark.parametrize(
    "text",
    [
        '{"call_id":"c","node_id":"n"}',  # no session id
        '{"session_id":"s","call_id":"c","node_id":"n","status":"paused"}',
        '{"session_id":"s","call_id":"c","node_id":"n","created_at":"yesterday"}',
        "[]",
        "not json",
    ],
)
def test_what_is_not_a_snapshot_is_refused_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        decode_call(text)


def test_the_previous_versions_call_dict_decodes() -> None:
    """``recovery_data.call`` as 806699e stored it (``CallData.to_dict()``: +00:00 times)."""
    record = json.loads((Path(__file__).parent / "adapters" / "v1_record.json").read_text())
    old = json.loads(record["data"])["recovery_data"]["call"]
    call = CallSnapshot.from_dict(old)
    assert call.status is CallStatus.ACTIVE and call.node_id == "rec-old"
    assert call.dialog["local_tag"] == record["to_tag"]
    assert call.flags == ({"kind": "metadata_unparsed", "detail": "example"},)
    assert call.created_at == datetime.fromisoformat(old["created_at"])
    assert call.media["ports"] == [31000, 31002]
    again = call.to_dict()  # the same fields back (times in Z form, equal instants)
    assert set(again) == set(old)
    assert datetime.fromisoformat(again["created_at"]) == datetime.fromisoformat(old["created_at"])


def test_call_data_and_the_snapshot_have_the_same_fields() -> None:
    assert [f.name for f in dataclasses.fields(CallData)] == list(CallSnapshot.__struct_fields__)
    assert CallData.from_snapshot(EXPECTED).snapshot() == EXPECTED
    assert CallData.from_dict(EXPECTED.to_dict()).snapshot() == EXPECTED


def test_a_snapshot_never_changes_when_the_live_call_does() -> None:
    data = CallData.from_snapshot(EXPECTED)
    snapshot = data.snapshot()
    before = encode_call(snapshot)
    data.status = CallStatus.ENDED
    data.flag("metadata_unparsed", detail="late")
    data.add_turn("bob", _t(9), 300)
    data.vendor_ids["X-Other"] = "1"
    data.version += 1
    assert encode_call(snapshot) == before
    with pytest.raises(AttributeError):
        snapshot.status = CallStatus.ENDED  # type: ignore[misc]
    assert msgspec.structs.replace(snapshot, version=4).version == 4 and snapshot.version == 3
