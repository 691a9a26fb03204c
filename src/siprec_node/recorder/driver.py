"""The one asyncio driver of the call-control core, in the manner of aioquic's protocol.

``CallDriver`` feeds the core (``sip.call_control.CallControl``) what the node receives and
the event loop's clock, and after every input runs one pump: send the core's datagrams, start
its effects (media engine, snapshots, finalisation) and re-arm one timer at ``next_timer()``.
Effects whose outcome matters to the core are awaited in tasks that feed the outcome back
(``media_opened``/``media_failed``, ``media_closed``, ``finalised``) and pump again.

The node's application side (``app``, the HTTP API, the session manager) talks to this class;
it exposes the core's registry and counters read-only-ish, as the node's handler always did.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

import structlog

from siprec_node.media.disk import DiskSpace
from siprec_node.media.engine import LocalEngine, MediaEngine
from siprec_node.media.finalise import FinalisedRecording
from siprec_node.media.port_allocator import PortAllocator, PortRange
from siprec_node.media.rtp_ports import RtpPorts
from siprec_node.media.worker_engine import WorkerEngine
from siprec_node.recorder import recovery
from siprec_node.recorder.call_media import CallMedia
from siprec_node.recorder.config import HandlerConfig
from siprec_node.recorder.finalisation import finalise_recording
from siprec_node.recorder.finalisations import Finalisations
from siprec_node.recorder.finalise_pool import FinalisePool
from siprec_node.recorder.snapshots import SnapshotWriter
from siprec_node.sip.call import CallData, CallStore, MemoryCallStore, utc_now
from siprec_node.sip.call_control import CallControl
from siprec_node.sip.calls import Call
from siprec_node.sip.dialog import DialogTable
from siprec_node.sip.effects import (
    CallEnded,
    CloseMedia,
    DiscardMedia,
    Effect,
    Finalise,
    OpenMedia,
    ReopenMedia,
    SaveSnapshot,
    UpdateMedia,
)
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.media_state import MediaState
from siprec_node.sip.rtp_timeout import RtpTimeout, check_interval
from siprec_node.sip.transaction import Address, TransactionLayer
from siprec_node.siprec.recording_session import RecordingSession

log = structlog.get_logger("siprec_node.recorder.driver")

BYE_LINGER_T1 = 4
"""How long (in T1) a drain waits for the answers to its BYEs once they are sent."""

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


class CallDriver:
    """Runs the call-control core on the event loop against the media engine and the store.

    ``clock``: a clock of the caller's (tests) instead of the loop's; the caller then fires
    the timers itself (``on_timer``) and runs the RTP checks (``check_rtp``).
    """

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
        self.media = RtpPorts(
            PortAllocator(
                PortRange(self.config.port_min, self.config.port_max), self.config.port_cooldown
            ),
            host=self.config.media_host,
        )
        self.core = CallControl(self.config.call_control(), self.media, local_address=local_address)
        self.engine: MediaEngine = (
            WorkerEngine(
                self.config.media_workers,
                log_level=self.config.log_level,
                log_format=self.config.log_format,
                on_worker_died=self._on_worker_died,
                receive_path=self.config.media_receive_path,
                receive_interval=self.config.media_receive_interval,
            )
            if self.config.media_workers > 0
            else LocalEngine(self.config.media_receive_path, self.config.media_receive_interval)
        )
        self.call_media = CallMedia(self.media, self.engine, self.config.source_check)
        self.store: CallStore = self._call_store()
        self.snapshots: SnapshotWriter | None = None
        self.finalise_pool = FinalisePool(
            self.config.finalise_workers,
            self.config.finalise_queue,
            log_level=self.config.log_level,
            log_format=self.config.log_format,
            on_room=self._finalise_room,
        )
        self.finalisations = Finalisations(
            self.finalise,
            self._save_data,
            keep_parts=self.config.keep_parts,
            retry_initial=self.config.finalise_retry[0],
            retry_max=self.config.finalise_retry[1],
            free_slots=lambda: self.finalise_pool.queue_size - self.finalise_pool.depth,
        )
        self.disk = DiskSpace(
            self.config.recording_dir,
            self.config.min_free,
            on_recovered=self.finalisations.wake,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._activity_task: asyncio.Task[None] | None = None
        self._activity_seen: dict[str, int] = {}
        self._rtp_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None

    # ------------------------------------------------------------------ wiring

    def _call_store(self) -> CallStore:
        # `is None`, not `or`: an empty MemoryCallStore is falsy (it has __len__).
        if self.config.call_store is not None:
            return self.config.call_store
        if self.config.session_store is not None:
            # SPEC's Python API hands the recorder a rich store: bridged by the adapter.
            from siprec_node.adapters import SharedCallStore

            return SharedCallStore(self.config.session_store, self.node_id)
        return MemoryCallStore()

    def attach(self, send: Sender) -> None:
        """Set the function that puts bytes on the wire."""
        self._send = send

    def set_listener(self, transport: str, host: str, port: int) -> None:
        """Tell the core where the node listens (for Contact and Via headers)."""
        self.core.addressing.set_listener(transport, host, port)

    def now(self) -> float:
        """The core's clock (the event loop's monotonic time when running in one)."""
        if self._clock is not None:
            return self._clock()
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    # The core's registry and counters, as the node's application side reads them.

    @property
    def calls(self) -> dict[str, Call]:
        """Live calls by session id."""
        return self.core.calls

    @property
    def stats(self) -> dict[str, int]:
        """SIP and call counters."""
        return self.core.stats

    @property
    def transactions(self) -> TransactionLayer:
        """The core's transaction layer."""
        return self.core.transactions

    @property
    def dialogs(self) -> DialogTable:
        """The core's dialogs."""
        return self.core.dialogs

    @property
    def rtp_timeout(self) -> RtpTimeout:
        """The RTP-timeout watch and its counters."""
        return self.core.rtp_timeout

    @property
    def listeners(self) -> dict[str, tuple[str, int]]:
        """Transport -> (bound host, port)."""
        return self.core.addressing.listeners

    @property
    def recordings(self) -> dict[str, int]:
        """Recordings finalised here, by verdict."""
        return self.core.recordings

    @property
    def recording_problems(self) -> dict[str, int]:
        """Recordings finalised here that have each problem."""
        return self.core.recording_problems

    @property
    def draining(self) -> bool:
        """True once the node refuses new calls."""
        return self.core.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.core.draining = value

    @property
    def recovering(self) -> bool:
        """True until a restarted node has restored its calls from the store."""
        return self.core.recovering

    @recovering.setter
    def recovering(self, value: bool) -> None:
        self.core.recovering = value

    @property
    def ready(self) -> bool:
        """False while snapshots cannot be written (store down) or while draining."""
        return not self.draining and (self.snapshots is None or self.snapshots.healthy)

    # ------------------------------------------------------------------ the pump

    def pump(self) -> None:
        """Send what the core wants sent, start its effects, re-arm its one timer."""
        core = self.core
        for data, destination in core.datagrams_to_send():
            self._emit(data, destination)
        while (effect := core.next_effect()) is not None:
            self._start(effect)
        self._arm_timer()

    def _emit(self, data: bytes, destination: Address) -> None:
        if self._send is None:
            log.error("no_transport_attached")
            return
        self._send(data, destination)

    def _arm_timer(self) -> None:
        if self._clock is not None:
            return  # a clock of the caller's is not the loop's: the caller calls on_timer
        deadline = self.core.next_timer()
        if deadline is None or deadline == self._timer_deadline:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # driven by hand: the caller calls on_timer
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.on_timer()

    # ------------------------------------------------------------------ inputs

    def on_message(self, data: bytes, source: Address) -> None:
        """Handle one datagram or framed stream message."""
        self.core.disk_low = self.disk.low
        self.core.receive(data, source, self.now())
        self.pump()

    def on_malformed(self, data: bytes, error: SipParseError, source: Address) -> None:
        """Answer a message that does not parse (400/413/505) when it is an answerable request."""
        self.core.malformed(data, error, source)
        self.pump()

    def on_timer(self) -> None:
        """Fire the core's due timers."""
        self.core.handle_timer(self.now())
        self.pump()

    def check_rtp(self, activity: dict[str, dict[int, int]]) -> None:
        """One RTP-timeout check of every live call against the engine's counters."""
        self.core.check_rtp(activity, self.now())
        self.pump()

    def refresh_session(self, session_id: str) -> None:
        """Send the session refresh the SRC asked us to do, now."""
        self.core.refresh_session(session_id, self.now())
        self.pump()

    def set_operator_pause(self, session_id: str, paused: bool) -> Call:
        """Pause or resume recording of a live call (admin API); raises KeyError if unknown."""
        call = self.core.set_operator_pause(session_id, paused)
        self.pump()
        return call

    def request_metadata(self, session_id: str) -> Call:
        """Ask the SRC for a fresh metadata snapshot (see ``CallControl.request_metadata``)."""
        call = self.core.request_metadata(session_id, self.now())
        self.pump()
        return call

    def stop_call(self, session_id: str) -> Call:
        """End a live call from our side (admin API): BYE, then finalise; KeyError if unknown."""
        call = self.core.stop_call(session_id, self.now())
        self.pump()
        return call

    def send_bye(self, call: Call, reason: str) -> None:
        """End a call from our side (see ``CallLifecycle.send_bye``)."""
        self.core.send_bye(call, reason, self.now())
        self.pump()

    def expire(self, session_id: str, reason: str = "session timeout") -> bool:
        """End a live call the session manager found idle for ``session_timeout``."""
        found = self.core.expire(session_id, self.now(), reason)
        self.pump()
        return found

    def adopt_finished(self, data: CallData, reason: str) -> None:
        """Remember the dialog of a call finalised on behalf of a dead node."""
        self.core.adopt_finished(data, reason)

    def _lost_to_another_node(self, session_id: str, reason: str) -> None:
        self.core.lose(session_id, reason, self.now())
        self.pump()

    async def recover(self) -> list[str]:
        """Restore this node's live calls from the store (see ``recovery.recover``)."""
        try:
            return await recovery.recover(
                self.core,
                self.store,
                self.now(),
                self.finalisations,
                self.config.recording_dir,
                self.finalise_pool.parts_in_flight,
            )
        finally:
            self.pump()

    async def finalise_orphan(self, data: CallData, reason: str) -> FinalisedRecording | None:
        """Finalise the recording of a dead node's call this node took over (status failed)."""
        return await recovery.finalise_orphan(data, reason, self.finalise)

    async def verify_ownership(self) -> list[str]:
        """After a stall: end the live calls the store no longer lists as this node's."""

        def pending() -> set[str]:
            return self.snapshots.pending_ids if self.snapshots is not None else set()

        try:
            return await recovery.verify_ownership(self.core, self.store, pending, self.now)
        finally:
            self.pump()

    # ------------------------------------------------------------------ effects

    def _start(self, effect: Effect) -> None:
        if isinstance(effect, SaveSnapshot):
            if self.snapshots is not None:
                self.snapshots.submit(effect.data)
        elif isinstance(effect, OpenMedia):
            self._spawn(self._open_media(effect))
        elif isinstance(effect, UpdateMedia):
            self._spawn(self._update_media(effect))
        elif isinstance(effect, ReopenMedia):
            self._spawn(self._reopen_media(effect))
        elif isinstance(effect, CloseMedia):
            self._spawn(self._close_media(effect))
        elif isinstance(effect, Finalise):
            self._spawn(self._finalise(effect))
        elif isinstance(effect, DiscardMedia):
            removed = self.call_media.discard(effect.state)
            _log(effect).info("media_discarded", parts_removed=removed)
        elif isinstance(effect, CallEnded):
            self._activity_seen.pop(effect.session_id, None)

    async def _open_media(self, effect: OpenMedia) -> None:
        """Open a new call's streams, then tell the core (which answers 200 or 503)."""
        if not effect.state.closed:  # not cancelled while waiting for its turn
            try:
                await self.call_media.sync(
                    effect.session_id, effect.state, effect.streams, peer=effect.peer
                )
            except Exception as exc:  # the INVITE must get a final response whatever happened
                self.core.media_failed(effect.session_id, exc, self.now())
                self.pump()
                return
        self.core.media_opened(effect.session_id, self.now())
        self.pump()
        self.finalise_pool.warm()

    async def _update_media(self, effect: UpdateMedia) -> None:
        """Bring the engine in line with a call's negotiated streams and pause state."""
        if effect.state.closed:
            return
        try:
            changes = await self.call_media.sync(
                effect.session_id, effect.state, effect.streams, peer=effect.peer
            )
        except Exception as exc:
            _log(effect).error("media_sync_failed", error=repr(exc))
            return
        if changes:
            _log(effect).debug("media_synced", changes=changes)

    async def _reopen_media(self, effect: ReopenMedia) -> None:
        """Record a recovered call's streams again, into the same files."""
        try:
            await self.call_media.reopen(
                effect.session_id, effect.state, effect.streams, peer=effect.peer
            )
        except Exception as exc:
            _log(effect).error("media_reopen_failed", error=repr(exc))
            return
        _log(effect).info("media_reopened", streams=sorted(effect.state.open))

    async def _close_media(self, effect: CloseMedia) -> None:
        """Close the streams of an ended call, then let the core decide what follows
        (finalisation, or removing the parts of a call never answered)."""
        try:
            stats = await self.call_media.close(effect.session_id, effect.state)
        except Exception as exc:
            _log(effect).error("media_close_failed", error=repr(exc))
            stats = {}
        self.finalisations.note_write_errors(effect.data, stats, _log(effect))
        _log(effect).info(
            "media_closed",
            streams={
                str(i): {k: s.get(k) for k in ("packets", "lost", "duplicates", "late")}
                for i, s in stats.items()
            },
        )
        self.core.media_closed(effect.session_id)
        self.pump()

    async def _finalise(self, effect: Finalise) -> None:
        try:
            await self.finalise(effect.data, effect.state, effect.session)
        finally:
            self.core.finalised(effect.session_id)
            self.pump()

    async def finalise(
        self, data: CallData, state: MediaState | None, session: RecordingSession | None
    ) -> FinalisedRecording | None:
        """Write the final recording of a call from its parts (in the finalisation pool),
        counted by verdict for the metrics."""
        result = await finalise_recording(
            data,
            state,
            session,
            fmt=self.config.recording_format,
            channels=self.config.recording_channels,
            pool=self.finalise_pool,
            finalisations=self.finalisations,
        )
        if result is not None:
            verdict = result.verdict.call
            self.core.count_verdict(verdict.status, tuple(verdict.kinds))
            if self.config.on_finalised is not None:
                self.config.on_finalised(data, result)
        return result

    def _finalise_room(self) -> None:
        self.finalisations.room()

    def _save_data(self, data: CallData) -> None:
        """A snapshot of a call that is no longer live (its finalisation retried)."""
        data.updated_at = utc_now()
        data.version += 1
        if self.snapshots is not None:
            self.snapshots.submit(data)

    async def _on_worker_died(self, index: int, sessions: set[str]) -> None:
        """A media worker crashed and was restarted: its calls' streams are opened again."""
        for session_id in sessions:
            effect = self.core.reopen_media(session_id)
            if effect is not None:
                _log(effect).warning("media_worker_restarted_for_call", worker=index)
                await self._reopen_media(effect)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The tasks catch what a peer can cause: anything escaping is a bug of ours.
            self.core.stats["internal_errors"] += 1
            log.error("handler_task_failed", error=repr(error), exc_info=error)

    async def idle(self) -> None:
        """Wait until every task started for an effect has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ loops

    async def start(self) -> None:
        """Start the snapshot writer and the activity reporter; once, inside the event loop."""
        if self.snapshots is None:
            self.snapshots = SnapshotWriter(self.store, on_rejected=self._lost_to_another_node)
            await self.engine.start()
            self.finalise_pool.start()
            self.disk.start()
            self.finalisations.start()
        if self._activity_task is None and self.config.activity_interval > 0:
            self._activity_task = asyncio.get_running_loop().create_task(self._report_activity())
        if self._rtp_task is None and self.rtp_timeout.action != "none" and self._clock is None:
            # (a clock of the caller's is not the loop's: its owner calls check_rtp)
            self._rtp_task = asyncio.get_running_loop().create_task(self._watch_rtp())

    async def _report_activity(self) -> None:
        """Tell the store which calls received RTP lately (session_timeout counts RTP too); one
        batched read of every stream's datagram counter per interval (a request per worker)."""
        seen = self._activity_seen
        while True:
            await asyncio.sleep(self.config.activity_interval)
            try:
                activity = await self.engine.activity()
            except Exception:  # a worker restarting: next round
                continue
            touches: dict[str, datetime] = {}
            for session_id in list(self.core.calls):
                packets = sum(activity.get(session_id, {}).values())
                if packets == seen.get(session_id, 0):
                    continue
                seen[session_id] = packets
                data = self.core.touch(session_id)
                if data is not None:
                    touches[session_id] = data.last_activity
            if touches:
                try:
                    await self.store.touch_many(touches)
                except Exception as exc:  # an outage: the next snapshots carry the times
                    log.debug("activity_touch_failed", calls=len(touches), error=str(exc))
            for session_id in [k for k in seen if k not in self.core.calls]:
                del seen[session_id]

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
        ended = self.core.end_all("recorder shutting down", self.now())
        self.pump()
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
            "ended_by_us": ended,
            "waited_s": round(loop.time() - start, 3),
            "unfinished_tasks": len(self._tasks),
            "unanswered_requests": self.transactions.pending_requests,
        }
        if self._tasks:  # finalisations still running complete before the node exits
            log.warning("drain_deadline_passed", **figures)
        log.info("drained", **figures)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush snapshots, stop timers, close the media sockets, stop the finalisation pool
        (``timeout`` bounds each: finalisation retries under way, the pool's running jobs, the
        snapshots' flush)."""
        await self.idle()
        for task in (self._activity_task, self._rtp_task):
            if task is not None:
                task.cancel()
        self._activity_task = self._rtp_task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.idle()  # media closes started by the last calls' ends
        self.disk.stop()
        await self.finalisations.stop(timeout)
        await self.finalise_pool.stop(timeout)
        await self.engine.stop()
        self.media.close()
        if self.snapshots is not None:
            await self.snapshots.close(timeout)


def _log(
    effect: OpenMedia | UpdateMedia | ReopenMedia | CloseMedia | DiscardMedia,
) -> Any:
    """A logger bound to the call an effect is about."""
    return log.bind(call_id=effect.call_id, session_id=effect.session_id)
