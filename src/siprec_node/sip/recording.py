"""The recording side of one SIP call: reads what a request offers, keeps what was answered.

This is the glue between SIP messages and the ``siprec`` domain (which knows nothing of SIP
messages): body extraction, metadata parsing and merging, the SDP answerer, and the
:class:`RecordingSession` tying participants to streams by label.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siprec_node.sip.message import SipRequest
from siprec_node.siprec.errors import MetadataNotWellFormed, NotAcceptable, SdpError
from siprec_node.siprec.metadata import RecordingMetadata
from siprec_node.siprec.metadata_parser import DEFAULT_MAX_ELEMENTS, parse_metadata
from siprec_node.siprec.multipart import ExtractedBody, extract_body
from siprec_node.siprec.recording_session import Party, RecordingSession, recognize_siprec
from siprec_node.siprec.sdp import SessionDescription, parse_sdp
from siprec_node.siprec.sdp_answer import NegotiatedStream, SdpAnswerer

PortSource = Callable[[], int]

# Headers in which SRCs carry their own identifiers of the communication session.
VENDOR_ID_HEADERS = (
    "User-to-User",
    "Cisco-Guid",
    "Session-ID",
    "X-UCID",
    "P-Com.Session-Id",
    "X-Cisco-Recording-Participant",
)


class PortsUnavailable(Exception):
    """Every stream was refused because the RTP port range is exhausted."""


class TooManyStreams(NotAcceptable):
    """An offer with more audio m-lines than ``media.max_streams_per_call``: answer 488 with a
    Warning, before any port is taken."""

    def __init__(self, offered: int, limit: int) -> None:
        super().__init__(f"{offered} audio streams offered, at most {limit} per call")
        self.offered = offered
        self.limit = limit


def _parse_offer_sdp(offer: RecordingOffer, max_streams: int | None) -> SessionDescription | None:
    """The offer's SDP, parsed once; raises :class:`TooManyStreams` over ``max_streams``."""
    if offer.body.sdp is None:
        return None
    try:
        sdp = parse_sdp(offer.body.sdp)
    except ValueError as exc:
        raise SdpError(str(exc)) from exc
    if max_streams is not None:
        audio = sum(1 for m in sdp.media if m.media == "audio" and m.port != 0)
        if audio > max_streams:
            raise TooManyStreams(audio, max_streams)
    return sdp


@dataclass(frozen=True)
class RecordingOffer:
    """What a request brings for the recording: body parts, metadata, SIPREC signs."""

    body: ExtractedBody
    metadata: RecordingMetadata | None
    is_siprec: bool
    vendor_ids: dict[str, str] = field(default_factory=dict)
    metadata_error: str | None = None
    """Why a metadata part that is empty or not well-formed XML was set aside (the call is
    recorded without it: participants from From/To)."""

    @classmethod
    def from_request(
        cls, request: SipRequest, *, max_metadata_elements: int = DEFAULT_MAX_ELEMENTS
    ) -> RecordingOffer:
        """Extract and parse; raises the ``siprec`` errors (415, 400) for unusable bodies.

        INTEROP: metadata that is not well-formed XML does not cost the recording; it is set
        aside and named in :attr:`metadata_error`. Unsafe or oversized metadata is still 400.
        """
        body = extract_body(request.content_type, request.body)
        metadata: RecordingMetadata | None = None
        metadata_error: str | None = None
        if body.metadata is not None:
            try:
                metadata = parse_metadata(body.metadata, max_elements=max_metadata_elements)
            except MetadataNotWellFormed as exc:
                metadata_error = exc.reason
        is_siprec = recognize_siprec(
            require=request.headers.get_all("Require"),
            contact_values=request.headers.get_all("Contact"),
            content_disposition_values=[
                *request.headers.get_raw("Content-Disposition"),
                *body.dispositions,
            ],
        )
        vendor_ids = {
            name: value
            for name in VENDOR_ID_HEADERS
            if (value := request.headers.get(name)) is not None
        }
        if metadata is not None:
            for name, value in metadata.vendor_identifiers().items():
                vendor_ids.setdefault(name, value)
        return cls(body, metadata, is_siprec, vendor_ids, metadata_error)


class CallRecording:
    """Recording state of one call: the answerer, negotiated streams, metadata, participants."""

    def __init__(
        self,
        session_id: str,
        answerer: SdpAnswerer,
        session: RecordingSession,
        *,
        is_siprec: bool,
        vendor_ids: dict[str, str] | None = None,
    ) -> None:
        self.session_id = session_id
        self.answerer = answerer
        self.session = session
        self.is_siprec = is_siprec
        self.vendor_ids = dict(vendor_ids or {})
        self.answer_body: bytes | None = None
        """Our latest answer (or offer) as sent; not its parsed form, which a live call does not
        need (its SDP objects were ~30 GC-tracked objects per call)."""
        self.awaiting_answer = False
        self.sdp_in_answer = True
        self.operator_paused = False
        """Paused by an operator (admin API): nothing is recorded, whatever the SDP says."""
        self.metadata_error: str | None = None
        """Why the metadata of the last request applied was set aside (None: parsed or absent)."""

    # ---- creation

    @classmethod
    def start(
        cls,
        offer: RecordingOffer,
        *,
        codecs: tuple[str, ...],
        media_host: str,
        allocate: PortSource,
        call_id: str,
        caller: Party,
        callee: Party,
        max_streams: int | None = None,
    ) -> CallRecording:
        """Answer an initial INVITE's offer (or make ours for a delayed offer).

        Over ``max_streams`` audio m-lines: :class:`TooManyStreams`, nothing allocated.
        """
        sdp = _parse_offer_sdp(offer, max_streams)
        exhausted: list[bool] = []
        answerer = SdpAnswerer(media_host, _port_source(allocate, exhausted), codecs=codecs)
        session = RecordingSession(
            call_id, session_id=str(uuid.uuid4()), caller=caller, callee=callee
        )
        recording = cls(
            session.session_id,
            answerer,
            session,
            is_siprec=offer.is_siprec,
            vendor_ids=offer.vendor_ids,
        )
        if offer.metadata is not None:
            session.apply_metadata(offer.metadata, owned=True)  # parsed for this request only
        recording.metadata_error = offer.metadata_error
        recording._negotiate(offer, exhausted, sdp)
        return recording

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, allocate: PortSource) -> CallRecording:
        """Rebuild from :meth:`to_dict` (restart recovery); ``allocate`` serves new streams."""
        exhausted: list[bool] = []
        session = RecordingSession.from_dict(data["session"])
        answerer = SdpAnswerer.from_dict(data["answerer"], _port_source(allocate, exhausted))
        recording = cls(
            session.session_id,
            answerer,
            session,
            is_siprec=bool(data.get("is_siprec", True)),
            vendor_ids=data.get("vendor_ids") or {},
        )
        recording.awaiting_answer = bool(data.get("awaiting_answer", False))
        recording.operator_paused = bool(data.get("operator_paused", False))
        last = data.get("answer_sdp")
        if last:  # our last answer as sent, for a re-INVITE without offer after the restart
            recording.answer_body = last.encode()
        return recording

    def _negotiate(
        self,
        offer: RecordingOffer,
        exhausted: list[bool],
        sdp: SessionDescription | None = None,
    ) -> list[str]:
        before = {s.label or str(s.index): s for s in self.streams}
        try:
            if offer.body.sdp is not None:
                answer = self.answerer.answer(sdp if sdp is not None else offer.body.sdp)
                self.awaiting_answer = False
            else:
                # Our offer mirrors the call's streams; labels only when every stream has one.
                known = [s.label for s in self.streams if s.label is not None]
                labels = known if known and len(known) == len(self.streams) else None
                answer = self.answerer.offer_for_delayed_offer(
                    count=max(1, len(self.streams)), labels=labels
                )
                self.awaiting_answer = True
        except NotAcceptable:
            if exhausted:
                raise PortsUnavailable("no free RTP port for any offered stream") from None
            raise
        except ValueError as exc:  # a malformed SDP that the parser could not use
            raise SdpError(str(exc)) from exc
        finally:
            # The port source (a closure over the node's allocator) is set again before each
            # negotiation: a live call need not hold it (and its cells) meanwhile.
            self.answerer.ports = _no_port
        self.answer_body = answer.body
        self.session.update_streams(answer.streams)
        return _stream_changes(before, {s.label or str(s.index): s for s in answer.streams})

    # ---- mid-call

    def has_offer(self, request: SipRequest) -> bool:
        """True when our 200 to ``request`` must carry SDP (it offered, or we offered)."""
        del request
        return self.sdp_in_answer

    def apply_update(
        self,
        request: SipRequest,
        *,
        allocate: PortSource,
        max_streams: int | None = None,
        max_metadata_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> list[str]:
        """Apply a re-INVITE or UPDATE: metadata (complete or partial) and/or a new offer.

        Over ``max_streams`` audio m-lines: :class:`TooManyStreams` and nothing changes. When
        the offer fails after ports were taken for new streams, the answerer is put back as it
        was (the caller gives back what ``allocate`` handed out).
        """
        offer = RecordingOffer.from_request(request, max_metadata_elements=max_metadata_elements)
        sdp = _parse_offer_sdp(offer, max_streams)
        saved = self.answerer.to_dict()
        try:
            return self._apply_update(request, offer, sdp, allocate)
        except BaseException:
            self.answerer = SdpAnswerer.from_dict(saved, self.answerer.ports)
            raise

    def _apply_update(
        self,
        request: SipRequest,
        offer: RecordingOffer,
        sdp: SessionDescription | None,
        allocate: PortSource,
    ) -> list[str]:
        changes: list[str] = []
        self.metadata_error = offer.metadata_error
        if offer.metadata is not None:
            self.session.apply_metadata(offer.metadata, owned=True)  # parsed for this request
            changes.append("metadata")
        elif offer.metadata_error is not None:
            changes.append("metadata unparsed")
        # A re-INVITE without SDP (metadata-only included) asks us to offer: its 2xx must carry
        # an offer (RFC 3261 §14.2, §13.3.1.4). An UPDATE without SDP gets no SDP (RFC 3311).
        self.sdp_in_answer = offer.body.sdp is not None or request.method == "INVITE"
        if self.sdp_in_answer:
            exhausted: list[bool] = []
            self.answerer.ports = _port_source(allocate, exhausted)
            changes += self._negotiate(offer, exhausted, sdp)
        self.vendor_ids.update(offer.vendor_ids)
        return changes

    def apply_ack(self, ack: SipRequest) -> None:
        """The SRC's SDP answer in the ACK, for our delayed-offer 200."""
        if not self.awaiting_answer:
            return
        body = extract_body(ack.content_type, ack.body)
        if body.sdp is None:
            return
        streams = self.answerer.accept_answer(body.sdp)
        self.awaiting_answer = False
        self.session.update_streams(streams)

    # ---- views

    def answer_sdp(self) -> bytes:
        """The SDP body of our latest answer (or offer)."""
        assert self.answer_body is not None
        return self.answer_body

    @property
    def streams(self) -> tuple[NegotiatedStream, ...]:
        """What was negotiated per m-line in the latest exchange."""
        return tuple(s.negotiated for s in self.session.streams)

    @property
    def ports(self) -> list[int]:
        """Every local RTP port this call holds."""
        # Not ``answerer.local_ports``: it is keyed by m-line index, and a stream whose label
        # changed (or that left the offer) keeps its port under the index another stream now has.
        return sorted({int(slot["port"]) for slot in self.answerer.to_dict()["slots"]})

    def stream_summary(self) -> list[dict[str, Any]]:
        """A compact per-stream description for logs."""
        return [
            {
                "label": s.label,
                "port": s.port,
                "codec": s.codec,
                "direction": s.direction,
                **({"refused": s.reason} if not s.accepted else {}),
            }
            for s in self.streams
        ]

    def media_snapshot(self) -> list[dict[str, Any]]:
        """Per-stream media state for the CallData snapshot."""
        return [s.to_dict() for s in self.streams]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state of the recording (session, answerer, vendor ids)."""
        return {
            "session": self.session.to_dict(),
            "answerer": self.answerer.to_dict(),
            "is_siprec": self.is_siprec,
            "vendor_ids": dict(self.vendor_ids),
            "awaiting_answer": self.awaiting_answer,
            "operator_paused": self.operator_paused,
            "answer_sdp": (
                self.answer_body.decode("utf-8", "replace") if self.answer_body else None
            ),
        }


def _port_source(allocate: PortSource, exhausted: list[bool]) -> Callable[[int, str | None], int]:
    """Adapt the node's allocator to the answerer's ``(index, label) -> port`` (0 refuses)."""
    from siprec_node.media.port_allocator import PortsExhausted

    def source(index: int, label: str | None) -> int:
        del index, label
        try:
            return allocate()
        except PortsExhausted:
            exhausted.append(True)
            return 0

    return source


def _no_port(index: int, label: str | None) -> int:
    """The port source between negotiations: refuses (none is asked for then)."""
    del index, label
    return 0


def _stream_changes(
    before: dict[str, NegotiatedStream], after: dict[str, NegotiatedStream]
) -> list[str]:
    changes = [f"stream {k} added" for k in after if k not in before]
    changes += [f"stream {k} removed" for k in before if k not in after]
    for key in after.keys() & before.keys():
        old, new = before[key], after[key]
        if old.accepted != new.accepted:
            changes.append(f"stream {key} {'accepted' if new.accepted else 'refused'}")
        elif old.paused != new.paused:
            changes.append(f"stream {key} {'paused' if new.paused else 'resumed'}")
        elif old.codec != new.codec:
            changes.append(f"stream {key} codec {old.codec}->{new.codec}")
    return changes
