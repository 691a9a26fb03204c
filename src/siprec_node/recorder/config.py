"""What the recorder (the call-control core and its driver) needs from the node's settings."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siprec_node.media.finalise import FinalisedRecording
from siprec_node.sip.call import CallData, CallStore
from siprec_node.sip.calls import USER_AGENT, CallControlConfig
from siprec_node.sip.message import DEFAULT_MAX_HEADERS, DEFAULT_MAX_SIZE
from siprec_node.sip.transaction import TimerConfig
from siprec_node.siprec.codecs import ALL_CODECS
from siprec_node.siprec.metadata_parser import DEFAULT_MAX_ELEMENTS


@dataclass(frozen=True)
class HandlerConfig:
    """What the recorder needs from the node's settings (see ``config.Settings``)."""

    node_id: str = field(default_factory=socket.gethostname)
    session_node_id: str | None = None
    """SPEC's name for ``node_id``; wins when set."""
    call_store: CallStore | None = None
    """Where CallData snapshots go; an in-memory store when None."""
    session_store: Any = None
    """A ``session.SessionStore``: snapshots go there through ``adapters.SharedCallStore``
    (SPEC's Python API) when no ``call_store`` is given."""
    activity_interval: float = 5.0
    """How often RTP activity of live calls is reported to the store (seconds)."""
    rtp_timeout: float = 60.0
    """``media.rtp_timeout`` (seconds): silence of every non-paused stream of a call this long
    triggers ``rtp_timeout_action``."""
    rtp_timeout_action: str = "probe"
    """``media.rtp_timeout_action``: ``probe``, ``end`` or ``none`` (see ``sip.rtp_timeout``)."""
    recording_dir: str = "recordings"
    """Root of the recordings (``recording.directory``)."""
    media_workers: int = 0
    """Media worker processes; 0 records on the SIP process's own event loop."""
    media_receive_path: str = "auto"
    """``media.receive_path``: ``auto``, ``c`` or ``python`` (see ``media.fastpath``)."""
    media_receive_interval: float = 0.0
    """``media.receive_interval`` (seconds): the C receive path's pause after each read."""
    recording_format: str = "wav"
    recording_channels: str = "stereo"
    keep_parts: bool = False
    """``recording.keep_parts``: leave the parts folder beside a finalised recording."""
    min_free: int = 0
    """``recording.min_free`` (bytes): below it new INVITEs get 503; 0: no minimum."""
    finalise_workers: int = 0
    """``recording.finalise_workers``: finalisation processes; 0 finalises in threads of the
    SIP process (embedding, tests)."""
    finalise_queue: int = 1000
    """``recording.finalise_queue``: finalisations waiting for a process, at most; beyond, a
    call waits ``finalising`` until there is room."""
    finalise_retry: tuple[float, float] = (2.0, 60.0)
    """First and longest wait (seconds) before a failed finalisation is tried again."""
    log_level: str = "info"
    log_format: str = "json"
    advertise_host: str | None = None
    """Host written into Contact headers; derived from the peer's route when None."""
    media_host: str = "0.0.0.0"
    """Address the RTP sockets bind to."""
    media_advertise_host: str | None = None
    """Address put in SDP; derived like ``advertise_host`` when None."""
    port_min: int = 20000
    port_max: int = 39999
    port_cooldown: float = 10.0
    max_sessions: int = 2000
    max_streams_per_call: int = 8
    """Audio m-lines one call may offer (``media.max_streams_per_call``); more: 488."""
    source_check: str = "signalling"
    """``media.source_check``: whose RTP a stream accepts (``strict``, ``signalling``, ``any``)."""
    allow_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    codecs: tuple[str, ...] = ALL_CODECS
    """Codecs the node may accept (the SDP answer's allow-list; it keeps the offer's order)."""
    timers: TimerConfig = field(default_factory=TimerConfig)
    retry_after: int = 30
    invite_rate_per_source: float = 50.0
    """New INVITEs a second from one IP address (token bucket); 0 disables the limit."""
    invite_burst_per_source: int = 100
    """INVITEs one IP address may send at once above the rate."""
    max_answer_delay: float = 1.0
    """``sip.max_answer_delay`` in seconds: new INVITEs get 503 ``Overloaded`` while a call has
    waited longer for its media to open; 0 disables."""
    max_message_size: int = DEFAULT_MAX_SIZE
    max_headers: int = DEFAULT_MAX_HEADERS
    max_metadata_elements: int = DEFAULT_MAX_ELEMENTS
    """``sip.max_metadata_elements``: beyond it a request's metadata is refused (400)."""
    user_agent: str = USER_AGENT
    on_finalised: Callable[[CallData, FinalisedRecording], None] | None = None
    """Called (on the event loop, must not block) after each recording was finalised, before
    its snapshot is written: the transcription queue's hook (``transcription/``)."""

    @property
    def effective_node_id(self) -> str:
        """``session_node_id`` if given, else ``node_id``."""
        return self.session_node_id or self.node_id

    def call_control(self) -> CallControlConfig:
        """The part of these settings the call-control core reads."""
        return CallControlConfig(
            node_id=self.effective_node_id,
            rtp_timeout=self.rtp_timeout,
            rtp_timeout_action=self.rtp_timeout_action,
            recording_dir=self.recording_dir,
            advertise_host=self.advertise_host,
            media_advertise_host=self.media_advertise_host,
            max_sessions=self.max_sessions,
            max_streams_per_call=self.max_streams_per_call,
            allow_sources=self.allow_sources,
            codecs=self.codecs,
            timers=self.timers,
            retry_after=self.retry_after,
            invite_rate_per_source=self.invite_rate_per_source,
            invite_burst_per_source=self.invite_burst_per_source,
            max_answer_delay=self.max_answer_delay,
            max_message_size=self.max_message_size,
            max_headers=self.max_headers,
            max_metadata_elements=self.max_metadata_elements,
            user_agent=self.user_agent,
        )
