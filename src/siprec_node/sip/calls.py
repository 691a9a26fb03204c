"""A live call as the call-control core holds it, its lifecycle table, and what the core needs.

The lifecycle is a table, like ``dialog.py``'s::

    offered ──► opening media ──► answered ──► confirmed ──► ended
       │              │              │             │
       └──────────────┴──────────────┴─────────────┴──────► failed
                                     └───────────────────► ended (BYE before the ACK, stop)

``offered``: the INVITE passed admission, its ports are reserved and its answer SDP built;
``opening media``: the driver is opening the streams (a CANCEL now gets 487); ``answered``: the
200 went out; ``confirmed``: the ACK came. ``ended`` and ``failed`` are final and match the
stored ``CallStatus`` of the same names.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from siprec_node import __version__
from siprec_node.sip.call import CallData, CallStatus
from siprec_node.sip.dialog import Dialog
from siprec_node.sip.media_state import MediaState
from siprec_node.sip.message import DEFAULT_MAX_HEADERS, DEFAULT_MAX_SIZE
from siprec_node.sip.recording import CallRecording
from siprec_node.sip.transaction import TimerConfig, TransactionKey
from siprec_node.siprec.codecs import ALL_CODECS
from siprec_node.siprec.metadata_parser import DEFAULT_MAX_ELEMENTS

USER_AGENT = f"siprec-node/{__version__}"


class CallPhase(StrEnum):
    """Where a call is in its lifecycle."""

    OFFERED = "offered"
    OPENING_MEDIA = "opening media"
    ANSWERED = "answered"
    CONFIRMED = "confirmed"
    ENDED = "ended"
    FAILED = "failed"


TRANSITIONS: dict[CallPhase, frozenset[CallPhase]] = {
    CallPhase.OFFERED: frozenset({CallPhase.OPENING_MEDIA, CallPhase.FAILED}),
    CallPhase.OPENING_MEDIA: frozenset({CallPhase.ANSWERED, CallPhase.FAILED}),
    CallPhase.ANSWERED: frozenset({CallPhase.CONFIRMED, CallPhase.ENDED, CallPhase.FAILED}),
    CallPhase.CONFIRMED: frozenset({CallPhase.ENDED, CallPhase.FAILED}),
    CallPhase.ENDED: frozenset(),
    CallPhase.FAILED: frozenset(),
}
"""Every move a call may make; anything else is a bug of the core (``IllegalTransition``)."""

FINAL_PHASES = frozenset({CallPhase.ENDED, CallPhase.FAILED})
PHASE_OF_STATUS = {CallStatus.ENDED: CallPhase.ENDED, CallStatus.FAILED: CallPhase.FAILED}


class IllegalTransition(RuntimeError):
    """A call was asked to move where the lifecycle table does not allow."""


class PortPool(Protocol):
    """The RTP ports of the node, as the core sees them: numbers reserved, released, reclaimed.

    The driver's implementation binds the sockets (``media.rtp_ports.RtpPorts``); the core only
    needs the numbers, synchronously, while it builds an SDP answer.
    """

    def reserve(self, now: float) -> int:
        """A free port, now the caller's (raises ``PortsExhausted`` when none is free)."""
        ...

    def release(self, ports: list[int], now: float) -> None:
        """Give ports back (they cool down before reuse)."""
        ...

    def reclaim(self, port: int) -> bool:
        """Take back a port a restored call held; False if it cannot be had."""
        ...


@dataclass(frozen=True)
class CallControlConfig:
    """The settings the call-control core reads (the driver's ``HandlerConfig`` makes one)."""

    node_id: str
    rtp_timeout: float = 60.0
    rtp_timeout_action: str = "probe"
    recording_dir: str = "recordings"
    advertise_host: str | None = None
    media_advertise_host: str | None = None
    max_sessions: int = 2000
    max_streams_per_call: int = 8
    allow_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    codecs: tuple[str, ...] = ALL_CODECS
    timers: TimerConfig = field(default_factory=TimerConfig)
    retry_after: int = 30
    invite_rate_per_source: float = 50.0
    invite_burst_per_source: int = 100
    max_answer_delay: float = 1.0
    """Seconds the oldest call waiting for its media may have waited before new INVITEs get
    503 ``Overloaded``; 0 disables."""
    max_message_size: int = DEFAULT_MAX_SIZE
    max_headers: int = DEFAULT_MAX_HEADERS
    max_metadata_elements: int = DEFAULT_MAX_ELEMENTS
    user_agent: str = USER_AGENT


@dataclass
class Call:
    """A live call: its dialog, recording state, snapshot and the transaction answering it."""

    data: CallData
    dialog: Dialog
    recording: CallRecording
    invite_key: TransactionKey
    log: Any
    phase: CallPhase = CallPhase.OFFERED
    ports: list[int] = field(default_factory=list)
    session_expires: int | None = None
    refresher: str | None = None
    refresh_at: float | None = None
    """When the core sends its next session refresh (we are the refresher), on its clock."""
    media_state: MediaState | None = None
    remote_allow: frozenset[str] = frozenset()
    """Methods the SRC said it allows (its INVITE's Allow header); empty when it did not say."""
    answered: bool = False
    """The 200 went out (stays True once the call ended: its recording is finalised)."""
    confirmed: bool = False
    """The ACK came (stays True once the call ended)."""
    started_monotonic: float = field(default_factory=time.monotonic)
    tolerated: set[str] = field(default_factory=set)
    """Kinds of sloppy SIP already logged for this call (each is logged once per call)."""

    def advance(self, phase: CallPhase) -> None:
        """Move to ``phase`` as the lifecycle table allows."""
        if phase not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"call {self.data.session_id}: {self.phase} -> {phase}")
        self.phase = phase
        if phase is CallPhase.ANSWERED:
            self.answered = True
        elif phase is CallPhase.CONFIRMED:
            self.confirmed = True

    @property
    def is_final(self) -> bool:
        """True once the call has ended or failed."""
        return self.phase in FINAL_PHASES

    def tolerate(self, kind: str, **details: Any) -> None:
        """Log, once per call, a fault of the SRC's that the node accepted (INTEROP)."""
        if kind not in self.tolerated:
            self.tolerated.add(kind)
            self.log.warning("sip_tolerated", fault=kind, **details)
