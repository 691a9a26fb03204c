"""The call-control core: SIPREC call control with no I/O, in aioquic's manner.

Fed bytes (``receive``), the clock (``handle_timer``) and the results of the effects it asked for
(``media_opened``, ``media_failed``, ``media_closed``, ``finalised``); asked what to send
(``datagrams_to_send``), when to wake it (``next_timer``) and what to do (``next_effect``). It
owns the transactions, the dialogs, the registry of live calls and their lifecycle
(``sip.calls``). It never awaits, never touches a socket, a file, the media engine or a store:
the driver (``siprec_node.recorder``) does that and feeds it back, so every test of call
control runs on a fake clock with no event loop.

Every public method that takes ``now`` is an input; after any input the driver pumps: it sends
``datagrams_to_send()``, runs every ``next_effect()`` and re-arms one timer at ``next_timer()``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import structlog

from siprec_node.sip.call import CallData, CallStatus, utc_now
from siprec_node.sip.call_lifecycle import CallLifecycle
from siprec_node.sip.call_policy import (
    ALLOWED_METHODS,
    HONOURED_REQUIRE,
    MIN_SE,
    NOT_ALLOWED_METHODS,
    SUPPORTED_OPTIONS,
    allowed,
    capabilities,
    phrase,
    reason_of,
    session_expires,
)
from siprec_node.sip.calls import Call, CallPhase
from siprec_node.sip.dialog import Dialog
from siprec_node.sip.effects import OpenMedia
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.media_state import new_media_state
from siprec_node.sip.message import SipRequest, SipResponse, error_response_for, parse_message
from siprec_node.sip.rate_limit import retry_after
from siprec_node.sip.recording import (
    CallRecording,
    PortsUnavailable,
    RecordingOffer,
    TooManyStreams,
)
from siprec_node.sip.transaction import (
    AckReceived,
    AckTimeout,
    Address,
    CancelReceived,
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionKey,
    TransactionState,
    TransactionTimeout,
    new_tag,
)
from siprec_node.sip.uri import parse_decimal
from siprec_node.siprec.errors import MetadataLimitExceeded, SiprecError, UnsupportedBody
from siprec_node.siprec.recording_session import Party

log = structlog.get_logger("siprec_node.sip.call_control")


class CallControl(CallLifecycle):
    """Answers SIP for recording sessions and keeps the registry of live calls, without I/O."""

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """One datagram or framed stream message."""
        try:
            message = parse_message(
                data,
                max_size=self.config.max_message_size,
                max_headers=self.config.max_headers,
                stream=source.reliable,
            )
        except SipParseError as error:
            self.malformed(data, error, source)
            return
        except Exception:  # the parser must raise nothing else: our bug, answered 500
            self.internal_error("parse_failed", peer=f"{source.host}:{source.port}")
            answer = error_response_for(data, SipParseError("Server Internal Error", status=500))
            if answer is not None:
                self._outbox.append((answer, source))
            return
        try:
            if isinstance(message, SipResponse):
                self.stats["responses"] += 1
                events = self.transactions.receive_response(message, now)
            else:
                self.stats["requests"] += 1
                events = self.transactions.receive_request(message, source, now)
        except SipParseError as error:  # a header the transaction layer needed did not parse
            self.malformed(data, error, source)
            return
        except Exception:
            self.internal_error("transaction_failed", peer=f"{source.host}:{source.port}")
            return
        self._process(events, now)

    def malformed(self, data: bytes, error: SipParseError, source: Address) -> None:
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
            self._outbox.append((response, source))

    def handle_timer(self, now: float) -> None:
        """Fire due transaction timers and session refreshes."""
        self._process(self.transactions.handle_timer(now), now)
        for session_id in self._due_refreshes(now):
            self.refresh_session(session_id, now)

    # ------------------------------------------------------------------ event dispatch

    def _process(self, events: Iterable[Event], now: float) -> None:
        for event in events:
            request: SipRequest | None = None
            key: TransactionKey | None = None
            if isinstance(event, RequestReceived):
                request, key = event.request, event.key
            elif isinstance(event, CancelReceived):
                request, key = event.cancel, event.key
            try:
                self._dispatch(event, now)
            except (SipParseError, SiprecError) as exc:
                # A header or body that fails only where it is used: the sender's error, a 4xx.
                status = exc.status if 400 <= exc.status < 500 else 400
                log.info("request_unparsable", status=status, error=exc.reason)
                if request is not None and key is not None:
                    self._respond_safely(key, self._rejection(request, status, reason_of(exc)), now)
            except Exception:
                self.internal_error("event_failed", event_type=type(event).__name__)
                if request is not None and key is not None:
                    self._respond_safely(key, self._rejection(request, 500, None), now)

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
                self._send_bye_request(*pending, now)
            call = self._by_invite.get(event.key)
            if call is not None:
                call.log.warning("ack_timeout", waited_s=self.config.timers.timeout)
                # §13.3.1.4: no ACK within 64*T1 — confirm the dialog and end the session.
                self._send_bye_request(call.dialog, "no ACK for the 200 OK", now)
                self._end_call(call, CallStatus.FAILED, "no ACK for the 200 OK", now)
        elif isinstance(event, TransactionTimeout):
            log.info("final_response_unacknowledged", status=event.response.status)
        elif isinstance(event, ResponseReceived):
            self._probe_outcome(event.key, event.response.status, now)
            log.info(
                "response_received",
                call_id=event.response.call_id,
                method=event.key.method,
                status=event.response.status,
            )
        elif isinstance(event, ClientTimeout):
            self._probe_outcome(event.key, None, now)
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

    def _on_options(self, request: SipRequest, key: TransactionKey, now: float) -> None:
        if self.draining:
            self._respond(
                key, request, 503, now, headers=[("Retry-After", str(self.config.retry_after))]
            )
            return
        # RFC 3261 §8.2.6.2: a response to a request without a To tag carries one (make_response
        # keeps the request's tag when there is one).
        self._respond(key, request, 200, now, to_tag=new_tag(), headers=capabilities())

    # ------------------------------------------------------------------ INVITE

    def _on_invite(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> None:
        call_log = log.bind(call_id=request.call_id)
        self._respond(key, request, 100, now)
        if self._over_invite_rate(request, key, source, now):
            return
        rejection = self._admission(request, source, now)
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
                    media_host=self.addressing.media_host(source.host),
                    allocate=functools.partial(self._reserve_port, now, taken),
                    call_id=request.call_id,
                    caller=Party(request.from_.display, request.from_.uri),
                    callee=Party(request.to.display, request.to.uri),
                    max_streams=self.config.max_streams_per_call,
                )
            except BaseException:
                self.ports.release(taken, now)
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
            self._respond(key, request, exc.status, now, reason=phrase(exc))
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
            dialog=Dialog.from_invite(request, new_tag(), self.addressing.contact(source), source),
            recording=recording,
            invite_key=key,
            log=call_log,
            ports=recording.ports,
            session_expires=session_expires(request),
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
        call.advance(CallPhase.OPENING_MEDIA)
        self.opening.add(session_id, now)
        self._effects.append(self._media_effect(OpenMedia, call))

    def _reserve_port(self, now: float, taken: list[int]) -> int:
        """Reserve an RTP port for an offer being answered, noting it in ``taken``."""
        port = self.ports.reserve(now)
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

    def _over_invite_rate(
        self, request: SipRequest, key: TransactionKey, source: Address, now: float
    ) -> bool:
        """Answer 503 + Retry-After to a new INVITE over its source's rate (logged once per
        source per interval). 503 rather than silence: an SRC fails over to another recorder
        on an error response at once, while an unanswered INVITE holds the call for Timer B
        (32 s) and keeps coming back as retransmissions."""
        buckets = self._invite_buckets
        if buckets is None or (
            self.config.allow_sources and not allowed(source.host, self.config.allow_sources)
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
        self, request: SipRequest, source: Address, now: float
    ) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        retry = [("Retry-After", str(self.config.retry_after))]
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards is not None and max_forwards.strip() == "0":
            return 483, None, []
        if self.draining:
            return 503, "Draining", retry
        if self.disk_low:  # recording.min_free
            self.stats["refused_disk_low"] += 1
            return 503, "Low Disk Space", retry
        if not self._source_allowed(source):
            self.stats["forbidden"] += 1
            return 403, "Source Not Allowed", []
        if len(self.calls) >= self.config.max_sessions:
            return 503, "Maximum Sessions Reached", retry
        if not self.opening.admit(now):  # sip.max_answer_delay
            self.stats["refused_overloaded"] += 1
            # About as long as the backlog takes to clear, not the 30 s of a full node: an SBC
            # that honours Retry-After for the whole node would shun it long after it caught up.
            wait = retry_after(self.opening.oldest_wait(now))
            return 503, "Overloaded", [("Retry-After", str(wait))]
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
        return not self.config.allow_sources or allowed(source.host, self.config.allow_sources)

    # the rest of the call control (ACK, CANCEL, in-dialog requests, lifecycle, operator and
    # recovery inputs) is in sip/call_control_dialog.py, mixed in below

    # ------------------------------------------------------------------ ACK, CANCEL, BYE

    def _on_ack(self, event: AckReceived, now: float) -> None:
        ack = event.ack
        if event.key is not None and event.key in self._bye_after_ack:
            self._send_bye_request(*self._bye_after_ack.pop(event.key), now)
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
            self._sync_media(call)  # the streams of our offer are now agreed
        if call.confirmed:
            if answered:
                self._touch(call)
                self._snapshot(call)
            return
        call.advance(CallPhase.CONFIRMED)
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
                self._end_call(call, CallStatus.FAILED, "cancelled before answer", now)
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
            self._end_call(call, CallStatus.ENDED, "BYE from SRC", now)
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
                self.ports.release(taken, now)
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
            self._respond(key, request, exc.status, now, to_tag=tag, reason=phrase(exc))
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
        self._sync_media(call)  # new streams open, held ones pause, others resume
        headers: list[tuple[str, str]] = [
            ("Contact", call.dialog.local_contact),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
        ]
        headers += self._session_timer_headers(request, call, now)
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


def _tolerate_cseq_method(call: Call, request: SipRequest) -> None:
    """INTEROP: a BYE, ACK or CANCEL whose CSeq names another method is what its request line
    says (``message.CSEQ_METHOD_TOLERATED``); logged once per call."""
    call.tolerate("cseq_method_mismatch", method=request.method, cseq=request.headers.get("CSeq"))
