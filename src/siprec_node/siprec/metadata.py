"""The RFC 7865 recording metadata model and how updates apply to it.

A recording session's metadata describes the communication sessions being recorded, their
participants and media streams, and which participant sends or receives which stream. An SRC
sends a ``complete`` snapshot (which replaces what we had) or a ``partial`` update (which changes
only the elements it names, matched by id). Times are kept as the strings the SRC sent
(RFC 3339 in principle); vendor extension data is kept as raw XML, one string per element.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

DataMode = Literal["complete", "partial"]


@dataclass
class DisplayName:
    """A participant's display name, optionally tagged with a language (``xml:lang``)."""

    text: str
    lang: str | None = None


@dataclass
class NameID:
    """An address of record and the display names that go with it."""

    aor: str | None = None
    names: list[DisplayName] = field(default_factory=list)


@dataclass
class Group:
    """A group of related communication sessions (``<group>``)."""

    id: str
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: list[str] = field(default_factory=list)


@dataclass
class CommunicationSession:
    """A communication session being recorded (``<session>``)."""

    id: str
    sip_session_ids: list[str] = field(default_factory=list)
    group_refs: list[str] = field(default_factory=list)
    start_time: str | None = None
    stop_time: str | None = None
    extensions: list[str] = field(default_factory=list)


@dataclass
class Participant:
    """A party of a communication session (``<participant>``)."""

    id: str
    name_ids: list[NameID] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)

    @property
    def aor(self) -> str | None:
        """The first address of record given for this participant."""
        return next((n.aor for n in self.name_ids if n.aor), None)

    @property
    def display_name(self) -> str | None:
        """The first display name given for this participant."""
        return next((d.text for n in self.name_ids for d in n.names if d.text), None)


@dataclass
class Stream:
    """A media stream (``<stream>``); ``label`` matches an ``a=label`` of the SDP."""

    id: str
    session_id: str | None = None
    label: str | None = None
    mode: str | None = None  # BroadWorks: mixed | separate
    extensions: list[str] = field(default_factory=list)


@dataclass
class SessionRecordingAssoc:
    """When a communication session joined (or left) this recording."""

    session_id: str
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: list[str] = field(default_factory=list)


@dataclass
class ParticipantSessionAssoc:
    """When a participant joined (or left) a communication session."""

    participant_id: str
    session_id: str | None = None
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: list[str] = field(default_factory=list)


@dataclass
class ParticipantStreamAssoc:
    """The streams a participant sends and receives (stream ids)."""

    participant_id: str
    send: list[str] = field(default_factory=list)
    recv: list[str] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)


@dataclass
class RecordingMetadata:
    """One RFC 7865 metadata document, or the state obtained by applying several.

    Element collections keep document order. ``warnings`` lists what the parser found unexpected
    but accepted (an unknown namespace, an element without an id, ...).
    """

    data_mode: DataMode = "complete"
    groups: list[Group] = field(default_factory=list)
    sessions: list[CommunicationSession] = field(default_factory=list)
    participants: list[Participant] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    session_recording_assocs: list[SessionRecordingAssoc] = field(default_factory=list)
    participant_session_assocs: list[ParticipantSessionAssoc] = field(default_factory=list)
    participant_stream_assocs: list[ParticipantStreamAssoc] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    # -- look-ups ------------------------------------------------------------------------

    def participant(self, participant_id: str) -> Participant | None:
        """The participant with this id, if any."""
        return next((p for p in self.participants if p.id == participant_id), None)

    def stream(self, stream_id: str) -> Stream | None:
        """The stream with this id, if any."""
        return next((s for s in self.streams if s.id == stream_id), None)

    def streams_with_label(self, label: str) -> list[Stream]:
        """The streams declared with this SDP label (usually one)."""
        return [s for s in self.streams if s.label == label]

    def stream_assoc(self, participant_id: str) -> ParticipantStreamAssoc | None:
        """The send/recv association of a participant, if any."""
        return next(
            (a for a in self.participant_stream_assocs if a.participant_id == participant_id),
            None,
        )

    def senders(self, stream_id: str) -> list[Participant]:
        """The participants that send on a stream (several for a mixed stream)."""
        result = []
        for assoc in self.participant_stream_assocs:
            if stream_id in assoc.send:
                participant = self.participant(assoc.participant_id)
                if participant is not None and participant not in result:
                    result.append(participant)
        return result

    def senders_for_label(self, label: str) -> list[Participant]:
        """The participants that send on the stream(s) carrying this SDP label."""
        return self.senders_by_label().get(label, [])

    def senders_by_label(self) -> dict[str, list[Participant]]:
        """:meth:`senders_for_label` for every label at once, in time linear in the metadata."""
        participants: dict[str, Participant] = {}
        for participant in self.participants:
            participants.setdefault(participant.id, participant)  # the first one, as participant()
        by_stream: dict[str, dict[str, Participant]] = {}  # stream id -> senders by id, in order
        for assoc in self.participant_stream_assocs:
            sender = participants.get(assoc.participant_id)
            if sender is not None:
                for stream_id in assoc.send:
                    by_stream.setdefault(stream_id, {}).setdefault(sender.id, sender)
        by_label: dict[str, dict[str, Participant]] = {}
        for stream in self.streams:
            if stream.label is not None:
                found = by_label.setdefault(stream.label, {})
                for sender in by_stream.get(stream.id, {}).values():
                    found.setdefault(sender.id, sender)
        return {label: list(found.values()) for label, found in by_label.items() if found}

    def active_participants(self) -> list[Participant]:
        """Participants not disassociated from every session they were associated with."""
        associated: set[str] = set()
        still_in: set[str] = set()
        for assoc in self.participant_session_assocs:
            associated.add(assoc.participant_id)
            if assoc.disassociate_time is None:
                still_in.add(assoc.participant_id)
        return [p for p in self.participants if p.id not in associated or p.id in still_in]

    def vendor_identifiers(self) -> dict[str, str]:
        """Call identifiers SRCs put in extension data (Oracle/Acme ``apkt:ucid``, Cisco GUID,
        user-to-user data), by a stable name; the first value of each wins."""
        found: dict[str, str] = {}
        holders: list[Any] = [
            self,
            *self.groups,
            *self.sessions,
            *self.participants,
            *self.streams,
            *self.session_recording_assocs,
            *self.participant_session_assocs,
            *self.participant_stream_assocs,
        ]
        for holder in holders:
            for extension in holder.extensions:
                for match in _VENDOR_ID.finditer(extension):
                    name = _VENDOR_ID_NAMES[match.group(1).lower()]
                    found.setdefault(name, match.group(2).strip())
        return found

    # -- snapshots -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary of this metadata (the fields of every element, as
        ``dataclasses.asdict`` gives them; msgspec builds it ~50x faster, and the call snapshot
        takes it at every change of state)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordingMetadata:
        """Rebuild metadata from :meth:`to_dict` output."""
        mode = data.get("data_mode", "complete")
        return cls(
            data_mode="partial" if mode == "partial" else "complete",
            groups=[_element(Group, g) for g in data.get("groups", [])],
            sessions=[_element(CommunicationSession, s) for s in data.get("sessions", [])],
            participants=[
                Participant(
                    id=p["id"],
                    name_ids=[
                        NameID(
                            aor=n.get("aor"),
                            names=[DisplayName(**d) for d in n.get("names", [])],
                        )
                        for n in p.get("name_ids", [])
                    ],
                    extensions=list(p.get("extensions", [])),
                )
                for p in data.get("participants", [])
            ],
            streams=[_element(Stream, s) for s in data.get("streams", [])],
            session_recording_assocs=[
                _element(SessionRecordingAssoc, a) for a in data.get("session_recording_assocs", [])
            ],
            participant_session_assocs=[
                _element(ParticipantSessionAssoc, a)
                for a in data.get("participant_session_assocs", [])
            ],
            participant_stream_assocs=[
                _element(ParticipantStreamAssoc, a)
                for a in data.get("participant_stream_assocs", [])
            ],
            extensions=list(data.get("extensions", [])),
            warnings=list(data.get("warnings", [])),
        )


def _element(cls: Any, data: dict[str, Any]) -> Any:
    """An element from its :meth:`RecordingMetadata.to_dict` form; its lists are lists of its
    own even when the form has tuples (a live call's snapshot keeps its lists as tuples)."""
    return cls(**{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()})


_VENDOR_ID_NAMES = {
    "ucid": "UCID",
    "guid": "GUID",
    "ciscoguid": "GUID",
    "uui": "User-to-User",
    "user-to-user": "User-to-User",
}
_VENDOR_ID = re.compile(
    r"<(?:[\w.-]+:)?(ucid|guid|ciscoguid|uui|user-to-user)\b[^>]*(?<!/)>([^<]+)</",
    re.IGNORECASE,
)


def apply_update(
    current: RecordingMetadata | None, update: RecordingMetadata, *, owned: bool = False
) -> RecordingMetadata:
    """The metadata state after ``update``; neither argument is modified, unless ``owned`` says
    the caller hands ``update`` over (a document just parsed): a complete one is then taken as
    it is instead of copied (a deep copy of a parsed document was ~10 % of answering an INVITE).

    A ``complete`` update replaces the current state. A ``partial`` one is merged element by
    element, matched by id: fields it gives replace ours, elements it introduces are added, and
    a participant's stream association is replaced as a whole (a participant that stops sending
    is sent with no ``<send>``). The result is always ``complete`` and carries the update's
    warnings.
    """
    if update.data_mode == "complete" or current is None:
        result = update if owned else copy.deepcopy(update)
        if update.data_mode == "partial":
            result.warnings.append("partial metadata update without a prior snapshot")
        result.data_mode = "complete"
        return result
    result = copy.deepcopy(current)
    result.data_mode = "complete"
    result.warnings = list(update.warnings)
    _merge_all(result.groups, update.groups, lambda g: g.id)
    _merge_all(result.sessions, update.sessions, lambda s: s.id)
    _merge_all(result.participants, update.participants, lambda p: p.id)
    _merge_all(result.streams, update.streams, lambda s: s.id)
    _merge_all(
        result.session_recording_assocs, update.session_recording_assocs, lambda a: a.session_id
    )
    _merge_all(
        result.participant_session_assocs,
        update.participant_session_assocs,
        lambda a: (a.participant_id, a.session_id),
        wildcard=lambda a: a.participant_id if a.session_id is None else None,
    )
    _replace_all(
        result.participant_stream_assocs,
        update.participant_stream_assocs,
        lambda a: a.participant_id,
    )
    known = set(result.extensions)
    for extension in update.extensions:
        if extension not in known:
            known.add(extension)
            result.extensions.append(extension)
    return result


def _merge_all(items: list[Any], updates: list[Any], key: Any, *, wildcard: Any = None) -> None:
    """Merge each of ``updates`` into the elements of ``items`` with the same key (all of them),
    or append a copy. With ``wildcard``, an update it gives a participant id for (an association
    without a session id) that matches no key updates every element of that participant.
    Dictionaries index ``items`` so that the cost is linear in both lists."""
    by_key: dict[Any, list[Any]] = {}
    by_participant: dict[Any, list[Any]] = {}
    for item in items:
        by_key.setdefault(key(item), []).append(item)
        if wildcard is not None:
            by_participant.setdefault(item.participant_id, []).append(item)
    for new in updates:
        matches = by_key.get(key(new), [])
        group = wildcard(new) if wildcard is not None else None
        if group is not None and not matches:
            matches = by_participant.get(group, [])
        if not matches:
            added = copy.deepcopy(new)
            items.append(added)
            by_key.setdefault(key(added), []).append(added)
            if wildcard is not None:
                by_participant.setdefault(added.participant_id, []).append(added)
            continue
        for existing in list(matches):
            _merge_fields(existing, new)


def _merge_fields(existing: Any, new: Any) -> None:
    for name, value in vars(new).items():
        if name == "extensions":
            known = set(existing.extensions)
            for extension in value:
                if extension not in known:
                    known.add(extension)
                    existing.extensions.append(extension)
        elif value not in (None, [], ""):
            setattr(existing, name, copy.deepcopy(value))


def _replace_all(items: list[Any], updates: list[Any], key: Any) -> None:
    """Replace the first element of ``items`` with each update's key, or append a copy."""
    position: dict[Any, int] = {}
    for index, item in enumerate(items):
        position.setdefault(key(item), index)
    for new in updates:
        at = position.get(key(new))
        if at is None:
            position[key(new)] = len(items)
            items.append(copy.deepcopy(new))
        else:
            items[at] = copy.deepcopy(new)
