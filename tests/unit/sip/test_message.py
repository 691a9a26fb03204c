"""The message model: headers, Via, CSeq, serialisation, make_response and framing helpers."""

from __future__ import annotations

import pytest

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import (
    CSeq,
    Headers,
    SipRequest,
    SipResponse,
    Via,
    canonical_name,
    content_length,
    head_content_length,
    make_response,
    parse_message,
    split_head,
)

INVITE = (
    b"INVITE sip:srs@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-a, SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-b\r\n"
    b"Record-Route: <sip:192.0.2.8;lr>\r\n"
    b'From: "SRC" <sip:src@192.0.2.9>;tag=f1\r\n'
    b"To: <sip:srs@192.0.2.1>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Require: siprec\r\n"
    b"Supported: Timer, 100rel\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def invite() -> SipRequest:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    return message


def test_canonical_names() -> None:
    assert canonical_name("v") == "Via" and canonical_name("I") == "Call-ID"
    assert (
        canonical_name("cseq") == "CSeq"
        and canonical_name("WWW-AUTHENTICATE") == "WWW-Authenticate"
    )
    assert canonical_name("X-Custom-Thing") == "X-Custom-Thing"


def test_headers_api() -> None:
    headers = Headers.of([("v", "a, b"), ("Via", "c"), ("k", "Timer"), ("Date", "Mon, 1 Jan")])
    assert [n for n, _ in headers] == ["Via", "Via", "Supported", "Date"]
    assert len(headers) == 4 and "via" in headers and "V" in headers and 3 not in headers
    assert headers.get("VIA") == "a, b" and headers.get("Nope", "dflt") == "dflt"
    assert headers.get_raw("Via") == ["a, b", "c"]
    assert headers.get_all("Via") == ["a", "b", "c"]
    assert headers.get_all("Date") == ["Mon, 1 Jan"]
    assert headers.tokens("Supported") == {"timer"}
    replaced = headers.replace("via", "x")
    assert replaced.get_raw("Via") == ["x"] and replaced.fields[0][0] == "Via"
    assert headers.replace("Require", "siprec").get("Require") == "siprec"
    assert headers.add("i", "id").get("Call-ID") == "id"
    assert "Via" not in headers.remove("v")
    assert headers.get_raw("Via") == ["a, b", "c"]  # immutable


def test_message_accessors() -> None:
    m = invite()
    assert m.call_id == "c1" and m.content_type is None
    assert m.cseq == CSeq(1, "INVITE") and str(m.cseq) == "1 INVITE"
    assert [v.branch for v in m.vias] == ["z9hG4bK-a", "z9hG4bK-b"]
    assert m.top_via.host == "192.0.2.9" and m.top_via.port == 5060
    assert m.from_.tag == "f1" and m.to.tag is None
    assert m.headers.tokens("Supported") == {"timer", "100rel"}


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "params"),
    [
        ("SIP/2.0/UDP h;branch=z9hG4bK1", "UDP", "h", None, {"branch": "z9hG4bK1"}),
        ("SIP/2.0/tcp 192.0.2.1:5060;rport", "TCP", "192.0.2.1", 5060, {"rport": None}),
        ("SIP/2.0/TLS [2001:db8::1]:5061;branch=b", "TLS", "2001:db8::1", 5061, {"branch": "b"}),
        ("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw", "UDP", "192.0.2.2", None,
         {"branch": "390skdjuw"}),
        ("SIP/2.0/UDP\th : 5070 ;received=192.0.2.7", "UDP", "h", 5070,
         {"received": "192.0.2.7"}),
    ],
)  # fmt: skip
def test_via_parse(
    text: str, transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = Via.parse(text)
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port, params)
    assert Via.parse(str(via)) == via


@pytest.mark.parametrize(
    "text", ["", "SIP/2.0 h", "SIP/2.0/UDP", "HTTP/1.1/TCP h", "SIP/2.0/UDP h:x", "SIP/2.0/UDP :5"]
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


@pytest.mark.parametrize("text", ["", "1", "x INVITE", "-1 INVITE", "2147483648 INVITE", "1 2 3"])
def test_bad_cseqs(text: str) -> None:
    with pytest.raises(SipParseError):
        CSeq.parse(text)


def test_cseq_accepts_the_largest_number_and_normalises_the_method() -> None:
    assert CSeq.parse(" 2147483647\tinvite ") == CSeq(2147483647, "INVITE")


def test_serialize_sets_content_length_and_crlf() -> None:
    request = SipRequest("OPTIONS", "sip:a@b", Headers.of([("Call-ID", "x")]), b"body")
    assert request.serialize() == (
        b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert bytes(request) == request.serialize()
    response = SipResponse(200, "OK", Headers.of([("Content-Length", "99")]))
    assert response.serialize() == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_make_response_copies_what_rfc3261_says() -> None:
    request = invite()
    trying = make_response(request, 100, to_tag="t1")
    assert trying.reason == "Trying" and trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"
    assert "Record-Route" not in trying.headers
    ok = make_response(request, 200, to_tag="t1", headers=[("m", "<sip:srs@192.0.2.1>")])
    assert ok.to.tag == "t1"
    assert ok.headers.get_raw("Via") == request.headers.get_raw("Via")
    assert ok.headers.get("Record-Route") == "<sip:192.0.2.8;lr>"
    assert ok.headers.get("Contact") == "<sip:srs@192.0.2.1>"
    assert (ok.call_id, ok.cseq, ok.from_) == (request.call_id, request.cseq, request.from_)
    busy = make_response(request, 486, "Full", to_tag="t2")
    assert busy.reason == "Full" and "Record-Route" not in busy.headers
    assert parse_message(busy.serialize()) == busy
    tagged = parse_message(INVITE.replace(b"To: <sip:srs@192.0.2.1>", b"To: <sip:srs@h>;tag=x"))
    assert isinstance(tagged, SipRequest)
    assert make_response(tagged, 200, to_tag="new").to.tag == "x"


def test_split_head_on_any_line_end() -> None:
    assert split_head(b"A\r\nB: 1\r\n\r\nbody") == (b"A\r\nB: 1", b"body")
    assert split_head(b"A\nB: 1\n\nbody") == (b"A\nB: 1", b"body")
    assert split_head(b"A\nB: 1\n\r\nbody") == (b"A\nB: 1", b"body")
    assert split_head(b"A\r\nB: 1\r\n\nbody") == (b"A\r\nB: 1", b"body")
    assert split_head(b"A\r\nB: 1\r\n") is None


def test_content_length_helpers() -> None:
    assert content_length([]) is None
    assert content_length(["12", " 12 "]) == 12
    for bad in (["1", "2"], ["x"], ["\u00b2"], ["9" * 5000], ["-1"]):
        with pytest.raises(SipParseError):
            content_length(bad)
    head = b"INVITE sip:a SIP/2.0\r\nl: 7\r\nContent-Length:\r\n 7\r\nX: y"
    assert head_content_length(head) == 7
    assert head_content_length(b"INVITE sip:a SIP/2.0\nX: y") is None
    assert head_content_length(b"Content-Length: 5") is None  # the start line is not a header


def test_datagram_without_blank_line_and_trailing_bytes() -> None:
    data = INVITE.replace(b"Content-Length: 0\r\n\r\n", b"")
    assert parse_message(data).body == b""
    assert parse_message(INVITE + b"\r\n\r\n").body == b""  # padding after the message


def test_lone_cr_is_a_line_end_and_nul_is_refused() -> None:
    assert parse_message(INVITE.replace(b"\r\nCall-ID", b"\rCall-ID")).call_id == "c1"
    with pytest.raises(SipParseError):
        parse_message(INVITE.replace(b"c1", b"c\x001"))


def test_non_utf8_header_bytes_fall_back_to_latin1() -> None:
    m = parse_message(INVITE.replace(b'"SRC"', b'"M\xfcller"'))
    assert m.from_.display == "Müller"
