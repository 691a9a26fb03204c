"""Host, host:port and SIP listen address parsing."""

from __future__ import annotations

import pytest

from siprec_node.config.addresses import (
    HostPort,
    ListenAddress,
    parse_host,
    parse_host_port,
    parse_listen_address,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:0.0.0.0:5060", ListenAddress("udp", "0.0.0.0", 5060)),
        ("tcp:127.0.0.1:0", ListenAddress("tcp", "127.0.0.1", 0)),
        ("tls:[::1]:5061", ListenAddress("tls", "::1", 5061)),
        ("TLS:[2001:DB8::1]:65535", ListenAddress("tls", "2001:db8::1", 65535)),
        ("udp:sip.example.com:5060", ListenAddress("udp", "sip.example.com", 5060)),
        (" udp:localhost:5060 ", ListenAddress("udp", "localhost", 5060)),
    ],
)
def test_parses_listen_addresses(text: str, expected: ListenAddress) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("sctp:0.0.0.0:5060", "must start with udp:, tcp: or tls:"),
        ("0.0.0.0:5060", "must start with udp:, tcp: or tls:"),
        ("udp:0.0.0.0", "must be host:port"),
        ("udp:0.0.0.0:", "port number"),
        ("udp:0.0.0.0:65536", "0..65535"),
        ("udp:0.0.0.0:-1", "port number"),
        ("udp:0.0.0.0:50x", "port number"),
        ("udp::5060", "missing the host"),
        ("udp:::1:5060", "IPv6 address in brackets"),
        ("udp:[::1:5060", "unclosed"),
        ("udp:[::1]5060", "must end with ':'"),
        ("udp:[nope]:5060", "not a valid IPv6"),
        ("udp:300.1.1.1:5060", "not a valid IPv4"),
        ("udp:bad host:5060", "host name or an IP address"),
    ],
)
def test_rejects_bad_listen_addresses(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_listen_address(text)


def test_listen_address_text_round_trips() -> None:
    for text in ("udp:0.0.0.0:5060", "tls:[::1]:5061", "tcp:example.org:0"):
        assert str(parse_listen_address(text)) == text


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:8080") == HostPort("127.0.0.1", 8080)
    assert parse_host_port("[::]:80") == HostPort("::", 80)
    assert str(HostPort("::", 80)) == "[::]:80"
    with pytest.raises(ValueError, match="host:port"):
        parse_host_port("8080")


def test_hosts() -> None:
    assert parse_host("[::1]") == "::1"
    assert parse_host("fe80::1") == "fe80::1"
    assert parse_host("media-1.local") == "media-1.local"
    for bad in ("", "a b", "-x", "1.2.3", 5):
        with pytest.raises(ValueError):
            parse_host(bad)  # type: ignore[arg-type]
