"""A recording session: who is recorded on which stream, and whether a request is SIPREC.

Streams are tied to participants by label: an SDP ``a=label`` names a metadata ``<stream>``,
and the participants whose stream association lists that stream under ``send`` are the ones
heard on it (several for a mixed stream). Without metadata (a plain SIP trunk fork), the first
recorded stream is the caller and the second the callee, named from From and To.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from siprec_node.siprec.metadata import Participant, RecordingMetadata, apply_update
from siprec_node.siprec.sdp_answer import NegotiatedStream

_SRC_FEATURE = re.compile(r"[;<\s]\+sip\.src(?![\w.\-])", re.IGNORECASE)
_SRC_PARAM = re.compile(r";\s*src\s*(?=[;>,=]|$)", re.IGNORECASE)


def recognize_siprec(
    require: Sequence[str], contact_values: Sequence[str], content_disposition_values: Sequence[str]
) -> bool:
    """True when a request presents itself as a SIPREC recording session.

    Any one sign suffices: ``Require: siprec``; a Contact with the ``+sip.src`` feature tag
    (inside or outside the URI brackets, even without a closing ``>``) or a bare ``;src``
    parameter (BroadWorks); a ``recording-session`` Content-Disposition (header or body part).
    """
    if any(tag.strip().lower() == "siprec" for value in require for tag in value.split(",")):
        return True
    if any(_SRC_FEATURE.search(value) or _SRC_PARAM.search(value) for value in contact_values):
        return True
    return any(
        item.partition(";")[0].strip().lower() == "recording-session"
        for value in content_disposition_values
        for item in value.split(",")
    )


@dataclass(frozen=True)
class Party:
    """A party named by a SIP header (From or To): display name and URI."""

    display_name: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class RecordedParticipant:
    """A participant as the recording knows it, from metadata or from SIP headers."""

    id: str
    name: str | None
    aor: str | None
    source: Literal["metadata", "sip"]


@dataclass
class RecordedStream:
    """One m-line of the call as negotiated, with its pause state."""

    index: int
    label: str | None
    negotiated: NegotiatedStream
    paused: bool = False

    @property
    def recorded(self) -> bool:
        return self.negotiated.accepted


class RecordingSession:
    """The recording-domain state of one SIPREC (or plain SIP) call.

    ``session_id`` is ours (a UUID), distinct from the SIP Call-ID. The SIP layer feeds it
    metadata (:meth:`apply_metadata`) and negotiated streams (:meth:`update_streams`).
    """

    def __init__(
        self,
        call_id: str = "",
        *,
        session_id: str | None = None,
        caller: Party | None = None,
        callee: Party | None = None,
        metadata: RecordingMetadata | None = None,
    ) -> None:
        self.session_id = session_id or str(uuid.uuid4())
        self.call_id = call_id
        self.caller = caller or Party()
        self.callee = callee or Party()
        self._metadata: bytes | None = None
        self._metadata_tree: dict[str, Any] | None = None
        self.streams: list[RecordedStream] = []
        self._dict_cache: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        if metadata is not None:
            self.apply_metadata(metadata)

    @property
    def metadata(self) -> RecordingMetadata | None:
        """The metadata state, decoded afresh at each access (a copy: change it with
        :meth:`apply_metadata` or by assigning).

        Kept as its JSON: a live call would otherwise hold ~50 GC-tracked objects for it (the
        elements, their dicts and lists), and full collections take as long as the objects
        tracked. Decoding costs a few microseconds, a few times per call."""
        if self._metadata is None:
            return None
        return _METADATA_DECODER.decode(self._metadata)

    @metadata.setter
    def metadata(self, value: RecordingMetadata | None) -> None:
        self._metadata = None if value is None else _ENCODER.encode(value)
        self._metadata_tree = None

    def _metadata_dict(self) -> dict[str, Any] | None:
        """The metadata's ``to_dict()`` form for snapshots, made once per change and shared by
        them (no snapshot changes it), with tuples for lists: the GC stops tracking those."""
        if self._metadata is not None and self._metadata_tree is None:
            self._metadata_tree = _frozen(msgspec.json.decode(self._metadata))
        return self._metadata_tree

    # -- updates -------------------------------------------------------------------------

    def apply_metadata(
        self, update: RecordingMetadata, *, owned: bool = False
    ) -> RecordingMetadata:
        """Apply a complete snapshot or a partial update; returns the new metadata. ``owned``:
        ``update`` is handed over (see ``metadata.apply_update``)."""
        metadata = apply_update(self.metadata, update, owned=owned)
        self.metadata = metadata
        return metadata

    def update_streams(self, negotiated: Iterable[NegotiatedStream]) -> None:
        """Take the streams of a new answer; pause state follows the SDP (hold = paused)."""
        self.streams = [
            RecordedStream(index=n.index, label=n.label, negotiated=n, paused=n.paused)
            for n in negotiated
        ]

    def set_paused(
        self, paused: bool, *, label: str | None = None, index: int | None = None
    ) -> None:
        """Pause or resume one stream (by label or index), or every stream when neither given."""
        for stream in self._select(label, index):
            stream.paused = paused

    # -- queries -------------------------------------------------------------------------

    @property
    def recorded_streams(self) -> list[RecordedStream]:
        return [s for s in self.streams if s.recorded]

    @property
    def paused(self) -> bool:
        """True when every recorded stream is paused."""
        streams = self.recorded_streams
        return bool(streams) and all(s.paused for s in streams)

    def stream(
        self, *, label: str | None = None, index: int | None = None
    ) -> RecordedStream | None:
        found = self._select(label, index)
        return found[0] if found and (label is not None or index is not None) else None

    def participants(self) -> list[RecordedParticipant]:
        """Everyone the recording is about: metadata participants, else caller and callee."""
        return self._participants(self.metadata)

    def _participants(self, metadata: RecordingMetadata | None) -> list[RecordedParticipant]:
        if metadata is not None and metadata.participants:
            return [
                RecordedParticipant(p.id, p.display_name, p.aor, "metadata")
                for p in metadata.participants
            ]
        return [
            RecordedParticipant("caller", self.caller.display_name, self.caller.uri, "sip"),
            RecordedParticipant("callee", self.callee.display_name, self.callee.uri, "sip"),
        ]

    def participants_for_stream(self, stream: RecordedStream) -> list[RecordedParticipant]:
        """Who is heard on a stream: metadata senders for its label, else by position."""
        return self._who_hears().of(stream)

    def participant_for_label(self, label: str) -> RecordedParticipant | None:
        """The (first) participant heard on the stream with this label."""
        stream = self.stream(label=label)
        if stream is None:
            return None
        found = self.participants_for_stream(stream)
        return found[0] if found else None

    def streams_by_participant(self) -> dict[str, list[int]]:
        """Stream indexes each participant is heard on."""
        who = self._who_hears()
        result: dict[str, list[int]] = {}
        for stream in self.recorded_streams:
            for participant in who.of(stream):
                result.setdefault(participant.id, []).append(stream.index)
        return result

    def _who_hears(self) -> _Hearing:
        """What :meth:`participants_for_stream` needs, computed once for all streams (a call's
        m-lines and metadata are the SRC's to choose: no per-stream scan of either)."""
        metadata = self.metadata
        everyone = self._participants(metadata)
        senders: dict[str, list[Participant]] = {}
        candidates = everyone
        if metadata is not None:
            senders = metadata.senders_by_label()
            if metadata.participants:
                active = {p.id for p in metadata.active_participants()}
                candidates = [p for p in everyone if p.id in active] or everyone
        positions: dict[int, int] = {}
        for position, recorded in enumerate(self.recorded_streams):
            positions.setdefault(recorded.index, position)
        return _Hearing({p.id: p for p in everyone}, senders, positions, candidates, everyone)

    def _select(self, label: str | None, index: int | None) -> list[RecordedStream]:
        return [
            s
            for s in self.streams
            if (label is None or s.label == label) and (index is None or s.index == index)
        ]

    # -- snapshots -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot (participant mapping included for readers of the snapshot).

        The same dict comes back while the session is unchanged (the call's snapshots are
        taken at every state change, and rebuilding it was a tenth of the SIP process's time
        at 100 calls/s): treat it as read-only.
        """
        key = (
            self.session_id,
            self.call_id,
            self.caller,
            self.callee,
            self._metadata,
            tuple((s, s.paused) for s in self.streams),
        )
        cached = self._dict_cache
        if cached is not None and _same(cached[0], key):
            return cached[1]
        result: dict[str, Any] = _frozen(self._build_dict())  # tuples: the GC stops tracking
        self._dict_cache = (key, result)
        return result

    def _build_dict(self) -> dict[str, Any]:
        who = self._who_hears()
        return {
            "session_id": self.session_id,
            "call_id": self.call_id,
            "caller": vars(self.caller).copy(),
            "callee": vars(self.callee).copy(),
            "metadata": self._metadata_dict(),
            "streams": [
                {
                    "index": s.index,
                    "label": s.label,
                    "paused": s.paused,
                    "negotiated": s.negotiated.to_dict(),
                    "participant_ids": [p.id for p in who.of(s)],
                }
                for s in self.streams
            ],
            "participants": [vars(p).copy() for p in who.everyone],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordingSession:
        """Rebuild a session from :meth:`to_dict` output."""
        session = cls(
            data.get("call_id", ""),
            session_id=data["session_id"],
            caller=Party(**data.get("caller") or {}),
            callee=Party(**data.get("callee") or {}),
        )
        metadata = data.get("metadata")
        session.metadata = RecordingMetadata.from_dict(metadata) if metadata else None
        session.streams = [
            RecordedStream(
                index=s["index"],
                label=s.get("label"),
                negotiated=NegotiatedStream.from_dict(s["negotiated"]),
                paused=bool(s.get("paused", False)),
            )
            for s in data.get("streams", [])
        ]
        return session


def _frozen(tree: Any) -> Any:
    """A JSON tree with tuples for its lists (the same JSON)."""
    if isinstance(tree, dict):
        return {key: _frozen(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return tuple(_frozen(value) for value in tree)
    return tree


_ENCODER = msgspec.json.Encoder()
_METADATA_DECODER = msgspec.json.Decoder(RecordingMetadata)


@dataclass(frozen=True)
class _Hearing:
    """Participants by id, metadata senders by label, recorded-stream positions and the
    participants positions map to: one computation answers every stream of a call."""

    by_id: dict[str, RecordedParticipant]
    senders: dict[str, list[Participant]]
    positions: dict[int, int]
    candidates: list[RecordedParticipant]
    everyone: list[RecordedParticipant]
    """:meth:`RecordingSession.participants`, in order."""

    def of(self, stream: RecordedStream) -> list[RecordedParticipant]:
        if stream.label is not None:
            found = [self.by_id[p.id] for p in self.senders.get(stream.label, ())]
            if found:
                return found
        # no label match: the n-th recorded stream is the n-th (active) participant
        position = self.positions.get(stream.index)
        if position is None:
            return []
        return [self.candidates[position]] if position < len(self.candidates) else []


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two :meth:`RecordingSession.to_dict` keys name the same objects in the same
    state: metadata and streams are replaced, never changed in place, when the call changes
    (setting the metadata encodes it anew; a stream's pause flag is compared by value)."""
    if a[:4] != b[:4] or a[4] is not b[4] or len(a[5]) != len(b[5]):
        return False
    return all(x is y and px == py for (x, px), (y, py) in zip(a[5], b[5], strict=True))
