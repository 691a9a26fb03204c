"""The SIPREC handler: routes requests to the recording logic and owns the registry of live calls.

It sits on top of the sans-I/O transaction layer and dialog table. The only asyncio it touches is
the event loop's clock and ``call_at`` for the transaction timers, and the snapshot writer's
background task; bytes in and out go through callables given by the node (``on_message`` in,
``send`` out), so the whole handler runs in tests without a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from siprec_node import __version__
from siprec_node.media.disk import DiskSpace
from siprec_node.media.engine import LocalEngine, MediaEngine, WorkerEngine
from siprec_node.media.finalise import (
    CallInfo,
    FinalisedRecording,
    finalise_call,
    participants_from_session,
)
from siprec_node.media.port_allocator import PortAllocator, PortRange
from siprec_node.media.rtp_ports import RtpPorts
from siprec_node.media.verdict import PROBLEM_KINDS
from siprec_node.sip.call import CallData, CallStatus, CallStore, MemoryCallStore, utc_now
from siprec_node.sip.call_media import CallMedia, MediaState, new_media_state
from siprec_node.sip.dialog import Dialog, DialogState, DialogTable
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.finalisations import Finalisations
from siprec_node.sip.message import (
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_SIZE,
    SipRequest,
    SipResponse,
    error_response_for,
    make_response,
    parse_message,
)
from siprec_node.sip.rate_limit import LogThrottle, TokenBuckets, retry_after
from siprec_node.sip.recording import (
    CallRecording,
    PortsUnavailable,
    RecordingOffer,
    TooManyStreams,
)
from siprec_node.sip.rtp_timeout import (
    STALLED,
    EndCall,
    MarkStalled,
    RtpTimeout,
    SendProbe,
    check_interval,
)
from siprec_node.sip.snapshots import SnapshotWriter
from siprec_node.sip.transaction import (
    AckReceived,
    AckTimeout,
    Address,
    CancelReceived,
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionState,
    TransactionTimeout,
    new_branch,
    new_tag,
)
from siprec_node.sip.uri import SipUri, parse_decimal
from siprec_node.siprec.codecs import ALL_CODECS
from siprec_node.siprec.errors import MetadataLimitExceeded, SiprecError, UnsupportedBody
from siprec_node.siprec.metadata_parser import DEFAULT_MAX_ELEMENTS
from siprec_node.siprec.multipart import metadata_request_part
from siprec_node.siprec.recording_session import Party, RecordingSession

log = structlog.get_logger("siprec_node.sip.handler")

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO")
SUPPORTED_OPTIONS = ("siprec", "timer", "replaces")
# Require: options we can honour. 100rel only obliges us to send provisionals reliably, and the
# only provisional we ever send is 100 Trying, which is never sent reliably (RFC 3262 §3).
HONOURED_REQUIRE = frozenset({"siprec", "timer", "100rel"})
ACCEPT = "application/sdp, application/rs-metadata+xml, application/rs-metadata, multipart/mixed"
NOT_ALLOWED_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH", "REFER", "PRACK"}
)
MIN_SE = 90
FINISHED_DIALOGS = 10000
BYE_LINGER_T1 = 4
"""How long (in T1) a drain waits for the answers to its BYEs once they are sent."""
# Local addresses remembered per peer address (the route lookup is a syscall); least recently used
# evicted, so that a flood from many source addresses cannot grow it.
ADVERTISE_CACHE_SIZE = 1024


@dataclass(frozen=True)
class HandlerConfig:
    """What the handler needs from the node's settings (see ``config.Settings``)."""

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
    recording_format: str = "wav"
    recording_channels: str = "stereo"
    keep_parts: bool = False
    """``recording.keep_parts``: leave the parts folder beside a finalised recording."""
    min_free: int = 0
    """``recording.min_free`` (bytes): below it new INVITEs get 503; 0: no minimum."""
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
    max_message_size: int = DEFAULT_MAX_SIZE
    max_headers: int = DEFAULT_MAX_HEADERS
    max_metadata_elements: int = DEFAULT_MAX_ELEMENTS
    """``sip.max_metadata_elements``: beyond it a request's metadata is refused (400)."""
    user_agent: str = f"siprec-node/{__version__}"
    on_finalised: Callable[[CallData, FinalisedRecording], None] | None = None
    """Called (on the event loop, must not block) after each recording was finalised, before
    its snapshot is written: the transcription queue's hook (``transcription/``)."""

    @property
    def effective_node_id(self) -> str:
        """``session_node_id`` if given, else ``node_id``."""
        return self.session_node_id or self.node_id


@dataclass
class Call:
    """A live call: its dialog, recording state, snapshot and the transaction answering it."""

    data: CallData
    dialog: Dialog
    recording: CallRecording
    invite_key: TransactionKey
    log: Any
    answered: bool = False
    confirmed: bool = False
    ports: list[int] = field(default_factory=list)
    session_expires: int | None = None
    refresher: str | None = None
    media_state: MediaState | None = None
    remote_allow: frozenset[str] = frozenset()
    """Methods the SRC said it allows (its INVITE's Allow header); empty when it did not say."""
    refresh_timer: asyncio.TimerHandle | None = None
    started_monotonic: float = field(default_factory=time.monotonic)
    tolerated: set[str] = field(default_factory=set)
    """Kinds of sloppy SIP already logged for this call (each is logged once per call)."""

    def tolerate(self, kind: str, **details: Any) -> None:
        """Log, once per call, a fault of the SRC's that the node accepted (INTEROP)."""
        if kind not in self.tolerated:
            self.tolerated.add(kind)
            self.log.warning("sip_tolerated", fault=kind, **details)


Sender = Callable[[bytes, Address], None]


def local_address_towards(peer_host: str) -> str:
    """The local address the kernel would use to reach ``peer_host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


class SipHandler:
    """Answers SIP for recording sessions and keeps the registry of live calls."""

    def __init__(
        self,
        config: HandlerConfig | None = None,
        *,
        send: Sender | None = None,
        clock: Callable[[], float] | None = None,
        local_address: Callable[[str], str] = local_address_towards,
    ) -> None:
        self.config = config or HandlerConfig()
        self.node_id = self.config.effective_node_id
        self._send = send
        self._clock = clock
        self._local_address = local_address
        self.transactions = TransactionLayer(self.config.timers)
        self.dialogs = DialogTable()
        self.calls: dict[str, Call] = {}  # by session id
        self._by_dialog: dict[tuple[str, str], Call] = {}  # (Call-ID, local tag)
        self._by_invite: dict[TransactionKey, Call] = {}
        self.media = RtpPorts(
            PortAllocator(
                PortRange(self.config.port_min, self.config.port_max), self.config.port_cooldown
            ),
            host=self.config.media_host,
        )
        self.engine: MediaEngine = (
            WorkerEngine(
                self.config.media_workers,
                log_level=self.config.log_level,
                log_format=self.config.log_format,
                on_worker_died=self._on_worker_died,
                receive_path=self.config.media_receive_path,
            )
            if self.config.media_workers > 0
            else LocalEngine(self.config.media_receive_path)
        )
        self.call_media = CallMedia(self.media, self.engine, self.config.source_check)
        self._tasks: set[asyncio.Task[None]] = set()
        self._activity_task: asyncio.Task[None] | None = None
        self.rtp_timeout = RtpTimeout(self.config.rtp_timeout, self.config.rtp_timeout_action)
        self._rtp_task: asyncio.Task[None] | None = None
        self._probes: dict[TransactionKey, str] = {}  # OPTIONS probe -> session id
        # Calls we ended before their ACK came: the BYE goes when it does (or at Timer H).
        self._bye_after_ack: dict[TransactionKey, tuple[Dialog, str]] = {}
        # Dialogs of calls finalised for a dead node, answerable if their SRC fails over here.
        self._finished: dict[tuple[str, str], tuple[Dialog, str]] = {}
        self._finished_by_remote: dict[tuple[str, str | None], tuple[str, str]] = {}
        self.store: CallStore = self._call_store()
        self.snapshots: SnapshotWriter | None = None
        self.finalisations = Finalisations(
            self.finalise,
            self._save_data,
            keep_parts=self.config.keep_parts,
            retry_initial=self.config.finalise_retry[0],
            retry_max=self.config.finalise_retry[1],
        )
        self.disk = DiskSpace(
            self.config.recording_dir,
            self.config.min_free,
            on_recovered=self.finalisations.wake,
        )
        self.listeners: dict[str, tuple[str, int]] = {}  # transport -> (bound host, port)
        self.draining = False
        self.recovering = False
        """True while a restarted node has not yet restored its calls from the store: requests
        for dialogs it does not know get 503 + Retry-After then, never 481."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._advertise_cache: OrderedDict[str, str] = OrderedDict()
        self.stats: dict[str, int] = {
            "requests": 0,
            "responses": 0,
            "malformed": 0,
            "calls_started": 0,
            "calls_ended": 0,
            "calls_failed": 0,
            "rejected": 0,
            "forbidden": 0,
            "metadata_limit_exceeded": 0,
            "internal_errors": 0,
            "invite_rate_limited": 0,
            "too_many_streams": 0,
        }
        self.recordings: dict[str, int] = {"ok": 0, "problems": 0}
        """Recordings finalised here, by verdict."""
        self.recording_problems: dict[str, int] = dict.fromkeys(PROBLEM_KINDS, 0)
        """Recordings finalised here that have each problem."""
        self._invite_buckets = (
            TokenBuckets(self.config.invite_rate_per_source, self.config.invite_burst_per_source)
            if self.config.invite_rate_per_source > 0
            else None
        )
        self._rate_log = LogThrottle()

    # ------------------------------------------------------------------ wiring

    def _call_store(self) -> CallStore:
        # `is None`, not `or`: an empty MemoryCallStore is falsy (it has __len__).
        if self.config.call_store is not None:
            return self.config.call_store
        if self.config.session_store is not None:
            # The one place sip reaches into adapters: SPEC's API hands the handler a rich store.
            from siprec_node.adapters import SharedCallStore

            return SharedCallStore(self.config.session_store, self.node_id)
        return MemoryCallStore()

    def attach(self, send: Sender) -> None:
        """Set the function that puts bytes on the wire."""
        self._send = send

    def set_listener(self, transport: str, host: str, port: int) -> None:
        """Tell the handler where it listens (for Contact headers)."""
        self.listeners.setdefault(transport, (host, port))

    def now(self) -> float:
        """The transaction clock (the event loop's monotonic time when running in one)."""
        if self._clock is not None:
            return self._clock()
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def start(self) -> None:
        """Start the snapshot writer and the activity reporter; once, inside the event loop."""
        if self.snapshots is None:
            self.snapshots = SnapshotWriter(self.store, on_rejected=self._lost_to_another_node)
            await self.engine.start()
            self.disk.start()
            self.finalisations.start()
        if self._activity_task is None and self.config.activity_interval > 0:
            self._activity_task = asyncio.get_running_loop().create_task(self._report_activity())
        if self._rtp_task is None and self.rtp_timeout.action != "none" and self._clock is None:
            # (an injected clock is not the loop's: its owner calls check_rtp)
            self._rtp_task = asyncio.get_running_loop().create_task(self._watch_rtp())

    async def _report_activity(self) -> None:
        """Tell the store which calls received RTP lately (session_timeout counts RTP too); one
        batched read of every stream's datagram counter per interval (a request per worker)."""
        seen: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.config.activity_interval)
            try:
                activity = await self.engine.activity()
            except Exception:  # a worker restarting: next round
                continue
            for session_id, call in list(self.calls.items()):
                packets = sum(activity.get(session_id, {}).values())
                if packets != seen.get(session_id, 0):
                    seen[session_id] = packets
                    call.data.last_activity = utc_now()
                    try:
                        await self.store.touch(session_id, call.data.last_activity)
                    except Exception as exc:  # an outage: the next snapshot carries the time
                        log.debug("activity_touch_failed", session_id=session_id, error=str(exc))
            for session_id in [k for k in seen if k not in self.calls]:
                del seen[session_id]

    # ------------------------------------------------------------------ RTP timeout

    async def _watch_rtp(self) -> None:
        """Read every stream's datagram counter once per check interval (one request per media
        worker) and apply ``media.rtp_timeout_action`` to the calls gone silent."""
        while True:
            await asyncio.sleep(check_interval(self.rtp_timeout.timeout))
            try:
                activity = await self.engine.activity()
            except Exception as exc:  # a worker restarting: next round
                log.debug("rtp_activity_unavailable", error=repr(exc))
                continue
            self.check_rtp(activity)

    def check_rtp(self, activity: dict[str, dict[int, int]]) -> None:
        """One RTP-timeout check of every live call against the engine's counters."""
        if self.draining:
            return
        now = self.now()
        watch = self.rtp_timeout
        watch.retain(self.calls)
        for session_id, call in list(self.calls.items()):
            if not call.confirmed or call.media_state is None:
                continue
            counters = activity.get(session_id, {})
            live = {
                i: counters.get(i, 0) for i, paused in call.media_state.open.items() if not paused
            }
            for decision in watch.observe(session_id, live, now):
                call.log.warning("rtp_timeout", action=watch.action.value, timeout_s=watch.timeout)
                self._apply_rtp_decision(decision)

    def _apply_rtp_decision(self, decision: SendProbe | EndCall | MarkStalled) -> None:
        call = self.calls.get(decision.session_id)
        if call is None:
            return
        if isinstance(decision, SendProbe):
            key = self._send_in_dialog(
                call.dialog, "OPTIONS", [("User-Agent", self.config.user_agent)]
            )
            self._probes[key] = decision.session_id
            call.log.info("rtp_timeout_probe_sent")
        elif isinstance(decision, EndCall):
            call.log.warning("rtp_timeout_call_ended", reason=decision.reason, bye=decision.bye)
            if decision.bye:
                self.send_bye(call, decision.reason)
            else:
                self._end_call(call, CallStatus.ENDED, decision.reason)
        else:
            call.data.flag(STALLED, probes=decision.probes, silent_s=decision.silent_s)
            self._snapshot(call)
            call.log.warning("call_stalled", probes=decision.probes, silent_s=decision.silent_s)

    def _probe_outcome(self, key: TransactionKey, status: int | None) -> None:
        session_id = self._probes.get(key)
        if session_id is None or (status is not None and status < 200):
            return
        del self._probes[key]
        call = self.calls.get(session_id)
        if call is not None:
            call.log.info("rtp_timeout_probe_answered", status=status)
        for decision in self.rtp_timeout.probe_answered(session_id, status, self.now()):
            self._apply_rtp_decision(decision)

    # ------------------------------------------------------------------ media

    async def _sync_media(self, call: Call, *, raise_errors: bool = False) -> None:
        """Bring the engine in line with the call's negotiated streams and pause state."""
        if call.media_state is None or call.data.is_final:
            return
        try:
            changes = await self.call_media.sync(
                call.data.session_id,
                call.media_state,
                call.recording.streams,
                peer=call.dialog.peer.host,
            )
        except Exception as exc:
            if raise_errors:
                raise
            call.log.error("media_sync_failed", error=repr(exc))
            return
        if changes:
            call.log.debug("media_synced", changes=changes)

    async def _reopen_media(self, call: Call) -> None:
        """Record a recovered call's streams again, into the same files."""
        if call.media_state is None:
            return
        try:
            await self.call_media.reopen(
                call.data.session_id,
                call.media_state,
                call.recording.streams,
                peer=call.dialog.peer.host,
            )
        except Exception as exc:
            call.log.error("media_reopen_failed", error=repr(exc))
            return
        call.log.info("media_reopened", streams=sorted(call.media_state.open))

    async def _close_media(self, call: Call) -> None:
        """Close the streams of an ended call, then write its final files and sidecar; a call
        that was never answered has no recording: its parts are removed."""
        try:
            stats = await self.call_media.close(call.data.session_id, call.media_state)
        except Exception as exc:
            call.log.error("media_close_failed", error=repr(exc))
            stats = {}
        self.finalisations.note_write_errors(call.data, stats, call.log)
        if not call.answered and call.media_state is not None:
            removed = self.call_media.discard(call.media_state)
            call.log.info("media_discarded", streams=sorted(stats), parts_removed=removed)
            return
        call.log.info(
            "media_closed",
            streams={
                str(i): {k: s.get(k) for k in ("packets", "lost", "duplicates", "late")}
                for i, s in stats.items()
            },
        )
        await self.finalise(call.data, call.media_state, call.recording.session)
        self._snapshot(call)

    async def finalise(
        self, data: CallData, state: MediaState | None, session: RecordingSession | None
    ) -> FinalisedRecording | None:
        """Write the final recording of a call from its parts (off the event loop).

        Used for calls that end here and for calls of a dead node this node took over (their
        parts are where the shared recording directory has them). Conversation turns go into
        ``data`` for the session store.
        """
        if state is None:
            return None
        if not Path(state.parts).is_dir():
            log.warning(
                "recording_parts_unreachable", session_id=data.session_id, parts=state.parts
            )
            self.finalisations.gone(data)
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
        job = functools.partial(
            finalise_call,
            state.parts,
            output_dir=state.directory,
            stem=state.stem,
            call=info,
            fmt=self.config.recording_format,
            channels=self.config.recording_channels,
            participants=participants_from_session(session) if session is not None else (),
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, job)
        except Exception as exc:  # logged, counted, tried again later (sip/finalisations.py)
            self.finalisations.failed(data, state, session, exc)
            return None
        self.finalisations.done(data, state)
        data.turns.clear()
        result.record_turns(data)
        state.files = [str(path) for path in result.files]
        state.sidecar = str(result.sidecar)
        verdict = result.verdict.call
        data.verdict = verdict.to_dict()
        self.recordings[verdict.status] += 1
        if self.config.on_finalised is not None:
            self.config.on_finalised(data, result)
        for kind in verdict.kinds:
            self.recording_problems[kind] = self.recording_problems.get(kind, 0) + 1
        log.info(
            "recording_finalised",
            call_id=data.call_id,
            session_id=data.session_id,
            files=state.files,
            sidecar=state.sidecar,
            duration_s=result.duration_s,
            turns=len(data.turns),
            verdict=verdict.status,
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

    async def _on_worker_died(self, index: int, sessions: set[str]) -> None:
        """A media worker crashed and was restarted: its calls' streams are opened again."""
        for session_id in sessions:
            call = self.calls.get(session_id)
            if call is not None:
                call.log.warning("media_worker_restarted_for_call", worker=index)
                await self._reopen_media(call)

    # ------------------------------------------------------------------ recovery, takeover

    async def recover(self) -> list[str]:
        """Restore this node's live calls from the store (restart with the same node id).

        Each call gets its dialog, recording state and RTP ports back, so in-dialog requests
        are answered from the restored dialog (never 481). Calls that never got their 200 are
        closed as failed. Returns the session ids restored.
        """
        restored: list[str] = []
        for data in await self.store.list():
            if data.node_id == self.node_id and data.status == CallStatus.FINALISING:
                self.finalisations.resume(data)  # ended, recording not yet finalised
                continue
            if data.node_id != self.node_id or data.is_final or data.session_id in self.calls:
                continue
            try:
                call = self._restore(data)
            except Exception as exc:
                log.exception(
                    "call_not_recovered", session_id=data.session_id, call_id=data.call_id
                )
                data.status, data.end_reason = CallStatus.FAILED, f"not recoverable: {exc}"
                data.ended_at = utc_now()
                if self.snapshots is not None:
                    self.snapshots.submit(data)
                continue
            if call is not None:
                restored.append(call.data.session_id)
        self.recovering = False
        log.info("calls_recovered", count=len(restored))
        self.finalisations.recover_parts_soon(  # parts folders left without a final recording
            self.config.recording_dir,
            self.node_id,
            self.store,
            lambda: [c.media_state.parts for c in self.calls.values() if c.media_state],
        )
        return restored

    def _restore(self, data: CallData) -> Call | None:
        call_log = log.bind(call_id=data.call_id, session_id=data.session_id)
        dialog = Dialog.from_dict(data.dialog)
        recording = CallRecording.from_dict(
            data.recording, allocate=lambda: self.media.reserve(self.now())
        )
        call = Call(
            data=data,
            dialog=dialog,
            recording=recording,
            invite_key=TransactionKey("INVITE", f"recovered:{data.session_id}", ""),
            log=call_log,
            answered=True,
            confirmed=data.status == CallStatus.ACTIVE,
        )
        stored_media = (data.media or {}).get("state")
        if stored_media:
            call.media_state = MediaState.from_dict(stored_media)
        if dialog.state is not DialogState.CONFIRMED:
            # The 200 was never sent: the SRC has retried elsewhere or will retransmit.
            call_log.info("call_not_recovered", reason="crashed before the answer")
            if call.media_state is not None:  # no recording to finalise: drop its parts
                self.call_media.discard(call.media_state)
            call.data.status = CallStatus.FAILED
            call.data.end_reason = "node restarted before answering"
            call.data.ended_at = utc_now()
            self._snapshot(call)
            return None
        lost = [p for p in recording.ports if not self.media.reclaim(p)]
        call.ports = [p for p in recording.ports if p not in lost]
        self.calls[data.session_id] = call
        self.dialogs.add(dialog)
        self._by_dialog[(dialog.call_id, dialog.local_tag)] = call
        data.recoveries = data.recoveries + 1
        self._snapshot(call)
        if call.media_state is not None:
            self._spawn(self._reopen_media(call))
        call_log.info("call_recovered", status=data.status, ports=call.ports, lost_ports=lost)
        return call

    def adopt_finished(self, data: CallData, reason: str) -> None:
        """Remember the dialog of a call finalised on behalf of a dead node.

        If its SRC fails over to this node, a BYE (or OPTIONS) in that dialog is answered 200
        rather than 481; anything else gets 481 since the recording has ended.
        """
        try:
            dialog = Dialog.from_dict(data.dialog)
        except Exception:
            log.warning("takeover_without_dialog", session_id=data.session_id)
            return
        self._finished[(dialog.call_id, dialog.local_tag)] = (dialog, data.session_id)
        self._finished_by_remote[(dialog.call_id, dialog.remote_tag)] = (
            dialog.call_id,
            dialog.local_tag,
        )
        while len(self._finished) > FINISHED_DIALOGS:
            (call_id, local_tag), (old, _) = next(iter(self._finished.items()))
            del self._finished[(call_id, local_tag)]
            self._finished_by_remote.pop((call_id, old.remote_tag), None)
        log.info(
            "takeover_adopted", session_id=data.session_id, call_id=data.call_id, reason=reason
        )

    async def finalise_orphan(self, data: CallData, reason: str) -> FinalisedRecording | None:
        """Finalise the recording of a dead node's call this node took over (status failed)."""
        media = (data.media or {}).get("state")
        if not media:
            return None
        if data.status != CallStatus.FINALISING:  # one that was finalising keeps its outcome
            data.status, data.end_reason = CallStatus.FAILED, reason
        session = None
        if data.recording.get("session"):
            session = RecordingSession.from_dict(data.recording["session"])
        return await self.finalise(data, MediaState.from_dict(media), session)

    def _lost_to_another_node(self, session_id: str, reason: str) -> None:
        """The store says another node owns this call now (this node was presumed dead and
        its calls were taken over): stop recording it here, without a BYE — the SRC talks to
        the other node now."""
        call = self.calls.get(session_id)
        if call is None:
            return
        call.log.warning("call_lost_to_another_node", reason=reason)
        self._end_call(call, CallStatus.FAILED, f"taken over by another node: {reason}")

    async def verify_ownership(self) -> list[str]:
        """After a stall: end the live calls the store no longer lists as this node's."""
        owned = {c.session_id for c in await self.store.list() if c.node_id == self.node_id}
        lost = [
            sid
            for sid, call in list(self.calls.items())
            if sid not in owned
            and call.data.version > 0
            and call.answered
            and (self.snapshots is None or sid not in self.snapshots.pending_ids)
        ]
        for session_id in lost:
            self._lost_to_another_node(session_id, "no longer this node's in the store")
        return lost

    def expire(self, session_id: str, reason: str = "session timeout") -> bool:
        """End a live call the session manager found idle for ``session_timeout``."""
        call = self.calls.get(session_id)
        if call is None:
            return False
        self.send_bye(call, reason)
        return True

    def _finished_dialog(self, request: SipRequest) -> tuple[Dialog, str] | None:
        to_tag = request.to.tag
        if to_tag is not None:
            return self._finished.get((request.call_id, to_tag))
        key = self._finished_by_remote.get((request.call_id, request.from_.tag))
        return self._finished.get(key) if key else None

    @property
    def ready(self) -> bool:
        """False while snapshots cannot be written (store down) or while draining."""
        return not self.draining and (self.snapshots is None or self.snapshots.healthy)

    # ------------------------------------------------------------------ input

    def on_message(self, data: bytes, source: Address) -> None:
        """Handle one datagram or framed stream message."""
        now = self.now()
        try:
            message = parse_message(
                data,
                max_size=self.config.max_message_size,
                max_headers=self.config.max_headers,
                stream=source.reliable,
            )
        except SipParseError as error:
            self.on_malformed(data, error, source)
            return
        except Exception:  # the parser must raise nothing else: our bug, answered 500
            self._internal_error("parse_failed", peer=f"{source.host}:{source.port}")
            answer = error_response_for(data, SipParseError("Server Internal Error", status=500))
            if answer is not None:
                self._emit(answer, source)
            return
        try:
            if isinstance(message, SipResponse):
                self.stats["responses"] += 1
                events = self.transactions.receive_response(message, now)
            else:
                self.stats["requests"] += 1
                events = self.transactions.receive_request(message, source, now)
        except SipParseError as error:  # a header the transaction layer needed did not parse
            self.on_malformed(data, error, source)
            return
        except Exception:
            self._internal_error("transaction_failed", peer=f"{source.host}:{source.port}")
            return
        self._process(events, now)

    def _internal_error(self, event: str, **fields: Any) -> None:
        """Count and log (with the traceback) an exception that is our bug, not the peer's."""
        self.stats["internal_errors"] += 1
        log.exception(event, **fields)

    def on_malformed(self, data: bytes, error: SipParseError, source: Address) -> None:
        """Answer a message that does not parse (400/413/505) when it is an answerable request."""
        self.stats["malformed"] += 1
        log.warning(
            "sip_malformed",
            peer=f"{source.host}:{source.port}",
            transport=source.transport,
            status=error.status,
            error=error.reason,
            size=len(data),
        )
        response = error_response_for(data, error)
        if response is not None:
            # A request too broken to parse gets its answer where it came from (RFC 3581 style).
            self._emit(response, source)

    def on_timer(self) -> None:
        """Fire due transaction timers."""
        self._timer = None
        self._timer_deadline = None
        now = self.now()
        self._process(self.transactions.handle_timer(now), now)

    def _process(self, events: Iterable[Event], now: float) -> None:
        for event in events:
            request = (
                event.request
                if isinstance(event, RequestReceived)
                else event.cancel
                if isinstance(event, CancelReceived)
                else None
            )
            try:
                self._dispatch(event, now)
            except (SipParseError, SiprecError) as exc:
                # A header or body that fails only where it is used: the sender's error, a 4xx.
                status = exc.status if 400 <= exc.status < 500 else 400
                log.info("request_unparsable", status=status, error=exc.reason)
                if request is not None:
                    self._respond_safely(
                        event.key,  # type: ignore[union-attr]
                        self._rejection(request, status, _reason_of(exc)),
                        now,
                    )
            except Exception:
                self._internal_error("event_failed", event_type=type(event).__name__)
                if request is not None:
                    self._respond_safely(
                        event.key,  # type: ignore[union-attr]
                        self._rejection(request, 500, None),
                        now,
                    )
        self._flush()
        self._schedule_timer()

    def _flush(self) -> None:
        for out in self.transactions.datagrams_to_send():
            self._emit(out.data, out.destination)

    def _emit(self, data: bytes, destination: Address) -> None:
        if self._send is None:
            log.error("no_transport_attached")
            return
        self._send(data, destination)

    def _schedule_timer(self) -> None:
        if self._clock is not None:
            return  # an injected clock is not the loop's: its owner calls on_timer
        deadline = self.transactions.next_timer()
        if deadline is None or deadline == self._timer_deadline:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # driven by hand (tests): the caller calls on_timer
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = loop.call_at(deadline, self.on_timer)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.request, event.key, event.source, now)
        elif isinstance(event, AckReceived):
            self._on_ack(event, now)
        elif isinstance(event, CancelReceived):
            self._on_cancel(event, now)
        elif isinstance(event, AckTimeout):
            pending = self._bye_after_ack.pop(event.key, None)
            if pending is not None:  # we wanted to end it: the BYE may go now (RFC 3261 §15)
                self._send_bye_request(*pending)
            call = self._by_invite.get(event.key)
            if call is not None:
                call.log.warning("ack_timeout", waited_s=self.config.timers.timeout)
                # §13.3.1.4: no ACK within 64*T1 — confirm the dialog and end the session.
                self._send_bye_request(call.dialog, "no ACK for the 200 OK")
                self._end_call(call, CallStatus.FAILED, "no ACK for the 200 OK")
        elif isinstance(event, TransactionTimeout):
            log.info("final_response_unacknowledged", status=event.response.status)
        elif isinstance(event, ResponseReceived):
            self._probe_outcome(event.key, event.response.status)
            log.info(
                "response_received",
                call_id=event.response.call_id,
                method=event.key.method,
                status=event.response.status,
            )
        elif isinstance(event, ClientTimeout):
            self._probe_outcome(event.key, None)
            log.warning(
                "request_timeout", call_id=event.request.call_id, method=event.request.method
            )

    def _on_request(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> None:
        method = request.method
        in_dialog = request.to.tag is not None
        initial_invite = method == "INVITE" and not in_dialog  # 100 first, then admission
        if not initial_invite and not self._source_allowed(source):
            self.stats["forbidden"] += 1
            log.info("request_forbidden", method=method, peer=f"{source.host}:{source.port}")
            self._respond(key, request, 403, now, reason="Source Not Allowed")
            return
        if initial_invite:
            self._on_invite(request, key, source, now)
        elif method == "OPTIONS":
            self._on_options(request, key, now)
        elif method in ("INVITE", "UPDATE", "BYE", "INFO"):
            self._on_in_dialog(request, key, now)
        elif method in NOT_ALLOWED_METHODS:
            self._respond(key, request, 405, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])
        else:
            self._respond(key, request, 501, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])

    # ------------------------------------------------------------------ responses

    def _respond(
        self,
        key: TransactionKey,
        request: SipRequest,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        extra = [("Server", self.config.user_agent), *headers]
        if status >= 300 and to_tag is None and request.to.tag is None:
            to_tag = new_tag()  # a final response to an out-of-dialog request needs a To tag
        response = make_response(request, status, reason, to_tag=to_tag, headers=extra, body=body)
        self.transactions.send_response(key, response, now)
        return response

    def _respond_safely(self, key: TransactionKey, response: SipResponse, now: float) -> None:
        with contextlib.suppress(Exception):
            self.transactions.send_response(key, response, now)

    def _rejection(self, request: SipRequest, status: int, reason: str | None) -> SipResponse:
        """A final error response built without trusting the request beyond what parsed."""
        try:
            tagged = request.to.tag is not None
        except SipParseError:
            tagged = True
        return make_response(request, status, reason, to_tag=None if tagged else new_tag())

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Accept", ACCEPT),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
        ]

    def _on_options(self, request: SipRequest, key: TransactionKey, now: float) -> None:
        if self.draining:
            self._respond(
                key, request, 503, now, headers=[("Retry-After", str(self.config.retry_after))]
            )
            return
        # RFC 3261 §8.2.6.2: a response to a request without a To tag carries one (make_response
        # keeps the request's tag when there is one).
        self._respond(key, request, 200, now, to_tag=new_tag(), headers=self._capabilities())

    # ------------------------------------------------------------------ INVITE

    def _on_invite(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> None:
        call_log = log.bind(call_id=request.call_id)
        self._respond(key, request, 100, now)
        if self._over_invite_rate(request, key, source, now):
            return
        rejection = self._admission(request, source)
        if rejection is not None:
            status, reason, headers = rejection
            self.stats["rejected"] += 1
            call_log.info("invite_rejected", status=status, reason=reason)
            self._respond(key, request, status, now, reason=reason, headers=headers)
            return
        taken: list[int] = []  # ports bound for this offer: given back if it fails
        try:
            offer = RecordingOffer.from_request(
                request, max_metadata_elements=self.config.max_metadata_elements
            )
            try:
                recording = CallRecording.start(
                    offer,
                    codecs=self.config.codecs,
                    media_host=self._media_host(source.host),
                    allocate=functools.partial(self._reserve_port, now, taken),
                    call_id=request.call_id,
                    caller=Party(request.from_.display, request.from_.uri),
                    callee=Party(request.to.display, request.to.uri),
                    max_streams=self.config.max_streams_per_call,
                )
            except BaseException:
                self.media.release(taken, now)
                raise
        except TooManyStreams as exc:
            self._too_many_streams(key, request, exc, now, call_log)
            return
        except UnsupportedBody as exc:
            self.stats["rejected"] += 1
            call_log.info("invite_rejected", status=exc.status, reason=exc.reason)
            self._respond(key, request, exc.status, now, headers=[("Accept", exc.accept)])
            return
        except SiprecError as exc:
            self.stats["rejected"] += 1
            self._count_limit(exc)
            call_log.info("invite_rejected", status=exc.status, reason=exc.reason)
            self._respond(key, request, exc.status, now, reason=_phrase(exc))
            return
        except PortsUnavailable as exc:
            self.stats["rejected"] += 1
            call_log.warning("invite_rejected", status=503, reason=str(exc))
            self._respond(
                key,
                request,
                503,
                now,
                reason="No Media Ports",
                headers=[("Retry-After", str(self.config.retry_after))],
            )
            return
        session_id = recording.session_id
        call_log = call_log.bind(session_id=session_id)
        local_tag = new_tag()
        contact = self._contact(source)
        data = CallData(
            session_id=session_id,
            call_id=request.call_id,
            node_id=self.node_id,
            from_uri=request.from_.uri,
            to_uri=request.to.uri,
            from_display=request.from_.display,
            to_display=request.to.display,
            vendor_ids=dict(offer.vendor_ids),
        )
        if offer.metadata_error is not None:
            data.flag("metadata_unparsed", detail=offer.metadata_error)
        call = Call(
            data=data,
            dialog=Dialog.from_invite(request, local_tag, contact, source),
            recording=recording,
            invite_key=key,
            log=call_log,
            ports=recording.ports,
            session_expires=self._session_expires(request),
            remote_allow=frozenset(m.upper() for m in request.headers.get_all("Allow")),
            media_state=new_media_state(self.config.recording_dir, request.call_id, session_id),
        )
        if offer.metadata_error is not None:
            call.tolerate("metadata_unparsed", error=offer.metadata_error)
        # The call counts against capacity and can be cancelled from now on.
        self.calls[session_id] = call
        self._by_invite[key] = call
        self.stats["calls_started"] += 1
        self._snapshot(call)
        call_log.info(
            "call_offered",
            peer=f"{source.host}:{source.port}",
            transport=source.transport,
            siprec=offer.is_siprec,
            streams=recording.stream_summary(),
        )
        self._spawn(self._answer_invite(call, request))

    def _reserve_port(self, now: float, taken: list[int]) -> int:
        """Bind an RTP port for an offer being answered, noting it in ``taken``."""
        port = self.media.reserve(now)
        taken.append(port)
        return port

    def _too_many_streams(
        self,
        key: TransactionKey,
        request: SipRequest,
        exc: TooManyStreams,
        now: float,
        call_log: Any,
        *,
        to_tag: str | None = None,
    ) -> None:
        """488 with a Warning saying why: more audio m-lines than ``max_streams_per_call``."""
        self.stats["rejected"] += 1
        self.stats["too_many_streams"] += 1
        call_log.warning(
            "too_many_streams", method=request.method, offered=exc.offered, limit=exc.limit
        )
        text = f"Too many audio streams: {exc.offered} offered, at most {exc.limit} per call"
        self._respond(
            key,
            request,
            488,
            now,
            reason="Too Many Streams",
            to_tag=to_tag,
            headers=[("Warning", f'399 siprec-node "{text}"')],
        )

    async def _answer_invite(self, call: Call, request: SipRequest) -> None:
        """Open the media sockets, then send the 200 unless a CANCEL came first."""
        try:
            await self._sync_media(call, raise_errors=True)
        except Exception as exc:  # the INVITE must get a final response whatever happened
            if call.data.is_final:
                return
            call.log.error("media_open_failed", error=repr(exc))
            self._respond_now(
                call.invite_key,
                request,
                503,
                reason="Media Unavailable",
                headers=[("Retry-After", str(self.config.retry_after))],
            )
            self._end_call(call, CallStatus.FAILED, f"media sockets failed: {exc}")
            return
        if call.data.is_final:  # cancelled (487 sent) while the media was being prepared
            return
        headers = [
            ("Contact", call.dialog.local_contact),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Content-Type", "application/sdp"),
        ]
        headers += self._session_timer_headers(request, call)
        self._respond_now(
            call.invite_key,
            request,
            200,
            to_tag=call.dialog.local_tag,
            headers=headers,
            body=call.recording.answer_sdp(),
        )
        call.dialog.confirm()
        call.answered = True
        self.dialogs.add(call.dialog)
        self._by_dialog[(call.dialog.call_id, call.dialog.local_tag)] = call
        self._snapshot(call)
        call.log.info("call_answered")

    def _respond_now(
        self,
        key: TransactionKey,
        request: SipRequest,
        status: int,
        **kwargs: Any,
    ) -> None:
        """Respond from outside event processing (a task): flush and re-arm timers at once."""
        self._respond(key, request, status, self.now(), **kwargs)
        self._flush()
        self._schedule_timer()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The tasks catch what a peer can cause: anything escaping is a bug of ours.
            self.stats["internal_errors"] += 1
            log.error("handler_task_failed", error=repr(error), exc_info=error)

    async def idle(self) -> None:
        """Wait until every pending answer task has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _over_invite_rate(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> bool:
        """Answer 503 + Retry-After to a new INVITE over its source's rate (logged once per
        source per interval). 503 rather than silence: an SRC fails over to another recorder
        on an error response at once, while an unanswered INVITE holds the call for Timer B
        (32 s) and keeps coming back as retransmissions."""
        buckets = self._invite_buckets
        if buckets is None or (
            self.config.allow_sources and not _allowed(source.host, self.config.allow_sources)
        ):
            return False  # unlimited, or refused with 403 by admission anyway
        wait = buckets.take(source.host, now)
        if wait <= 0:
            return False
        self.stats["rejected"] += 1
        self.stats["invite_rate_limited"] += 1
        suppressed = self._rate_log.hit(source.host, now)
        if suppressed is not None:
            log.warning(
                "sip_limit_hit",
                limit="invite_rate_per_source",
                source=source.host,
                transport=source.transport,
                rate=self.config.invite_rate_per_source,
                suppressed=suppressed,
            )
        headers = [("Retry-After", str(retry_after(wait)))]
        self._respond(key, request, 503, now, reason="Rate Limited", headers=headers)
        return True

    def _admission(
        self, request: SipRequest, source: Address
    ) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        retry = [("Retry-After", str(self.config.retry_after))]
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards is not None and max_forwards.strip() == "0":
            return 483, None, []
        if self.draining:
            return 503, "Draining", retry
        if self.disk.low:  # recording.min_free
            self.disk.refused += 1
            return 503, "Low Disk Space", retry
        if not self._source_allowed(source):
            self.stats["forbidden"] += 1
            return 403, "Source Not Allowed", []
        if len(self.calls) >= self.config.max_sessions:
            return 503, "Maximum Sessions Reached", retry
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in ("sip", "sips", "tel"):
            return 416, None, []
        unsupported = request.headers.tokens("Require") - HONOURED_REQUIRE
        if unsupported:
            return 420, None, [("Unsupported", ", ".join(sorted(unsupported)))]
        expires = request.headers.get("Session-Expires")
        if expires is not None:
            interval = parse_decimal(expires.split(";", 1)[0].strip(), max_digits=10)
            if interval is None:
                return 400, "Bad Session-Expires", []
            if interval < MIN_SE:
                return 422, "Session Interval Too Small", [("Min-SE", str(MIN_SE))]
        return None

    def _count_limit(self, exc: SiprecError) -> None:
        if isinstance(exc, MetadataLimitExceeded):
            self.stats["metadata_limit_exceeded"] += 1

    def _source_allowed(self, source: Address) -> bool:
        """``sip.allow_sources`` (empty: everyone), applied to every request."""
        return not self.config.allow_sources or _allowed(source.host, self.config.allow_sources)

    def _session_timer_headers(self, request: SipRequest, call: Call) -> list[tuple[str, str]]:
        """RFC 4028 §9 for the 2xx of an INVITE or UPDATE that carries Session-Expires.

        Only when the SRC supports timers: the interval is echoed and the refresher is the SRC
        (``uac``) unless it asked us to refresh, in which case its choice is kept and the node
        refreshes with an UPDATE at half the interval.
        """
        value = request.headers.get("Session-Expires")
        uac_timer = "timer" in (
            request.headers.tokens("Supported") | request.headers.tokens("Require")
        )
        if value is None or not uac_timer:
            call.session_expires, call.refresher = None, None
            return []
        interval_text, _, params = value.partition(";")
        interval = parse_decimal(interval_text.strip(), max_digits=10)
        if interval is None:
            call.log.info("session_expires_ignored", value=value[:80])
            return []
        refresher = "uas" if "refresher=uas" in params.replace(" ", "").lower() else "uac"
        call.session_expires, call.refresher = interval, refresher
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if refresher == "uac":
            headers.append(("Require", "timer"))
        else:
            self._schedule_refresh(call)
        return headers

    def _schedule_refresh(self, call: Call) -> None:
        """Arm our session refresh (an UPDATE at half the interval) when we are the refresher."""
        if call.refresh_timer is not None:
            call.refresh_timer.cancel()
            call.refresh_timer = None
        if call.session_expires is None or self._clock is not None:
            return  # an injected clock drives no loop timers (tests fire them by hand)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        call.refresh_timer = loop.call_later(
            call.session_expires / 2, self.refresh_session, call.data.session_id
        )

    def refresh_session(self, session_id: str) -> None:
        """Send the RFC 4028 refresh the SRC asked us to do (refresher=uas): UPDATE, no body."""
        call = self.calls.get(session_id)
        if call is None or call.session_expires is None or not call.confirmed:
            return
        call.refresh_timer = None
        self._send_in_dialog(
            call.dialog,
            "UPDATE",
            [
                ("Session-Expires", f"{call.session_expires};refresher=uas"),
                ("Supported", "timer"),
            ],
        )
        call.log.info("session_refreshed", interval_s=call.session_expires)
        self._schedule_refresh(call)

    def _session_expires(self, request: SipRequest) -> int | None:
        """RFC 4028: echo the interval when the SRC asks for session timers (it refreshes)."""
        value = request.headers.get("Session-Expires")
        if value is None:
            return None
        return parse_decimal(value.split(";", 1)[0].strip(), max_digits=10)

    def _advertised_host(self, peer_host: str) -> str:
        cache = self._advertise_cache
        cached = cache.get(peer_host)
        if cached is None:
            cached = self._local_address(peer_host)
            cache[peer_host] = cached
            if len(cache) > ADVERTISE_CACHE_SIZE:
                cache.popitem(last=False)
        else:
            cache.move_to_end(peer_host)
        return cached

    def _contact(self, source: Address) -> str:
        host = self.config.advertise_host
        bound = self.listeners.get(source.transport)
        if host is None:
            bound_host = bound[0] if bound else "0.0.0.0"
            host = (
                bound_host if not _is_wildcard(bound_host) else self._advertised_host(source.host)
            )
        port = bound[1] if bound else None
        uri = SipUri("sip", "srs", host, port)
        params = f";transport={source.transport}" if source.transport != "udp" else ""
        return f"<{uri}{params}>;+sip.srs"

    def _media_host(self, peer_host: str) -> str:
        host = self.config.media_advertise_host
        if host is not None:
            return host
        return self._advertised_host(peer_host)

    # ------------------------------------------------------------------ ACK, CANCEL, BYE

    def _on_ack(self, event: AckReceived, now: float) -> None:
        ack = event.ack
        if event.key is not None and event.key in self._bye_after_ack:
            self._send_bye_request(*self._bye_after_ack.pop(event.key))
            return
        dialog = self.dialogs.lookup(ack)
        call = self._by_dialog.get((dialog.call_id, dialog.local_tag)) if dialog else None
        if call is None:
            log.debug("ack_without_dialog", call_id=ack.call_id)
            return
        if event.lenient:
            call.log.info("ack_matched_leniently", cseq=ack.headers.get("CSeq"))
        if ack.cseq_method_mismatch:
            _tolerate_cseq_method(call, ack)
        answered = False
        if ack.body and call.recording.awaiting_answer:
            # The answer to our offer: the initial delayed-offer 200, or a re-INVITE's 200.
            try:
                call.recording.apply_ack(ack)
                answered = True
            except SiprecError as exc:
                call.log.warning("ack_body_rejected", error=exc.reason)
        if answered:
            self._spawn(self._sync_media(call))  # the streams of our offer are now agreed
        if call.confirmed:
            if answered:
                self._touch(call)
                self._snapshot(call)
            return
        call.confirmed = True
        call.data.status = CallStatus.ACTIVE
        call.data.started_at = call.data.started_at or utc_now()
        self._touch(call)
        self._snapshot(call)
        call.log.info("call_active")

    def _on_cancel(self, event: CancelReceived, now: float) -> None:
        cancel = event.cancel
        if not self._source_allowed(event.source):
            self.stats["forbidden"] += 1
            self._respond(event.key, cancel, 403, now, reason="Source Not Allowed")
            return
        if event.invite_key is None:
            self._respond(event.key, cancel, 481, now)
            return
        call = self._by_invite.get(event.invite_key)
        if cancel.cseq_method_mismatch:
            if call is not None:
                _tolerate_cseq_method(call, cancel)
            else:
                log.warning(
                    "sip_tolerated",
                    fault="cseq_method_mismatch",
                    call_id=cancel.call_id,
                    method=cancel.method,
                    cseq=cancel.headers.get("CSeq"),
                )
        # §9.2: the 200 to the CANCEL carries the To tag of the INVITE's response.
        self._respond(event.key, cancel, 200, now, to_tag=call.dialog.local_tag if call else None)
        state = self.transactions.get_state(event.invite_key)
        if state is TransactionState.PROCEEDING:
            invite = self.transactions.get_request(event.invite_key)
            self._respond(
                event.invite_key,
                invite,
                487,
                now,
                to_tag=call.dialog.local_tag if call else None,
            )
            if call is not None:
                self._end_call(call, CallStatus.FAILED, "cancelled before answer")
            log.info("invite_cancelled", call_id=cancel.call_id)
        elif call is not None:
            # INTEROP: a CANCEL that crossed our 200 changes nothing; the SRC sends BYE.
            call.log.info("cancel_after_answer_ignored")

    def _on_in_dialog(self, request: SipRequest, key: TransactionKey, now: float) -> None:
        match = self.dialogs.match(request)
        call = (
            self._by_dialog.get((match.dialog.call_id, match.dialog.local_tag)) if match else None
        )
        if match is None or call is None:
            finished = self._finished_dialog(request)
            if finished is not None and request.method == "BYE":
                log.info("bye_for_finished_call", call_id=request.call_id, session_id=finished[1])
                self._respond(key, request, 200, now)
                return
            if self.recovering:
                # The dialog may be ours, not loaded yet: ask the SRC to retry, never 481.
                log.info(
                    "in_dialog_before_recovery", call_id=request.call_id, method=request.method
                )
                self._respond(
                    key, request, 503, now, reason="Recovering", headers=[("Retry-After", "1")]
                )
                return
            log.info("unknown_dialog", call_id=request.call_id, method=request.method)
            self._respond(key, request, 481, now)
            return
        dialog = match.dialog
        if match.lenient:
            call.log.info("request_matched_leniently", method=request.method)
        check = dialog.check_request(request)
        if check.status is not None:
            call.log.info(
                "in_dialog_rejected",
                method=request.method,
                status=check.status,
                reason=check.reason,
            )
            reason = check.reason or None
            self._respond(key, request, check.status, now, to_tag=dialog.local_tag, reason=reason)
            return
        if check.lenient:
            call.log.info("cseq_out_of_order_accepted", method=request.method, reason=check.reason)
        if request.cseq_method_mismatch:
            _tolerate_cseq_method(call, request)
        self._touch(call)
        if request.method == "BYE":
            if self.transactions.get_state(call.invite_key) is TransactionState.ACCEPTED:
                # A BYE proves the SRC got our 200: stop retransmitting it (lost ACK).
                self.transactions.ack_received(call.invite_key, now)
            self._respond(key, request, 200, now, to_tag=dialog.local_tag)
            self._end_call(call, CallStatus.ENDED, "BYE from SRC")
        elif request.method == "INFO":
            self._respond(key, request, 200, now, to_tag=dialog.local_tag)
        else:
            self._on_modify(call, request, key, now)

    def _on_modify(self, call: Call, request: SipRequest, key: TransactionKey, now: float) -> None:
        """re-INVITE or UPDATE: metadata and/or SDP changes; same ports, same dialog."""
        tag = call.dialog.local_tag
        taken: list[int] = []  # ports bound for new streams: given back if the offer fails
        try:
            try:
                changed = call.recording.apply_update(
                    request,
                    allocate=functools.partial(self._reserve_port, now, taken),
                    max_streams=self.config.max_streams_per_call,
                    max_metadata_elements=self.config.max_metadata_elements,
                )
            except BaseException:
                self.media.release(taken, now)
                raise
        except TooManyStreams as exc:
            self._too_many_streams(key, request, exc, now, call.log, to_tag=tag)
            return
        except UnsupportedBody as exc:
            self._respond(
                key, request, exc.status, now, to_tag=tag, headers=[("Accept", exc.accept)]
            )
            return
        except SiprecError as exc:
            self._count_limit(exc)
            call.log.info(
                "update_rejected", method=request.method, status=exc.status, reason=exc.reason
            )
            self._respond(key, request, exc.status, now, to_tag=tag, reason=_phrase(exc))
            return
        except PortsUnavailable:
            self._respond(
                key,
                request,
                503,
                now,
                to_tag=tag,
                reason="No Media Ports",
                headers=[("Retry-After", str(self.config.retry_after))],
            )
            return
        if call.recording.metadata_error is not None:
            call.data.flag("metadata_unparsed", detail=call.recording.metadata_error)
            call.tolerate("metadata_unparsed", error=call.recording.metadata_error)
        call.dialog.refresh_target(request)
        call.ports = call.recording.ports
        self._spawn(self._sync_media(call))  # new streams open, held ones pause, others resume
        headers: list[tuple[str, str]] = [
            ("Contact", call.dialog.local_contact),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
        ]
        headers += self._session_timer_headers(request, call)
        body = b""
        if call.recording.has_offer(request):
            headers.append(("Content-Type", "application/sdp"))
            body = call.recording.answer_sdp()
        self._respond(key, request, 200, now, to_tag=tag, headers=headers, body=body)
        self._snapshot(call)
        call.log.info(
            "call_updated",
            method=request.method,
            changes=changed,
            streams=call.recording.stream_summary(),
        )

    # ------------------------------------------------------------------ lifecycle

    def _touch(self, call: Call) -> None:
        call.data.last_activity = utc_now()

    def _snapshot(self, call: Call) -> None:
        data = call.data
        data.updated_at = utc_now()
        data.dialog = call.dialog.to_dict()
        data.recording = call.recording.to_dict()
        data.media = {
            "ports": list(call.ports),
            "streams": call.recording.media_snapshot(),
            "state": call.media_state.to_dict() if call.media_state else None,
        }
        data.version += 1
        if self.snapshots is not None:
            self.snapshots.submit(data)

    def _save_data(self, data: CallData) -> None:
        """A snapshot of a call that is no longer live (its finalisation retried)."""
        data.updated_at = utc_now()
        data.version += 1
        if self.snapshots is not None:
            self.snapshots.submit(data)

    def _end_call(self, call: Call, status: str, reason: str) -> None:
        if call.data.is_final:
            return
        now = self.now()
        if call.refresh_timer is not None:
            call.refresh_timer.cancel()
            call.refresh_timer = None
        self.media.release(call.ports, now)
        state = call.media_state
        if state is not None:
            state.closed = True  # an open waiting for its turn must not start any more
            if state.open or state.engaged:  # also what an open in flight (or failed) took
                self._spawn(self._close_media(call))
        call.dialog.terminate()
        self.dialogs.remove(call.dialog)
        self.calls.pop(call.data.session_id, None)
        self._by_dialog.pop((call.dialog.call_id, call.dialog.local_tag), None)
        self._by_invite.pop(call.invite_key, None)
        call.data.status = status
        if call.answered and state is not None and (state.open or state.engaged):
            self.finalisations.hold(call.data, status)  # finalising until the recording is
        call.data.end_reason = reason
        call.data.ended_at = utc_now()
        self.stats["calls_ended" if status == CallStatus.ENDED else "calls_failed"] += 1
        self._snapshot(call)
        duration = None
        if call.data.started_at is not None:
            duration = round((call.data.ended_at - call.data.started_at).total_seconds(), 3)
        call.log.info("call_ended", status=status, reason=reason, duration_s=duration)

    def set_operator_pause(self, session_id: str, paused: bool) -> Call:
        """Pause or resume recording of a live call (admin API); raises KeyError if unknown."""
        call = self.calls[session_id]
        if call.recording.operator_paused != paused:
            call.recording.operator_paused = paused
            if call.media_state is not None:
                call.media_state.operator_paused = paused
                self._spawn(self._sync_media(call))
            self._snapshot(call)
            call.log.info("recording_paused" if paused else "recording_resumed", by="operator")
        return call

    def request_metadata(self, session_id: str) -> Call:
        """Ask the SRC for a fresh metadata snapshot (RFC 7866 §6.1.2): an UPDATE carrying
        ``application/rs-metadata-request``; the SRC answers with a complete snapshot in a later
        re-INVITE or UPDATE. KeyError if unknown; ValueError if the call cannot take it now.
        """
        call = self.calls[session_id]
        if not call.confirmed:
            raise ValueError("the call is not established yet")
        if call.remote_allow and "UPDATE" not in call.remote_allow:
            raise ValueError("the SRC does not allow UPDATE")
        part = metadata_request_part()
        headers = [
            ("Content-Type", part.content_type),
            ("Content-Disposition", f"{part.disposition};handling=required"),
            ("User-Agent", self.config.user_agent),
        ]
        self._send_in_dialog(call.dialog, "UPDATE", headers, part.content)
        call.log.info("metadata_requested")
        return call

    def stop_call(self, session_id: str) -> Call:
        """End a live call from our side (admin API): BYE, then finalise; KeyError if unknown."""
        call = self.calls[session_id]
        self.send_bye(call, "stopped by operator")
        return call

    def send_bye(self, call: Call, reason: str) -> None:
        """End a call from our side (operator stop, shutdown, timeout) and finalise it.

        Answered and acknowledged: BYE now. Answered but not yet acknowledged: the BYE waits
        for the ACK or Timer H (RFC 3261 §15), the recording ends at once. Not answered: 480.
        """
        now = self.now()
        if call.confirmed:
            self._send_bye_request(call.dialog, reason)
            self._end_call(call, CallStatus.ENDED, reason)
            return
        if call.answered:
            # A copy of the dialog as it stands: ending the call terminates the original.
            self._bye_after_ack[call.invite_key] = (dataclasses.replace(call.dialog), reason)
            self._end_call(call, CallStatus.ENDED, reason)
            return
        if self.transactions.get_state(call.invite_key) is TransactionState.PROCEEDING:
            # Not answered yet: refuse the INVITE so that the SRC can try another recorder.
            invite = self.transactions.get_request(call.invite_key)
            self._respond(call.invite_key, invite, 480, now, reason="Recording Stopped")
            self._flush()
            self._schedule_timer()
        self._end_call(call, CallStatus.FAILED, reason)

    def _send_bye_request(self, dialog: Dialog, reason: str) -> None:
        self._send_in_dialog(
            dialog,
            "BYE",
            [("Reason", f'SIP;cause=200;text="{reason}"'), ("User-Agent", self.config.user_agent)],
        )

    def _send_in_dialog(
        self, dialog: Dialog, method: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> TransactionKey:
        """Send a request in ``dialog`` through a client transaction."""
        peer = dialog.peer
        listener = self.listeners.get(peer.transport)
        sent_by = self.config.advertise_host or (
            listener[0]
            if listener and not _is_wildcard(listener[0])
            else self._advertised_host(peer.host)
        )
        port = listener[1] if listener else 5060
        via = f"SIP/2.0/{peer.transport.upper()} {sent_by}:{port};branch={new_branch()};rport"
        request = dialog.create_request(method, via, headers=headers, body=body)
        key = self.transactions.send_request(
            request, _request_destination(request, peer), self.now()
        )
        self._flush()
        self._schedule_timer()
        return key

    async def drain(self, grace: float = 0.0, deadline: float | None = None) -> None:
        """Refuse new calls (503), give live ones ``grace`` seconds to end on their own, then
        BYE and finalise the rest. With ``deadline`` (seconds from the start, at least
        ``grace``), wait until then at most for the BYEs' answers and the finalisations."""
        self.draining = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        log.info("draining", live_calls=len(self.calls), grace_s=grace, deadline_s=deadline)
        while self.calls and loop.time() < start + grace:
            await asyncio.sleep(0.05)
        left = list(self.calls.values())
        for call in left:
            self.send_bye(call, "recorder shutting down")
        if deadline is None:
            return
        end = start + max(deadline, grace)
        # The BYEs' answers are waited for a few retransmissions at most (a lost BYE over UDP
        # is sent again at T1 and 3*T1): an SRC that is gone must not hold the stop up.
        linger = loop.time() + BYE_LINGER_T1 * self.config.timers.t1
        while loop.time() < end and (
            self._tasks or (self.transactions.pending_requests and loop.time() < linger)
        ):
            await asyncio.sleep(0.05)
        figures = {
            "ended_by_us": len(left),
            "waited_s": round(loop.time() - start, 3),
            "unfinished_tasks": len(self._tasks),
            "unanswered_requests": self.transactions.pending_requests,
        }
        if self._tasks:  # finalisations still running complete before the node exits
            log.warning("drain_deadline_passed", **figures)
        log.info("drained", **figures)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush snapshots, stop timers, close the media sockets."""
        await self.idle()
        for task in (self._activity_task, self._rtp_task):
            if task is not None:
                task.cancel()
        self._activity_task = self._rtp_task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.idle()  # media closes spawned by the last calls' ends
        self.disk.stop()
        await self.finalisations.stop()
        await self.engine.stop()
        self.media.close()
        if self.snapshots is not None:
            await self.snapshots.close(timeout)


def _tolerate_cseq_method(call: Call, request: SipRequest) -> None:
    """INTEROP: a BYE, ACK or CANCEL whose CSeq names another method is what its request line
    says (``message.CSEQ_METHOD_TOLERATED``); logged once per call."""
    call.tolerate("cseq_method_mismatch", method=request.method, cseq=request.headers.get("CSeq"))


def _reason_of(exc: SipParseError | SiprecError) -> str:
    """The reason phrase for a request refused by a parse error."""
    if isinstance(exc, SiprecError):
        return _phrase(exc)
    text = "".join(c if 32 <= ord(c) < 127 else " " for c in exc.reason)[:80].strip()
    return f"Bad Request ({text})" if text else "Bad Request"


def _phrase(exc: SiprecError) -> str:
    """A one-line reason phrase carrying the error (truncated, printable ASCII)."""
    text = "".join(c if 32 <= ord(c) < 127 else " " for c in exc.reason)[:80].strip()
    return f"{exc.reason_phrase} ({text})" if text else exc.reason_phrase


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def _allowed(
    host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def _request_destination(request: SipRequest, peer: Address) -> Address:
    """Where an in-dialog request goes: the connection the dialog uses, else the next hop URI."""
    if peer.reliable:
        return peer
    target = request.headers.get_all("Route")
    uri_text = request.uri
    if target:
        from siprec_node.sip.uri import NameAddr

        uri_text = NameAddr.parse(target[0]).uri
    try:
        uri = SipUri.parse(uri_text)
        return Address("udp", uri.host, uri.port or 5060, None)
    except SipParseError:
        return peer
