"""The stored record of one recorded call: `SessionState`, its status lifecycle and metrics."""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from siprec_node.snapshot import CallSnapshot
from siprec_node.status import CallStatus as SessionStatus

from .errors import InvalidTransition

SCHEMA_VERSION = 1
"""Written as `"schema"` in every JSON record; readers accept any value and ignore unknown keys."""

RECOVERY_CALL = "call"
"""The key of `recovery_data` the call snapshot (`SessionState.call`) is written under."""
PROVIDER = "siprec"
DIRECTION = "recording"

_encoder = msgspec.json.Encoder(order="sorted")
"""Keys sorted at every level, as `json.dumps(sort_keys=True)` wrote them: equal states give
equal bytes (sorting costs ~8 µs of a ~60 µs save, bench/snapshot)."""

DEFAULT_MAX_HISTORY = 1000
"""Turns kept in `SessionState.history`; older turns are dropped, metrics still count them."""


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime, name: str = "datetime") -> datetime:
    """`value` converted to UTC; naive datetimes are refused (their zone is unknowable)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


_SAME_AS_CREATED = datetime.min.replace(tzinfo=UTC)
"""Default of `updated_at` and `last_activity`: replaced by `created_at`."""


def new_session_id() -> str:
    """A fresh, random session id (32 hex digits)."""
    return uuid.uuid4().hex


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{name}: not an ISO 8601 time: {value!r}") from exc
    else:
        raise ValueError(f"{name}: expected an ISO 8601 string, got {value!r}")
    if parsed.tzinfo is None:  # tolerate old writers: stored times are UTC by contract
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _int(value: Any, name: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return int(value)


def _str(value: Any, name: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    return value


def _int_map(value: Any, name: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected an object, got {value!r}")
    return {str(k): _int(v, f"{name}.{k}") for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class Turn:
    """One stretch of speech: who spoke, when, for how long, and whether they were cut off."""

    participant: str
    start: datetime
    duration_ms: int
    interrupted: bool = False
    text: str | None = None
    """What was said, once the recording was transcribed (``transcription/``); None before."""

    def __post_init__(self) -> None:
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError("turn text must be a string or None")
        if not isinstance(self.participant, str) or not self.participant:
            raise ValueError("turn participant must be a non-empty string")
        object.__setattr__(self, "start", as_utc(self.start, "turn start"))
        if isinstance(self.duration_ms, bool) or not isinstance(self.duration_ms, int):
            raise TypeError("turn duration_ms must be an int")
        if self.duration_ms < 0:
            raise ValueError(f"turn duration_ms must be >= 0, got {self.duration_ms}")

    @property
    def end(self) -> datetime:
        """When the turn stopped."""
        return self.start + timedelta(milliseconds=self.duration_ms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "participant": self.participant,
            "start": _format_time(self.start),
            "duration_ms": self.duration_ms,
            "interrupted": self.interrupted,
            "text": self.text,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        """Inverse of `to_dict`; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"turn: expected an object, got {data!r}")
        return cls(
            participant=_str(data.get("participant"), "turn.participant"),
            start=_parse_time(data.get("start"), "turn.start"),
            duration_ms=_int(data.get("duration_ms"), "turn.duration_ms"),
            interrupted=bool(data.get("interrupted", False)),
            text=None if data.get("text") is None else _str(data.get("text"), "turn.text"),
        )


TRANSCRIPTION_STATUSES = ("pending", "done", "failed")


@dataclass(frozen=True, slots=True)
class TranscriptionStatus:
    """Where a call's transcription is: ``pending`` (queued), ``done``, or ``failed`` (why)."""

    status: str
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in TRANSCRIPTION_STATUSES:
            raise ValueError(
                f"transcription.status: expected one of {TRANSCRIPTION_STATUSES},"
                f" got {self.status!r}"
            )

    def __str__(self) -> str:
        return self.status if self.error is None else f"{self.status} ({self.error})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"status": self.status, "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TranscriptionStatus:
        """Inverse of `to_dict`; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"transcription: expected an object, got {data!r}")
        error = data.get("error")
        return cls(
            _str(data.get("status"), "transcription.status"),
            None if error is None else _str(error, "transcription.error"),
        )


@dataclass(slots=True)
class ConversationMetrics:
    """Totals over every turn of the call (not only those still in `history`)."""

    turn_count: int = 0
    interruptions: int = 0
    speech_ms: dict[str, int] = field(default_factory=dict)
    turns_by: dict[str, int] = field(default_factory=dict)
    interruptions_by: dict[str, int] = field(default_factory=dict)
    """Per participant: how many of their turns were cut off by someone else."""

    def record(self, turn: Turn) -> None:
        """Account for one more turn."""
        who = turn.participant
        self.turn_count += 1
        self.turns_by[who] = self.turns_by.get(who, 0) + 1
        self.speech_ms[who] = self.speech_ms.get(who, 0) + turn.duration_ms
        if turn.interrupted:
            self.interruptions += 1
            self.interruptions_by[who] = self.interruptions_by.get(who, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "turn_count": self.turn_count,
            "interruptions": self.interruptions,
            "speech_ms": dict(self.speech_ms),
            "turns_by": dict(self.turns_by),
            "interruptions_by": dict(self.interruptions_by),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ConversationMetrics:
        """Inverse of `to_dict`; unknown keys are ignored, missing ones are zero."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"metrics: expected an object, got {data!r}")
        return cls(
            turn_count=_int(data.get("turn_count"), "metrics.turn_count"),
            interruptions=_int(data.get("interruptions"), "metrics.interruptions"),
            speech_ms=_int_map(data.get("speech_ms"), "metrics.speech_ms"),
            turns_by=_int_map(data.get("turns_by"), "metrics.turns_by"),
            interruptions_by=_int_map(data.get("interruptions_by"), "metrics.interruptions_by"),
        )


VERDICT_STATUSES = ("ok", "problems")


@dataclass(frozen=True, slots=True)
class RecordingVerdict:
    """The verdict on a finished recording: `ok`, or the named problems with their figures.

    Each problem is a JSON object with a `kind` (`no_rtp`, `silent`, `unexpected_payload`,
    `undecodable`, `short`, `gaps`, `metadata_unparsed`, `stalled`), the m-line indexes of the
    `streams` that have it, and the figures of its kind (`count`, `ms`, `packets`,
    `payload_types`, `frames`, `peak_dbfs`, `covered_ms`, `active_ms`, `percent`, `detail`);
    see `media/verdict.py`. The store keeps them as they are.
    """

    status: str = "ok"
    problems: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(
                f"verdict.status: expected one of {VERDICT_STATUSES}, got {self.status!r}"
            )
        if (self.status == "problems") != bool(self.problems):
            raise ValueError(f"verdict.status {self.status!r} disagrees with its problems")
        for problem in self.problems:
            if not isinstance(problem, Mapping) or not isinstance(problem.get("kind"), str):
                raise ValueError(f"verdict.problems: expected objects with a kind, got {problem!r}")

    @property
    def ok(self) -> bool:
        """True when the recording has no problem."""
        return self.status == "ok"

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of the problems, in order."""
        return tuple(str(p["kind"]) for p in self.problems)

    def problem(self, kind: str) -> dict[str, Any] | None:
        """The problem of that kind with its figures, or None."""
        return next((dict(p) for p in self.problems if p["kind"] == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: `{"status": ..., "problems": [...]}`."""
        return {"status": self.status, "problems": [dict(p) for p in self.problems]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordingVerdict:
        """Inverse of `to_dict`; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"verdict: expected an object, got {data!r}")
        problems = data.get("problems") or []
        if not isinstance(problems, list):
            raise ValueError("verdict.problems: expected a list")
        status = _str(data.get("status"), "verdict.status", "problems" if problems else "ok")
        return cls(status, tuple(dict(p) if isinstance(p, Mapping) else p for p in problems))


@dataclass(kw_only=True, slots=True)
class SessionState:
    """Everything the fleet stores about one recorded call.

    `version` is owned by the store: 0 for a state never saved, bumped by every save and claim,
    and used for compare-and-set (`store.save(state, expected_version=state.version)`).
    """

    id: str = field(default_factory=new_session_id)
    call_id: str = ""
    provider: str = ""
    direction: str = ""
    from_: str = ""
    to: str = ""
    status: SessionStatus = SessionStatus.CONNECTING
    node_id: str = ""
    end_reason: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = _SAME_AS_CREATED
    last_activity: datetime = _SAME_AS_CREATED
    history: list[Turn] = field(default_factory=list)
    metrics: ConversationMetrics = field(default_factory=ConversationMetrics)
    recovery_data: dict[str, Any] = field(default_factory=dict)
    """Free-form data of other writers; the recorder's call is `call`, not in here."""
    call: CallSnapshot | None = None
    """The snapshot of the recorded call this record is of, written as `recovery_data.call`
    (where the previous version kept a dict of the same fields); None in records written by
    something else than a recorder."""
    verdict: RecordingVerdict | None = None
    """The recording's verdict once it was finalised (None before, and in older records)."""
    transcription: TranscriptionStatus | None = None
    """The transcription of the recording: None when none was asked for."""
    version: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("session id must be a non-empty string")
        self.status = SessionStatus(self.status)
        self.created_at = as_utc(self.created_at, "created_at")
        if self.updated_at is _SAME_AS_CREATED:
            self.updated_at = self.created_at
        if self.last_activity is _SAME_AS_CREATED:
            self.last_activity = self.created_at
        self.updated_at = max(as_utc(self.updated_at, "updated_at"), self.created_at)
        self.last_activity = max(as_utc(self.last_activity, "last_activity"), self.created_at)
        if not isinstance(self.recovery_data, dict):
            raise TypeError("recovery_data must be a dict")
        if self.call is not None and not isinstance(self.call, CallSnapshot):
            raise TypeError("call must be a CallSnapshot")

    @classmethod
    def from_call(cls, call: CallSnapshot) -> SessionState:
        """The record of a call snapshot: identity, status, owner, times, verdict and
        transcription are the call's; `history` and `metrics` are computed from its turns."""
        state = cls(
            id=call.session_id,
            call_id=call.call_id,
            provider=PROVIDER if call.recording.get("is_siprec", True) else "sip",
            direction=DIRECTION,
            from_=call.from_uri,
            to=call.to_uri,
            status=call.status,
            node_id=call.node_id,
            end_reason=call.end_reason,
            created_at=call.created_at,
            updated_at=call.updated_at,
            last_activity=call.last_activity,
            call=call,
            verdict=RecordingVerdict.from_dict(call.verdict) if call.verdict is not None else None,
            transcription=(
                TranscriptionStatus.from_dict(call.transcription)
                if call.transcription is not None
                else None
            ),
        )
        if call.turns:  # what add_turn does for each, in one pass (the final snapshots)
            history, metrics, last = state.history, state.metrics, state.last_activity
            for data in call.turns:
                turn = Turn(
                    data["participant"],
                    datetime.fromisoformat(data["start"]),
                    int(data["duration_ms"]),
                    bool(data.get("interrupted", False)),
                    data.get("text"),
                )
                metrics.record(turn)
                history.append(turn)
                last = max(last, turn.end)
            del history[: max(len(history) - DEFAULT_MAX_HISTORY, 0)]
            state.last_activity = last
        return state

    def current_call(self) -> CallSnapshot | None:
        """`call` with what the record owns winning: the owner node, status, end reason, times,
        verdict and transcription (a takeover, the manager or the transcriber change those on
        the record without a new snapshot). None when the record has no call."""
        call = self.call
        if call is None:
            return None
        return msgspec.structs.replace(
            call,
            node_id=self.node_id,
            status=self.status,
            end_reason=self.end_reason,
            last_activity=max(call.last_activity, self.last_activity),
            updated_at=self.updated_at,
            verdict=self.verdict.to_dict() if self.verdict is not None else call.verdict,
            transcription=(
                self.transcription.to_dict()
                if self.transcription is not None
                else call.transcription
            ),
        )

    @property
    def is_terminal(self) -> bool:
        """True once the session is `ended` or `failed`."""
        return self.status.is_terminal

    def transition(self, status: SessionStatus | str, *, reason: str | None = None) -> None:
        """Move to `status`, enforcing the lifecycle; `reason` becomes `end_reason`."""
        new = SessionStatus(status)
        if not self.status.can_become(new):
            raise InvalidTransition(self.id, self.status, new)
        self.status = new
        if reason is not None:
            self.end_reason = reason

    def touch(self, at: datetime | None = None) -> None:
        """Record SIP or RTP activity at `at` (default now); never moves backwards."""
        at = utcnow() if at is None else as_utc(at, "at")
        self.last_activity = max(self.last_activity, at)

    def add_turn(
        self,
        participant: str,
        start: datetime,
        duration_ms: int,
        *,
        interrupted: bool = False,
        text: str | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
    ) -> Turn:
        """Append a turn to `history` (keeping the last `max_history`) and update `metrics`."""
        turn = Turn(participant, start, duration_ms, interrupted, text)
        self.metrics.record(turn)
        self.history.append(turn)
        if max_history >= 0 and len(self.history) > max_history:
            del self.history[: len(self.history) - max_history]
        self.touch(turn.end)
        return turn

    def _body(
        self,
        *,
        typed: bool,
        updated_at: datetime | None = None,
        last_activity: datetime | None = None,
    ) -> dict[str, Any]:
        """The record as a dict; `typed`: the call snapshot, turns and metrics stay objects
        that msgspec encodes in place (their times in RFC 3339 `Z` form), else JSON-safe dicts."""
        recovery = self.recovery_data
        if self.call is not None:
            call = self.call if typed else self.call.to_dict()
            recovery = {**recovery, RECOVERY_CALL: call}
        return {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "call_id": self.call_id,
            "provider": self.provider,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "status": self.status.value,
            "node_id": self.node_id,
            "end_reason": self.end_reason,
            "created_at": _format_time(self.created_at),
            "updated_at": _format_time(updated_at or self.updated_at),
            "last_activity": _format_time(last_activity or self.last_activity),
            "history": self.history if typed else [t.to_dict() for t in self.history],
            "metrics": self.metrics if typed else self.metrics.to_dict(),
            "recovery_data": recovery,
            "verdict": self.verdict.to_dict() if self.verdict is not None else None,
            "transcription": (
                self.transcription.to_dict() if self.transcription is not None else None
            ),
            "version": self.version,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (`from_` is written as `"from"`, `call` as `recovery_data.call`)."""
        return self._body(typed=False)

    def encode(
        self, *, updated_at: datetime | None = None, last_activity: datetime | None = None
    ) -> bytes:
        """The stored JSON body, compact, in one pass (the call snapshot encoded in place);
        `updated_at` and `last_activity` replace the state's own (what a save writes)."""
        if self.recovery_data:  # free-form: refuse NaN and infinities as json.dumps does
            try:
                json.dumps(self.recovery_data, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"session {self.id!r}: recovery_data is not JSON-safe: {exc}"
                ) from exc
        try:
            body = self._body(typed=True, updated_at=updated_at, last_activity=last_activity)
            return _encoder.encode(body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"session {self.id!r}: not JSON-safe: {exc}") from exc

    def to_json(self) -> str:
        """Compact JSON with sorted keys: equal states give equal strings."""
        return self.encode().decode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionState:
        """Inverse of `to_dict`; unknown keys are ignored, missing optional ones get defaults."""
        if not isinstance(data, Mapping):
            raise ValueError(f"session: expected an object, got {type(data).__name__}")
        created = _parse_time(data.get("created_at"), "created_at")
        history = data.get("history")
        history = [] if history is None else history
        if not isinstance(history, list):
            raise ValueError("history: expected a list")
        recovery = data.get("recovery_data")
        recovery = {} if recovery is None else recovery
        if not isinstance(recovery, dict):
            raise ValueError("recovery_data: expected an object")
        call = None
        if isinstance(recovery.get(RECOVERY_CALL), Mapping):  # this version's and the previous
            # One that is not a call snapshot stays in recovery_data as it is: the record still
            # loads, so cleanup and takeover still see it.
            with contextlib.suppress(ValueError):
                call = CallSnapshot.from_dict(recovery[RECOVERY_CALL])
                recovery = {k: v for k, v in recovery.items() if k != RECOVERY_CALL}
        end_reason = data.get("end_reason")
        verdict = data.get("verdict")
        transcription = data.get("transcription")
        try:
            status = SessionStatus(data.get("status", SessionStatus.CONNECTING))
        except ValueError as exc:
            raise ValueError(f"status: unknown value {data.get('status')!r}") from exc
        return cls(
            id=_str(data.get("id"), "id"),
            call_id=_str(data.get("call_id"), "call_id"),
            provider=_str(data.get("provider"), "provider"),
            direction=_str(data.get("direction"), "direction"),
            from_=_str(data.get("from"), "from"),
            to=_str(data.get("to"), "to"),
            status=status,
            node_id=_str(data.get("node_id"), "node_id"),
            end_reason=None if end_reason is None else _str(end_reason, "end_reason"),
            created_at=created,
            updated_at=_parse_time(data.get("updated_at") or created, "updated_at"),
            last_activity=_parse_time(data.get("last_activity") or created, "last_activity"),
            history=[Turn.from_dict(t) for t in history],
            metrics=ConversationMetrics.from_dict(data.get("metrics")),
            recovery_data=recovery,
            call=call,
            verdict=None if verdict is None else RecordingVerdict.from_dict(verdict),
            transcription=(
                None if transcription is None else TranscriptionStatus.from_dict(transcription)
            ),
            version=_int(data.get("version"), "version"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionState:
        """Parse `to_json` output; raises ValueError on anything that is not a session record."""
        try:
            data = msgspec.json.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        return cls.from_dict(data)

    def copy(self) -> SessionState:
        """A deep copy (no list or dict shared with this state)."""
        return SessionState.from_json(self.encode())
