"""``SharedCallStore``: the SIP handler's minimal CallStore on top of a rich SessionStore.

One backing store serves the handler (CallData snapshots at every change of state) and the
SessionManager (heartbeats, cleanup, takeover). A CallData becomes a ``SessionState``: identity,
status, owner node, times and the recording's verdict map to its fields; the whole snapshot
(dialog, recording, media) is kept in ``recovery_data["call"]``, which is what a restarted or
surviving node needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from siprec_node.session import (
    InvalidTransition,
    OwnershipConflict,
    RecordingVerdict,
    SessionNotFound,
    SessionState,
    SessionStatus,
    SessionStore,
    TranscriptionStatus,
)
from siprec_node.sip.call import CallData, SnapshotRejected

RECOVERY_KEY = "call"
PROVIDER = "siprec"
DIRECTION = "recording"


def to_session_state(call: CallData) -> SessionState:
    """The SessionState a CallData snapshot is stored as."""
    recording: dict[str, Any] = call.recording or {}
    state = SessionState(
        id=call.session_id,
        call_id=call.call_id,
        provider=PROVIDER if recording.get("is_siprec", True) else "sip",
        direction=DIRECTION,
        from_=call.from_uri,
        to=call.to_uri,
        status=SessionStatus(call.status),
        node_id=call.node_id,
        end_reason=call.end_reason,
        created_at=call.created_at,
        updated_at=call.updated_at,
        last_activity=call.last_activity,
        recovery_data={RECOVERY_KEY: call.to_dict()},
        verdict=RecordingVerdict.from_dict(call.verdict) if call.verdict is not None else None,
        transcription=(
            TranscriptionStatus.from_dict(call.transcription)
            if call.transcription is not None
            else None
        ),
    )
    for turn in call.turns:  # history and metrics are SessionState's to compute
        state.add_turn(
            turn["participant"],
            datetime.fromisoformat(turn["start"]),
            int(turn["duration_ms"]),
            interrupted=bool(turn.get("interrupted", False)),
            text=turn.get("text"),
        )
    return state


def to_call_data(state: SessionState) -> CallData:
    """The CallData kept in a SessionState; the store's owner, status and times win."""
    stored = state.recovery_data.get(RECOVERY_KEY)
    if isinstance(stored, dict):
        call = CallData.from_dict(stored)
    else:  # a session written by something else than a SIP handler
        call = CallData(session_id=state.id, call_id=state.call_id, node_id=state.node_id)
        call.from_uri, call.to_uri = state.from_, state.to
    call.node_id = state.node_id
    call.status = state.status.value
    call.end_reason = state.end_reason
    call.last_activity = max(call.last_activity, state.last_activity)
    call.updated_at = state.updated_at
    if state.verdict is not None:
        call.verdict = state.verdict.to_dict()
    if state.transcription is not None:
        call.transcription = state.transcription.to_dict()
    return call


class SharedCallStore:
    """Implements ``sip.CallStore`` over a ``session.SessionStore``."""

    def __init__(self, store: SessionStore, node_id: str | None = None) -> None:
        self.store = store
        self.node_id = node_id

    async def save(self, call: CallData) -> None:
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

    async def touch(self, session_id: str, at: datetime) -> None:
        """Record RTP activity (refreshes the session's TTL and idle time)."""
        await self.store.touch(session_id, at)

    async def list(self) -> list[CallData]:
        """Live snapshots: this node's when the adapter has a node id, else every node's."""
        if self.node_id is not None:
            states = await self.store.list_by_node(self.node_id)
        else:
            states = await self.store.list_active()
        return [to_call_data(s) for s in states]
