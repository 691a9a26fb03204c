"""`SessionStore`: the async API every session store implements, and what they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from .errors import CorruptRecord, SessionNotFound, StoreClosed
from .state import SessionState, as_utc, utcnow

DEFAULT_TTL = timedelta(hours=24)
DEFAULT_NODE_TTL = timedelta(seconds=15)

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime; injectable for tests."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch (how stores keep times in indexes)."""
    return (as_utc(value) - _EPOCH) // _MS


def from_ms(value: int | float) -> datetime:
    """Inverse of `to_ms`."""
    return _EPOCH + timedelta(milliseconds=int(value))


def duration_ms(value: timedelta) -> int:
    """A duration in whole milliseconds."""
    return value // _MS


def encode_for_save(state: SessionState, *, now: datetime, activity: datetime) -> bytes:
    """The JSON body a save writes: `state` as it will be once saved at `now`."""
    return state.encode(
        updated_at=max(now, state.created_at),
        last_activity=max(state.last_activity, activity, state.created_at),
    )


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node known to the store: its last heartbeat, and whether that is within `node_ttl`."""

    node_id: str
    last_heartbeat: datetime
    alive: bool
    stopped_at: datetime | None = None
    """When the node said it stopped cleanly (then never alive), if it did after its last
    heartbeat."""

    @property
    def status(self) -> str:
        """``alive``, ``stopped`` (left cleanly) or ``dead`` (heartbeat older than node_ttl)."""
        if self.stopped_at is not None:
            return "stopped"
        return "alive" if self.alive else "dead"


def node_info(
    node_id: str, beat_ms: int | float, stopped_ms: int | float | None, now_ms: int, ttl_ms: int
) -> NodeInfo:
    """A `NodeInfo` from the stored times (ms): a stop mark older than the last heartbeat is
    stale (the node came back)."""
    if stopped_ms is not None and stopped_ms >= beat_ms:
        return NodeInfo(node_id, from_ms(beat_ms), False, from_ms(stopped_ms))
    return NodeInfo(node_id, from_ms(beat_ms), now_ms - int(beat_ms) <= ttl_ms)


def decode_record(
    session_id: str, data: str | bytes, *, version: int, node_id: str, activity_ms: int
) -> SessionState:
    """Build a state from a stored JSON body and the store-owned fields kept beside it.

    The store's copies of `version`, `node_id` and the last activity are authoritative: a claim
    or a `touch` changes them without rewriting the JSON body.
    """
    try:
        state = SessionState.from_json(data)
    except (ValueError, TypeError) as exc:
        raise CorruptRecord(session_id, str(exc)) from exc
    state.version = version
    state.node_id = node_id
    state.last_activity = max(state.last_activity, from_ms(activity_ms))
    return state


class SessionStore(ABC):
    """Shared, crash-safe storage of `SessionState` records and node liveness.

    Semantics every implementation keeps (the conformance suite checks them):

    - `save` writes the record, bumps `version`, refreshes the TTL, and in the same atomic step
      keeps the active index (non-terminal sessions) and the owner node's index in step with it.
      A save counts as activity (snapshots are written on SIP events).
    - Ownership changes only through `claim`; the status only moves forward (`SessionStatus`).
    - Listing never returns a session whose record has expired, and prunes such ids.
    - Every call on a closed store raises `StoreClosed`; `close` itself is idempotent.
    """

    def __init__(self, *, ttl: timedelta | None = DEFAULT_TTL, clock: Clock = utcnow) -> None:
        if ttl is not None and ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = ttl
        self._clock = clock
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    def _now(self) -> datetime:
        return as_utc(self._clock(), "clock()")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"{type(self).__name__} is closed")

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def save(self, state: SessionState, *, expected_version: int | None = None) -> int:
        """Store `state`; return the new version, also written to `state.version`.

        With `expected_version`, save only if the stored version equals it (0: must not exist),
        else raise `VersionConflict`. Raises `OwnershipConflict` if the stored record belongs to
        another node, `InvalidTransition` if the status would move backwards. Sets
        `state.updated_at` and bumps `state.last_activity` to now.
        """

    @abstractmethod
    async def load(self, session_id: str) -> SessionState:
        """The stored state; `SessionNotFound` if missing or expired."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove the record and its index entries; False if there was nothing to delete."""

    @abstractmethod
    async def list_active(self) -> list[SessionState]:
        """All sessions not yet ended or failed, of every node."""

    @abstractmethod
    async def list_all(self) -> list[SessionState]:
        """Every stored session, terminal ones included (until their TTL expires)."""

    @abstractmethod
    async def list_by_node(
        self, node_id: str, *, idle_before: datetime | None = None
    ) -> list[SessionState]:
        """Active sessions owned by `node_id`; with `idle_before`, only those whose last
        activity is at or before that time."""

    @abstractmethod
    async def touch(self, session_id: str, at: datetime | None = None) -> None:
        """Record activity (e.g. RTP) without rewriting the record; refreshes the TTL.

        Raises `SessionNotFound` if the record is gone.
        """

    async def touch_many(self, touches: Mapping[str, datetime]) -> list[str]:
        """`touch` each session of `touches` (id → time of its activity); the ids whose record
        is gone are returned, not raised. A store with round trips does it in a few."""
        missing = []
        for session_id, at in touches.items():
            try:
                await self.touch(session_id, at)
            except SessionNotFound:
                missing.append(session_id)
        return missing

    @abstractmethod
    async def claim(self, session_id: str, from_node: str, to_node: str) -> bool:
        """Atomically move an active session from `from_node` to `to_node`.

        True only if the session exists, is not terminal and is still owned by `from_node`;
        of several concurrent claimers exactly one gets True.
        """

    @abstractmethod
    async def update_heartbeat(self, node_id: str, at: datetime | None = None) -> None:
        """Record that `node_id` is alive at `at` (default now). O(1), whatever the call count."""

    @abstractmethod
    async def mark_node_stopped(self, node_id: str, at: datetime | None = None) -> None:
        """Record that `node_id` stopped cleanly at `at` (default now): `list_nodes` reports it
        stopped, not alive, until its next heartbeat. O(1)."""

    @abstractmethod
    async def list_nodes(
        self, node_ttl: timedelta = DEFAULT_NODE_TTL, *, now: datetime | None = None
    ) -> list[NodeInfo]:
        """Known nodes, sorted by id; `alive` if the last heartbeat is within `node_ttl` and the
        node has not said it stopped since (`stopped_at`)."""

    @abstractmethod
    async def forget_node(self, node_id: str, *, dead_before: datetime) -> bool:
        """Drop a node whose last heartbeat is before `dead_before` and that owns no session.

        Returns True if it was removed.
        """

    @abstractmethod
    async def ping(self) -> bool:
        """True if the backing service answers (always True for memory)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Later calls raise `StoreClosed`; closing twice is harmless."""
