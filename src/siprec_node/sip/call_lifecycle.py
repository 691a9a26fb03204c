"""The state of the call-control core and the lifecycle of its calls (no I/O).

``CallLifecycle`` holds what the core owns (transactions, dialogs, the registry of live calls,
the effects and datagrams waiting for the driver) and every way a call moves through its
lifecycle table (``sip.calls``): answered when its media opened, ended from either side,
finalised, refreshed, probed, restored after a restart. ``CallControl`` (``call_control.py``)
builds on it with the handling of each SIP request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from siprec_node.media.verdict import PROBLEM_KINDS
from siprec_node.sip.call import CallData, CallStatus, utc_now
from siprec_node.sip.call_policy import (
    ALLOWED_METHODS,
    SUPPORTED_OPTIONS,
    Addressing,
    request_destination,
    session_timer,
    session_timer_headers,
)
from siprec_node.sip.calls import PHASE_OF_STATUS, Call, CallControlConfig, CallPhase, PortPool
from siprec_node.sip.dialog import Dialog, DialogState, DialogTable
from siprec_node.sip.effects import (
    CallEnded,
    CloseMedia,
    DiscardMedia,
    Effect,
    Finalise,
    MediaEffect,
    ReopenMedia,
    SaveSnapshot,
    UpdateMedia,
)
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.media_state import MediaState
from siprec_node.sip.message import SipRequest, SipResponse, make_response
from siprec_node.sip.overload import OpenBacklog
from siprec_node.sip.rate_limit import LogThrottle, TokenBuckets
from siprec_node.sip.recording import CallRecording
from siprec_node.sip.rtp_timeout import STALLED, EndCall, MarkStalled, RtpTimeout, SendProbe
from siprec_node.sip.transaction import (
    Address,
    TransactionKey,
    TransactionLayer,
    TransactionState,
    new_branch,
    new_tag,
)
from siprec_node.siprec.multipart import metadata_request_part

log = structlog.get_logger("siprec_node.sip.call_control")

FINISHED_DIALOGS = 10000
"""Dialogs of calls finalised for a dead node kept answerable (oldest forgotten first)."""


class CallLifecycle:
    """The core's state, its outputs, and the moves of its calls."""

    def __init__(
        self,
        config: CallControlConfig,
        ports: PortPool,
        *,
        local_address: Callable[[str], str],
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.ports = ports
        self.addressing = Addressing(
            local_address,
            advertise_host=config.advertise_host,
            media_advertise_host=config.media_advertise_host,
        )
        self.transactions = TransactionLayer(config.timers)
        self.dialogs = DialogTable()
        self.calls: dict[str, Call] = {}  # by session id
        self._by_dialog: dict[tuple[str, str], Call] = {}  # (Call-ID, local tag)
        self._by_invite: dict[TransactionKey, Call] = {}
        self._closing: dict[str, Call] = {}  # ended calls whose media is being closed
        self.opening = OpenBacklog(config.max_answer_delay)
        """Accepted calls whose media is opening, oldest first (``sip.max_answer_delay``)."""
        # Session refreshes due, (deadline, seq, session id): an entry whose call is gone or
        # whose refresh_at moved is stale and skipped, so no timer ever scans the live calls.
        self._refreshes: list[tuple[float, int, str]] = []
        self._refresh_seq = itertools.count()
        self.rtp_timeout = RtpTimeout(config.rtp_timeout, config.rtp_timeout_action)
        self._probes: dict[TransactionKey, str] = {}  # OPTIONS probe -> session id
        # Calls we ended before their ACK came: the BYE goes when it does (or at Timer H).
        self._bye_after_ack: dict[TransactionKey, tuple[Dialog, str]] = {}
        # Dialogs of calls finalised for a dead node, answerable if their SRC fails over here.
        self._finished: dict[tuple[str, str], tuple[Dialog, str]] = {}
        self._finished_by_remote: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._effects: list[Effect] = []
        self.draining = False
        self.disk_low = False
        """Set by the driver: the recording disk has less than ``recording.min_free`` free,
        new INVITEs get 503."""
        self.recovering = False
        """True while a restarted node has not yet restored its calls from the store: requests
        for dialogs it does not know get 503 + Retry-After then, never 481."""
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "responses",
                "malformed",
                "calls_started",
                "calls_ended",
                "calls_failed",
                "rejected",
                "forbidden",
                "metadata_limit_exceeded",
                "internal_errors",
                "invite_rate_limited",
                "too_many_streams",
                "refused_disk_low",
                "refused_overloaded",
            ),
            0,
        )
        self.recordings: dict[str, int] = {"ok": 0, "problems": 0}
        """Recordings finalised here, by verdict."""
        self.recording_problems: dict[str, int] = dict.fromkeys(PROBLEM_KINDS, 0)
        """Recordings finalised here that have each problem."""
        self._invite_buckets = (
            TokenBuckets(config.invite_rate_per_source, config.invite_burst_per_source)
            if config.invite_rate_per_source > 0
            else None
        )
        self._rate_log = LogThrottle()

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything to put on the wire now, in order."""
        for out in self.transactions.datagrams_to_send():
            self._outbox.append((out.data, out.destination))
        sending, self._outbox = self._outbox, []
        return sending

    def next_timer(self) -> float | None:
        """When ``handle_timer`` is due next (transaction timers, session refreshes)."""
        transaction = self.transactions.next_timer()
        refresh = self._next_refresh()
        if refresh is None or (transaction is not None and transaction < refresh):
            return transaction
        return refresh

    def _next_refresh(self) -> float | None:
        """The earliest session refresh still wanted (stale heap entries dropped)."""
        heap = self._refreshes
        while heap:
            deadline, _, session_id = heap[0]
            call = self.calls.get(session_id)
            if call is not None and call.refresh_at == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def _due_refreshes(self, now: float) -> list[str]:
        """The calls whose session refresh is due at ``now`` (taken off the heap)."""
        due: list[str] = []
        while (deadline := self._next_refresh()) is not None and deadline <= now:
            due.append(heapq.heappop(self._refreshes)[2])
        return list(dict.fromkeys(due))  # the same refresh armed twice fires once

    def next_effect(self) -> Effect | None:
        """The oldest effect not yet taken, or None."""
        return self._effects.pop(0) if self._effects else None

    def internal_error(self, event: str, **fields: Any) -> None:
        """Count and log (with the traceback) an exception that is our bug, not the peer's."""
        self.stats["internal_errors"] += 1
        log.exception(event, **fields)

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

    # ------------------------------------------------------------------ effects' results

    def media_opened(self, session_id: str, now: float) -> None:
        """The streams of a new call are open: answer 200 unless it ended meanwhile."""
        call = self.calls.get(session_id)
        self.opening.discard(session_id)
        if call is None or call.phase is not CallPhase.OPENING_MEDIA:
            return  # cancelled (487 sent) or stopped while the media was being prepared
        request = self.transactions.get_request(call.invite_key)
        headers = [
            ("Contact", call.dialog.local_contact),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Content-Type", "application/sdp"),
        ]
        headers += self._session_timer_headers(request, call, now)
        self._respond(
            call.invite_key,
            request,
            200,
            now,
            to_tag=call.dialog.local_tag,
            headers=headers,
            body=call.recording.answer_sdp(),
        )
        call.dialog.confirm()
        call.advance(CallPhase.ANSWERED)
        self.dialogs.add(call.dialog)
        self._by_dialog[(call.dialog.call_id, call.dialog.local_tag)] = call
        self._snapshot(call)
        call.log.info("call_answered")

    def media_failed(self, session_id: str, error: BaseException, now: float) -> None:
        """The streams of a new call could not be opened: 503, the call fails."""
        self.opening.discard(session_id)
        call = self.calls.get(session_id)
        if call is None or call.phase is not CallPhase.OPENING_MEDIA:
            return
        call.log.error("media_open_failed", error=repr(error))
        request = self.transactions.get_request(call.invite_key)
        self._respond(
            call.invite_key,
            request,
            503,
            now,
            reason="Media Unavailable",
            headers=[("Retry-After", str(self.config.retry_after))],
        )
        self._end_call(call, CallStatus.FAILED, f"media sockets failed: {error}", now)

    def media_closed(self, session_id: str) -> None:
        """The streams of an ended call are closed: finalise its recording, or drop the parts of
        a call that was never answered."""
        call = self._closing.get(session_id)
        if call is None or call.media_state is None:
            self._closing.pop(session_id, None)
            return
        if not call.answered:
            del self._closing[session_id]
            self._effects.append(DiscardMedia(session_id, call.data.call_id, call.media_state))
            return
        self._effects.append(
            Finalise(session_id, call.data, call.media_state, call.recording.session)
        )

    def finalised(self, session_id: str) -> None:
        """The recording of an ended call is written (or could not be): its last snapshot
        carries the files and the verdict."""
        call = self._closing.pop(session_id, None)
        if call is not None:
            self._snapshot(call)

    def count_verdict(self, status: str, kinds: tuple[str, ...]) -> None:
        """Count one finalised recording (for metrics) by verdict and problems."""
        self.recordings[status] = self.recordings.get(status, 0) + 1
        for kind in kinds:
            self.recording_problems[kind] = self.recording_problems.get(kind, 0) + 1

    # ------------------------------------------------------------------ session timers

    def _session_timer_headers(
        self, request: SipRequest, call: Call, now: float
    ) -> list[tuple[str, str]]:
        """RFC 4028 §9 for the 2xx of an INVITE or UPDATE (see ``call_policy.session_timer``);
        when the SRC asked us to refresh, our refresh is due at half the interval."""
        interval, refresher, ignored = session_timer(request)
        if ignored:
            call.log.info(
                "session_expires_ignored", value=(request.headers.get("Session-Expires") or "")[:80]
            )
            return []
        call.session_expires, call.refresher = interval, refresher
        if interval is None or refresher is None:
            return []
        if refresher == "uas":
            self._schedule_refresh(call, now)
        return session_timer_headers(interval, refresher)

    def _schedule_refresh(self, call: Call, now: float) -> None:
        """Arm our session refresh (an UPDATE at half the interval) when we are the refresher."""
        call.refresh_at = None if call.session_expires is None else now + call.session_expires / 2
        if call.refresh_at is not None:
            heapq.heappush(
                self._refreshes,
                (call.refresh_at, next(self._refresh_seq), call.data.session_id),
            )

    def refresh_session(self, session_id: str, now: float) -> None:
        """Send the RFC 4028 refresh the SRC asked us to do (refresher=uas): UPDATE, no body."""
        call = self.calls.get(session_id)
        if call is None or call.session_expires is None or not call.confirmed:
            if call is not None:
                call.refresh_at = None
            return
        self._send_in_dialog(
            call.dialog,
            "UPDATE",
            [
                ("Session-Expires", f"{call.session_expires};refresher=uas"),
                ("Supported", "timer"),
            ],
            now,
        )
        call.log.info("session_refreshed", interval_s=call.session_expires)
        self._schedule_refresh(call, now)

    # ------------------------------------------------------------------ lifecycle

    def _touch(self, call: Call) -> None:
        call.data.last_activity = utc_now()

    def touch(self, session_id: str) -> CallData | None:
        """Note RTP activity of a live call (the driver's activity reporter); its CallData."""
        call = self.calls.get(session_id)
        if call is None:
            return None
        self._touch(call)
        return call.data

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
        self._effects.append(SaveSnapshot(data.snapshot()))

    def _sync_media(self, call: Call) -> None:
        """Ask for the engine to follow the call's streams and pause state."""
        if call.media_state is not None and not call.is_final:
            self._effects.append(self._media_effect(UpdateMedia, call))

    @staticmethod
    def _media_effect(kind: type[MediaEffect], call: Call) -> MediaEffect:
        """An effect asking the engine to record ``call``'s streams as they stand."""
        assert call.media_state is not None
        return kind(
            call.data.session_id,
            call.data.call_id,
            call.media_state,
            call.recording.streams,
            call.dialog.peer.host,
        )

    def _end_call(self, call: Call, status: CallStatus, reason: str, now: float) -> None:
        if call.is_final:
            return
        call.advance(PHASE_OF_STATUS[status])
        call.refresh_at = None
        self.opening.discard(call.data.session_id)
        self.ports.release(call.ports, now)
        state = call.media_state
        if state is not None:
            state.closed = True  # an open waiting for its turn must not start any more
            if state.open or state.engaged:  # also what an open in flight (or failed) took
                self._closing[call.data.session_id] = call
                self._effects.append(
                    CloseMedia(call.data.session_id, call.data.call_id, state, call.data)
                )
        call.dialog.terminate()
        self.dialogs.remove(call.dialog)
        self.calls.pop(call.data.session_id, None)
        self._by_dialog.pop((call.dialog.call_id, call.dialog.local_tag), None)
        self._by_invite.pop(call.invite_key, None)
        call.data.status = status
        if call.answered and state is not None and (state.open or state.engaged):
            # a recording to finalise: `finalising` until it is final, then `status`
            call.data.outcome, call.data.status = status, CallStatus.FINALISING
        call.data.end_reason = reason
        call.data.ended_at = utc_now()
        self.stats["calls_ended" if status == CallStatus.ENDED else "calls_failed"] += 1
        self._snapshot(call)
        self._effects.append(CallEnded(call.data.session_id, call.data.call_id, status, reason))
        duration = None
        if call.data.started_at is not None:
            duration = round((call.data.ended_at - call.data.started_at).total_seconds(), 3)
        call.log.info("call_ended", status=status, reason=reason, duration_s=duration)

    def send_bye(self, call: Call, reason: str, now: float) -> None:
        """End a call from our side (operator stop, shutdown, timeout) and finalise it.

        Answered and acknowledged: BYE now. Answered but not yet acknowledged: the BYE waits
        for the ACK or Timer H (RFC 3261 §15), the recording ends at once. Not answered: 480.
        """
        if call.confirmed:
            self._send_bye_request(call.dialog, reason, now)
            self._end_call(call, CallStatus.ENDED, reason, now)
            return
        if call.answered:
            # A copy of the dialog as it stands: ending the call terminates the original.
            self._bye_after_ack[call.invite_key] = (dataclasses.replace(call.dialog), reason)
            self._end_call(call, CallStatus.ENDED, reason, now)
            return
        if self.transactions.get_state(call.invite_key) is TransactionState.PROCEEDING:
            # Not answered yet: refuse the INVITE so that the SRC can try another recorder.
            invite = self.transactions.get_request(call.invite_key)
            self._respond(call.invite_key, invite, 480, now, reason="Recording Stopped")
        self._end_call(call, CallStatus.FAILED, reason, now)

    def _send_bye_request(self, dialog: Dialog, reason: str, now: float) -> None:
        self._send_in_dialog(
            dialog,
            "BYE",
            [("Reason", f'SIP;cause=200;text="{reason}"'), ("User-Agent", self.config.user_agent)],
            now,
        )

    def _send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        headers: list[tuple[str, str]],
        now: float,
        body: bytes = b"",
    ) -> TransactionKey:
        """Send a request in ``dialog`` through a client transaction."""
        peer = dialog.peer
        via = self.addressing.via(peer, new_branch())
        request = dialog.create_request(method, via, headers=headers, body=body)
        return self.transactions.send_request(request, request_destination(request, peer), now)

    # ------------------------------------------------------------------ operator inputs

    def set_operator_pause(self, session_id: str, paused: bool) -> Call:
        """Pause or resume recording of a live call (admin API); raises KeyError if unknown."""
        call = self.calls[session_id]
        if call.recording.operator_paused != paused:
            call.recording.operator_paused = paused
            if call.media_state is not None:
                call.media_state.operator_paused = paused
                self._sync_media(call)
            self._snapshot(call)
            call.log.info("recording_paused" if paused else "recording_resumed", by="operator")
        return call

    def request_metadata(self, session_id: str, now: float) -> Call:
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
        self._send_in_dialog(call.dialog, "UPDATE", headers, now, part.content)
        call.log.info("metadata_requested")
        return call

    def stop_call(self, session_id: str, now: float) -> Call:
        """End a live call from our side (admin API): BYE, then finalise; KeyError if unknown."""
        call = self.calls[session_id]
        self.send_bye(call, "stopped by operator", now)
        return call

    def expire(self, session_id: str, now: float, reason: str = "session timeout") -> bool:
        """End a live call the session manager found idle for ``session_timeout``."""
        call = self.calls.get(session_id)
        if call is None:
            return False
        self.send_bye(call, reason, now)
        return True

    def end_all(self, reason: str, now: float) -> int:
        """End every live call from our side (a drain's end); how many there were."""
        left = list(self.calls.values())
        for call in left:
            self.send_bye(call, reason, now)
        return len(left)

    def lose(self, session_id: str, reason: str, now: float) -> None:
        """The store says another node owns this call now (this node was presumed dead and
        its calls were taken over): stop recording it here, without a BYE — the SRC talks to
        the other node now."""
        call = self.calls.get(session_id)
        if call is None:
            return
        call.log.warning("call_lost_to_another_node", reason=reason)
        self._end_call(call, CallStatus.FAILED, f"taken over by another node: {reason}", now)

    # ------------------------------------------------------------------ RTP timeout

    def check_rtp(self, activity: dict[str, dict[int, int]], now: float) -> None:
        """One RTP-timeout check of every live call against the engine's counters."""
        if self.draining:
            return
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
                self._apply_rtp_decision(decision, now)

    def _apply_rtp_decision(self, decision: SendProbe | EndCall | MarkStalled, now: float) -> None:
        call = self.calls.get(decision.session_id)
        if call is None:
            return
        if isinstance(decision, SendProbe):
            key = self._send_in_dialog(
                call.dialog, "OPTIONS", [("User-Agent", self.config.user_agent)], now
            )
            self._probes[key] = decision.session_id
            call.log.info("rtp_timeout_probe_sent")
        elif isinstance(decision, EndCall):
            call.log.warning("rtp_timeout_call_ended", reason=decision.reason, bye=decision.bye)
            if decision.bye:
                self.send_bye(call, decision.reason, now)
            else:
                self._end_call(call, CallStatus.ENDED, decision.reason, now)
        else:
            call.data.flag(STALLED, probes=decision.probes, silent_s=decision.silent_s)
            self._snapshot(call)
            call.log.warning("call_stalled", probes=decision.probes, silent_s=decision.silent_s)

    def _probe_outcome(self, key: TransactionKey, status: int | None, now: float) -> None:
        session_id = self._probes.get(key)
        if session_id is None or (status is not None and status < 200):
            return
        del self._probes[key]
        call = self.calls.get(session_id)
        if call is not None:
            call.log.info("rtp_timeout_probe_answered", status=status)
        for decision in self.rtp_timeout.probe_answered(session_id, status, now):
            self._apply_rtp_decision(decision, now)

    # ------------------------------------------------------------------ restart, takeover

    def restore(self, data: CallData, now: float) -> Call | None:
        """Take a call of this node's back from its snapshot (restart with the same node id).

        The call gets its dialog, recording state and RTP ports back, so in-dialog requests
        are answered from the restored dialog (never 481), and its streams are opened again.
        A call that never got its 200 is closed as failed (None). Raises when the snapshot
        cannot be read.
        """
        call_log = log.bind(call_id=data.call_id, session_id=data.session_id)
        dialog = Dialog.from_dict(data.dialog)
        recording = CallRecording.from_dict(
            data.recording, allocate=lambda: self.ports.reserve(now)
        )
        confirmed = data.status == CallStatus.ACTIVE
        call = Call(
            data=data,
            dialog=dialog,
            recording=recording,
            invite_key=TransactionKey("INVITE", f"recovered:{data.session_id}", ""),
            log=call_log,
            phase=CallPhase.CONFIRMED if confirmed else CallPhase.ANSWERED,
            answered=True,
            confirmed=confirmed,
        )
        stored_media = (data.media or {}).get("state")
        if stored_media:
            call.media_state = MediaState.from_dict(stored_media)
        if dialog.state is not DialogState.CONFIRMED:
            # The 200 was never sent: the SRC has retried elsewhere or will retransmit.
            call_log.info("call_not_recovered", reason="crashed before the answer")
            if call.media_state is not None:  # no recording to finalise: drop its parts
                self._effects.append(DiscardMedia(data.session_id, data.call_id, call.media_state))
            call.phase = CallPhase.FAILED
            call.data.status = CallStatus.FAILED
            call.data.end_reason = "node restarted before answering"
            call.data.ended_at = utc_now()
            self._snapshot(call)
            return None
        lost = [p for p in recording.ports if not self.ports.reclaim(p)]
        call.ports = [p for p in recording.ports if p not in lost]
        self.calls[data.session_id] = call
        self.dialogs.add(dialog)
        self._by_dialog[(dialog.call_id, dialog.local_tag)] = call
        data.recoveries = data.recoveries + 1
        self._snapshot(call)
        if call.media_state is not None:
            self._effects.append(self._media_effect(ReopenMedia, call))
        call_log.info("call_recovered", status=data.status, ports=call.ports, lost_ports=lost)
        return call

    def not_restored(self, data: CallData, error: BaseException) -> None:
        """A snapshot of this node's that could not be read: stored as failed."""
        data.status, data.end_reason = CallStatus.FAILED, f"not recoverable: {error}"
        data.ended_at = utc_now()
        self._effects.append(SaveSnapshot(data.snapshot()))

    def reopen_media(self, session_id: str) -> ReopenMedia | None:
        """What opens a live call's streams again (its media worker restarted), or None; the
        driver runs it at once (it is not queued)."""
        call = self.calls.get(session_id)
        if call is None or call.media_state is None:
            return None
        return self._media_effect(ReopenMedia, call)

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

    def _finished_dialog(self, request: SipRequest) -> tuple[Dialog, str] | None:
        to_tag = request.to.tag
        if to_tag is not None:
            return self._finished.get((request.call_id, to_tag))
        key = self._finished_by_remote.get((request.call_id, request.from_.tag))
        return self._finished.get(key) if key else None
