"""Doubling a SIP message's header section at most about doubles the time to parse it (and to
salvage an error response from it): many header fields, one field folded many times, a list
header with many elements, the Contact values a SIPREC check reads."""

from __future__ import annotations

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import error_response_for, parse_message
from siprec_node.siprec.recording_session import recognize_siprec
from tests.scaling import assert_linear

HEAD = (
    "INVITE sip:srs@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-scale\r\n"
    "From: <sip:sbc@example.com>;tag=1\r\n"
    "To: <sip:srs@example.com>\r\n"
    "Call-ID: scale@sbc\r\n"
    "CSeq: 1 INVITE\r\n"
)
UNBOUNDED = 1 << 30


def _message(extra: str) -> bytes:
    return (HEAD + extra + "Content-Length: 0\r\n\r\n").encode()


def _parse(data: bytes) -> object:
    return parse_message(data, max_size=UNBOUNDED, max_headers=UNBOUNDED)


def test_many_header_fields() -> None:
    assert_linear(lambda n: _message("".join(f"X-H{i}: v{i}\r\n" for i in range(n))), _parse, 1000)


def test_one_header_folded_many_times() -> None:
    assert_linear(lambda n: _message("Subject: a\r\n" + " b\r\n" * n), _parse, 4000)


def test_a_list_header_with_many_elements() -> None:
    def run(data: bytes) -> None:
        message = _parse(data)
        assert len(message.vias) > 1  # type: ignore[attr-defined]

    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-x"
    assert_linear(lambda n: _message("Via: " + ", ".join([via] * n) + "\r\n"), run, 250)


def test_siprec_recognition_over_many_contacts() -> None:
    def run(data: bytes) -> None:
        message = _parse(data)
        recognize_siprec(
            [],
            message.headers.get_all("Contact"),  # type: ignore[attr-defined]
            [],
        )

    assert_linear(
        lambda n: _message("".join(f"Contact: <sip:c{i}@10.0.0.1>\r\n" for i in range(n))),
        run,
        1000,
    )


def test_error_response_salvage() -> None:
    error = SipParseError("scale")
    assert_linear(
        lambda n: _message(
            "Subject: a\r\n" + " b\r\n" * n + "".join(f"X-{i}: v\r\n" for i in range(n))
        ),
        lambda data: error_response_for(data, error),
        2000,
    )
