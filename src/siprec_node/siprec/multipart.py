"""Split a SIP body into its SDP and recording-metadata parts, and build multipart bodies.

Recording clients disagree on nearly everything a MIME body allows: part order, quoted or
unquoted boundaries, a trailing space after the boundary (in the header and on the delimiter
lines), bare LF line endings, parts with no Content-Disposition, ``application/rs-metadata``
without ``+xml``. The parser here follows RFC 2046 where it is unambiguous (preamble and epilogue
ignored, the line ending before a delimiter belongs to the delimiter, whitespace after a
delimiter is padding) and is lenient everywhere else.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from siprec_node.siprec.errors import BodyError, UnsupportedBody

SDP_TYPE = "application/sdp"
METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")
METADATA_REQUEST_TYPE = "application/rs-metadata-request"
RECORDING_SESSION_DISPOSITION = "recording-session"

_MAX_NESTING = 3
# A MIME header line: a field name (printable ASCII except ':') then a colon.
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
# SIP compact forms that some stacks also use inside body parts.
_COMPACT_HEADERS = {"c": "content-type", "l": "content-length", "e": "content-encoding"}


@dataclass
class ExtractedBody:
    """What a SIP body holds for the recorder.

    ``sdp`` and ``metadata`` are the raw part contents (``None`` when absent: a delayed offer
    has neither). ``metadata_content_type`` is the bare media type the metadata came as.
    ``other_types`` lists the media types of parts that were ignored, and ``dispositions`` the
    Content-Disposition types seen on parts (``recording-session`` marks a SIPREC body).
    """

    sdp: bytes | None
    metadata: bytes | None
    metadata_content_type: str | None
    other_types: list[str] = field(default_factory=list)
    dispositions: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when the body carried neither SDP nor metadata (e.g. a delayed offer)."""
        return self.sdp is None and self.metadata is None


@dataclass(frozen=True)
class BodyPart:
    """One part of a multipart body we send."""

    content_type: str
    content: bytes
    disposition: str | None = None


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into the lower-cased media type and its parameters.

    Parameter names are lower-cased; values are unquoted (backslash escapes honoured) and
    unquoted values are stripped of surrounding whitespace. A quoted value keeps its spaces.
    """
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        start = i
        while i < n and rest[i] not in "=;":
            i += 1
        name = rest[start:i].strip().lower()
        if i >= n or rest[i] == ";":
            if name:
                params[name] = ""
            continue
        i += 1  # '='
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1  # closing quote (or end of an unterminated value)
            param_value = "".join(chars)
            while i < n and rest[i] != ";":
                i += 1
        else:
            start = i
            while i < n and rest[i] != ";":
                i += 1
            param_value = rest[start:i].strip()
        if name:
            params[name] = param_value
    return media_type.strip().lower(), params


def extract_body(content_type: str | None, body: bytes | None) -> ExtractedBody:
    """Find the SDP and the recording metadata in a SIP body.

    Raises :class:`UnsupportedBody` (415) for a body type we cannot record from or a multipart
    holding neither SDP nor metadata, and :class:`BodyError` (400) for a broken multipart.
    """
    if not body or not body.strip():
        return ExtractedBody(sdp=None, metadata=None, metadata_content_type=None)
    if not content_type or not content_type.strip():
        if _looks_like_sdp(body):
            return ExtractedBody(sdp=body, metadata=None, metadata_content_type=None)
        raise UnsupportedBody("body without a Content-Type")
    media_type, params = parse_content_type(content_type)
    if media_type == SDP_TYPE:
        return ExtractedBody(sdp=body, metadata=None, metadata_content_type=None)
    if media_type in METADATA_TYPES:
        return ExtractedBody(sdp=None, metadata=body, metadata_content_type=media_type)
    if not media_type.startswith("multipart/"):
        raise UnsupportedBody(f"unsupported body type {media_type or content_type!r}")
    result = ExtractedBody(sdp=None, metadata=None, metadata_content_type=None)
    _collect_parts(body, params, result, depth=0)
    if result.is_empty:
        kinds = list(dict.fromkeys(result.other_types))  # a body may hold thousands of parts
        found = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "") or "no parts"
        raise UnsupportedBody(f"multipart body without SDP or recording metadata ({found})")
    return result


def build_multipart(
    parts: Sequence[BodyPart], *, boundary: str | None = None, subtype: str = "mixed"
) -> tuple[str, bytes]:
    """Build a multipart body; returns ``(content_type_header_value, body_bytes)``.

    Lines end in CRLF. A boundary is generated (and checked not to occur in any part) unless
    one is given.
    """
    if not parts:
        raise ValueError("a multipart body needs at least one part")
    if boundary is None:
        boundary = "siprec-" + secrets.token_hex(12)
        while any(boundary.encode() in part.content for part in parts):
            boundary = "siprec-" + secrets.token_hex(12)
    elif not boundary or boundary != boundary.rstrip() or len(boundary) > 70:
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    delimiter = b"--" + boundary.encode("ascii")
    out = bytearray()
    for part in parts:
        out += delimiter + b"\r\n"
        out += b"Content-Type: " + part.content_type.encode("ascii") + b"\r\n"
        if part.disposition:
            out += b"Content-Disposition: " + part.disposition.encode("ascii") + b"\r\n"
        # the CRLF after the content belongs to the next delimiter (RFC 2046 section 5.1.1)
        out += b"\r\n" + part.content + b"\r\n"
    out += delimiter + b"--\r\n"
    quoted = boundary if re.fullmatch(r"[A-Za-z0-9'()+_,\-./:=?]+", boundary) else f'"{boundary}"'
    return f"multipart/{subtype};boundary={quoted}", bytes(out)


def metadata_request_part(reason: str = "SRS requests a metadata snapshot") -> BodyPart:
    """The body part of an RFC 7866 metadata snapshot request sent by the recorder."""
    return BodyPart(
        content_type=METADATA_REQUEST_TYPE,
        content=reason.encode("utf-8") + b"\r\n",
        disposition=RECORDING_SESSION_DISPOSITION,
    )


def _looks_like_sdp(content: bytes) -> bool:
    return content.lstrip().startswith(b"v=")


def _collect_parts(body: bytes, params: dict[str, str], result: ExtractedBody, depth: int) -> None:
    boundary = params.get("boundary", "").rstrip(" \t")
    if not boundary:
        raise BodyError("multipart body without a boundary parameter")
    for headers, content in _split_multipart(body, boundary):
        disposition = headers.get("content-disposition")
        if disposition:
            result.dispositions.append(disposition.partition(";")[0].strip().lower())
        encoding = headers.get("content-transfer-encoding", "").strip().lower()
        content = _decode_transfer_encoding(content, encoding)
        type_value = headers.get("content-type")
        part_params: dict[str, str]
        if type_value is None:
            # RFC 2046 defaults to text/plain; an unlabelled SDP is still an SDP.
            part_type, part_params = (
                ("application/sdp", {})
                if _looks_like_sdp(content)
                else (
                    "text/plain",
                    {},
                )
            )
        else:
            part_type, part_params = parse_content_type(type_value)
        if part_type in (SDP_TYPE, *METADATA_TYPES) and not content.strip():
            result.other_types.append(part_type)  # an empty part offers nothing
        elif part_type == SDP_TYPE and result.sdp is None:
            result.sdp = content
        elif part_type in METADATA_TYPES and result.metadata is None:
            result.metadata = content
            result.metadata_content_type = part_type
        elif part_type.startswith("multipart/") and depth < _MAX_NESTING:
            _collect_parts(content, part_params, result, depth + 1)
        else:
            result.other_types.append(part_type)


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into ``(headers, content)`` pairs; headers are lower-cased."""
    delimiter = b"--" + boundary.encode("utf-8")
    parts: list[list[bytes]] = []
    current: list[bytes] | None = None
    closed = False
    for line in body.splitlines(keepends=True):
        bare = line.rstrip(b"\r\n").rstrip(b" \t")
        if bare.startswith(delimiter):
            rest = bare[len(delimiter) :]
            if rest == b"":
                current = []
                parts.append(current)
                continue
            if rest == b"--":
                closed = True
                break
        if current is not None:
            current.append(line)
    if not parts:
        raise BodyError(f"multipart body without a delimiter line for boundary {boundary!r}")
    if not closed:
        raise BodyError(f"multipart body without a closing delimiter for boundary {boundary!r}")
    return [_split_part(lines) for lines in parts]


def _split_part(lines: list[bytes]) -> tuple[dict[str, str], bytes]:
    if lines:
        # The line ending before a delimiter belongs to the delimiter (RFC 2046 section 5.1.1).
        last = lines[-1]
        if last.endswith(b"\r\n"):
            lines[-1] = last[:-2]
        elif last.endswith((b"\n", b"\r")):
            lines[-1] = last[:-1]
    headers: dict[str, str] = {}
    index = 0
    if lines and lines[0].strip(b"\r\n") and not _HEADER_LINE.match(lines[0]):
        return headers, b"".join(lines)  # no header block at all
    last_name: str | None = None
    while index < len(lines):
        line = lines[index]
        index += 1
        text = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
        if not text.strip():
            break
        if text[0] in " \t" and last_name is not None:
            headers[last_name] += " " + text.strip()
            continue
        name, colon, value = text.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        name = _COMPACT_HEADERS.get(name, name)
        last_name = name
        headers.setdefault(name, value.strip())
    return headers, b"".join(lines[index:])


def _decode_transfer_encoding(content: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(content.split()), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise BodyError(f"body part with invalid base64 content: {exc}") from exc
    if encoding == "quoted-printable":
        return quopri.decodestring(content)
    return content
