"""CallData, the snapshot of one recorded call, and CallStore, the minimal store the handler uses.

The handler writes a CallData snapshot at every change of state (INVITE accepted, ACK, each
re-INVITE/UPDATE, pause/resume, end). With no store configured it keeps an in-memory one; in a
fleet, ``adapters.SharedCallStore`` puts the same snapshots in the shared ``SessionStore``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from siprec_node.status import OVER, TERMINAL, CallStatus

__all__ = ["CallData", "CallStatus", "CallStore", "MemoryCallStore", "SnapshotRejected", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class CallData:
    """Everything a node needs to know about one recorded call, JSON-safe via ``to_dict``.

    ``recording`` is ``RecordingSession.to_dict()`` (participants, streams, labels, metadata),
    ``dialog`` is ``Dialog.to_dict()`` (Call-ID, tags, URIs, CSeqs, contact, route set, transport
    and peer), ``media`` holds per-stream ports, codecs, SSRCs, file paths and offsets.
    """

    session_id: str
    call_id: str
    node_id: str
    status: str = CallStatus.CONNECTING
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    from_uri: str = ""
    to_uri: str = ""
    from_display: str | None = None
    to_display: str | None = None
    vendor_ids: dict[str, str] = field(default_factory=dict)
    dialog: dict[str, Any] = field(default_factory=dict)
    recording: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    last_activity: datetime = field(default_factory=utc_now)
    recoveries: int = 0
    """How many times a restarted node picked this call back up."""
    turns: list[dict[str, Any]] = field(default_factory=list)
    """Conversation turns found in the audio at finalisation (participant, start, duration_ms,
    interrupted); the shared store turns them into ``SessionState.history`` and ``metrics``."""
    flags: list[dict[str, Any]] = field(default_factory=list)
    """Call-level problems raised while the call ran (``{"kind": "metadata_unparsed",
    "detail": ...}``, ``stalled``): finalisation adds them to the recording's verdict."""
    verdict: dict[str, Any] | None = None
    """The recording's verdict once finalised (``media/verdict.py``): ``{"status": "ok" |
    "problems", "problems": [{"kind": ..., figures...}]}``."""
    transcription: dict[str, Any] | None = None
    """``{"status": "pending" | "done" | "failed", "error": ...}`` once a transcription of the
    recording was queued (``transcription/``); None when none was asked for."""
    outcome: str | None = None
    """While ``finalising``: the status (``ended`` or ``failed``) the call takes once its
    recording is finalised."""
    version: int = 0

    def flag(self, kind: str, **figures: Any) -> None:
        """Raise a call-level problem for the verdict (once per kind: the latest figures win)."""
        self.flags = [f for f in self.flags if f.get("kind") != kind]
        self.flags.append({"kind": kind, **figures})

    def add_turn(
        self, participant: str, start: datetime, duration_ms: int, *, interrupted: bool = False
    ) -> None:
        """Record one turn (the ``TurnSink`` shape finalisation writes into)."""
        self.turns.append(
            {
                "participant": participant,
                "start": start.isoformat(),
                "duration_ms": int(duration_ms),
                "interrupted": bool(interrupted),
            }
        )

    @property
    def is_final(self) -> bool:
        """True once the call is over: ended or failed, or finalising its recording."""
        return self.status in OVER

    @property
    def is_terminal(self) -> bool:
        """True once the record is finished: ended or failed (recording finalised)."""
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (datetimes as ISO 8601 strings)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallData:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("created_at", "updated_at", "started_at", "ended_at", "last_activity"):
            value = kwargs.get(key)
            if isinstance(value, str):
                kwargs[key] = datetime.fromisoformat(value)
        return cls(**kwargs)


class SnapshotRejected(Exception):
    """A store refused a snapshot for good (e.g. the session was taken over): do not retry."""


@runtime_checkable
class CallStore(Protocol):
    """The minimal store the SIP handler writes CallData snapshots through."""

    async def save(self, call: CallData) -> None:
        """Insert or replace the snapshot of ``call.session_id``.

        Raises :class:`SnapshotRejected` when the store will never accept it; any other error
        is taken as an outage and the write is retried.
        """

    async def load(self, session_id: str) -> CallData | None:
        """The snapshot of ``session_id``, or None."""

    async def delete(self, session_id: str) -> None:
        """Forget ``session_id`` (no error when absent)."""

    async def list(self) -> list[CallData]:
        """Every stored snapshot that is not terminal (``finalising`` ones included)."""

    async def touch(self, session_id: str, at: datetime) -> None:
        """Record activity (RTP) without a new snapshot."""


class MemoryCallStore:
    """The default CallStore: snapshots kept in this process, copied in and out."""

    def __init__(self) -> None:
        # No lock: no method awaits between reading and writing, so none interleaves.
        self._calls: dict[str, dict[str, Any]] = {}

    async def save(self, call: CallData) -> None:
        """Store a copy of the snapshot."""
        self._calls[call.session_id] = call.to_dict()

    async def load(self, session_id: str) -> CallData | None:
        """A copy of the stored snapshot, or None."""
        data = self._calls.get(session_id)
        return CallData.from_dict(data) if data is not None else None

    async def delete(self, session_id: str) -> None:
        """Forget a snapshot."""
        self._calls.pop(session_id, None)

    async def list(self) -> list[CallData]:
        """Every snapshot not yet terminal (live, or finalising its recording)."""
        calls = [CallData.from_dict(d) for d in self._calls.values()]
        return [c for c in calls if not c.is_terminal]

    async def touch(self, session_id: str, at: datetime) -> None:
        """Record activity on a stored snapshot."""
        data = self._calls.get(session_id)
        if data is not None:
            data["last_activity"] = at.isoformat()

    def __len__(self) -> int:
        return len(self._calls)
