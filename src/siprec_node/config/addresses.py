"""Host names, ``host:port`` pairs and SIP listen addresses such as ``udp:0.0.0.0:5060``.

IPv6 literals are written in brackets wherever a port follows (``tls:[::1]:5061``); parsed forms
hold the bare address (``::1``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TRANSPORTS",
    "HostPort",
    "ListenAddress",
    "Transport",
    "parse_host",
    "parse_host_port",
    "parse_listen_address",
]

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")

_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?",
    re.ASCII,
)
_DOTTED_NUMBERS = re.compile(r"[0-9.]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (name, IPv4 or bare IPv6 address) and a port (0 picks a free one)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the SIP server listens: transport, host (bare IPv6 without brackets) and port."""

    transport: Transport
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{_bracketed(self.host)}:{self.port}"


def parse_host(text: str) -> str:
    """Check a host name or IP address and return it without IPv6 brackets.

    Raises ``ValueError`` with a human-readable rule when ``text`` is not a valid host.
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    host = text.strip()
    if not host:
        raise ValueError("must not be empty")
    if host.startswith("[") and host.endswith("]"):
        return _ipv6(host[1:-1])
    if ":" in host:
        return _ipv6(host)
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError("is not a valid IPv4 address") from None
    if not _HOST_NAME.fullmatch(host):
        raise ValueError("must be a host name or an IP address")
    return host


def parse_host_port(text: str) -> HostPort:
    """Read ``host:port`` (``[v6]:port`` for IPv6). Raises ``ValueError`` with a rule."""
    if not isinstance(text, str):
        raise ValueError("must be a string")
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError("has an unclosed '[' around the IPv6 address")
        host_text, rest = text[: close + 1], text[close + 1 :]
        if not rest.startswith(":"):
            raise ValueError("must end with ':' and a port")
        port_text = rest[1:]
    else:
        host_text, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError("must be host:port")
        if ":" in host_text:
            raise ValueError("must put an IPv6 address in brackets, like [::1]:5060")
    if not host_text:
        raise ValueError("is missing the host (use 0.0.0.0 or [::] for all interfaces)")
    host = parse_host(host_text)
    return HostPort(host, _port(port_text))


def parse_listen_address(text: str) -> ListenAddress:
    """Read a SIP listen address ``udp:|tcp:|tls:`` + ``host:port``. Raises ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError("must be a string")
    transport, colon, rest = text.strip().partition(":")
    transport = transport.lower()
    if not colon or transport not in TRANSPORTS:
        raise ValueError("must start with udp:, tcp: or tls:, like udp:0.0.0.0:5060")
    address = parse_host_port(rest)
    return ListenAddress(transport, address.host, address.port)


def _ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ValueError("is not a valid IPv6 address") from None


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError("must end with a port number 0..65535")
    port = int(text)
    if port > 65535:
        raise ValueError("port must be in 0..65535")
    return port


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
