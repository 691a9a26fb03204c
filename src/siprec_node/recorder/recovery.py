"""Restart recovery, takeover finalisation and ownership checks: the driver's side of a fleet.

A restarted node takes its calls back from the store (``recover``); a node that took a dead
node's calls over finalises their recordings (``finalise_orphan``); a node that stalled long
enough to be presumed dead ends the calls the store no longer lists as its own
(``verify_ownership``). The call-control core does the call side of each (``restore``,
``adopt_finished``, ``lose``); this module reads the store and hands finalisation its work.
The driver pumps the core afterwards (the effects of the restored or lost calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import structlog

from siprec_node.media.finalise import FinalisedRecording
from siprec_node.recorder.finalisations import Finalisations
from siprec_node.sip.call import CallData, CallStatus, CallStore
from siprec_node.sip.call_control import CallControl
from siprec_node.sip.media_state import MediaState
from siprec_node.siprec.recording_session import RecordingSession

log = structlog.get_logger("siprec_node.recorder.recovery")

Finaliser = Callable[
    [CallData, MediaState | None, RecordingSession | None],
    Awaitable[FinalisedRecording | None],
]


async def recover(
    core: CallControl,
    store: CallStore,
    now: float,
    finalisations: Finalisations,
    recording_dir: str,
    finalising: Callable[[], Iterable[str]] = list,
) -> list[str]:
    """Restore this node's live calls from the store (restart with the same node id).

    Each call gets its dialog, recording state and RTP ports back, so in-dialog requests are
    answered from the restored dialog (never 481). Calls that never got their 200 are closed
    as failed; calls that ended ``finalising`` are finalised now, and so, soon, are the parts
    folders left without a final recording (not those of this node's calls, nor ``finalising``:
    the parts folders of the finalisations under way). Returns the session ids restored.
    """
    restored: list[str] = []
    for data in await store.list():
        if data.node_id == core.node_id and data.status == CallStatus.FINALISING:
            finalisations.resume(data)  # ended, recording not yet finalised
            continue
        if data.node_id != core.node_id or data.is_final or data.session_id in core.calls:
            continue
        try:
            call = core.restore(data, now)
        except Exception as exc:
            log.exception("call_not_recovered", session_id=data.session_id, call_id=data.call_id)
            core.not_restored(data, exc)
            continue
        if call is not None:
            restored.append(call.data.session_id)
    core.recovering = False
    log.info("calls_recovered", count=len(restored))
    finalisations.recover_parts_soon(  # parts folders left without a final recording
        recording_dir,
        core.node_id,
        store,
        lambda: [
            *(c.media_state.parts for c in core.calls.values() if c.media_state),
            *finalising(),
        ],
    )
    return restored


async def finalise_orphan(
    data: CallData, reason: str, finalise: Finaliser
) -> FinalisedRecording | None:
    """Finalise the recording of a dead node's call this node took over (status failed)."""
    media = (data.media or {}).get("state")
    if not media:
        return None
    if data.status != CallStatus.FINALISING:  # one that was finalising keeps its outcome
        data.status, data.end_reason = CallStatus.FAILED, reason
    session = None
    if data.recording.get("session"):
        session = RecordingSession.from_dict(data.recording["session"])
    return await finalise(data, MediaState.from_dict(media), session)


async def verify_ownership(
    core: CallControl,
    store: CallStore,
    pending: Callable[[], set[str]],
    clock: Callable[[], float],
) -> list[str]:
    """After a stall: end the live calls the store no longer lists as this node's (``pending``:
    the sessions whose snapshot is not written yet, which the store cannot know)."""
    owned = {c.session_id for c in await store.list() if c.node_id == core.node_id}
    waiting = pending()
    lost = [
        sid
        for sid, call in list(core.calls.items())
        if sid not in owned and call.data.version > 0 and call.answered and sid not in waiting
    ]
    for session_id in lost:
        core.lose(session_id, "no longer this node's in the store", clock())
    return lost
