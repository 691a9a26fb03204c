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
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from siprec_node import __version__
from siprec_node.media.engine import LocalEngine, MediaEngine, WorkerEngine
from siprec_node.media.finalise import (
    CallInfo,
    FinalisedRecording,
    finalise_call,
    participants_from_session,
)
from siprec_node.media.port_allocator import PortAllocator, PortRange
from siprec_node.media.rtp_ports import RtpPorts
from siprec_node.sip.call import CallData, CallStatus, CallStore, MemoryCallStore, utc_now
from siprec_node.sip.call_media import CallMedia, MediaState, new_media_state
from siprec_node.sip.dialog import Dialog, DialogState, DialogTable
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import (
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_SIZE,
    SipRequest,
    SipResponse,
    error_response_for,
    make_response,
    parse_message,
)
from siprec_node.sip.recording import (
    CallRecording,
    PortsUnavailable,
    RecordingOffer,
    TooManyStreams,
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
from siprec_node.sip.uri import SipUri
from siprec_node.siprec.errors import SiprecError, UnsupportedBody
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
    recording_dir: str = "recordings"
    """Root of the recordings (``recording.directory``)."""
    media_workers: int = 0
    """Media worker processes; 0 records on the SIP process's own event loop."""
    media_receive_path: str = "auto"
    """``media.receive_path``: ``auto``, ``c`` or ``python`` (see ``media.fastpath``)."""
    recording_format: str = "wav"
    recording_channels: str = "stereo"
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
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722", "opus")
    timers: TimerConfig = field(default_factory=TimerConfig)
    retry_after: int = 30
    max_message_size: int = DEFAULT_MAX_SIZE
    max_headers: int = DEFAULT_MAX_HEADERS
    user_agent: str = f"siprec-node/{__version__}"

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
        # Calls we ended before their ACK came: the BYE goes when it does (or at Timer H).
        self._bye_after_ack: dict[TransactionKey, tuple[Dialog, str]] = {}
        # Dialogs of calls finalised for a dead node, answerable if their SRC fails over here.
        self._finished: dict[tuple[str, str], tuple[Dialog, str]] = {}
        self._finished_by_remote: dict[tuple[str, str | None], tuple[str, str]] = {}
        self.store: CallStore = self._call_store()
        self.snapshots: SnapshotWriter | None = None
        self.listeners: dict[str, tuple[str, int]] = {}  # transport -> (bound host, port)
        self.draining = False
        self.recovering = False
        """True while a restarted node has not yet restored its calls from the store: requests
        for dialogs it does not know get 503 + Retry-After then, never 481."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._advertise_cache: dict[str, str] = {}
        self.stats: dict[str, int] = {
            "requests": 0,
            "responses": 0,
            "malformed": 0,
            "calls_started": 0,
            "calls_ended": 0,
            "calls_failed": 0,
            "rejected": 0,
            "too_many_streams": 0,
        }

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
        if self._activity_task is None and self.config.activity_interval > 0:
            self._activity_task = asyncio.get_running_loop().create_task(self._report_activity())

    async def _report_activity(self) -> None:
        """Tell the store which calls received RTP lately (session_timeout counts RTP too)."""
        seen: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.config.activity_interval)
            for session_id, call in list(self.calls.items()):
                try:
                    streams = await self.engine.stats(session_id)
                except Exception:  # a worker restarting: next round
                    continue
                packets = sum(int(s.get("packets", 0)) for s in streams.values())
                if packets != seen.get(session_id, 0):
                    seen[session_id] = packets
                    call.data.last_activity = utc_now()
                    try:
                        await self.store.touch(session_id, call.data.last_activity)
                    except Exception as exc:  # an outage: the next snapshot carries the time
                        log.debug("activity_touch_failed", session_id=session_id, error=str(exc))
            for session_id in [k for k in seen if k not in self.calls]:
                del seen[session_id]

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
            return None
        info = CallInfo(
            session_id=data.session_id,
            call_id=data.call_id,
            node_id=data.node_id,
            status=data.status,
            end_reason=data.end_reason,
            started_at=data.started_at or data.created_at,
            ended_at=data.ended_at,
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
        except Exception as exc:
            log.exception("recording_finalise_failed", session_id=data.session_id, error=repr(exc))
            return None
        data.turns.clear()
        result.record_turns(data)
        state.files = [str(path) for path in result.files]
        state.sidecar = str(result.sidecar)
        log.info(
            "recording_finalised",
            call_id=data.call_id,
            session_id=data.session_id,
            files=state.files,
            sidecar=state.sidecar,
            duration_s=result.duration_s,
            turns=len(data.turns),
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
        if isinstance(message, SipResponse):
            self.stats["responses"] += 1
            events = self.transactions.receive_response(message, now)
        else:
            self.stats["requests"] += 1
            events = self.transactions.receive_request(message, source, now)
        self._process(events, now)

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
            try:
                self._dispatch(event, now)
            except Exception:
                log.exception("event_failed", event_type=type(event).__name__)
                if isinstance(event, RequestReceived | CancelReceived):
                    request = event.request if isinstance(event, RequestReceived) else event.cancel
                    self._respond_safely(event.key, make_response(request, 500), now)
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
            log.info(
                "response_received",
                call_id=event.response.call_id,
                method=event.key.method,
                status=event.response.status,
            )
        elif isinstance(event, ClientTimeout):
            log.warning(
                "request_timeout", call_id=event.request.call_id, method=event.request.method
            )

    def _on_request(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> None:
        method = request.method
        in_dialog = request.to.tag is not None
        if method == "INVITE" and not in_dialog:
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
        rejection = self._admission(request, source)
        if rejection is not None:
            status, reason, headers = rejection
            self.stats["rejected"] += 1
            call_log.info("invite_rejected", status=status, reason=reason)
            self._respond(key, request, status, now, reason=reason, headers=headers)
            return
        taken: list[int] = []  # ports bound for this offer: given back if it fails
        try:
            offer = RecordingOffer.from_request(request)
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
        if not task.cancelled() and task.exception() is not None:
            log.error("handler_task_failed", error=repr(task.exception()))

    async def idle(self) -> None:
        """Wait until every pending answer task has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _admission(
        self, request: SipRequest, source: Address
    ) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        retry = [("Retry-After", str(self.config.retry_after))]
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards is not None and max_forwards.strip() == "0":
            return 483, None, []
        if self.draining:
            return 503, "Draining", retry
        if self.config.allow_sources and not _allowed(source.host, self.config.allow_sources):
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
            value = expires.split(";", 1)[0].strip()
            if not value.isdigit():
                return 400, "Bad Session-Expires", []
            if int(value) < MIN_SE:
                return 422, "Session Interval Too Small", [("Min-SE", str(MIN_SE))]
        return None

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
        if not interval_text.strip().isdigit():
            call.log.info("session_expires_ignored", value=value)
            return []
        interval = int(interval_text.strip())
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
        return int(value.split(";", 1)[0].strip())

    def _advertised_host(self, peer_host: str) -> str:
        cached = self._advertise_cache.get(peer_host)
        if cached is None:
            cached = self._local_address(peer_host)
            self._advertise_cache[peer_host] = cached
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
        if event.invite_key is None:
            self._respond(event.key, cancel, 481, now)
            return
        call = self._by_invite.get(event.invite_key)
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
    ) -> None:
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
        self.transactions.send_request(request, _request_destination(request, peer), self.now())
        self._flush()
        self._schedule_timer()

    async def drain(self, grace: float = 0.0) -> None:
        """Refuse new calls (503), give live ones ``grace`` seconds, then BYE and finalise."""
        self.draining = True
        log.info("draining", live_calls=len(self.calls), grace_s=grace)
        deadline = self.now() + grace
        while self.calls and self.now() < deadline:
            await asyncio.sleep(0.1)
        for call in list(self.calls.values()):
            self.send_bye(call, "recorder shutting down")

    async def close(self, timeout: float = 5.0) -> None:
        """Flush snapshots, stop timers, close the media sockets."""
        await self.idle()
        if self._activity_task is not None:
            self._activity_task.cancel()
            self._activity_task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.idle()  # media closes spawned by the last calls' ends
        await self.engine.stop()
        self.media.close()
        if self.snapshots is not None:
            await self.snapshots.close(timeout)


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
