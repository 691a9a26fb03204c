"""The parser against what real SRCs send: the corpus in tests/data/sip (see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import SipRequest, SipResponse, parse_message
from siprec_node.sip.uri import NameAddr, SipUri

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"
GOOD = sorted(p.name for p in DATA.glob("*.sip") if not p.name.startswith("bad_"))
BAD = sorted(p.name for p in DATA.glob("*.sip") if p.name.startswith("bad_"))
# Datagram-only: no Content-Length, so the body is "the rest of the datagram".
NO_CONTENT_LENGTH = {"options_no_content_length.sip"}


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def request(name: str, *, stream: bool = False) -> SipRequest:
    message = parse_message(load(name), stream=stream)
    assert isinstance(message, SipRequest)
    return message


def response(name: str) -> SipResponse:
    message = parse_message(load(name))
    assert isinstance(message, SipResponse)
    return message


def announced_length(data: bytes) -> int:
    """Content-Length read naively from the raw bytes (the corpus uses one per file)."""
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return int(value)
    raise AssertionError("no Content-Length")


def test_corpus_is_there() -> None:
    assert len(GOOD) >= 15
    assert len(BAD) >= 25
    multipart = [
        n for n in GOOD if (parse_message(load(n)).content_type or "").startswith("multipart/")
    ]
    assert len(multipart) >= 6
    assert all(len(load(n)) > 1300 for n in multipart)


@pytest.mark.parametrize(
    ("name", "stream"),
    [(n, s) for n in GOOD for s in (False, True) if not (s and n in NO_CONTENT_LENGTH)],
)
def test_every_good_message_parses_on_both_paths(name: str, stream: bool) -> None:
    message = parse_message(load(name), stream=stream)
    assert "Content-Length" not in message.headers  # framing, not model
    assert message.call_id
    assert message.top_via.branch
    assert message.from_.uri and message.to.uri
    if name not in NO_CONTENT_LENGTH:
        assert len(message.body) == announced_length(load(name))
    assert parse_message(message.serialize(), stream=True) == message


@pytest.mark.parametrize("name", GOOD)
def test_serialised_form_is_crlf_and_keeps_the_body_bytes(name: str) -> None:
    message = parse_message(load(name))
    wire = message.serialize()
    head, _, body = wire.partition(b"\r\n\r\n")
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert body == message.body
    assert f"Content-Length: {len(message.body)}".encode() in head


def test_metaswitch_multipart_with_boundary_space_and_unclosed_contact() -> None:
    m = request("metaswitch_invite.sip")
    assert m.method == "INVITE"
    assert m.uri == "sip:srs@198.51.100.20:5060;transport=udp"
    assert m.cseq.number == 101 and m.cseq.method == "INVITE"
    assert [(v.host, v.port, v.transport) for v in m.vias] == [
        ("192.0.2.10", 5060, "UDP"),
        ("192.0.2.11", 5070, "UDP"),
    ]
    assert m.top_via.branch == "z9hG4bK-mtsw-7f3a1"
    assert m.top_via.params["rport"] is None
    assert m.vias[1].params["received"] == "192.0.2.11"
    assert len(m.headers.get_raw("Via")) == 1
    assert m.from_.display == "Perimeta SRC"
    assert m.from_.tag == "mtsw-src-4471"
    assert m.to.tag is None
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.uri == "sip:src@192.0.2.10:5060;transport=udp;+sip.src"
    assert SipUri.parse(contact.uri).params == {"transport": "udp", "+sip.src": None}
    assert m.headers.tokens("Require") == {"siprec"}
    assert m.headers.tokens("Supported") == {"timer", "100rel"}
    assert m.headers.get_all("Record-Route") == [
        "<sip:192.0.2.11;lr>",
        "<sip:192.0.2.12;lr;ftag=mtsw-src-4471>",
    ]
    # The trailing space after the boundary is LWS in the header, but body bytes stay as sent.
    assert m.content_type == "multipart/mixed;boundary=mtsw-boundary-00A1"
    assert m.body.startswith(b"--mtsw-boundary-00A1 \r\nContent-Type: application/sdp\r\n")
    assert m.body.endswith(b"--mtsw-boundary-00A1--\r\n")
    assert b"Content-Type: application/rs-metadata\r\n" in m.body


def test_broadworks_display_name_with_comma_semicolon_and_escaped_quotes() -> None:
    m = request("broadworks_webex_invite.sip")
    assert m.from_.display == 'Webex Recording, "Team A"; EMEA'
    assert m.from_.uri == "sip:+14155550100@as.example.com;user=phone"
    assert m.from_.params == {"tag": "1634929384-1700000000123"}  # user=phone is a URI param
    assert m.top_via.transport == "TLS" and m.top_via.port == 5061
    assert "Require" not in m.headers
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.params == {"src": None}
    assert SipUri.parse(contact.uri).params == {"transport": "tls"}
    assert m.headers.get_all("Accept") == [
        "application/media_control+xml",
        "application/sdp",
        "multipart/mixed",
    ]
    # Webex: the metadata part comes first.
    assert m.body.index(b"application/rs-metadata+xml") < m.body.index(b"application/sdp")
    assert b"opus/48000/2" in m.body


def test_avaya_odd_whitespace_around_colons_tabs_and_values() -> None:
    m = request("avaya_sbce_invite.sip")
    assert m.headers.get_raw("Via") == [
        "SIP/2.0/UDP 10.20.30.1:5060;branch=z9hG4bK-s1632-001146478823-1--s1632-",
        "SIP/2.0/UDP 10.20.30.2 ;branch=z9hG4bK-avaya-55;received=10.20.30.2",
    ]
    assert [v.host for v in m.vias] == ["10.20.30.1", "10.20.30.2"]
    assert m.vias[1].port is None and m.vias[1].branch == "z9hG4bK-avaya-55"
    assert m.from_.display == "Avaya SBCE" and m.from_.tag == "80f8a1c5b3e7d4f"
    assert m.to.uri == "sip:siprec@10.20.30.40"
    assert m.call_id == "8c1f0e62a0b1c7d9e3f4a5b6c7d8e9f0"
    assert m.cseq.number == 1
    assert m.headers.tokens("Supported") == {"replaces", "timer"}
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.params == {}
    assert "+sip.src" in SipUri.parse(contact.uri).params  # inside the brackets: URI param
    assert m.headers.get("user-to-user") == "00FA080019001A2B3C4D5E;encoding=hex"
    assert m.content_type == "multipart/mixed; boundary=foobar"


def test_acme_packet_ipv6_hosts_and_routes() -> None:
    m = request("acme_packet_invite_ipv6.sip", stream=True)
    uri = SipUri.parse(m.uri)
    assert (uri.host, uri.port, uri.params) == ("2001:db8:10::20", 5060, {"transport": "tcp"})
    assert str(uri) == m.uri
    via = m.top_via
    assert (via.transport, via.host, via.port) == ("TCP", "2001:db8:10::1", 5060)
    assert str(via) == m.headers.get("Via")
    assert m.headers.get_raw("Route") == [
        "<sip:[2001:db8:10::20]:5060;lr;transport=tcp>",
        "<sip:proxy1.example.net;lr>, <sip:proxy2.example.net;lr>",
    ]
    routes = [NameAddr.parse(r) for r in m.headers.get_all("Route")]
    assert [SipUri.parse(r.uri).host for r in routes] == [
        "2001:db8:10::20",
        "proxy1.example.net",
        "proxy2.example.net",
    ]
    assert SipUri.parse(m.from_.uri).host == "2001:db8:10::1"
    assert m.call_id == "8c2ae2b30b1dd7c6f5e1f7c95b3c1e27@2001:db8:10::1"
    assert m.headers.get("mime-version") == "1.0"
    assert b"a=label:16777227" in m.body and b"apkt:realm" in m.body


def test_opensips_several_headers_of_one_name_keep_their_order() -> None:
    m = request("opensips_invite.sip")
    assert [v.branch for v in m.vias] == [
        "z9hG4bK5bd2.8f1a0c34.0",
        "z9hG4bKsr-1",
        "z9hG4bKsr-2",
    ]
    assert m.vias[1].params["rport"] == "5060"
    assert m.headers.get_all("Record-Route") == [
        "<sip:192.0.2.40;lr;did=a1b.c2d>",
        "<sip:192.0.2.41;lr>",
    ]
    assert m.from_.display == "Bob \\ Team"  # an escaped backslash
    assert m.to == NameAddr(uri="sip:srs@192.0.2.200")  # addr-spec without brackets
    assert m.body.count(b"a=label:") == 2


def test_audiocodes_bare_lf_body_counted_as_sent() -> None:
    raw = load("audiocodes_invite_bare_lf.sip")
    assert b"\r" not in raw
    m = request("audiocodes_invite_bare_lf.sip", stream=True)
    assert len(m.body) == announced_length(raw) == 1399
    assert raw.endswith(m.body)
    assert b"\r" not in m.body  # never normalised
    assert m.body.endswith(b"--boundary_ac1fffff85b--\n")
    assert m.top_via.params == {"branch": "z9hG4bKac1929417311", "alias": None}
    assert m.headers.get("User-Agent") == "Mediant SW/v.7.40A.250.003"


def test_freeswitch_compact_headers_and_leading_crlfs() -> None:
    raw = load("freeswitch_compact_invite.sip")
    assert raw.startswith(b"\r\n\r\nINVITE ")
    m = request("freeswitch_compact_invite.sip")
    names = [name for name, _ in m.headers]
    assert names[:5] == ["Via", "Max-Forwards", "From", "To", "Call-ID"]
    assert "Contact" in names and "Supported" in names and "Content-Type" in names
    assert m.top_via.params["rport"] is None
    assert m.from_.display == "FreeSWITCH"
    assert m.call_id == "3d5e2f1a-9b8c-4d7e-a6f5-1b2c3d4e5f60"
    assert m.cseq.number == 37819264
    assert m.headers.get("m") == "<sip:mod_siprec@192.0.2.5:5060>;+sip.src"
    assert m.headers.tokens("k") == {"timer", "path", "replaces"}
    assert m.content_type == "multipart/mixed;boundary=LKxjH4uD1kPnt7fF"
    assert len(m.body) == 1064


def test_cisco_cube_plain_sdp_and_non_list_headers_with_commas() -> None:
    m = request("cisco_cube_invite.sip")
    assert m.content_type == "application/sdp"
    assert m.headers.get("Content-Disposition") == "session;handling=required"
    assert m.headers.get_all("Date") == ["Tue, 14 Nov 2023 10:00:00 GMT"]  # not a list header
    participants = [NameAddr.parse(p) for p in m.headers.get_raw("X-Cisco-Recording-Participant")]
    assert [(p.display, p.params["media-index"]) for p in participants] == [
        ("Alice", "0"),
        ("Bob, Sales", "1"),
    ]
    assert m.headers.get("Min-SE") == "1800"
    assert m.from_.uri == "sip:192.0.2.1" and m.from_.tag == "1A2B3C4D-1234"
    assert m.body.startswith(b"v=0\r\n")


def test_cucm_delayed_offer_with_folded_lines() -> None:
    m = request("cucm_invite_no_sdp_folded.sip", stream=True)
    assert m.body == b"" and m.content_type is None
    assert m.headers.get("Subject") == "recording of call 42"
    assert m.cseq.number == 101 and m.cseq.method == "INVITE"  # CSeq folded over two lines
    call_info = m.headers.get_all("Call-Info")
    assert call_info == [
        '<sip:192.0.2.30:5060>;method="NOTIFY;Event=telephone-event;Duration=500"',
        "<urn:x-cisco-remotecc:callinfo>;x-cisco-video-traffic-class=DESKTOP",
    ]
    method = NameAddr.parse(call_info[0]).params["method"]
    assert method == "NOTIFY;Event=telephone-event;Duration=500"
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.params == {"+u.sip!devicename.ccm.cisco.com": "SEP001122334455"}
    assert "~" in (m.from_.tag or "")


def test_metadata_only_update_and_sloppy_bye() -> None:
    update = request("avaya_update_metadata_only.sip")
    assert update.method == "UPDATE" and update.cseq.method == "UPDATE"
    assert update.to.tag == "srs-4c1d9e"
    assert update.content_type == "application/rs-metadata+xml"
    bye = request("bye_without_to_tag.sip")
    assert bye.method == "BYE" and bye.to.tag is None
    assert bye.headers.get_all("Reason") == [
        'Q.850;cause=16;text="Normal call clearing, user hung up"'
    ]


def test_options_without_content_length_takes_the_rest_of_the_datagram() -> None:
    m = request("options_no_content_length.sip")
    assert m.body == b""
    assert m.headers.get("Max-Forwards") == "0"
    with_trailer = parse_message(load("options_no_content_length.sip") + b"junk")
    assert with_trailer.body == b"junk"


def test_multiple_contacts_uri_params_versus_header_params() -> None:
    m = request("options_multiple_contacts.sip")
    contacts = [NameAddr.parse(c) for c in m.headers.get_all("Contact")]
    assert len(contacts) == 3
    assert contacts[0].display == "Agent, Smith"
    assert contacts[0].params == {"q": "0.7", "expires": "60"}
    assert SipUri.parse(contacts[0].uri).params == {"transport": "tcp"}
    assert SipUri.parse(contacts[1].uri).host == "2001:db8::7"
    assert SipUri.parse(contacts[1].uri).port == 5062
    # addr-spec without brackets: the ;q belongs to the header, not to the URI
    assert contacts[2] == NameAddr(uri="sip:backup@192.0.2.2", params={"q": "0.1"})
    assert m.from_ == NameAddr(uri="sip:probe@example.com", params={"tag": "p1"})
    assert m.to.display == 'Recorder; main, "A"'
    assert len(m.headers.get_all("Route")) == 3


def test_responses() -> None:
    ok = response("response_200_options.sip")
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.to.tag == "mtsw-opt-99" and ok.cseq.method == "OPTIONS"
    assert ok.top_via.params["received"] == "198.51.100.20"
    not_found = response("response_481_bare_lf.sip")
    assert (not_found.status, not_found.reason) == (481, "Call/Transaction Does Not Exist")
    assert not_found.cseq.method == "BYE"
    ringing = response("response_180_no_reason.sip")
    assert (ringing.status, ringing.reason) == (180, "")


BAD_EXPECTED = {
    "bad_content_length_conflict.sip": (400, "conflicting Content-Length"),
    "bad_content_length_larger_than_body.sip": (400, "Content-Length 500 larger"),
    "bad_content_length_not_a_number.sip": (400, "bad Content-Length"),
    "bad_cseq_method_mismatch.sip": (400, "CSeq method"),
    "bad_cseq_not_a_number.sip": (400, "bad CSeq"),
    "bad_cseq_out_of_range.sip": (400, "out of range"),
    "bad_cseq_unicode_digits.sip": (400, "bad CSeq"),
    "bad_empty_after_crlfs.sip": (400, "empty"),
    "bad_from_without_uri.sip": (400, "no URI"),
    "bad_header_name_with_space.sip": (400, "malformed header line"),
    "bad_header_without_colon.sip": (400, "malformed header line"),
    "bad_method_token.sip": (400, "bad method"),
    "bad_missing_call_id.sip": (400, "missing Call-ID"),
    "bad_missing_cseq.sip": (400, "missing CSeq"),
    "bad_missing_from.sip": (400, "missing From"),
    "bad_missing_to.sip": (400, "missing To"),
    "bad_missing_via.sip": (400, "missing Via"),
    "bad_nul_in_header.sip": (400, "NUL"),
    "bad_request_line.sip": (400, "malformed request line"),
    "bad_request_uri.sip": (400, "Request-URI"),
    "bad_status_code.sip": (400, "bad status code"),
    "bad_status_code_range.sip": (400, "bad status code"),
    "bad_version_request.sip": (505, "unsupported version"),
    "bad_version_response.sip": (505, "unsupported version"),
    "bad_via_not_sip.sip": (400, "bad Via"),
    "bad_via_port.sip": (400, "bad port"),
    "bad_via_unterminated_ipv6.sip": (400, "unterminated IPv6"),
}


def test_every_bad_file_has_an_expectation() -> None:
    assert set(BAD) == set(BAD_EXPECTED)


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_messages_raise_parse_errors_with_status(name: str, stream: bool) -> None:
    status, words = BAD_EXPECTED[name]
    with pytest.raises(SipParseError) as info:
        parse_message(load(name), stream=stream)
    assert info.value.status == status
    assert words in info.value.reason


def test_size_limit_is_413() -> None:
    data = load("metaswitch_invite.sip")
    parse_message(data, max_size=len(data))
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_size=len(data) - 1)
    assert info.value.status == 413
    with pytest.raises(SipParseError) as info:
        parse_message(data + b"x" * 70_000)  # the default limit
    assert info.value.status == 413


def test_header_count_limit_is_413() -> None:
    data = load("bye_without_to_tag.sip")
    head, _, _ = data.partition(b"\r\n\r\n")
    count = head.count(b"\r\n")  # header lines (the start line has no CRLF before it)
    parse_message(data, max_headers=count)
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_headers=count - 1)
    assert info.value.status == 413
    extra = b"".join(b"X-Hop-%d: %d\r\n" % (i, i) for i in range(300))
    with pytest.raises(SipParseError) as info:
        parse_message(head + b"\r\n" + extra + b"\r\n")
    assert info.value.status == 413


def test_stream_rejects_bytes_after_the_body() -> None:
    data = load("bye_without_to_tag.sip")
    assert parse_message(data + b"extra").body == b""  # datagram: trailing bytes ignored
    with pytest.raises(SipParseError) as info:
        parse_message(data + b"extra", stream=True)
    assert info.value.status == 400
