"""The recorder's SDP answer (RFC 3264, RFC 7866) and the state it keeps across a call.

Every offered m-line is mirrored in order. An audio stream we can record is answered
``recvonly`` (``inactive`` when the offer holds it) as RFC 3264 §6.1 says: the offer's payload
types in the offer's order, every one we can decode (a codec the node is allowed to accept,
whose decoder the installed FFmpeg has, with format parameters we can depacketise), plus
``telephone-event`` and ``CN`` at the clock rate of an accepted codec, since an SRC forks the
call's media as it is and may send any of them at any packet. The allow-list (``codecs``)
never reorders the offer. Labels are echoed and, for SDES-SRTP, our own key sent. Anything
else is refused with port 0. Ports come from the caller and stay with a stream (matched by
label, else by position) across re-offers; the ``o=`` line keeps one session id per call and
its version only moves when the answer changes.
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from siprec_node.siprec.codecs import (
    ALL_CODECS,
    COMFORT_NOISE,
    DECODABLE,
    TELEPHONE_EVENT,
    Codec,
    PayloadFormat,
    canonical_name,
    codec_for_payload_type,
    decodable,
    locally_decodable,
    normalize_codec_name,
)
from siprec_node.siprec.errors import NotAcceptable
from siprec_node.siprec.sdp import (
    Attribute,
    Connection,
    Crypto,
    MediaDescription,
    Origin,
    SessionDescription,
    parse_sdp,
)

SRTP_SUITES: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
RTP_PROFILES = frozenset({"RTP/AVP", "RTP/AVPF"})
SRTP_PROFILES = frozenset({"RTP/SAVP", "RTP/SAVPF"})
SRTP_KEY_LENGTH = 30  # AES_CM_128 suites: 128-bit key + 112-bit salt
# Payload types of our own offers (delayed offer). RFC 3551's static ones where they are
# unambiguous; G.726-32 gets a dynamic one too (PT 2 was AAL2-packed on some old equipment).
# AMR and AMR-WB are offered in both packings (RFC 4867 §4.3 and §4.4), one PT each.
_OFFER_PTS: dict[str, tuple[tuple[int, str | None], ...]] = {
    "PCMU": ((0, None),),
    "PCMA": ((8, None),),
    "G722": ((9, None),),
    "G729": ((18, None),),
    "G723": ((4, None),),
    "GSM": ((3, None),),
    "OPUS": ((111, None),),
    "AMR": ((96, "octet-align=1"), (97, None)),
    "AMR-WB": ((98, "octet-align=1"), (99, None)),
    "ILBC": ((100, None),),
    "G726-16": ((102, None),),
    "G726-24": ((103, None),),
    "G726-32": ((104, None),),
    "G726-40": ((105, None),),
    "AAL2-G726-16": ((106, None),),
    "AAL2-G726-24": ((107, None),),
    "AAL2-G726-32": ((108, None),),
    "AAL2-G726-40": ((109, None),),
}
_OFFER_TELEPHONE_EVENT_PT = 101

PortSource = Callable[[int, str | None], int] | Mapping[Any, int]


@dataclass(frozen=True)
class SrtpKeys:
    """SDES-SRTP material for one stream.

    ``remote_key`` (base64 key||salt from the SRC's ``a=crypto``) decrypts what the SRC sends;
    ``local_key`` is the one we answered with.
    """

    suite: str
    tag: int
    remote_key: str
    local_key: str
    remote_key_params: str


@dataclass(frozen=True)
class NegotiatedStream:
    """What was agreed for one m-line; the media layer records from it.

    ``accepted`` is False for refused m-lines (answered with port 0, ``reason`` says why);
    ``index`` is the m-line's position in the offer and ``port`` our local RTP port.
    ``codec``/``payload_type``/``clock_rate``/``channels``/``fmtp`` describe the first accepted
    format; ``formats`` lists every accepted audio format in the offer's order (the first one
    included), since an SRC may send any of them at any packet. ``telephone_event_pt`` is the
    RFC 4733 payload type at the first format's clock rate (else the first one accepted);
    ``telephone_event_pts`` and ``comfort_noise_pts`` (RFC 3389) list every one accepted:
    packets of those are expected, and carry no audio to decode.
    """

    index: int
    label: str | None
    media: str
    accepted: bool
    port: int
    proto: str
    codec: str | None = None
    payload_type: int | None = None
    clock_rate: int | None = None
    channels: int | None = None
    fmtp: str | None = None
    telephone_event_pt: int | None = None
    direction: str = "inactive"
    paused: bool = False
    srtp: SrtpKeys | None = None
    remote_address: str | None = None
    remote_port: int = 0
    reason: str | None = None
    formats: tuple[PayloadFormat, ...] = ()
    telephone_event_pts: tuple[int, ...] = ()
    comfort_noise_pts: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["srtp"] = dict(vars(self.srtp)) if self.srtp else None
        data["formats"] = [f.to_dict() for f in self.formats]
        data["telephone_event_pts"] = list(self.telephone_event_pts)
        data["comfort_noise_pts"] = list(self.comfort_noise_pts)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NegotiatedStream:
        values = dict(data)
        srtp = values.pop("srtp", None)
        formats = values.pop("formats", None)
        if formats is None and values.get("accepted") and values.get("codec"):
            # Snapshots written before ``formats`` existed: the one codec they negotiated.
            formats = [
                {
                    "payload_type": values["payload_type"],
                    "name": normalize_codec_name(values["codec"]),
                    "clock_rate": values.get("clock_rate") or 8000,
                    "channels": values.get("channels") or 1,
                    "fmtp": values.get("fmtp"),
                }
            ]
        comfort_noise = values.pop("comfort_noise_pts", None) or ()
        events = values.pop("telephone_event_pts", None)
        if events is None:  # older snapshots: the one telephone-event they negotiated
            events = [values["telephone_event_pt"]] if values.get("telephone_event_pt") else []
        return cls(
            **values,
            srtp=SrtpKeys(**srtp) if srtp else None,
            formats=tuple(PayloadFormat.from_dict(f) for f in formats or ()),
            telephone_event_pts=tuple(int(pt) for pt in events),
            comfort_noise_pts=tuple(int(pt) for pt in comfort_noise),
        )


@dataclass(frozen=True)
class SdpAnswer:
    """An answer (or our own offer) ready to send, with what it negotiates per stream."""

    sdp: SessionDescription
    body: bytes
    streams: tuple[NegotiatedStream, ...]
    changed: bool

    @property
    def accepted_streams(self) -> tuple[NegotiatedStream, ...]:
        return tuple(s for s in self.streams if s.accepted)


@dataclass
class _Slot:
    """A local RTP port held by one stream of the call."""

    index: int
    label: str | None
    port: int
    srtp_key: str | None = None


class _FreeSlots:
    """The slots not yet taken by the answer being built, by label and by index, in creation
    order: finding a stream's slot costs O(1) amortised however many m-lines the offer has.

    Built when an answer starts; slots taken since are skipped lazily (only a taken slot
    changes its label or index, and a new slot is taken as it is made).
    """

    def __init__(self, slots: list[_Slot], used: set[int]) -> None:
        self.used = used  # held, so that the next answer's set cannot reuse its id
        self.by_label: dict[str, deque[_Slot]] = {}
        self.by_index: dict[int, deque[_Slot]] = {}
        self.unlabelled_by_index: dict[int, deque[_Slot]] = {}
        for slot in slots:
            if id(slot) in used:
                continue
            if slot.label is not None:
                self.by_label.setdefault(slot.label, deque()).append(slot)
            else:
                self.unlabelled_by_index.setdefault(slot.index, deque()).append(slot)
            self.by_index.setdefault(slot.index, deque()).append(slot)

    def find(self, index: int, label: str | None) -> _Slot | None:
        slot = self._first(self.by_label.get(label)) if label is not None else None
        if slot is None:
            by_index = self.by_index if label is None else self.unlabelled_by_index
            slot = self._first(by_index.get(index))
        return slot

    def _first(self, queue: deque[_Slot] | None) -> _Slot | None:
        while queue and id(queue[0]) in self.used:
            queue.popleft()
        return queue[0] if queue else None


@dataclass(frozen=True)
class _Format:
    """One payload type of an answer: as the offer wrote it, and what it is to us."""

    payload_type: int
    offered: Codec
    fmtp: str | None
    canonical: str | None = None  # the decodable codec; None for telephone-event and CN
    kind: str = "audio"  # "audio", "event" (RFC 4733) or "cn" (RFC 3389)

    @property
    def channels(self) -> int:
        return self.offered.channels if self.canonical == "OPUS" else 1

    def payload_format(self) -> PayloadFormat:
        known = DECODABLE[self.canonical or ""]
        return PayloadFormat(
            self.payload_type, self.canonical or "", known.clock_rate, self.channels, self.fmtp
        )


class SdpAnswerer:
    """Answers the SDP offers of one recording session.

    ``ports`` gives our RTP port for a new stream: a callable ``(stream_index, label) -> port``
    or a mapping keyed by label or by index; a port of 0 (or a missing key) refuses the stream.
    ``codecs`` is the allow-list (any spelling of :data:`~siprec_node.siprec.codecs.DECODABLE`
    names; default all): it filters offers and orders only our own (delayed) offer.
    ``available`` is the set of codecs the installed FFmpeg decodes (found once by default);
    a codec outside it is refused rather than recorded as silence.
    """

    def __init__(
        self,
        address: str,
        ports: PortSource,
        *,
        codecs: Sequence[str] = ALL_CODECS,
        srtp_suites: Sequence[str] = SRTP_SUITES,
        username: str = "siprec-node",
        session_name: str = "siprec-node",
        session_id: int | None = None,
        available: Collection[str] | None = None,
    ) -> None:
        self.address = address
        self.ports = ports
        self.codecs = tuple(canonical_name(c) or normalize_codec_name(c) for c in codecs)
        self.available = frozenset(locally_decodable() if available is None else available)
        self.srtp_suites = tuple(srtp_suites)
        self.username = username
        self.session_name = session_name
        self.session_id = session_id if session_id is not None else secrets.randbits(62)
        self.version = 1
        self._signature: bytes | None = None
        self._slots: list[_Slot] = []
        self._free: _FreeSlots | None = None
        self._local_offer: SessionDescription | None = None

    # -- answering ----------------------------------------------------------------------

    def answer(self, offer: SessionDescription | bytes | str) -> SdpAnswer:
        """Answer an offer. Raises :class:`NotAcceptable` when no audio stream is usable."""
        if not isinstance(offer, SessionDescription):
            offer = parse_sdp(offer)
        answer = self._new_description()
        streams: list[NegotiatedStream] = []
        used: set[int] = set()
        for index, media in enumerate(offer.media):
            line, stream = self._answer_media(offer, index, media, used)
            answer.media.append(line)
            streams.append(stream)
        if not any(s.accepted for s in streams):
            reasons = "; ".join(f"m-line {s.index}: {s.reason}" for s in streams)
            raise NotAcceptable(f"no audio stream can be recorded ({reasons or 'no m-lines'})")
        self._local_offer = None
        return self._finish(answer, streams)

    def _answer_media(
        self, offer: SessionDescription, index: int, media: MediaDescription, used: set[int]
    ) -> tuple[MediaDescription, NegotiatedStream]:
        label = media.label
        connection = offer.connection_for(media)
        base = NegotiatedStream(
            index=index,
            label=label,
            media=media.media,
            accepted=False,
            port=0,
            proto=media.proto,
            remote_address=connection.host if connection else None,
            remote_port=media.port,
        )
        reason = self._refusal(media)
        formats = [] if reason else self._select(media.payload_types, media.rtpmaps, media.fmtps)
        if reason is None and not formats:
            reason = "no acceptable codec offered"
        crypto = None
        if reason is None and media.proto.upper() in SRTP_PROFILES:
            crypto = next((c for c in media.cryptos if c.suite in self.srtp_suites), None)
            if crypto is None or not crypto.inline_key:
                reason = "SRTP without a supported a=crypto suite"
        slot = None
        if reason is None:
            slot = self._slot_for(index, label, used)
            if slot is None:
                reason = "no port available"
        if reason is not None or slot is None or not formats:
            return self._refused_line(media), replace(base, reason=reason)
        used.add(id(slot))
        hold = offer.is_on_hold(media)
        offered_direction = offer.direction_for(media)
        direction = "inactive" if hold or offered_direction == "recvonly" else "recvonly"
        srtp = None
        if crypto is not None:
            if slot.srtp_key is None:
                slot.srtp_key = _new_srtp_key()
            srtp = SrtpKeys(
                suite=crypto.suite,
                tag=crypto.tag,
                remote_key=crypto.inline_key or "",
                local_key=slot.srtp_key,
                remote_key_params=crypto.key_params,
            )
        line = _audio_line(media.proto, slot.port, formats, label, direction, srtp)
        stream = replace(
            base,
            **_negotiated(formats),
            accepted=True,
            port=slot.port,
            direction=direction,
            paused=direction == "inactive",
            srtp=srtp,
        )
        return line, stream

    def _refusal(self, media: MediaDescription) -> str | None:
        if media.port == 0:
            return "stream disabled in the offer"
        if media.media != "audio":
            return f"{media.media} is not recorded"
        proto = media.proto.upper()
        if proto not in RTP_PROFILES and proto not in SRTP_PROFILES:
            return f"transport {media.proto} not supported"
        return None

    def _select(
        self, payload_types: Sequence[int], rtpmaps: Mapping[int, Codec], fmtps: Mapping[int, str]
    ) -> list[_Format]:
        """RFC 3264 §6.1: the offered payload types we accept, in the offer's order: every
        allowed codec we can decode, then telephone-event and CN only at the clock rate of one
        of those (RFC 4733 §2.1, RFC 3389 §5). Empty when no audio codec is acceptable."""
        offered = [(pt, c) for pt in payload_types if (c := codec_for_payload_type(pt, rtpmaps))]
        audio: dict[int, str] = {}
        for pt, codec in offered:
            known = decodable(codec)
            canon = canonical_name(known.name) if known else None
            if (
                canon is not None
                and canon in self.codecs
                and canon in self.available
                and _fmtp_supported(canon, fmtps.get(pt))
            ):
                audio.setdefault(pt, canon)
        if not audio:
            return []
        rates = {DECODABLE[canon].clock_rate for canon in audio.values()}
        chosen: list[_Format] = []
        seen: set[int] = set()
        for pt, codec in offered:
            if pt in seen:
                continue
            seen.add(pt)
            name = codec.name.lower()
            if pt in audio:
                chosen.append(_Format(pt, codec, fmtps.get(pt), audio[pt]))
            elif name == TELEPHONE_EVENT and codec.clock_rate in rates:
                chosen.append(_Format(pt, codec, fmtps.get(pt), kind="event"))
            elif name == COMFORT_NOISE.lower() and codec.clock_rate in rates:
                chosen.append(_Format(pt, codec, fmtps.get(pt), kind="cn"))
        return chosen

    def _slot_for(self, index: int, label: str | None, used: set[int]) -> _Slot | None:
        """The slot of the stream at ``index`` with ``label``: a free one with this label, else
        one with this index (unlabelled, or any when the stream has no label), else a new one.
        ``used`` holds the slots the answer being built has taken (by ``id``); the slot found
        is added to it."""
        if self._free is None or self._free.used is not used:
            self._free = _FreeSlots(self._slots, used)  # a new answer: index the free slots once
        slot = self._free.find(index, label)
        if slot is not None:
            slot.index, slot.label = index, label if label is not None else slot.label
            used.add(id(slot))
            return slot
        port = self._allocate(index, label)
        if port <= 0:
            return None
        slot = _Slot(index=index, label=label, port=port)
        self._slots.append(slot)
        used.add(id(slot))
        return slot

    def _allocate(self, index: int, label: str | None) -> int:
        if callable(self.ports):
            return int(self.ports(index, label))
        if label is not None and label in self.ports:
            return int(self.ports[label])
        return int(self.ports.get(index, 0))

    @staticmethod
    def _refused_line(media: MediaDescription) -> MediaDescription:
        line = MediaDescription(
            media=media.media, port=0, proto=media.proto, formats=list(media.formats)
        )
        if media.label is not None:
            line.attributes.append(Attribute("label", media.label))
        return line

    # -- delayed offer ------------------------------------------------------------------

    def offer_for_delayed_offer(
        self, count: int = 1, labels: Sequence[str] | None = None, *, srtp: bool = False
    ) -> SdpAnswer:
        """Our own ``recvonly`` offer, for an INVITE that came without SDP (Cisco CUCM): every
        allowed codec the installed FFmpeg decodes, in the allow-list's order, and
        telephone-event. The SRC's answer (in the ACK) goes to :meth:`accept_answer`.
        """
        if labels is not None:
            count = len(labels)
        offer = self._new_description()
        streams: list[NegotiatedStream] = []
        used: set[int] = set()
        for index in range(count):
            label = labels[index] if labels is not None else None
            slot = self._slot_for(index, label, used)
            if slot is None:
                raise NotAcceptable("no port available for our offer")
            used.add(id(slot))
            media = MediaDescription(
                media="audio", port=slot.port, proto="RTP/SAVP" if srtp else "RTP/AVP"
            )
            for name in self.codecs:
                if name not in DECODABLE or name not in self.available:
                    continue
                for pt, fmtp in _OFFER_PTS[name]:
                    media.formats.append(str(pt))
                    media.attributes.append(Attribute("rtpmap", f"{pt} {_rtpmap(DECODABLE[name])}"))
                    if fmtp:
                        media.attributes.append(Attribute("fmtp", f"{pt} {fmtp}"))
            media.formats.append(str(_OFFER_TELEPHONE_EVENT_PT))
            media.attributes.append(
                Attribute("rtpmap", f"{_OFFER_TELEPHONE_EVENT_PT} telephone-event/8000")
            )
            media.attributes.append(Attribute("fmtp", f"{_OFFER_TELEPHONE_EVENT_PT} 0-16"))
            if label is not None:
                media.attributes.append(Attribute("label", label))
            if srtp:
                if slot.srtp_key is None:
                    slot.srtp_key = _new_srtp_key()
                for tag, suite in enumerate(self.srtp_suites, start=1):
                    media.attributes.append(
                        Attribute("crypto", f"{tag} {suite} inline:{slot.srtp_key}")
                    )
            media.attributes.append(Attribute("recvonly"))
            offer.media.append(media)
            streams.append(
                NegotiatedStream(
                    index=index,
                    label=label,
                    media="audio",
                    accepted=False,
                    port=slot.port,
                    proto=media.proto,
                    direction="recvonly",
                    reason="awaiting the answer",
                )
            )
        result = self._finish(offer, streams)
        self._local_offer = result.sdp
        return result

    def accept_answer(
        self, answer: SessionDescription | bytes | str
    ) -> tuple[NegotiatedStream, ...]:
        """What the SRC's answer to :meth:`offer_for_delayed_offer` negotiated: per stream,
        every payload type of the answer we decode, in the answer's order."""
        if self._local_offer is None:
            raise ValueError("no offer of ours is waiting for an answer")
        if not isinstance(answer, SessionDescription):
            answer = parse_sdp(answer)
        ours = self._local_offer
        streams: list[NegotiatedStream] = []
        for index, local in enumerate(ours.media):
            remote = answer.media[index] if index < len(answer.media) else None
            base = NegotiatedStream(
                index=index,
                label=local.label,
                media=local.media,
                accepted=False,
                port=local.port,
                proto=local.proto,
            )
            if remote is None or remote.port == 0:
                streams.append(replace(base, port=0, reason="refused in the answer"))
                continue
            rtpmaps = {**local.rtpmaps, **remote.rtpmaps}
            fmtps = {**local.fmtps, **remote.fmtps}
            formats = self._select(remote.payload_types, rtpmaps, fmtps)
            if not formats:
                streams.append(replace(base, reason="no acceptable codec in the answer"))
                continue
            srtp = None
            if local.proto in SRTP_PROFILES:
                crypto = next((c for c in remote.cryptos if c.suite in self.srtp_suites), None)
                local_key = next((c.inline_key for c in local.cryptos), None)
                if crypto is None or not crypto.inline_key or local_key is None:
                    streams.append(replace(base, reason="SRTP answer without a usable a=crypto"))
                    continue
                srtp = SrtpKeys(
                    crypto.suite, crypto.tag, crypto.inline_key, local_key, crypto.key_params
                )
            connection = answer.connection_for(remote)
            hold = answer.is_on_hold(remote) or answer.direction_for(remote) == "recvonly"
            streams.append(
                replace(
                    base,
                    **_negotiated(formats),
                    accepted=True,
                    direction="inactive" if hold else "recvonly",
                    paused=hold,
                    srtp=srtp,
                    remote_address=connection.host if connection else None,
                    remote_port=remote.port,
                )
            )
        self._local_offer = None
        return tuple(streams)

    # -- o= line and state --------------------------------------------------------------

    def _new_description(self) -> SessionDescription:
        return SessionDescription(
            origin=Origin(
                username=self.username,
                session_id=str(self.session_id),
                session_version=str(self.version),
                addr_type="IP6" if ":" in self.address else "IP4",
                address=self.address,
            ),
            session_name=self.session_name,
            connection=Connection.for_address(self.address),
        )

    def _finish(
        self, description: SessionDescription, streams: list[NegotiatedStream]
    ) -> SdpAnswer:
        description.origin.session_version = "0"
        signature = description.to_bytes()
        changed = self._signature is not None and signature != self._signature
        if changed:
            self.version += 1
        self._signature = signature
        description.origin.session_version = str(self.version)
        return SdpAnswer(description, description.to_bytes(), tuple(streams), changed)

    @property
    def local_ports(self) -> dict[int, int]:
        """Our RTP port by m-line index, for every stream that holds one."""
        return {slot.index: slot.port for slot in self._slots}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state, enough to answer re-offers identically after a restart."""
        return {
            "address": self.address,
            "codecs": list(self.codecs),
            "srtp_suites": list(self.srtp_suites),
            "username": self.username,
            "session_name": self.session_name,
            "session_id": self.session_id,
            "version": self.version,
            "signature": self._signature.decode("utf-8") if self._signature else None,
            "slots": [vars(slot).copy() for slot in self._slots],
            "local_offer": str(self._local_offer) if self._local_offer else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], ports: PortSource) -> SdpAnswerer:
        """Restore an answerer saved with :meth:`to_dict`; ``ports`` serves new streams.

        ``codecs`` of snapshots written before the allow-list was one (a preference list)
        read as the allow-list; the decoders available are those of this machine."""
        answerer = cls(
            data["address"],
            ports,
            codecs=data.get("codecs", ALL_CODECS),
            srtp_suites=data.get("srtp_suites", SRTP_SUITES),
            username=data.get("username", "siprec-node"),
            session_name=data.get("session_name", "siprec-node"),
            session_id=int(data["session_id"]),
        )
        answerer.version = int(data.get("version", 1))
        signature = data.get("signature")
        answerer._signature = signature.encode("utf-8") if signature else None
        answerer._slots = [_Slot(**slot) for slot in data.get("slots", [])]
        local_offer = data.get("local_offer")
        answerer._local_offer = parse_sdp(local_offer) if local_offer else None
        return answerer


def _fmtp_supported(canonical: str, fmtp: str | None) -> bool:
    """False for format parameters the decoder cannot honour: AMR's interleaving and robust
    sorting (RFC 4867 §8.1) reorder frames across packets; refusing the payload type is the
    answer RFC 4867 §8.3.1 allows."""
    if canonical not in ("AMR", "AMR-WB") or not fmtp:
        return True
    params = {}
    for part in fmtp.split(";"):
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip()
    return "interleaving" not in params and params.get("robust-sorting", "0") == "0"


def _negotiated(formats: Sequence[_Format]) -> dict[str, Any]:
    """The :class:`NegotiatedStream` fields that describe the accepted payload types."""
    audio = [f for f in formats if f.kind == "audio"]
    events = [f for f in formats if f.kind == "event"]
    first = audio[0]
    clock = DECODABLE[first.canonical or ""].clock_rate
    event = next((f for f in events if f.offered.clock_rate == clock), None)
    event = event or (events[0] if events else None)
    return {
        "codec": DECODABLE[first.canonical or ""].name,
        "payload_type": first.payload_type,
        "clock_rate": clock,
        "channels": first.channels,
        "fmtp": first.fmtp,
        "telephone_event_pt": event.payload_type if event else None,
        "formats": tuple(f.payload_format() for f in audio),
        "telephone_event_pts": tuple(f.payload_type for f in events),
        "comfort_noise_pts": tuple(f.payload_type for f in formats if f.kind == "cn"),
    }


def _audio_line(
    proto: str,
    port: int,
    formats: Sequence[_Format],
    label: str | None,
    direction: str,
    srtp: SrtpKeys | None,
) -> MediaDescription:
    line = MediaDescription(
        media="audio", port=port, proto=proto, formats=[str(f.payload_type) for f in formats]
    )
    for f in formats:
        line.attributes.append(Attribute("rtpmap", f"{f.payload_type} {_rtpmap(f.offered)}"))
        if f.fmtp:
            line.attributes.append(Attribute("fmtp", f"{f.payload_type} {f.fmtp}"))
    if label is not None:
        line.attributes.append(Attribute("label", label))
    if srtp is not None:
        line.attributes.append(
            Attribute("crypto", str(Crypto(srtp.tag, srtp.suite, f"inline:{srtp.local_key}")))
        )
    line.attributes.append(Attribute(direction))
    return line


def _rtpmap(codec: Codec) -> str:
    text = f"{codec.name}/{codec.clock_rate}"
    return f"{text}/{codec.channels}" if codec.channels != 1 else text


def _new_srtp_key() -> str:
    return base64.b64encode(secrets.token_bytes(SRTP_KEY_LENGTH)).decode("ascii")
