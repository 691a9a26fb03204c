"""``SharedCallStore``: the driver's minimal CallStore on top of a rich SessionStore.

One backing store serves the driver (a ``CallSnapshot`` at every change of state) and the
SessionManager (heartbeats, cleanup, takeover). The snapshot is carried whole by the
``SessionState`` (``SessionState.from_call``, stored as ``recovery_data.call``); on load, the
record's owner, status, times, verdict and transcription win (``SessionState.current_call``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from siprec_node.session import (
    InvalidTransition,
    OwnershipConflict,
    SessionNotFound,
    SessionState,
    SessionStore,
)
from siprec_node.sip.call import CallData, CallSnapshot, SnapshotRejected


def to_session_state(call: CallSnapshot | CallData) -> SessionState:
    """The SessionState a call snapshot is stored as."""
    return SessionState.from_call(call.snapshot())


def to_call_data(state: SessionState) -> CallData:
    """A live CallData from a SessionState; the store's owner, status and times win."""
    call = state.current_call()
    if call is None:  # a session written by something else than a recorder
        return CallData(
            session_id=state.id,
            call_id=state.call_id,
            node_id=state.node_id,
            status=state.status,
            end_reason=state.end_reason,
            from_uri=state.from_,
            to_uri=state.to,
            updated_at=state.updated_at,
            verdict=state.verdict.to_dict() if state.verdict is not None else None,
            transcription=(
                state.transcription.to_dict() if state.transcription is not None else None
            ),
        )
    return CallData.from_snapshot(call)


class SharedCallStore:
    """Implements ``sip.call.CallStore`` over a ``session.SessionStore``."""

    def __init__(self, store: SessionStore, node_id: str | None = None) -> None:
        self.store = store
        self.node_id = node_id

    async def save(self, call: CallSnapshot | CallData) -> None:
        """Write the snapshot; a session taken over by another node rejects it for good."""
        try:
            await self.store.save(to_session_state(call))
        except OwnershipConflict as exc:
            raise SnapshotRejected(
                f"session {call.session_id} now belongs to node {exc.owner}"
            ) from exc
        except InvalidTransition as exc:
            raise SnapshotRejected(f"session {call.session_id} is already {exc.current}") from exc

    async def load(self, session_id: str) -> CallData | None:
        """The snapshot of ``session_id``, or None."""
        try:
            return to_call_data(await self.store.load(session_id))
        except SessionNotFound:
            return None

    async def delete(self, session_id: str) -> None:
        """Forget a session."""
        await self.store.delete(session_id)

    async def touch_many(self, touches: Mapping[str, datetime]) -> None:
        """Record RTP activity (refreshes the sessions' TTL and idle time)."""
        await self.store.touch_many(touches)

    async def list(self) -> list[CallData]:
        """Live snapshots: this node's when the adapter has a node id, else every node's."""
        if self.node_id is not None:
            states = await self.store.list_by_node(self.node_id)
        else:
            states = await self.store.list_active()
        return [to_call_data(s) for s in states]
