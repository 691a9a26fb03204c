"""What the call-control core asks its driver to do, as small frozen dataclasses.

The core (``sip.call_control``) never does I/O: when a call needs its media opened, its files
finalised or its snapshot stored, it queues one of these and carries on. The driver takes them
with ``CallControl.next_effect()``, runs them against the media engine, the ``CallStore`` and
finalisation, and tells the core how the ones that matter turned out (``media_opened``,
``media_failed``, ``media_closed``, ``finalised``), as ``transaction.py`` hands its events up.

``MediaState`` objects travel by reference: they are the media bookkeeping of one call, shared
by design between the core (which decides what should be recorded) and the driver's
``CallMedia`` (which records what it is told and notes what it opened).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, Union

from siprec_node.sip.call import CallData, CallSnapshot
from siprec_node.sip.media_state import MediaState
from siprec_node.siprec.recording_session import RecordingSession
from siprec_node.siprec.sdp_answer import NegotiatedStream


@dataclass(frozen=True)
class OpenMedia:
    """Open the streams of a new call before it is answered; answer with ``media_opened`` or
    ``media_failed`` (the 200 or the 503 waits for it)."""

    session_id: str
    call_id: str
    state: MediaState
    streams: tuple[NegotiatedStream, ...]
    peer: str


@dataclass(frozen=True)
class UpdateMedia:
    """Bring the engine in line with the call's streams (re-INVITE, ACK answer, pause);
    failures are the driver's to log, nothing waits for them."""

    session_id: str
    call_id: str
    state: MediaState
    streams: tuple[NegotiatedStream, ...]
    peer: str


@dataclass(frozen=True)
class ReopenMedia:
    """Record a call's streams again into the same files (restart recovery, worker restart)."""

    session_id: str
    call_id: str
    state: MediaState
    streams: tuple[NegotiatedStream, ...]
    peer: str


@dataclass(frozen=True)
class CloseMedia:
    """Close the streams of an ended call; answer with ``media_closed``. ``data`` is the core's
    CallData of the call (no longer live): what the close reports (write errors) is flagged
    into it for the verdict."""

    session_id: str
    call_id: str
    state: MediaState
    data: CallData


@dataclass(frozen=True)
class DiscardMedia:
    """Remove the parts of a call that never got answered (nothing to finalise)."""

    session_id: str
    call_id: str
    state: MediaState


@dataclass(frozen=True)
class Finalise:
    """Write the final recording of an ended call from its parts; answer with ``finalised``.

    ``data`` is the core's own CallData of the call (no longer live): finalisation writes the
    turns and the verdict into it, and the snapshot the core asks for afterwards carries them.
    """

    session_id: str
    data: CallData
    state: MediaState
    session: RecordingSession | None


@dataclass(frozen=True)
class SaveSnapshot:
    """Store this frozen snapshot of a call (the newest of a session wins)."""

    data: CallSnapshot


@dataclass(frozen=True)
class CallEnded:
    """A call left the registry (``status``: ended or failed), its media being closed."""

    session_id: str
    call_id: str
    status: str
    reason: str


MediaEffect = TypeVar("MediaEffect", OpenMedia, UpdateMedia, ReopenMedia)
"""The effects that record a call's streams as they stand (built alike)."""

Effect = Union[  # noqa: UP007 (a runtime alias, like transaction.Event)
    OpenMedia,
    UpdateMedia,
    ReopenMedia,
    CloseMedia,
    DiscardMedia,
    Finalise,
    SaveSnapshot,
    CallEnded,
]
