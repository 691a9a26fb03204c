"""SDP (RFC 8866) parsing and serialisation, tolerant of what recording clients send.

Accepted: bare LF or CR line endings, blank lines, missing ``s=``/``t=``/``o=``, repeated or
odd whitespace, lines of unknown type (kept). Serialisation writes CRLF and the RFC field order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from siprec_node.siprec.codecs import Codec
from siprec_node.siprec.errors import SdpError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_SESSION_ORDER = "vosiuepcbtrzka"
_MEDIA_ORDER = "micbka"
_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})


@dataclass
class Origin:
    """The ``o=`` line."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass
class Connection:
    """A ``c=`` line; ``address`` may carry a ``/ttl`` suffix for multicast."""

    address: str
    net_type: str = "IN"
    addr_type: str = "IP4"

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """True for the RFC 2543 hold address (``0.0.0.0``, or ``::`` in IPv6)."""
        try:
            return str(ipaddress.ip_address(self.host)) in _HOLD_ADDRESSES
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """A connection line for a host, IP4 or IP6 as the address says."""
        return cls(address=address, addr_type="IP6" if ":" in address else "IP4")


@dataclass
class Attribute:
    """An ``a=`` line: ``a=name`` (flag, value ``None``) or ``a=name:value``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class Crypto:
    """An SDES ``a=crypto`` attribute (RFC 4568)."""

    tag: int
    suite: str
    key_params: str
    session_params: tuple[str, ...] = ()

    @property
    def inline_key(self) -> str | None:
        """The base64 key||salt of the first ``inline:`` key parameter."""
        for param in self.key_params.split(";"):
            method, _, info = param.partition(":")
            if method.strip().lower() == "inline":
                return info.split("|", 1)[0]
        return None

    def __str__(self) -> str:
        return " ".join((str(self.tag), self.suite, self.key_params, *self.session_params))

    @classmethod
    def parse(cls, value: str) -> Crypto | None:
        parts = value.split()
        tag = _decimal(parts[0]) if parts else None
        if len(parts) < 3 or tag is None:
            return None
        return cls(tag, parts[1], parts[2], tuple(parts[3:]))


class _Attributes:
    attributes: list[Attribute]

    def attribute(self, name: str) -> str | None:
        """The value of the first attribute with this name (``""`` for a flag)."""
        for attribute in self.attributes:
            if attribute.name.lower() == name.lower():
                return attribute.value if attribute.value is not None else ""
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [
            a.value if a.value is not None else ""
            for a in self.attributes
            if a.name.lower() == name.lower()
        ]

    @property
    def direction(self) -> str | None:
        """The direction attribute given at this level, if any."""
        return _direction_of(self.attributes)


def _direction_of(attributes: list[Attribute]) -> str | None:
    for attribute in attributes:
        if attribute.value is None and attribute.name.lower() in DIRECTIONS:
            return attribute.name.lower()
    return None


@dataclass
class MediaDescription(_Attributes):
    """An ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """The ``a=label`` value (RFC 4574) that ties this stream to the metadata."""
        value = self.attribute("label")
        return value.strip() if value else None

    @property
    def payload_types(self) -> list[int]:
        return [pt for pt in map(_decimal, self.formats) if pt is not None]

    @property
    def rtpmaps(self) -> dict[int, Codec]:
        """``a=rtpmap`` by payload type (first one wins)."""
        result: dict[int, Codec] = {}
        for value in self.attribute_values("rtpmap"):
            pt_text, _, encoding = value.strip().partition(" ")
            parts = [p.strip() for p in encoding.strip().split("/")]
            pt = _decimal(pt_text)
            rate = _decimal(parts[1]) if len(parts) > 1 else None
            if pt is None or rate is None:
                continue
            channels = (_decimal(parts[2]) if len(parts) > 2 else None) or 1
            result.setdefault(pt, Codec(parts[0], rate, channels))
        return result

    @property
    def fmtps(self) -> dict[int, str]:
        """``a=fmtp`` parameters by payload type."""
        result: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.strip().partition(" ")
            pt = _decimal(pt_text)
            if pt is not None:
                result.setdefault(pt, params.strip())
        return result

    @property
    def cryptos(self) -> list[Crypto]:
        return [c for c in map(Crypto.parse, self.attribute_values("crypto")) if c is not None]

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        fields: dict[str, list[str]] = {
            "m": [" ".join((self.media, port, self.proto, *self.formats))],
            "c": [str(self.connection)] if self.connection else [],
            "b": list(self.bandwidths),
            "a": [str(a) for a in self.attributes],
        }
        return _ordered(fields, self.other_lines, _MEDIA_ORDER)


@dataclass
class SessionDescription(_Attributes):
    """A whole SDP body."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    connection: Connection | None = None
    times: list[str] = field(default_factory=lambda: ["0 0"])
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, compare=False)
    _direction_memo: tuple[int, int, str | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, if any.

        Asked once per m-line, so remembered: a scan per m-line would make answering an offer
        quadratic (thousands of session attributes times thousands of m-lines). The memory is
        dropped when the attribute list is replaced or grows or shrinks.
        """
        key = (id(self.attributes), len(self.attributes))
        memo = self._direction_memo
        if memo is None or memo[:2] != key:
            memo = self._direction_memo = (*key, _direction_of(self.attributes))
        return memo[2]

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The connection that applies to a stream (media level, else session level)."""
        return media.connection or self.connection

    def direction_for(self, media: MediaDescription) -> str:
        """The direction that applies to a stream; ``sendrecv`` when none is given."""
        return media.direction or self.direction or "sendrecv"

    def is_on_hold(self, media: MediaDescription) -> bool:
        """True when a stream is put on hold: ``inactive`` or the ``0.0.0.0`` address.

        ``sendonly`` is an SRC's normal direction and is not a hold.
        """
        connection = self.connection_for(media)
        return self.direction_for(media) == "inactive" or (
            connection is not None and connection.is_hold
        )

    def to_bytes(self) -> bytes:
        return str(self).encode("utf-8")

    def __str__(self) -> str:
        fields: dict[str, list[str]] = {
            "v": [str(self.version)],
            "o": [str(self.origin)],
            "s": [self.session_name or "-"],
            "c": [str(self.connection)] if self.connection else [],
            "b": list(self.bandwidths),
            "t": list(self.times) or ["0 0"],
            "a": [str(a) for a in self.attributes],
        }
        lines = _ordered(fields, self.other_lines, _SESSION_ORDER)
        for media in self.media:
            lines.extend(media.lines())
        return "".join(line + "\r\n" for line in lines)


def _ordered(fields: dict[str, list[str]], others: list[tuple[str, str]], order: str) -> list[str]:
    for kind, value in others:
        fields.setdefault(kind, []).append(value)
    lines = [f"{kind}={value}" for kind in order for value in fields.get(kind, [])]
    lines += [
        f"{kind}={value}"
        for kind, values in fields.items()
        if kind not in order
        for value in values
    ]
    return lines


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raises :class:`SdpError` only when nothing usable is found."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    sdp = SessionDescription(times=[])
    seen: set[str] = set()
    current: MediaDescription | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        kind, equals, value = line.partition("=")
        kind = kind.strip()
        value = value.strip()
        if not equals or len(kind) != 1 or not kind.isalpha():
            sdp.warnings.append(f"line {number} ignored: {raw!r}")
            continue
        seen.add(kind)
        if kind == "m":
            current = _parse_media(value, number)
            sdp.media.append(current)
        elif kind == "a":
            name, colon, attr_value = value.partition(":")
            attribute = Attribute(name.strip(), attr_value.strip() if colon else None)
            (current or sdp).attributes.append(attribute)
        elif kind == "c":
            connection = _parse_connection(value)
            if current is not None:
                current.connection = connection
            else:
                sdp.connection = connection
        elif kind == "b":
            (current or sdp).bandwidths.append(value)
        elif current is not None:
            current.other_lines.append((kind, value))
        elif kind == "v":
            sdp.version = _decimal(value) or 0
        elif kind == "o":
            sdp.origin = _parse_origin(value)
        elif kind == "s":
            sdp.session_name = value or "-"
        elif kind == "t":
            sdp.times.append(" ".join(value.split()))
        else:
            sdp.other_lines.append((kind, value))
    if not seen & {"v", "o", "m"}:
        raise SdpError("body is not SDP (no v=, o= or m= line)")
    if not sdp.times:
        sdp.times = ["0 0"]
    for kind, what in (("v", "v="), ("o", "o="), ("s", "s=")):
        if kind not in seen:
            sdp.warnings.append(f"missing {what} line")
    return sdp


def _parse_media(value: str, number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m= line {number} has fewer than three fields: {value!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _decimal(port_text, 5)
    count = _decimal(count_text, 5) if count_text else None
    if port is None or port > 65535 or (count_text and count is None):
        raise SdpError(f"m= line {number} has an invalid port: {parts[1][:20]!r}")
    return MediaDescription(
        media=parts[0].lower(),
        port=port,
        proto=parts[2],
        formats=parts[3:],
        port_count=count,
    )


def _decimal(text: str, max_digits: int = 10) -> int | None:
    """``text`` as a non-negative integer of ASCII digits, else ``None``: ``str.isdigit`` takes
    ``"²"`` (which ``int`` refuses) and ``int`` refuses more than 4300 digits."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) >= 3:
        return Connection(address=parts[2], net_type=parts[0], addr_type=parts[1].upper())
    return Connection.for_address(parts[-1] if parts else "0.0.0.0")


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    defaults = ["-", "0", "0", "IN", "IP4", "0.0.0.0"]
    parts = parts[:6] + defaults[len(parts) :]
    return Origin(*parts)
