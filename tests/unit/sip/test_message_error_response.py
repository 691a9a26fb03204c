"""error_response_for: answering a request too broken to parse, without ever raising."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import SipRequest, SipResponse, error_response_for, parse_message
from tests.unit.sip.test_message_properties import CORPUS_BYTES, mangled, requests

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"

BROKEN = (
    b"INVITE sip:srs@198.51.100.20 SIP/3.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-top;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-2,\r\n"
    b"  SIP/2.0/TCP [2001:db8::3]:5070;branch=z9hG4bK-3\r\n"
    b'f: "M\xc3\xbcller, Anna" <sip:anna@192.0.2.10>;tag=abc\r\n'
    b"To: <sip:srs@198.51.100.20>\r\n"
    b"i: call-1@192.0.2.10\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"X-Ignored: yes\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse_error(data: bytes) -> SipParseError:
    try:
        parse_message(data)
    except SipParseError as exc:
        return exc
    raise AssertionError("parsed")


def answer(data: bytes, error: SipParseError | None = None) -> SipResponse:
    raw = error_response_for(data, error or parse_error(data), to_tag="srs-tag")
    assert raw is not None
    response = parse_message(raw, stream=True)
    assert isinstance(response, SipResponse)
    return response


def test_505_to_a_request_with_a_bad_version() -> None:
    error = parse_error(BROKEN)
    assert error.status == 505
    response = answer(BROKEN)
    assert response.status == 505
    assert response.reason == "unsupported version 'SIP/3.0'"
    assert response.headers.get_raw("Via") == [
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-top;rport",
        "SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-2, SIP/2.0/TCP [2001:db8::3]:5070;branch=z9hG4bK-3",
    ]
    assert [v.branch for v in response.vias] == ["z9hG4bK-top", "z9hG4bK-2", "z9hG4bK-3"]
    assert response.from_.display == "Müller, Anna" and response.from_.tag == "abc"
    assert response.to.tag == "srs-tag"
    assert response.call_id == "call-1@192.0.2.10"
    assert (response.cseq.number, response.cseq.method) == (7, "INVITE")
    assert "X-Ignored" not in response.headers
    raw = error_response_for(BROKEN, error, to_tag="t")
    assert raw is not None
    assert b'From: "M\xc3\xbcller, Anna" <sip:anna@192.0.2.10>;tag=abc\r\n' in raw  # as sent
    assert raw.endswith(b"Content-Length: 0\r\n\r\n")


ANSWERED = {
    "bad_content_length_conflict.sip": 400,
    "bad_content_length_larger_than_body.sip": 400,
    "bad_content_length_not_a_number.sip": 400,
    "bad_cseq_method_mismatch.sip": 400,
    "bad_cseq_not_a_number.sip": 400,
    "bad_cseq_out_of_range.sip": 400,
    "bad_cseq_unicode_digits.sip": 400,
    "bad_from_without_uri.sip": 400,
    "bad_header_name_with_space.sip": 400,
    "bad_header_without_colon.sip": 400,
    "bad_method_token.sip": 400,
    "bad_missing_call_id.sip": 400,
    "bad_missing_cseq.sip": 400,
    "bad_missing_from.sip": 400,
    "bad_missing_to.sip": 400,
    "bad_nul_in_header.sip": 400,
    "bad_request_line.sip": 400,
    "bad_request_uri.sip": 400,
    "bad_version_request.sip": 505,
}
NOT_ANSWERED = {
    "bad_missing_via.sip": "no Via",
    "bad_via_not_sip.sip": "top Via unusable",
    "bad_via_port.sip": "top Via unusable",
    "bad_via_unterminated_ipv6.sip": "top Via unusable",
    "bad_version_response.sip": "a response",
    "bad_status_code.sip": "a response",
    "bad_status_code_range.sip": "a response",
    "bad_empty_after_crlfs.sip": "nothing",
}


def test_every_bad_corpus_file_is_classified() -> None:
    names = {p.name for p in DATA.glob("bad_*.sip")}
    assert names == set(ANSWERED) | set(NOT_ANSWERED)


@pytest.mark.parametrize("name", sorted(ANSWERED))
def test_bad_corpus_requests_are_answered(name: str) -> None:
    data = (DATA / name).read_bytes()
    error = parse_error(data)
    raw = error_response_for(data, error, to_tag="srs-tag")
    assert raw is not None
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"SIP/2.0 %d " % ANSWERED[name])
    assert raw.count(b"\r\n\r\n") == 1 and raw.endswith(b"\r\n\r\n")
    assert b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-bad-1\r\n" in rest
    for line in (b"From: <sip:src@192.0.2.10>;tag=bad-1", b"Call-ID: bad-1@192.0.2.10"):
        assert (line in rest) == (line in data)
    if b"To: <sip:srs@198.51.100.20>\r\n" in data:
        assert b"To: <sip:srs@198.51.100.20>;tag=srs-tag\r\n" in rest
    complete = all(h in data for h in (b"\nFrom:", b"\nTo:", b"\nCall-ID:", b"\nCSeq: 1 "))
    if complete and b'From: "Nobody"' not in data:
        assert isinstance(parse_message(raw), SipResponse)


@pytest.mark.parametrize("name", sorted(NOT_ANSWERED))
def test_bad_corpus_messages_without_an_answer(name: str) -> None:
    data = (DATA / name).read_bytes()
    assert error_response_for(data, parse_error(data)) is None


def test_ack_is_never_answered() -> None:
    ack = BROKEN.replace(b"INVITE sip:", b"ACK sip:").replace(b"7 INVITE", b"7 ACK")
    assert error_response_for(ack, parse_error(ack)) is None
    garbled_start = ack.replace(b"ACK sip:srs@198.51.100.20 SIP/3.0", b"A?K")
    assert error_response_for(garbled_start, SipParseError("bad method")) is None
    lower = ack.replace(b"ACK sip:", b"ack sip:")
    assert error_response_for(lower, parse_error(lower)) is None


def test_responses_are_never_answered() -> None:
    for name in ("response_200_options.sip", "response_481_bare_lf.sip"):
        data = (DATA / name).read_bytes()
        assert error_response_for(data, SipParseError("whatever")) is None
    assert error_response_for(b"\r\nSIP/2.0 200 OK\r\n", SipParseError("x")) is None


def test_reason_phrase_is_one_short_line_of_printable_ascii() -> None:
    error = SipParseError("bad\r\nthing \x00\x7f ünïcode\t" + "x" * 300, 400)
    response = answer(BROKEN, error)
    assert response.reason.startswith("bad thing ?n?code xxx")
    assert len(response.reason) == 100
    assert all(" " <= c <= "~" for c in response.reason)
    assert answer(BROKEN, SipParseError("\r\n\x00", 400)).reason == "Bad Request"


def test_status_outside_the_error_range_becomes_400() -> None:
    assert answer(BROKEN, SipParseError("odd", status=200)).status == 400
    assert answer(BROKEN, SipParseError("too big", status=413)).status == 413


def test_to_tag_kept_or_generated() -> None:
    tagged = BROKEN.replace(b"To: <sip:srs@198.51.100.20>", b"To: <sip:srs@198.51.100.20>;tag=x")
    assert answer(tagged).to.tag == "x"
    error = parse_error(BROKEN)
    first, second = (error_response_for(BROKEN, error) for _ in range(2))
    assert first and second and first != second  # random tags
    unclosed = BROKEN.replace(b"To: <sip:srs@198.51.100.20>", b"To: <sip:srs@198.51.100.20")
    assert b"To: <sip:srs@198.51.100.20\r\n" in (error_response_for(unclosed, error) or b"")
    addr_spec = BROKEN.replace(b"To: <sip:srs@198.51.100.20>", b"To: sip:srs@198.51.100.20")
    assert answer(addr_spec).to.tag == "srs-tag"


def test_oversized_request_gets_413() -> None:
    data = (DATA / "metaswitch_invite.sip").read_bytes() + b"x" * 100_000
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    response = answer(data, info.value)
    assert response.status == 413
    assert response.call_id == "6b1f0c2e-91d4-4f5b-8a33-0c7e6e1d2f10@192.0.2.10"
    assert len(response.vias) == 2


def test_too_many_headers_gets_413() -> None:
    filler = b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(400))
    data = BROKEN.replace(b"SIP/3.0", b"SIP/2.0").replace(b"X-Ignored: yes\r\n", filler)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 413
    assert answer(data, info.value).status == 413


def test_bare_lf_and_folded_headers_are_salvaged() -> None:
    data = BROKEN.replace(b"\r\n", b"\n")
    response = answer(data)
    assert response.call_id == "call-1@192.0.2.10"
    assert len(response.vias) == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 999), st.text(max_size=200))
def test_never_raises_on_any_bytes(data: bytes, status: int, reason: str) -> None:
    check_answer(data, SipParseError(reason, status))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mangled(), st.sampled_from(CORPUS_BYTES)))
def test_never_raises_on_mangled_messages(data: bytes) -> None:
    try:
        parse_message(data)
    except SipParseError as exc:
        check_answer(data, exc)


def check_answer(data: bytes, error: SipParseError) -> None:
    raw = error_response_for(data, error)
    if raw is None:
        return
    status_line = raw.partition(b"\r\n")[0]
    assert status_line.startswith(b"SIP/2.0 ")
    assert all(0x20 <= b < 0x7F for b in status_line) and len(status_line) <= 8 + 4 + 100
    assert raw.endswith(b"\r\n\r\n") and b"\x00" not in raw
    try:  # it may lack headers the request lacked, but it is never garbage
        response = parse_message(raw)
    except SipParseError:
        return
    assert isinstance(response, SipResponse)
    assert 300 <= response.status <= 699


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from([b"SIP/3.0", b"SIP/2.1", b"HTTP/1.1"]))
def test_salvaged_fields_match_the_request(request: SipRequest, version: bytes) -> None:
    wire = request.serialize()
    start, _, rest = wire.partition(b"\r\n")
    broken = start.rsplit(b" ", 1)[0] + b" " + version + b"\r\n" + rest
    error = parse_error(broken)
    raw = error_response_for(broken, error, to_tag="srs-tag")
    if request.method == "ACK":
        assert raw is None
        return
    assert raw is not None
    response = parse_message(raw)
    assert isinstance(response, SipResponse)
    assert response.status == error.status
    assert response.headers.get_raw("Via") == request.headers.get_raw("Via")
    for name in ("From", "Call-ID", "CSeq"):
        assert response.headers.get(name) == request.headers.get(name)
    assert response.to.uri == request.to.uri
    assert response.to.tag == (request.to.tag or "srs-tag")
