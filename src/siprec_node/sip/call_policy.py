"""What the call-control core answers with, decided without state: capabilities, session
timers (RFC 4028), reason phrases, source lists, the addresses written into Contact and Via."""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Callable

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import SipRequest
from siprec_node.sip.transaction import Address
from siprec_node.sip.uri import NameAddr, SipUri, parse_decimal
from siprec_node.siprec.errors import SiprecError

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO")
SUPPORTED_OPTIONS = ("siprec", "timer", "replaces")
# Require: options we can honour. 100rel only obliges us to send provisionals reliably, and the
# only provisional we ever send is 100 Trying, which is never sent reliably (RFC 3262 §3).
HONOURED_REQUIRE = frozenset({"siprec", "timer", "100rel"})
ACCEPT = "application/sdp, application/rs-metadata+xml, application/rs-metadata, multipart/mixed"
NOT_ALLOWED_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH", "REFER", "PRACK"}
)
MIN_SE = 90
# Local addresses remembered per peer address (the route lookup is a syscall); least recently used
# evicted, so that a flood from many source addresses cannot grow it.
ADVERTISE_CACHE_SIZE = 1024

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def capabilities() -> list[tuple[str, str]]:
    """Allow, Accept and Supported, as an OPTIONS answer lists them."""
    return [
        ("Allow", ", ".join(ALLOWED_METHODS)),
        ("Accept", ACCEPT),
        ("Supported", ", ".join(SUPPORTED_OPTIONS)),
    ]


def session_expires(request: SipRequest) -> int | None:
    """RFC 4028: the interval the SRC asks for, if it asks."""
    value = request.headers.get("Session-Expires")
    if value is None:
        return None
    return parse_decimal(value.split(";", 1)[0].strip(), max_digits=10)


def session_timer(request: SipRequest) -> tuple[int | None, str | None, bool]:
    """RFC 4028 §9 for the 2xx of an INVITE or UPDATE: ``(interval, refresher, ignored)``.

    Only when the SRC supports timers: the interval is echoed and the refresher is the SRC
    (``uac``) unless it asked us to refresh (``uas``). ``ignored`` is True when it asked with
    an interval that does not parse.
    """
    value = request.headers.get("Session-Expires")
    uac_timer = "timer" in (request.headers.tokens("Supported") | request.headers.tokens("Require"))
    if value is None or not uac_timer:
        return None, None, False
    interval_text, _, params = value.partition(";")
    interval = parse_decimal(interval_text.strip(), max_digits=10)
    if interval is None:
        return None, None, True
    refresher = "uas" if "refresher=uas" in params.replace(" ", "").lower() else "uac"
    return interval, refresher, False


def session_timer_headers(interval: int, refresher: str) -> list[tuple[str, str]]:
    """The Session-Expires (and Require) headers of a 2xx that accepted a session timer."""
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac":
        headers.append(("Require", "timer"))
    return headers


def reason_of(exc: SipParseError | SiprecError) -> str:
    """The reason phrase for a request refused by a parse error."""
    if isinstance(exc, SiprecError):
        return phrase(exc)
    text = "".join(c if 32 <= ord(c) < 127 else " " for c in exc.reason)[:80].strip()
    return f"Bad Request ({text})" if text else "Bad Request"


def phrase(exc: SiprecError) -> str:
    """A one-line reason phrase carrying the error (truncated, printable ASCII)."""
    text = "".join(c if 32 <= ord(c) < 127 else " " for c in exc.reason)[:80].strip()
    return f"{exc.reason_phrase} ({text})" if text else exc.reason_phrase


def is_wildcard(host: str) -> bool:
    """``0.0.0.0``, ``::`` or empty: a bound address that names no interface."""
    return host in ("0.0.0.0", "::", "")


@functools.lru_cache(maxsize=4096)
def allowed(host: str, networks: Networks) -> bool:
    """Whether ``host`` (an IP literal) is inside one of ``networks``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def request_destination(request: SipRequest, peer: Address) -> Address:
    """Where an in-dialog request goes: the connection the dialog uses, else the next hop URI."""
    if peer.reliable:
        return peer
    target = request.headers.get_all("Route")
    uri_text = request.uri
    if target:
        uri_text = NameAddr.parse(target[0]).uri
    try:
        uri = SipUri.parse(uri_text)
        return Address("udp", uri.host, uri.port or 5060, None)
    except SipParseError:
        return peer


class Addressing:
    """The addresses the node writes into Contact, Via and SDP, per peer.

    ``local_address`` is the driver's route lookup (which local address reaches a peer); its
    answers are cached, least recently used evicted.
    """

    def __init__(
        self,
        local_address: Callable[[str], str],
        *,
        advertise_host: str | None,
        media_advertise_host: str | None,
    ) -> None:
        self._local_address = local_address
        self.advertise_host = advertise_host
        self.media_advertise_host = media_advertise_host
        self.listeners: dict[str, tuple[str, int]] = {}  # transport -> (bound host, port)
        self.cache: OrderedDict[str, str] = OrderedDict()

    def set_listener(self, transport: str, host: str, port: int) -> None:
        """Note where the node listens on ``transport`` (the first listener wins)."""
        self.listeners.setdefault(transport, (host, port))

    def advertised_host(self, peer_host: str) -> str:
        """The local address that reaches ``peer_host`` (cached)."""
        cache = self.cache
        cached = cache.get(peer_host)
        if cached is None:
            cached = self._local_address(peer_host)
            cache[peer_host] = cached
            if len(cache) > ADVERTISE_CACHE_SIZE:
                cache.popitem(last=False)
        else:
            cache.move_to_end(peer_host)
        return cached

    def contact(self, source: Address) -> str:
        """The Contact of a dialog with a peer that reached us at ``source``."""
        host = self.advertise_host
        bound = self.listeners.get(source.transport)
        if host is None:
            bound_host = bound[0] if bound else "0.0.0.0"
            host = bound_host if not is_wildcard(bound_host) else self.advertised_host(source.host)
        port = bound[1] if bound else None
        uri = SipUri("sip", "srs", host, port)
        params = f";transport={source.transport}" if source.transport != "udp" else ""
        return f"<{uri}{params}>;+sip.srs"

    def media_host(self, peer_host: str) -> str:
        """The address put in the SDP answer for ``peer_host``."""
        if self.media_advertise_host is not None:
            return self.media_advertise_host
        return self.advertised_host(peer_host)

    def via(self, peer: Address, branch: str) -> str:
        """The Via of a request we send to ``peer``."""
        listener = self.listeners.get(peer.transport)
        sent_by = self.advertise_host or (
            listener[0]
            if listener and not is_wildcard(listener[0])
            else self.advertised_host(peer.host)
        )
        port = listener[1] if listener else 5060
        return f"SIP/2.0/{peer.transport.upper()} {sent_by}:{port};branch={branch};rport"
