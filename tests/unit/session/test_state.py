"""SessionState: lifecycle, turns and metrics, JSON form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_node.session import (
    ConversationMetrics,
    InvalidTransition,
    RecordingVerdict,
    SessionState,
    SessionStatus,
    Turn,
)

T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
S = SessionStatus


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (S.CONNECTING, S.ACTIVE, True),
        (S.CONNECTING, S.ENDED, True),
        (S.CONNECTING, S.FAILED, True),
        (S.ACTIVE, S.ENDED, True),
        (S.ACTIVE, S.FAILED, True),
        (S.ACTIVE, S.ACTIVE, True),
        (S.ENDED, S.ENDED, True),
        (S.ACTIVE, S.CONNECTING, False),
        (S.ENDED, S.ACTIVE, False),
        (S.ENDED, S.FAILED, False),
        (S.FAILED, S.ENDED, False),
        (S.FAILED, S.CONNECTING, False),
    ],
)
def test_transitions(old: SessionStatus, new: SessionStatus, allowed: bool) -> None:
    assert old.can_become(new) is allowed
    assert (old in new.predecessors()) is allowed
    state = SessionState(status=old)
    if allowed:
        state.transition(new, reason="why" if new.is_terminal else None)
        assert state.status is new
    else:
        with pytest.raises(InvalidTransition):
            state.transition(new)
        assert state.status is old


def test_terminal_statuses() -> None:
    assert [s.value for s in S if s.is_terminal] == ["ended", "failed"]
    assert S("active") is S.ACTIVE
    assert str(S.ACTIVE) == "active"


def test_defaults() -> None:
    state = SessionState(created_at=T0)
    assert len(state.id) == 32
    assert state.status is S.CONNECTING
    assert state.updated_at == state.last_activity == T0
    assert state.version == 0
    assert SessionState().id != SessionState().id


def test_times_must_be_aware_and_are_kept_in_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SessionState(created_at=datetime(2025, 1, 1))
    paris = timezone(timedelta(hours=1))
    state = SessionState(created_at=datetime(2025, 1, 1, 13, tzinfo=paris))
    assert state.created_at == datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert state.created_at.tzinfo is UTC


def test_add_turn_updates_metrics_and_activity() -> None:
    state = SessionState(created_at=T0)
    state.add_turn("caller", T0 + timedelta(seconds=1), 2000)
    state.add_turn("agent", T0 + timedelta(seconds=2), 1500, interrupted=True)
    state.add_turn("caller", T0 + timedelta(seconds=4), 500)
    m = state.metrics
    assert m.turn_count == 3
    assert m.interruptions == 1
    assert m.speech_ms == {"caller": 2500, "agent": 1500}
    assert m.turns_by == {"caller": 2, "agent": 1}
    assert m.interruptions_by == {"agent": 1}
    assert [t.participant for t in state.history] == ["caller", "agent", "caller"]
    assert state.last_activity == T0 + timedelta(seconds=4, milliseconds=500)


def test_history_is_bounded_but_metrics_count_everything() -> None:
    state = SessionState(created_at=T0)
    for i in range(10):
        state.add_turn("p", T0 + timedelta(seconds=i), 100, max_history=4)
    assert len(state.history) == 4
    assert state.history[0].start == T0 + timedelta(seconds=6)
    assert state.metrics.turn_count == 10
    assert state.metrics.speech_ms == {"p": 1000}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", T0, 1), ValueError),
        (("p", T0, -1), ValueError),
        (("p", T0, 1.5), TypeError),
        (("p", datetime(2025, 1, 1), 1), ValueError),
    ],
)
def test_bad_turns_are_refused(args: tuple, error: type[Exception]) -> None:
    state = SessionState()
    with pytest.raises(error):
        state.add_turn(*args)
    assert state.metrics.turn_count == 0


def test_touch_never_moves_back() -> None:
    state = SessionState(created_at=T0)
    state.touch(T0 + timedelta(minutes=2))
    state.touch(T0 + timedelta(minutes=1))
    assert state.last_activity == T0 + timedelta(minutes=2)


def full_state() -> SessionState:
    state = SessionState(
        id="s-1",
        call_id="abc@10.0.0.1",
        provider="acme-sbc",
        direction="inbound",
        from_="sip:a@x",
        to="sip:b@y",
        status=S.ACTIVE,
        node_id="rec-1",
        created_at=T0,
        recovery_data={"ports": [20000], "dialog": {"local_tag": "t"}},
        version=7,
    )
    state.add_turn("a", T0, 10)
    return state


def test_json_is_stable_compact_and_sorted() -> None:
    text = full_state().to_json()
    assert text == full_state().to_json()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["from"] == "sip:a@x"
    assert data["status"] == "active"
    assert data["schema"] == 1
    assert data["created_at"] == "2025-03-04T05:06:07.123456+00:00"
    assert ", " not in text


def test_json_round_trip() -> None:
    state = full_state()
    again = SessionState.from_json(state.to_json())
    assert again == state
    assert again.to_json() == state.to_json()


def test_from_json_ignores_unknown_fields_and_fills_defaults() -> None:
    data = json.loads(full_state().to_json())
    data["future_field"] = {"x": 1}
    data["metrics"]["future_metric"] = 3
    data["history"][0]["emotion"] = "calm"
    for key in ("provider", "direction", "updated_at", "last_activity", "version", "schema"):
        del data[key]
    state = SessionState.from_dict(data)
    assert state.provider == ""
    assert state.updated_at == state.created_at == T0
    assert state.version == 0
    assert state.metrics.turn_count == 1


def test_naive_stored_times_are_read_as_utc() -> None:
    data = json.loads(full_state().to_json())
    data["created_at"] = "2025-03-04T05:06:07"
    assert SessionState.from_dict(data).created_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{",
        '{"id": "x"}',
        '{"id": 3, "created_at": "2025-01-01T00:00:00Z"}',
        '{"id": "x", "created_at": "yesterday"}',
        '{"id": "x", "created_at": "2025-01-01T00:00:00Z", "status": "paused"}',
        '{"id": "x", "created_at": "2025-01-01T00:00:00Z", "history": {}}',
        '{"id": "x", "created_at": "2025-01-01T00:00:00Z", "metrics": {"turn_count": "many"}}',
        '{"id": "", "created_at": "2025-01-01T00:00:00Z"}',
    ],
)
def test_from_json_rejects_what_is_not_a_session(text: str) -> None:
    with pytest.raises(ValueError):
        SessionState.from_json(text)


def test_recovery_data_must_be_json_safe() -> None:
    state = SessionState(recovery_data={"x": float("nan")})
    with pytest.raises(ValueError, match="JSON-safe"):
        state.to_json()


def test_copy_shares_nothing() -> None:
    state = full_state()
    dup = state.copy()
    dup.recovery_data["ports"].append(1)
    dup.add_turn("b", T0, 5)
    assert state.recovery_data["ports"] == [20000]
    assert state.metrics.turn_count == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
aware = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
turns = st.builds(
    Turn,
    participant=st.text(min_size=1, max_size=10),
    start=aware,
    duration_ms=st.integers(0, 10**7),
    interrupted=st.booleans(),
)


@given(
    id_=st.text(min_size=1, max_size=40),
    text=st.text(max_size=30),
    status=st.sampled_from(S),
    created=aware,
    turns=st.lists(turns, max_size=8),
    recovery=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    version=st.integers(0, 2**40),
)
def test_any_state_survives_json(
    id_: str,
    text: str,
    status: SessionStatus,
    created: datetime,
    turns: list[Turn],
    recovery: dict,
    version: int,
) -> None:
    state = SessionState(
        id=id_,
        call_id=text,
        from_=text,
        status=status,
        created_at=created,
        recovery_data=recovery,
        version=version,
        end_reason=text or None,
    )
    for t in turns:
        state.add_turn(t.participant, t.start, t.duration_ms, interrupted=t.interrupted)
    again = SessionState.from_json(state.to_json())
    assert again.to_json() == state.to_json()
    assert again == state


@given(st.lists(turns, max_size=30))
def test_metrics_are_the_sum_of_the_turns(turn_list: list[Turn]) -> None:
    metrics = ConversationMetrics()
    for t in turn_list:
        metrics.record(t)
    assert metrics.turn_count == len(turn_list) == sum(metrics.turns_by.values())
    assert metrics.interruptions == sum(t.interrupted for t in turn_list)
    assert metrics.interruptions == sum(metrics.interruptions_by.values())
    assert sum(metrics.speech_ms.values()) == sum(t.duration_ms for t in turn_list)
    assert ConversationMetrics.from_dict(metrics.to_dict()) == metrics


def test_verdict_round_trips_and_older_records_load_without_one() -> None:
    state = SessionState(call_id="c")
    assert state.verdict is None and state.to_dict()["verdict"] is None
    state.verdict = RecordingVerdict(
        "problems", ({"kind": "silent", "streams": [0], "peak_dbfs": None},)
    )
    again = SessionState.from_json(state.to_json())
    assert again.verdict == state.verdict and again.verdict.kinds == ("silent",)
    assert again.copy().verdict == state.verdict
    old = state.to_dict()
    del old["verdict"]
    assert SessionState.from_dict(old).verdict is None
    ok = RecordingVerdict()
    assert ok.ok and ok.to_dict() == {"status": "ok", "problems": []}
    assert RecordingVerdict.from_dict({"problems": [{"kind": "gaps"}]}).status == "problems"


@pytest.mark.parametrize(
    "bad",
    [
        {"status": "fine", "problems": []},
        {"status": "ok", "problems": [{"kind": "gaps"}]},
        {"status": "problems", "problems": []},
        {"status": "problems", "problems": [{"count": 1}]},
        {"status": "problems", "problems": {"kind": "gaps"}},
        "ok",
    ],
)
def test_a_malformed_verdict_is_refused(bad: object) -> None:
    data = SessionState(call_id="c").to_dict()
    data["verdict"] = bad
    with pytest.raises(ValueError):
        SessionState.from_dict(data)
