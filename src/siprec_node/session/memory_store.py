"""`MemorySessionStore`: the default store, one process, same semantics as Redis."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import InvalidTransition, OwnershipConflict, SessionNotFound, VersionConflict
from .state import SessionState, SessionStatus, as_utc, utcnow
from .store import (
    DEFAULT_NODE_TTL,
    DEFAULT_TTL,
    Clock,
    NodeInfo,
    SessionStore,
    decode_record,
    duration_ms,
    encode_for_save,
    from_ms,
    node_info,
    to_ms,
)

DEFAULT_MAX_FINISHED = 1000
"""Finished sessions (``ended``/``failed``) the memory store keeps by default."""


@dataclass(slots=True)
class _Record:
    data: bytes
    version: int
    node: str
    status: SessionStatus
    activity_ms: int
    expires_ms: int | None


class MemorySessionStore(SessionStore):
    """In-process store. Records are kept as JSON bytes (no aliasing with callers' objects) and
    expire `ttl` after their last save, touch or claim, like Redis keys.

    Methods never await between reading and writing, so each is atomic under asyncio.

    Unlike Redis, the records live in the node's own memory, so finished sessions are also
    bounded in number: beyond ``max_finished`` (None: no bound) the one finished longest ago
    is forgotten, and memory grows with the calls live, not with the calls done. A finished
    session whose transcription is pending is not counted (the transcriber writes into it).
    """

    def __init__(
        self,
        *,
        ttl: timedelta | None = DEFAULT_TTL,
        clock: Clock = utcnow,
        max_finished: int | None = DEFAULT_MAX_FINISHED,
    ) -> None:
        super().__init__(ttl=ttl, clock=clock)
        if max_finished is not None and max_finished < 0:
            raise ValueError("max_finished must not be negative")
        self.max_finished = max_finished
        self._records: dict[str, _Record] = {}
        self._finished: dict[str, None] = {}  # terminal sessions, the oldest finished first
        self._active: dict[str, int] = {}
        self._by_node: dict[str, dict[str, int]] = {}
        self._nodes: dict[str, int] = {}
        self._stopped: dict[str, int] = {}

    # -- internals ---------------------------------------------------------------------------

    def _expiry(self, now_ms: int) -> int | None:
        return None if self.ttl is None else now_ms + duration_ms(self.ttl)

    def _unindex(self, session_id: str, node: str) -> None:
        self._active.pop(session_id, None)
        members = self._by_node.get(node)
        if members is not None:
            members.pop(session_id, None)
            if not members:
                del self._by_node[node]

    def _get(self, session_id: str) -> _Record | None:
        """The live record, dropping it (and its index entries) if it has expired."""
        rec = self._records.get(session_id)
        if rec is None:
            return None
        if rec.expires_ms is not None and rec.expires_ms <= to_ms(self._now()):
            del self._records[session_id]
            self._unindex(session_id, rec.node)
            self._finished.pop(session_id, None)
            return None
        return rec

    def _finish(self, session_id: str) -> None:
        """Note a session as finished now; forget the oldest finished beyond the bound."""
        finished = self._finished
        finished.pop(session_id, None)
        finished[session_id] = None
        if self.max_finished is None:
            return
        while len(finished) > self.max_finished:
            oldest = next(iter(finished))
            del finished[oldest]
            rec = self._records.pop(oldest, None)
            if rec is not None:
                self._unindex(oldest, rec.node)

    def _decode(self, session_id: str, rec: _Record) -> SessionState:
        return decode_record(
            session_id,
            rec.data,
            version=rec.version,
            node_id=rec.node,
            activity_ms=rec.activity_ms,
        )

    def _states(self, ids: list[str]) -> list[SessionState]:
        out = []
        for session_id in ids:
            rec = self._get(session_id)
            if rec is not None:
                out.append(self._decode(session_id, rec))
        return out

    # -- sessions ----------------------------------------------------------------------------

    async def save(self, state: SessionState, *, expected_version: int | None = None) -> int:
        self._check_open()
        now = self._now()
        now_ms = to_ms(now)
        rec = self._get(state.id)
        stored_version = rec.version if rec else 0
        if expected_version is not None and expected_version != stored_version:
            raise VersionConflict(state.id, expected_version, stored_version)
        if rec is not None:
            if rec.node != state.node_id:
                raise OwnershipConflict(state.id, rec.node, state.node_id)
            if not rec.status.can_become(state.status):
                raise InvalidTransition(state.id, rec.status, state.status)
        activity_ms = max(to_ms(state.last_activity), now_ms, rec.activity_ms if rec else 0)
        activity = from_ms(activity_ms)
        data = encode_for_save(state, now=now, activity=activity)
        version = stored_version + 1
        self._records[state.id] = _Record(
            data=data,
            version=version,
            node=state.node_id,
            status=state.status,
            activity_ms=activity_ms,
            expires_ms=self._expiry(now_ms),
        )
        if state.status.is_terminal:
            self._unindex(state.id, state.node_id)
            if state.transcription is not None and state.transcription.status == "pending":
                # its transcript is still to be written into it: kept (until ``ttl``)
                self._finished.pop(state.id, None)
            else:
                self._finish(state.id)
        else:
            self._active[state.id] = activity_ms
            self._by_node.setdefault(state.node_id, {})[state.id] = activity_ms
        state.version = version
        state.updated_at = now
        state.last_activity = max(state.last_activity, activity)
        return version

    async def load(self, session_id: str) -> SessionState:
        self._check_open()
        rec = self._get(session_id)
        if rec is None:
            raise SessionNotFound(session_id)
        return self._decode(session_id, rec)

    async def delete(self, session_id: str) -> bool:
        self._check_open()
        rec = self._get(session_id)
        if rec is None:
            self._active.pop(session_id, None)
            return False
        del self._records[session_id]
        self._unindex(session_id, rec.node)
        self._finished.pop(session_id, None)
        return True

    async def list_active(self) -> list[SessionState]:
        self._check_open()
        return self._states(sorted(self._active, key=lambda i: (self._active[i], i)))

    async def list_all(self) -> list[SessionState]:
        self._check_open()
        return self._states(sorted(self._records))

    async def list_by_node(
        self, node_id: str, *, idle_before: datetime | None = None
    ) -> list[SessionState]:
        self._check_open()
        members = self._by_node.get(node_id, {})
        ids = sorted(members, key=lambda i: (members[i], i))
        if idle_before is None:
            return self._states(ids)
        cutoff = as_utc(idle_before, "idle_before")
        # A record's activity is the latest of its body's and of touches since (decode_record):
        # only records not active since the cutoff are decoded, not every live call's.
        cutoff_ms = to_ms(cutoff)
        quiet = [i for i in ids if (rec := self._records.get(i)) and rec.activity_ms <= cutoff_ms]
        return [s for s in self._states(quiet) if s.last_activity <= cutoff]

    async def touch(self, session_id: str, at: datetime | None = None) -> None:
        self._check_open()
        rec = self._get(session_id)
        if rec is None:
            raise SessionNotFound(session_id)
        now_ms = to_ms(self._now())
        at_ms = now_ms if at is None else to_ms(at)
        rec.activity_ms = max(rec.activity_ms, at_ms)
        rec.expires_ms = self._expiry(now_ms)
        if session_id in self._active:
            self._active[session_id] = rec.activity_ms
        # Like Redis, the per-node index keeps the score of the last save or claim.

    async def claim(self, session_id: str, from_node: str, to_node: str) -> bool:
        self._check_open()
        rec = self._get(session_id)
        if rec is None or rec.node != from_node or rec.status.is_terminal:
            return False
        self._unindex(session_id, from_node)
        rec.node = to_node
        rec.version += 1
        rec.expires_ms = self._expiry(to_ms(self._now()))
        self._active[session_id] = rec.activity_ms
        self._by_node.setdefault(to_node, {})[session_id] = rec.activity_ms
        return True

    # -- nodes -------------------------------------------------------------------------------

    async def update_heartbeat(self, node_id: str, at: datetime | None = None) -> None:
        self._check_open()
        self._nodes[node_id] = to_ms(self._now() if at is None else at)
        self._stopped.pop(node_id, None)

    async def mark_node_stopped(self, node_id: str, at: datetime | None = None) -> None:
        self._check_open()
        at_ms = to_ms(self._now() if at is None else at)
        self._nodes.setdefault(node_id, at_ms)
        self._stopped[node_id] = at_ms

    async def list_nodes(
        self, node_ttl: timedelta = DEFAULT_NODE_TTL, *, now: datetime | None = None
    ) -> list[NodeInfo]:
        self._check_open()
        now_ms = to_ms(self._now() if now is None else now)
        ttl_ms = duration_ms(node_ttl)
        return [
            node_info(node_id, beat, self._stopped.get(node_id), now_ms, ttl_ms)
            for node_id, beat in sorted(self._nodes.items())
        ]

    async def forget_node(self, node_id: str, *, dead_before: datetime) -> bool:
        self._check_open()
        beat = self._nodes.get(node_id)
        if beat is None or beat >= to_ms(dead_before):
            return False
        for session_id in list(self._by_node.get(node_id, {})):
            self._get(session_id)  # drops expired records and their index entries
        if self._by_node.get(node_id):
            return False
        del self._nodes[node_id]
        self._stopped.pop(node_id, None)
        return True

    # -- lifecycle ---------------------------------------------------------------------------

    async def ping(self) -> bool:
        self._check_open()
        return True

    async def close(self) -> None:
        self._closed = True
