"""CallData, the live record of one recorded call; CallStore, the minimal store of its snapshots.

The core keeps one mutable CallData per call and freezes it into a ``CallSnapshot`` at every
change of state (INVITE accepted, ACK, each re-INVITE/UPDATE, pause/resume, end); the snapshot is
what a CallStore saves. With no store configured the driver keeps an in-memory one; in a fleet,
``adapters.SharedCallStore`` puts the same snapshots in the shared ``SessionStore``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from siprec_node.snapshot import CallSnapshot, decode_call, encode_call, utc_now
from siprec_node.status import OVER, TERMINAL, CallStatus

__all__ = [
    "CallData",
    "CallSnapshot",
    "CallStatus",
    "CallStore",
    "MemoryCallStore",
    "SnapshotRejected",
    "utc_now",
]


@dataclass
class CallData:
    """Everything a node needs to know about one recorded call, changed by the core while it
    lives; :meth:`snapshot` freezes it (the fields are those of ``CallSnapshot``).

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

    def snapshot(self) -> CallSnapshot:
        """The call as it stands, frozen: lists are copied into tuples, and the ``dialog``,
        ``recording`` and ``media`` dicts are taken as they are (the core builds them fresh for
        each snapshot and never changes them in place)."""
        values = {name: getattr(self, name) for name in _FIELDS}
        values["status"] = CallStatus(self.status)
        values["vendor_ids"] = dict(self.vendor_ids)
        values["turns"], values["flags"] = tuple(self.turns), tuple(self.flags)
        return CallSnapshot(**values)

    @classmethod
    def from_snapshot(cls, snapshot: CallSnapshot) -> CallData:
        """A live CallData to go on from a stored snapshot (lists of its own)."""
        values = {name: getattr(snapshot, name) for name in _FIELDS}
        values["vendor_ids"] = dict(snapshot.vendor_ids)
        values["turns"], values["flags"] = list(snapshot.turns), list(snapshot.flags)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (datetimes as ISO 8601 strings): the snapshot's stored form."""
        return self.snapshot().to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallData:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        return cls.from_snapshot(CallSnapshot.from_dict(data))


_FIELDS: tuple[str, ...] = CallSnapshot.__struct_fields__
"""The fields CallData and CallSnapshot share (all of them: tests/unit/test_snapshot.py)."""


class SnapshotRejected(Exception):
    """A store refused a snapshot for good (e.g. the session was taken over): do not retry."""


@runtime_checkable
class CallStore(Protocol):
    """The minimal store the driver writes call snapshots through."""

    async def save(self, call: CallSnapshot | CallData) -> None:
        """Insert or replace the snapshot of ``call.session_id`` (a CallData is frozen first).

        Raises :class:`SnapshotRejected` when the store will never accept it; any other error
        is taken as an outage and the write is retried.
        """

    async def load(self, session_id: str) -> CallData | None:
        """A live CallData made from the stored snapshot of ``session_id``, or None."""

    async def delete(self, session_id: str) -> None:
        """Forget ``session_id`` (no error when absent)."""

    async def list(self) -> list[CallData]:
        """Every stored snapshot that is not terminal (``finalising`` ones included)."""

    async def touch_many(self, touches: Mapping[str, datetime]) -> None:
        """Record activity (RTP) of calls, id → when, without new snapshots; ids no longer
        stored are skipped. One request for all of them where the store is remote."""


class MemoryCallStore:
    """The default CallStore: snapshots kept in this process as their JSON, decoded on load."""

    def __init__(self) -> None:
        # No lock: no method awaits between reading and writing, so none interleaves.
        self._calls: dict[str, bytes] = {}
        self._activity: dict[str, datetime] = {}

    async def save(self, call: CallSnapshot | CallData) -> None:
        """Store the snapshot, encoded."""
        snapshot = call.snapshot()
        self._calls[snapshot.session_id] = encode_call(snapshot)
        self._activity.pop(snapshot.session_id, None)

    def _decode(self, session_id: str, data: bytes) -> CallData:
        call = CallData.from_snapshot(decode_call(data))
        touched = self._activity.get(session_id)
        if touched is not None and touched > call.last_activity:
            call.last_activity = touched
        return call

    async def load(self, session_id: str) -> CallData | None:
        """A copy of the stored snapshot, or None."""
        data = self._calls.get(session_id)
        return self._decode(session_id, data) if data is not None else None

    async def delete(self, session_id: str) -> None:
        """Forget a snapshot."""
        self._calls.pop(session_id, None)
        self._activity.pop(session_id, None)

    async def list(self) -> list[CallData]:
        """Every snapshot not yet terminal (live, or finalising its recording)."""
        calls = [self._decode(sid, d) for sid, d in self._calls.items()]
        return [c for c in calls if not c.is_terminal]

    async def touch_many(self, touches: Mapping[str, datetime]) -> None:
        """Record activity on stored snapshots."""
        for session_id, at in touches.items():
            if session_id in self._calls:
                self._activity[session_id] = at

    def __len__(self) -> int:
        return len(self._calls)
