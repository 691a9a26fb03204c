"""A tolerant parser for RFC 7865 recording metadata and the dialects SRCs actually send.

Accepted besides the RFC: the namespace without ``:1`` and ``urn:ietf:params:xml:ns:siprec``
with a ``recording_metadata`` root (BroadWorks/Webex), any prefix or none, ``id=`` instead of
``participant_id=`` and friends, ``dataMode``, AORs without a scheme, participants carrying
their own ``<aor>``, ``<send>`` and ``<recv>`` (BroadWorks and the older draft used by
Oracle/Acme), ``<extensiondata>`` wrappers, and a stream declared twice for one label with an
empty id (Avaya). XML that is not well-formed, carries a DTD or entities, or exceeds the size
limit raises :class:`MetadataError` (empty or not well-formed: its subclass
:class:`MetadataNotWellFormed`, which the SIP layer tolerates); whatever is merely unexpected is
accepted and noted in ``RecordingMetadata.warnings``.

The input is the attacker's to choose, so every step costs time linear in its size: duplicates
are found with sets, never list scans; nesting is limited at parse time and subtrees are
written without recursion; a document with more elements (stream ids counted) than
``max_elements`` is refused with :class:`MetadataLimitExceeded` before it is read further.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sized
from xml.sax.saxutils import escape, quoteattr

from siprec_node.siprec.errors import MetadataError, MetadataLimitExceeded, MetadataNotWellFormed
from siprec_node.siprec.metadata import (
    CommunicationSession,
    DisplayName,
    Group,
    NameID,
    Participant,
    ParticipantSessionAssoc,
    ParticipantStreamAssoc,
    RecordingMetadata,
    SessionRecordingAssoc,
    Stream,
)

DEFAULT_MAX_SIZE = 256 * 1024
# Real documents hold tens of elements (a large conference a few hundred): this leaves room and
# bounds the time one request can hold the SIP loop (worst case, every element an unknown
# extension kept as XML: ~30-60 ms per 1,000 elements on a loaded 2-core machine).
DEFAULT_MAX_ELEMENTS = 1000
# Distinct warnings kept per document; the rest are counted in a last one.
MAX_WARNINGS = 50
# RFC 7865 documents are about five levels deep; vendor extension data adds a few more.
MAX_DEPTH = 64
RECORDING_NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
KNOWN_NAMESPACES = frozenset(
    {RECORDING_NAMESPACE, "urn:ietf:params:xml:ns:recording", "urn:ietf:params:xml:ns:siprec"}
)
ROOT_NAMES = frozenset({"recording", "recordingmetadata"})
_XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
_ENCODING_DECL = re.compile(r"^(\s*<\?xml[^>]*?)\s+encoding\s*=\s*(['\"])[^'\"]*\2", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_PHONE_NUMBER = re.compile(r"^\+?[0-9][0-9\-. ()]*$")


def parse_metadata(
    data: bytes | str,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> RecordingMetadata:
    """Parse one metadata document (the body of an ``application/rs-metadata+xml`` part).

    ``max_elements`` bounds the XML elements plus the stream ids listed in ``<send>``/``<recv>``
    texts; beyond it :class:`MetadataLimitExceeded` (400) is raised.
    """
    if isinstance(data, str):
        data = _ENCODING_DECL.sub(r"\1", data, count=1).encode("utf-8")
    if len(data) > max_size:
        raise MetadataError(f"recording metadata of {len(data)} bytes exceeds {max_size}")
    data = data.strip()
    if not data:
        raise MetadataNotWellFormed("empty recording metadata")
    root, prefixes, elements = _parse_xml(data, max_elements)
    return _Reader(prefixes, max_elements, max_elements - elements).read(root)


_FEED = 16 * 1024
"""Bytes handed to the parser at a time, so that the limits stop it as it goes."""


class _Refused(Exception):
    """A DTD: refused (entities, external references and their expansions need one)."""


class _Builder(ET.TreeBuilder):
    """ElementTree's C tree builder, counting elements and depth as they come, noting the
    prefix each namespace was declared with, and refusing any DTD.

    Without a DTD there is no entity to expand (an undefined one is a parse error) and no
    external reference to fetch: what defusedxml guarded against cannot occur. Its pure-Python
    parser made a parse of bench/e2e's 1.3 KB document (read included) 139 µs instead of 98.
    """

    def __init__(self, max_elements: int) -> None:
        super().__init__()
        self.max_elements = max_elements
        self.prefixes: dict[str, str] = {}
        self.depth = 0
        self.elements = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self.depth += 1
        self.elements += 1
        if self.depth > MAX_DEPTH:
            raise MetadataError(f"recording metadata nested deeper than {MAX_DEPTH}")
        if self.elements > self.max_elements:
            raise MetadataLimitExceeded(_too_many(self.max_elements))
        return super().start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self.depth -= 1
        return super().end(tag)

    def start_ns(self, prefix: str, uri: str) -> None:
        self.prefixes.setdefault(uri, prefix)

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _Refused(f"DOCTYPE {name}")


def _parse_xml(data: bytes, max_elements: int) -> tuple[ET.Element, dict[str, str], int]:
    """Parse safely; return the root, the prefix each namespace URI was declared with and the
    number of elements. Depth and element count are checked as the parser goes."""
    builder = _Builder(max_elements)
    try:
        parser = ET.XMLParser(target=builder)
        for offset in range(0, len(data), _FEED):
            parser.feed(data[offset : offset + _FEED])
        root = parser.close()
    except ET.ParseError as exc:
        raise MetadataNotWellFormed(f"recording metadata is not well-formed XML: {exc}") from exc
    except _Refused as exc:
        raise MetadataError(f"recording metadata with a DTD or entities refused: {exc}") from exc
    except (LookupError, ValueError) as exc:
        # An XML declaration naming an encoding Python does not know (LookupError) or one expat
        # cannot take (UTF-7 and other multi-byte codecs: ValueError, UnicodeError).
        raise MetadataError(f"recording metadata in an unsupported encoding: {exc}") from exc
    if root is None:  # pragma: no cover - the parser raises on an empty document
        raise MetadataError("recording metadata without a root element")
    return root, builder.prefixes, builder.elements


def _too_many(max_elements: int) -> str:
    return f"recording metadata with more than {max_elements} elements (stream ids counted)"


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return "", tag


def _norm(name: str) -> str:
    """Compare names ignoring case, ``_`` and ``-`` (``dataMode``, ``participant_id``...)."""
    return name.replace("_", "").replace("-", "").lower()


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    text = " ".join(element.text.split())
    return text or None


class _Reader:
    """Turns one parsed document into a :class:`RecordingMetadata`."""

    def __init__(self, prefixes: dict[str, str], max_elements: int, id_budget: int) -> None:
        self.prefixes = prefixes
        self.max_elements = max_elements
        self.id_budget = id_budget
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        # members of the id lists filled here (send/recv, SIP session ids, group refs), by list
        self._members: dict[int, set[str]] = {}
        self.own_namespace = ""
        self.groups: dict[str, Group] = {}
        self.sessions: dict[str, CommunicationSession] = {}
        self.participants: dict[str, Participant] = {}
        self.streams: list[Stream] = []
        self.sras: dict[str, SessionRecordingAssoc] = {}
        self.psas: dict[tuple[str, str | None], ParticipantSessionAssoc] = {}
        self.pstas: dict[str, ParticipantStreamAssoc] = {}
        self.extensions: list[str] = []
        self.data_mode = "complete"

    # -- helpers -------------------------------------------------------------------------

    def warn(self, message: str) -> None:
        if message in self._warned:
            return
        self._warned.add(message)
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        else:
            dropped = len(self._warned) - MAX_WARNINGS
            more = f"{dropped} more warning{'s' if dropped > 1 else ''} not kept"
            if len(self.warnings) == MAX_WARNINGS:
                self.warnings.append(more)
            else:
                self.warnings[-1] = more

    def add_unique(self, into: list[str], value: str) -> None:
        """Append ``value`` unless ``into`` (a list this reader fills) already holds it."""
        members = self._members.get(id(into))
        if members is None:
            members = self._members[id(into)] = set(into)
        if value not in members:
            members.add(value)
            into.append(value)

    def is_own(self, element: ET.Element) -> bool:
        uri, _ = _split_tag(element.tag)
        return uri in ("", self.own_namespace) or uri in KNOWN_NAMESPACES

    def name(self, element: ET.Element) -> str:
        return _norm(_split_tag(element.tag)[1])

    def attr(self, element: ET.Element, *names: str) -> str | None:
        wanted = [_norm(n) for n in names]
        found = {_norm(_split_tag(key)[1]): value.strip() for key, value in element.attrib.items()}
        for name in wanted:
            if name in found:
                return found[name]
        return None

    def children(self, element: ET.Element) -> Iterable[tuple[str, ET.Element]]:
        for child in element:
            if isinstance(child.tag, str):  # skip comments and processing instructions
                yield (self.name(child) if self.is_own(child) else ""), child

    def extension(self, element: ET.Element, into: list[str], where: str) -> None:
        """Keep a child we do not model as raw XML; unwrap ``<extensiondata>``."""
        if self.is_own(element):
            local = self.name(element)
            if local == "extensiondata":
                inner = [c for c in element if isinstance(c.tag, str)]
                if inner:
                    for child in inner:
                        into.append(_serialize(child, self.prefixes))
                    return
            else:
                self.warn(f"unknown element <{_split_tag(element.tag)[1]}> in {where} kept")
        into.append(_serialize(element, self.prefixes))

    def aor(self, value: str | None) -> str | None:
        if not value:
            return None
        value = value.strip().strip("<>")
        if not value:
            return None
        if not _SCHEME.match(value):
            self.warn(f"AOR without a URI scheme: {value!r}")
            scheme = "tel:" if _PHONE_NUMBER.match(value) else "sip:"
            value = scheme + value.replace(" ", "")
        return value

    # -- document ------------------------------------------------------------------------

    def read(self, root: ET.Element) -> RecordingMetadata:
        uri, local = _split_tag(root.tag)
        self.own_namespace = uri
        if _norm(local) not in ROOT_NAMES:
            self.warn(f"unexpected root element <{local}>")
        if uri and uri not in KNOWN_NAMESPACES:
            self.warn(f"unknown metadata namespace {uri!r}")
        elif not uri:
            self.warn("metadata without a namespace")
        for name, child in self.children(root):
            handler = getattr(self, f"read_{name}", None) if name else None
            if handler is not None:
                handler(child)
            else:
                self.extension(child, self.extensions, "recording")
        return RecordingMetadata(
            data_mode="partial" if self.data_mode == "partial" else "complete",
            groups=list(self.groups.values()),
            sessions=list(self.sessions.values()),
            participants=list(self.participants.values()),
            streams=self.finish_streams(),
            session_recording_assocs=list(self.sras.values()),
            participant_session_assocs=list(self.psas.values()),
            participant_stream_assocs=list(self.pstas.values()),
            extensions=self.extensions,
            warnings=self.warnings,
        )

    def read_datamode(self, element: ET.Element) -> None:
        mode = (_text(element) or "").lower()
        if mode not in ("complete", "partial"):
            self.warn(f"unknown data mode {mode!r}, taken as complete")
            mode = "complete"
        self.data_mode = mode

    def read_group(self, element: ET.Element) -> None:
        group_id = self.attr(element, "group_id", "id") or self.missing_id("group", self.groups)
        group = self.groups.setdefault(group_id, Group(id=group_id))
        for name, child in self.children(element):
            if name == "associatetime":
                group.associate_time = _text(child)
            elif name == "disassociatetime":
                group.disassociate_time = _text(child)
            else:
                self.extension(child, group.extensions, "group")

    def read_session(self, element: ET.Element) -> None:
        session_id = self.attr(element, "session_id", "id") or self.missing_id(
            "session", self.sessions
        )
        session = self.sessions.setdefault(session_id, CommunicationSession(id=session_id))
        for name, child in self.children(element):
            text = _text(child)
            if name == "sipsessionid":
                if text:
                    self.add_unique(session.sip_session_ids, text)
            elif name == "groupref":
                if text:
                    self.add_unique(session.group_refs, text)
            elif name == "starttime":
                session.start_time = text
            elif name == "stoptime":
                session.stop_time = text
            elif name in ("associatetime", "disassociatetime"):
                # older draft: the session's own association with the recording
                sra = self.sras.setdefault(session_id, SessionRecordingAssoc(session_id))
                if name == "associatetime":
                    sra.associate_time = text
                else:
                    sra.disassociate_time = text
            else:
                self.extension(child, session.extensions, "session")

    def read_participant(self, element: ET.Element) -> None:
        participant_id = self.attr(element, "participant_id", "id") or self.missing_id(
            "participant", self.participants
        )
        participant = self.participants.setdefault(participant_id, Participant(id=participant_id))
        session_id = self.attr(element, "session_id", "session")
        bare = NameID()  # BroadWorks: <aor> and <name> directly under <participant>
        times: dict[str, str | None] = {}
        for name, child in self.children(element):
            if name == "nameid":
                name_id = NameID(aor=self.aor(self.attr(child, "aor")))
                for sub_name, sub in self.children(child):
                    if sub_name == "name":
                        name_id.names.append(self.display_name(sub))
                participant.name_ids.append(name_id)
            elif name == "aor":
                if bare.aor is None:
                    bare.aor = self.aor(_text(child))
                else:
                    participant.name_ids.append(NameID(aor=self.aor(_text(child))))
            elif name in ("name", "displayname"):
                bare.names.append(self.display_name(child))
            elif name in ("send", "recv"):
                assoc = self.pstas.setdefault(
                    participant_id, ParticipantStreamAssoc(participant_id)
                )
                self.stream_refs(child, assoc.send if name == "send" else assoc.recv)
            elif name in ("associatetime", "disassociatetime"):
                times[name] = _text(child)
            else:
                self.extension(child, participant.extensions, "participant")
        if bare.aor or bare.names:
            participant.name_ids.insert(0, bare)
        if session_id is not None or times:
            psa = self.psas.setdefault(
                (participant_id, session_id),
                ParticipantSessionAssoc(participant_id, session_id),
            )
            psa.associate_time = times.get("associatetime", psa.associate_time)
            psa.disassociate_time = times.get("disassociatetime", psa.disassociate_time)

    def display_name(self, element: ET.Element) -> DisplayName:
        lang = element.get(f"{{{_XML_NAMESPACE}}}lang") or self.attr(element, "lang")
        return DisplayName(text=_text(element) or "", lang=lang)

    def stream_refs(self, element: ET.Element, into: list[str]) -> None:
        """Stream ids from ``<send>id</send>`` or ``<send><id>id</id></send>``."""
        ids = (element.text or "").split()
        extra = len(ids)  # ids that are not elements of their own (an <id> is counted already)
        for name, child in self.children(element):
            if name in ("id", "streamid", "streamref"):
                listed = (child.text or "").split()
                extra += max(0, len(listed) - 1)
                ids.extend(listed)
        self.id_budget -= extra
        if self.id_budget < 0:
            raise MetadataLimitExceeded(_too_many(self.max_elements))
        for stream_id in ids:
            self.add_unique(into, stream_id)

    def read_stream(self, element: ET.Element) -> None:
        stream = Stream(
            id=self.attr(element, "stream_id", "id") or "",
            session_id=self.attr(element, "session_id", "session"),
        )
        for name, child in self.children(element):
            if name == "label":
                stream.label = _text(child)
            elif name == "mode":
                stream.mode = _text(child)
            else:
                self.extension(child, stream.extensions, "stream")
        self.streams.append(stream)

    def read_sessionrecordingassoc(self, element: ET.Element) -> None:
        session_id = self.attr(element, "session_id", "session", "id")
        if not session_id:
            self.warn("sessionrecordingassoc without a session id ignored")
            return
        sra = self.sras.setdefault(session_id, SessionRecordingAssoc(session_id))
        self.read_times(element, sra, "sessionrecordingassoc")

    def read_participantsessionassoc(self, element: ET.Element) -> None:
        participant_id = self.attr(element, "participant_id", "participant", "id")
        if not participant_id:
            self.warn("participantsessionassoc without a participant id ignored")
            return
        session_id = self.attr(element, "session_id", "session")
        psa = self.psas.setdefault(
            (participant_id, session_id), ParticipantSessionAssoc(participant_id, session_id)
        )
        self.read_times(element, psa, "participantsessionassoc")

    def read_participantstreamassoc(self, element: ET.Element) -> None:
        participant_id = self.attr(element, "participant_id", "participant", "id")
        if not participant_id:
            self.warn("participantstreamassoc without a participant id ignored")
            return
        assoc = self.pstas.setdefault(participant_id, ParticipantStreamAssoc(participant_id))
        for name, child in self.children(element):
            if name == "send":
                self.stream_refs(child, assoc.send)
            elif name == "recv":
                self.stream_refs(child, assoc.recv)
            else:
                self.extension(child, assoc.extensions, "participantstreamassoc")

    def read_times(
        self,
        element: ET.Element,
        target: SessionRecordingAssoc | ParticipantSessionAssoc,
        where: str,
    ) -> None:
        for name, child in self.children(element):
            if name == "associatetime":
                target.associate_time = _text(child)
            elif name == "disassociatetime":
                target.disassociate_time = _text(child)
            else:
                self.extension(child, target.extensions, where)

    def missing_id(self, kind: str, existing: Sized) -> str:
        generated = f"{kind}-{len(existing) + 1}"
        self.warn(f"<{kind}> without an id, named {generated!r}")
        return generated

    def finish_streams(self) -> list[Stream]:
        """Merge streams declared twice and resolve those with no id."""
        by_id: dict[str, Stream] = {}
        for stream in self.streams:
            if stream.id in by_id:
                existing = by_id[stream.id]
                existing.session_id = stream.session_id or existing.session_id
                existing.label = stream.label or existing.label
                existing.mode = stream.mode or existing.mode
                existing.extensions.extend(stream.extensions)
            elif stream.id:
                by_id[stream.id] = stream
        result = list(by_id.values())
        labels = {s.label for s in result}
        for stream in self.streams:
            if stream.id:
                continue
            if stream.label and stream.label in labels:
                self.warn(f"stream without an id for label {stream.label!r} ignored")
            elif stream.label:
                stream.id = f"label-{stream.label}"
                self.warn(f"stream without an id, named {stream.id!r}")
                labels.add(stream.label)
                result.append(stream)
            else:
                self.warn("stream without an id or a label ignored")
        return result


def _serialize(element: ET.Element, declared: dict[str, str]) -> str:
    """Serialise a subtree as XML, keeping the document's prefixes where possible."""
    uris: dict[str, None] = {}  # ordered set: declarations follow first use
    in_attributes: set[str] = set()
    unqualified = False
    for node in element.iter():
        if not isinstance(node.tag, str):
            continue
        uri, _ = _split_tag(node.tag)
        if uri:
            uris.setdefault(uri)
        else:
            unqualified = True
        for key in node.attrib:
            attr_uri, _ = _split_tag(key)
            if attr_uri:
                in_attributes.add(attr_uri)
                if attr_uri != _XML_NAMESPACE:
                    uris.setdefault(attr_uri)
    assigned: dict[str, str] = {}
    taken: set[str] = set()
    generated = 0
    default_taken = unqualified
    for uri in uris:
        prefix = declared.get(uri)
        if prefix == "" and not default_taken and uri not in in_attributes:
            default_taken = True
        elif not prefix or prefix in taken or prefix == "xml":
            while f"ns{generated}" in taken:
                generated += 1
            prefix = f"ns{generated}"
        assigned[uri] = prefix
        taken.add(prefix)
    declarations = "".join(
        f" xmlns:{p}={quoteattr(u)}" if p else f" xmlns={quoteattr(u)}" for u, p in assigned.items()
    )
    return _write(element, assigned, declarations).strip()


def _qualified(name: str, assigned: dict[str, str]) -> str:
    uri, local = _split_tag(name)
    if not uri:
        return local
    prefix = "xml" if uri == _XML_NAMESPACE else assigned[uri]
    return f"{prefix}:{local}" if prefix else local


def _write(root: ET.Element, assigned: dict[str, str], declarations: str = "") -> str:
    """The XML of a subtree, written with an explicit stack (no recursion: depth is free)."""
    out: list[str] = []
    pending: list[ET.Element | str] = [root]  # elements to open, or text to write as is
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        tag = _qualified(item.tag, assigned)
        attributes = "".join(
            f" {_qualified(key, assigned)}={quoteattr(value)}" for key, value in item.attrib.items()
        )
        opening = f"<{tag}{declarations if item is root else ''}{attributes}"
        children = list(item)
        if not item.text and not any(isinstance(c.tag, str) or c.tail for c in children):
            out.append(opening + "/>")
            continue
        out.append(opening + ">" + escape(item.text or ""))
        pending.append(f"</{tag}>")
        for child in reversed(children):
            if child.tail:
                pending.append(escape(child.tail))
            if isinstance(child.tag, str):
                pending.append(child)
    return "".join(out)
