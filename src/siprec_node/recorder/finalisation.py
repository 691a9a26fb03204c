"""Finalisation of a call's recording, run by the driver in its finalisation pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from siprec_node.media.finalise import CallInfo, FinalisedRecording, participants_from_session
from siprec_node.recorder.finalisations import Finalisations
from siprec_node.recorder.finalise_pool import FinaliseJob, FinalisePool, PoolStopped, QueueFull
from siprec_node.sip.call import CallData
from siprec_node.sip.media_state import MediaState
from siprec_node.siprec.recording_session import RecordingSession

log = structlog.get_logger("siprec_node.recorder.finalisation")


async def finalise_recording(
    data: CallData,
    state: MediaState | None,
    session: RecordingSession | None,
    *,
    fmt: str,
    channels: str,
    pool: FinalisePool,
    finalisations: Finalisations | None = None,
) -> FinalisedRecording | None:
    """Write the final recording of a call from its parts (in a process of ``pool``).

    Used for calls that end here and for calls of a dead node this node took over (their
    parts are where the shared recording directory has them). Conversation turns and the
    verdict go into ``data`` for the session store, the files into ``state``. A call held
    ``finalising`` takes its outcome once it succeeded; ``finalisations`` hears how it went
    (a failure is retried there, a full queue waits there for room). None when nothing was
    finalised by this call, including when it joined the same call's job already in the pool
    (whose own caller reports it; ``data`` and ``state`` get the result all the same).
    """
    if state is None:
        return None
    if not Path(state.parts).is_dir():
        log.warning("recording_parts_unreachable", session_id=data.session_id, parts=state.parts)
        if finalisations is not None:
            finalisations.gone(data)
        return None
    info = CallInfo(
        session_id=data.session_id,
        call_id=data.call_id,
        node_id=data.node_id,
        status=data.outcome or data.status,
        end_reason=data.end_reason,
        started_at=data.started_at or data.created_at,
        ended_at=data.ended_at,
        flags=tuple(data.flags),
    )
    job = FinaliseJob(
        parts=state.parts,
        output_dir=state.directory,
        stem=state.stem,
        call=info,
        fmt=fmt,
        channels=channels,
        participants=tuple(participants_from_session(session)) if session is not None else (),
        remove_parts=finalisations is not None and not finalisations.keep_parts,
    )
    try:
        submitted = pool.submit(data.session_id, job)
        # shielded: a caller cancelled (a stop) must not cancel a job another caller joined
        done = await asyncio.shield(submitted.future)
    except QueueFull:
        if finalisations is not None:
            finalisations.deferred(data, state, session)
        else:
            log.warning("recording_finalise_deferred", session_id=data.session_id, queue="full")
        return None
    except PoolStopped as exc:  # stays finalising in the store: the next start finishes it
        log.warning("recording_finalise_postponed", session_id=data.session_id, error=str(exc))
        return None
    except Exception as exc:  # logged, counted, tried again later (recorder/finalisations.py)
        if finalisations is None:
            log.exception("recording_finalise_failed", session_id=data.session_id, error=repr(exc))
        else:
            finalisations.failed(data, state, session, exc)
        return None
    result = done.recording
    if finalisations is not None:
        finalisations.done(data, state, parts_removed=job.remove_parts)
    data.turns.clear()
    result.record_turns(data)
    state.files = [str(path) for path in result.files]
    state.sidecar = str(result.sidecar)
    verdict = result.verdict.call
    data.verdict = verdict.to_dict()
    if submitted.joined:
        return None
    log.info(
        "recording_finalised",
        call_id=data.call_id,
        session_id=data.session_id,
        files=state.files,
        sidecar=state.sidecar,
        duration_s=result.duration_s,
        turns=len(data.turns),
        verdict=verdict.status,
        worker_pid=done.pid,
    )
    if not verdict.ok:
        log.warning(
            "recording_problems",
            call_id=data.call_id,
            session_id=data.session_id,
            problems=list(verdict.kinds),
            verdict=data.verdict["problems"],
            sidecar=state.sidecar,
        )
    return result
