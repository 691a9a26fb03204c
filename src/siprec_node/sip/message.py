"""SIP messages: an immutable model, a tolerant bounded parser, and a serialiser.

The parser accepts what real SBCs send (bare LF line endings, compact header names, folded lines,
odd whitespace, several values per header and several headers per name) and turns everything else
into one :class:`SipParseError` carrying the status to answer with. The body is never rewritten:
bare-LF tolerance applies to the header section only, so Content-Length keeps counting the bytes
that were actually sent.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Union

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.uri import (
    NameAddr,
    format_params,
    parse_decimal,
    split_host_port,
    split_params,
    split_quoted,
)

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65535
DEFAULT_MAX_HEADERS = 256
# INTEROP: SRCs send BYE, ACK and CANCEL whose CSeq names the INVITE's method. Their intent is
# unambiguous, and refusing them leaves the call up until the session timeout: the request line
# wins (logged by the handler). Any other method with a mismatched CSeq stays a 400.
CSEQ_METHOD_TOLERATED = frozenset({"BYE", "ACK", "CANCEL"})

COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "Min-Expires",
        "Min-SE",
        "MIME-Version",
        "Organization",
        "P-Asserted-Identity",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "RAck",
        "Server",
        "Session-Expires",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "User-to-User",
        "Via",
        "Warning",
        "WWW-Authenticate",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Referred-By",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "Identity",
        "Identity-Info",
    )
}

# Headers whose grammar is a comma-separated list, so that "Via: a, b" means two Vias. Other
# headers (dates, auth challenges, User-Agent...) may contain commas that are not separators.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "proxy-require",
        "record-route",
        "require",
        "route",
        "supported",
        "unsupported",
        "via",
        "warning",
        "reason",
    }
)

REQUIRED_REQUEST_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")
REQUIRED_RESPONSE_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_SP_HT = " \t"  # the only whitespace SIP knows (LWS); str.strip() would also eat \x1c, \x85...
_LWS = re.compile(r"[ \t]+")
_VIA_PROTOCOL = re.compile(
    r"[ \t]*SIP[ \t]*/[ \t]*[^ \t/]+[ \t]*/[ \t]*([^ \t/;,]+)[ \t]+(.*)", re.I | re.S
)
# The end of the header section: an empty line, whatever mix of CRLF and bare LF ends the lines.
HEADER_END = re.compile(rb"\n\r?\n")


@functools.lru_cache(maxsize=512)  # ~150 lookups per call, of a few dozen names
def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


@dataclass(frozen=True)
class Headers:
    """An ordered, immutable list of ``(name, value)`` header fields.

    Names are stored canonically; lookups are case-insensitive. ``get_all`` returns every value
    of a header, splitting comma-separated list headers into their elements.
    """

    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, items: Iterable[tuple[str, str]]) -> Headers:
        """Build from pairs, canonicalising names."""
        return cls(tuple((canonical_name(n), str(v)) for n, v in items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @functools.cached_property
    def _index(self) -> dict[str, tuple[str, ...]]:
        """Field values by lower-cased name, in order: made on the first lookup, so that a
        message's lookups (a dozen per request) do not each walk every field. Tuples, which
        the cyclic GC stops tracking (lists it tracks as long as a retained message lives)."""
        index: dict[str, list[str]] = {}
        for n, v in self.fields:
            index.setdefault(n.lower(), []).append(v)
        return {name: tuple(values) for name, values in index.items()}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return canonical_name(name).lower() in self._index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field value of ``name`` (unsplit), or ``default``."""
        values = self._index.get(canonical_name(name).lower())
        return values[0] if values else default

    def get_raw(self, name: str) -> list[str]:
        """Every field value of ``name`` as received (not split on commas)."""
        return list(self._index.get(canonical_name(name).lower(), ()))

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers are split into their comma-separated elements."""
        raw = self.get_raw(name)
        if canonical_name(name).lower() not in LIST_HEADERS:
            return raw
        out: list[str] = []
        for value in raw:
            out.extend(p.strip(_SP_HT) for p in split_quoted(value, ",") if p.strip(_SP_HT))
        return out

    def tokens(self, name: str) -> set[str]:
        """Lower-cased tokens of a list header such as Require, Supported or Allow."""
        return {v.lower() for v in self.get_all(name)}

    def replace(self, name: str, *values: str) -> Headers:
        """A copy where every ``name`` field is replaced by ``values`` (at the first position)."""
        canon = canonical_name(name)
        lower = canon.lower()
        out: list[tuple[str, str]] = []
        inserted = False
        for n, v in self.fields:
            if n.lower() == lower:
                if not inserted:
                    out.extend((canon, x) for x in values)
                    inserted = True
                continue
            out.append((n, v))
        if not inserted:
            out.extend((canon, x) for x in values)
        return Headers(tuple(out))

    def add(self, name: str, value: str) -> Headers:
        """A copy with one more field at the end."""
        return Headers((*self.fields, (canonical_name(name), value)))

    def remove(self, name: str) -> Headers:
        """A copy without any ``name`` field."""
        lower = canonical_name(name).lower()
        return Headers(tuple((n, v) for n, v in self.fields if n.lower() != lower))


@dataclass(frozen=True)
class Via:
    """One Via hop: ``SIP/2.0/UDP host:port;branch=...;rport;received=...``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via element (one comma-separated item).

        Whitespace is allowed around the slashes and the colon (RFC 3261 LWS), as in
        ``SIP / 2.0 / UDP host : 5060``.
        """
        match = _VIA_PROTOCOL.match(text)
        if match is None:
            raise SipParseError(f"bad Via: {text[:80]!r}")
        sent_by, _, param_text = match.group(2).partition(";")
        host, port = split_host_port(_LWS.sub("", sent_by))
        return cls(
            transport=match.group(1).upper(),
            host=host,
            port=port,
            params=split_params(param_text),
        )

    @property
    def branch(self) -> str | None:
        """The branch parameter (transaction identity)."""
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


@dataclass(frozen=True)
class CSeq:
    """``CSeq: <number> <method>``."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse a CSeq value; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError(f"bad CSeq: {text[:80]!r}")
        number = parse_decimal(parts[0], max_digits=10)
        if number is None:
            raise SipParseError(f"bad CSeq: {text[:80]!r}")
        if number >= 2**31:
            raise SipParseError(f"CSeq number out of range: {text[:80]!r}")
        return cls(number, parts[1].upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


class _MessageMixin:
    """The parsed views of a message's headers, each parsed once (a message is immutable; the
    transaction layer, the dialogs and the call control ask for them a dozen times a request)."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self.headers.get("Call-ID") or ""

    @functools.cached_property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        return CSeq.parse(self.headers.get("CSeq") or "")

    @functools.cached_property
    def from_(self) -> NameAddr:
        """The parsed From header."""
        return NameAddr.parse(self.headers.get("From") or "")

    @functools.cached_property
    def to(self) -> NameAddr:
        """The parsed To header."""
        return NameAddr.parse(self.headers.get("To") or "")

    @functools.cached_property
    def vias(self) -> list[Via]:
        """Every Via hop, topmost first."""
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @functools.cached_property
    def top_via(self) -> Via:
        """The topmost Via (the one this hop's transaction is keyed on)."""
        return Via.parse(self.headers.get_all("Via")[0])

    @property
    def content_type(self) -> str | None:
        """The Content-Type value, if any."""
        return self.headers.get("Content-Type")


@dataclass(frozen=True)
class SipRequest(_MessageMixin):
    """A SIP request, immutable once parsed or built."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def cseq_method_mismatch(self) -> bool:
        """True when the CSeq names another method than the request line (tolerated for
        :data:`CSEQ_METHOD_TOLERATED` only; the request line says what the request is)."""
        return self.cseq.method != self.method

    def serialize(self) -> bytes:
        """Wire form with CRLF line endings and a Content-Length matching the body."""
        start = f"{self.method} {self.uri} {self.version}"
        return _serialize(start, self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass(frozen=True)
class SipResponse(_MessageMixin):
    """A SIP response, immutable once parsed or built."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION

    def serialize(self) -> bytes:
        """Wire form with CRLF line endings and a Content-Length matching the body."""
        return _serialize(f"{self.version} {self.status} {self.reason}", self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.serialize()


SipMessage = Union[SipRequest, SipResponse]  # noqa: UP007 - used at runtime in isinstance


def _serialize(start: str, headers: Headers, body: bytes) -> bytes:
    lines = [start]
    lines.extend(f"{n}: {v}" for n, v in headers.fields if n != "Content-Length")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """Split raw bytes at the end of the header section (CRLFCRLF, bare LFLF or a mix).

    Returns ``(head, rest)`` or ``None`` when the header section is incomplete; ``head`` ends
    with the last header line's text (its line end excluded).
    """
    match = HEADER_END.search(data)
    if match is None:
        return None
    end = match.start()
    if end and data[end - 1 : end] == b"\r":
        end -= 1
    return data[:end], data[match.end() :]


def parse_message(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_headers: int = DEFAULT_MAX_HEADERS,
    stream: bool = False,
) -> SipMessage:
    """Parse one SIP message from ``data``.

    ``stream`` says the bytes came from a stream transport, where Content-Length is mandatory
    (a missing one means an empty body) and extra bytes are a framing error; on datagrams a
    missing Content-Length means "the rest of the datagram" and trailing bytes are ignored.
    Raises :class:`SipParseError` for anything unacceptable, and nothing else.
    """
    if len(data) > max_size:
        raise SipParseError(f"message larger than {max_size} bytes", status=413)
    data = data.lstrip(b"\r\n")  # RFC 3261 7.5: leading CRLFs before the start line are ignored
    if not data:
        raise SipParseError("empty message")
    parts = split_head(data)
    if parts is None:
        # A datagram may end right after the last header line with no blank line.
        head, rest = data.rstrip(b"\r\n"), b""
    else:
        head, rest = parts
    try:
        head_text = head.decode("utf-8")
    except UnicodeDecodeError:
        head_text = head.decode("latin-1")
    if "\x00" in head_text:
        raise SipParseError("NUL byte in header section")
    lines = _unfold(head_text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    if not lines:
        raise SipParseError("empty message")
    start_line = lines[0].strip(_SP_HT)
    header_lines = lines[1:]
    if len(header_lines) > max_headers:
        raise SipParseError(f"more than {max_headers} header fields", status=413)
    fields: list[tuple[str, str]] = []
    for line in header_lines:
        if not line.strip(_SP_HT):
            continue
        name, colon, value = line.partition(":")
        name = name.strip(_SP_HT)
        if not colon or not name or not _TOKEN_CHARS.issuperset(name):
            raise SipParseError(f"malformed header line: {line[:60]!r}")
        fields.append((canonical_name(name), value.strip(_SP_HT)))
    headers = Headers(tuple(fields))
    body = _frame_body(headers, rest, stream)
    # Content-Length is framing, derived from the body on output: not kept in the model.
    return _build(start_line, headers.remove("Content-Length"), body)


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP or HTAB) onto the previous header line.

    The pieces of a folded line are joined once at the end: appending to the line each time
    would copy it per continuation, quadratic in a header folded thousands of times.
    """
    out: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and len(out) > 1 and line.strip(_SP_HT):
            pieces = out[-1]
            pieces[-1] = pieces[-1].rstrip(_SP_HT)
            pieces.append(line.strip(_SP_HT))
        else:
            out.append([line])
    return [" ".join(pieces) for pieces in out]


def content_length(values: Iterable[str]) -> int | None:
    """The body length announced by the Content-Length field values, ``None`` when there are none.

    Several equal values are accepted (some proxies duplicate the header); conflicting or
    non-numeric ones raise :class:`SipParseError`.
    """
    lengths = {v.strip(_SP_HT) for v in values}
    if not lengths:
        return None
    if len(lengths) != 1:
        raise SipParseError("conflicting Content-Length headers")
    text = lengths.pop()
    length = parse_decimal(text, max_digits=10)
    if length is None:
        raise SipParseError(f"bad Content-Length: {text[:20]!r}")
    return length


def head_content_length(head: bytes) -> int | None:
    """The Content-Length announced in a raw header section (start line first), if any.

    For stream framing, before the message is parsed: lines are split and unfolded as
    :func:`parse_message` does. Raises :class:`SipParseError` for conflicting or bad values.
    """
    text = head.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n")
    values = []
    for line in _unfold(text.split("\n"))[1:]:
        name, colon, value = line.partition(":")
        if colon and canonical_name(name.strip(_SP_HT)) == "Content-Length":
            values.append(value)
    return content_length(values)


def _frame_body(headers: Headers, rest: bytes, stream: bool) -> bytes:
    length = content_length(headers.get_raw("Content-Length"))
    if length is None:
        return b"" if stream else rest
    if length > len(rest):
        raise SipParseError(
            f"Content-Length {length} larger than the {len(rest)} body bytes received"
        )
    if stream and length < len(rest):
        raise SipParseError("bytes after the body on a stream transport")
    return rest[:length]


def _build(start_line: str, headers: Headers, body: bytes) -> SipMessage:
    parts = _LWS.split(start_line, maxsplit=2)
    if len(parts) < 2:
        raise SipParseError(f"malformed start line: {start_line[:60]!r}")
    if parts[0].upper().startswith("SIP/"):
        if parts[0].upper() != SIP_VERSION:
            raise SipParseError(f"unsupported version {parts[0][:20]!r}", status=505)
        code = parse_decimal(parts[1], max_digits=3)
        if code is None or not 100 <= code <= 699:
            raise SipParseError(f"bad status code {parts[1][:20]!r}")
        reason = parts[2].strip(_SP_HT) if len(parts) > 2 else ""
        response = SipResponse(code, reason, headers, body)
        _check_required(response, REQUIRED_RESPONSE_HEADERS)
        response.cseq  # noqa: B018 - parsed (or refused) now, kept for the layers above
        return response
    if len(parts) != 3:
        raise SipParseError(f"malformed request line: {start_line[:60]!r}")
    method, uri, version = parts[0], parts[1], parts[2].strip(_SP_HT)
    if not _TOKEN_CHARS.issuperset(method):
        raise SipParseError(f"bad method {method[:20]!r}")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported version {version[:20]!r}", status=505)
    if ":" not in uri:
        raise SipParseError(f"bad Request-URI {uri[:60]!r}")
    request = SipRequest(method.upper(), uri, headers, body)
    _check_required(request, REQUIRED_REQUEST_HEADERS)
    cseq = request.cseq
    if cseq.method != request.method and request.method not in CSEQ_METHOD_TOLERATED:
        raise SipParseError(f"CSeq method {cseq.method} does not match {request.method}")
    return request


def _check_required(message: SipRequest | SipResponse, names: tuple[str, ...]) -> None:
    """Refuse a message missing a required header or whose From, To or top Via does not
    parse; the parsed values stay cached on the message."""
    headers = message.headers
    for name in names:
        value = headers.get(name)
        if not value:  # values are trimmed of SP/HTAB already
            raise SipParseError(f"missing {name} header")
    message.from_  # noqa: B018
    message.to  # noqa: B018
    if not headers.get_all("Via"):
        raise SipParseError("missing Via header")
    message.top_via  # noqa: B018


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status``."""
    return REASON_PHRASES.get(status, "Unknown")


REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
}


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """Build a response to ``request`` per RFC 3261 §8.2.6.

    Via, From, Call-ID and CSeq are copied (a tolerated CSeq naming another method than the
    request line is answered with the request line's method); To is copied and gets ``to_tag``
    when it has no tag yet (never for 100 Trying); Record-Route is copied on 2xx/1xx of
    dialog-creating requests.
    """
    out: list[tuple[str, str]] = [("Via", v) for v in request.headers.get_raw("Via")]
    to_value = request.headers.get("To") or ""
    if to_tag and status != 100:
        to = request.to  # parsed once per request
        if to.tag is None:
            to_value = str(to.with_param("tag", to_tag))
    out.append(("From", request.headers.get("From") or ""))
    out.append(("To", to_value))
    out.append(("Call-ID", request.call_id))
    cseq = request.headers.get("CSeq") or ""
    if request.cseq_method_mismatch:
        # The SRC's client transaction is the request line's method (§17.1.3): answer in it,
        # never with an INVITE CSeq that a CANCEL's 200 would make look like the INVITE's.
        cseq = f"{request.cseq.number} {request.method}"
    out.append(("CSeq", cseq))
    if request.method in ("INVITE", "SUBSCRIBE") and 100 < status < 300:
        out.extend(("Record-Route", v) for v in request.headers.get_raw("Record-Route"))
    if status == 100 and "Timestamp" in request.headers:
        out.append(("Timestamp", request.headers.get("Timestamp") or ""))
    out.extend((canonical_name(n), v) for n, v in headers)
    return SipResponse(status, reason or reason_phrase(status), Headers(tuple(out)), body)


# How much of a broken request error_response_for looks at: the headers it needs come first.
_SALVAGE_LIMIT = 65536
_SALVAGED = ("Via", "From", "To", "Call-ID", "CSeq")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_MAX_REASON = 100


def error_response_for(
    data: bytes, error: SipParseError, *, to_tag: str | None = None
) -> bytes | None:
    """Wire bytes of a ``<status> <reason>`` response to a request that failed to parse.

    Via, From, To, Call-ID and CSeq are salvaged header by header from ``data`` (best effort,
    copied byte for byte so that the SRC can match the response to its transaction), the status
    is ``error.status`` and the reason phrase is ``error.reason`` made safe (one line of printable
    ASCII, at most 100 characters). To gets ``to_tag`` (a random one when not given) if it has no
    tag. Returns ``None`` when there is nothing to answer: no usable top Via, or ``data`` is a
    response or an ACK (which are never answered). Never raises.
    """
    head = data[:_SALVAGE_LIMIT].lstrip(b"\r\n")
    end = HEADER_END.search(head)
    if end is not None:
        head = head[: end.start()]
    lines = _unfold_bytes(_LINE_BREAK.split(head))
    start = lines[0].strip() if lines else b""
    words = start.split(None, 1)
    if not words or words[0].upper().startswith(b"SIP/") or words[0].upper() == b"ACK":
        return None
    found: dict[str, list[bytes]] = {name: [] for name in _SALVAGED}
    for line in lines[1:]:
        raw_name, colon, raw_value = line.partition(b":")
        name = raw_name.strip(b" \t").decode("latin-1")
        value = raw_value.strip(b" \t")
        if not colon or not name or not _TOKEN_CHARS.issuperset(name):
            continue
        canon = canonical_name(name)
        if canon in found and value and b"\x00" not in value:  # NUL could truncate the answer
            found[canon].append(value)
    if not found["Via"] or not _usable_via(found["Via"][0]):
        return None
    cseq_words = found["CSeq"][0].split() if found["CSeq"] else []
    if cseq_words and cseq_words[-1].upper() == b"ACK":
        return None
    status = error.status if 300 <= error.status <= 699 else 400
    reason = _sanitise_reason(error.reason) or reason_phrase(status)
    out = [f"{SIP_VERSION} {status} {reason}".encode("ascii")]
    out.extend(b"Via: " + v for v in found["Via"])
    for name in ("From", "To", "Call-ID", "CSeq"):
        if found[name]:
            value = found[name][0]
            if name == "To":
                value = _with_to_tag(value, to_tag or secrets.token_hex(6))
            out.append(name.encode("ascii") + b": " + value)
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


def _unfold_bytes(lines: list[bytes]) -> list[bytes]:
    out: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and len(out) > 1 and line.strip(b" \t"):
            pieces = out[-1]
            pieces[-1] = pieces[-1].rstrip(b" \t")
            pieces.append(line.strip(b" \t"))
        else:
            out.append([line])
    return [b" ".join(pieces) for pieces in out]


def _usable_via(value: bytes) -> bool:
    """Whether the first hop of a Via field value parses (responses are routed on it)."""
    try:
        Via.parse(split_quoted(value.decode("latin-1"), ",")[0])
    except SipParseError:
        return False
    return True


def _with_to_tag(value: bytes, tag: str) -> bytes:
    """``value`` with ``;tag=`` appended when it is a parseable To without a tag."""
    text = value.decode("latin-1")
    try:
        to = NameAddr.parse(text)
    except SipParseError:
        return value
    if to.tag is not None or ("<" in text and ">" not in text):
        return value  # tagged already, or a missing ">" would make the tag part of the URI
    return value + b";tag=" + tag.encode("ascii", "replace")


def _sanitise_reason(reason: str) -> str:
    """One line of printable ASCII, at most 100 characters (controls become spaces, the rest
    of what is not ASCII becomes ``?``)."""
    chars = (
        c if " " <= c <= "~" else " " if c.isspace() or c < " " or c == "\x7f" else "?"
        for c in reason[: _MAX_REASON * 4]
    )
    return " ".join("".join(chars).split())[:_MAX_REASON].rstrip()
