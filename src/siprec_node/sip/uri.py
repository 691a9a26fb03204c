"""SIP URIs and name-addr values (From, To, Contact, Route), parsed tolerantly.

Real SRCs send Contacts without their closing ``>``, AORs without a scheme and parameters in odd
places; these parsers accept all of that and only raise :class:`SipParseError` when there is
nothing usable at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from siprec_node.sip.errors import SipParseError

_LWS = " \t"  # SIP whitespace; str.strip() would also eat \x1c-\x1f, \x85, \xa0...


def split_params(text: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` into an ordered dict (names lower-cased, quoted values unquoted)."""
    params: dict[str, str | None] = {}
    for part in split_quoted(text, ";"):
        part = part.strip(" \t")
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            continue
        if sep:
            value = value.strip(" \t")
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = _unquote(value)  # a quoted-string: drop the quotes and the escapes
            params[name] = value
        else:
            params[name] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Render parameters back as ``;a=b;c``, quoting values that need it."""
    out = []
    for name, value in params.items():
        if value is None:
            out.append(f";{name}")
        elif value == "" or any(c in value for c in ' \t;,"<>\\'):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f';{name}="{escaped}"')
        else:
            out.append(f";{name}={value}")
    return "".join(out)


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets."""
    if '"' not in text and ("<" not in text or sep not in text):
        return text.split(sep)  # nothing quoted or bracketed to step over (most values)
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
            continue
        if quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@dataclass(frozen=True)
class SipUri:
    """A ``sip:``/``sips:``/``tel:`` URI split into its parts (unknown schemes kept opaque)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False, compare=True)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; a bare ``user@host`` gets the ``sip`` scheme."""
        text = text.strip(_LWS)
        if not text:
            raise SipParseError("empty URI")
        scheme, colon, rest = text.partition(":")
        if not colon or "@" in scheme or "." in scheme or not scheme.isalnum():
            scheme, rest = "sip", text
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, user=None, host=rest)
        rest, qmark, hdrs = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        if not at:
            userinfo, hostpart = "", rest
        host_port, _, param_text = hostpart.partition(";")
        host, port = split_host_port(host_port)
        user = userinfo.partition(":")[0] if at else None
        return cls(
            scheme=scheme,
            user=user,
            host=host,
            port=port,
            params=split_params(param_text),
            headers=hdrs if qmark else None,
        )

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.host}"
        user = f"{self.user}@" if self.user is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        hdrs = f"?{self.headers}" if self.headers is not None else ""
        return f"{self.scheme}:{user}{host}{port}{format_params(self.params)}{hdrs}"


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` / ``[v6][:port]``; the port is validated to 0..65535."""
    text = text.strip(_LWS)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference: {text[:80]!r}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise SipParseError(f"bad host: {text[:80]!r}")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise SipParseError(f"missing host in {text[:80]!r}")
    if not port_text:
        return host, None
    port = parse_decimal(port_text, max_digits=5)
    if port is None or port > 65535:
        raise SipParseError(f"bad port in {text[:80]!r}")
    return host, port


def parse_decimal(text: str, max_digits: int) -> int | None:
    """``text`` as a non-negative integer of at most ``max_digits`` ASCII digits, else ``None``.

    ``str.isdigit`` alone is not enough: it accepts ``"²"`` and other Unicode digits that ``int``
    rejects, and ``int`` refuses strings of more than 4300 digits.
    """
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


@dataclass(frozen=True)
class NameAddr:
    """``"Display" <uri>;params`` (From, To, Contact, Route, Record-Route)."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False, compare=True)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse a name-addr or addr-spec; tolerates a missing closing ``>``."""
        text = text.strip(_LWS)
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            display_text = text[:lt].strip(_LWS)
            if display_text.startswith('"'):
                display = _unquote(display_text)
            elif display_text:
                display = display_text
            gt = text.find(">", lt)
            if gt < 0:
                # "<sip:a@b;+sip.src": the closing bracket is missing; the URI runs to the end
                # and any ;params are taken to belong to the URI, as the sender meant them.
                uri, param_text = text[lt + 1 :].strip(_LWS), ""
            else:
                uri, param_text = text[lt + 1 : gt].strip(_LWS), text[gt + 1 :]
        else:
            # addr-spec: parameters after the URI belong to the header, not the URI
            uri, _, param_text = text.partition(";")
            uri = uri.strip(_LWS)
            param_text = ";" + param_text if param_text else ""
        if not uri:
            raise SipParseError(f"no URI in {text[:80]!r}")
        return cls(uri=uri, display=display, params=split_params(param_text))

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (dialog identity)."""
        return self.params.get("tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with one header parameter set."""
        params = dict(self.params)
        params[name] = value
        return NameAddr(uri=self.uri, display=self.display, params=params)

    def __str__(self) -> str:
        display = ""
        if self.display is not None:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _find_unquoted(text: str, ch: str) -> int:
    quoted = False
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            return i
    return -1


def _unquote(text: str) -> str:
    """Remove the surrounding quotes of a quoted-string and its backslash escapes."""
    text = text.strip(_LWS)
    if not text.startswith('"'):
        return text
    out = []
    escaped = False
    for c in text[1:]:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            break
        else:
            out.append(c)
    return "".join(out)
