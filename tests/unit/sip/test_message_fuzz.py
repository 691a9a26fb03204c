"""Fuzz harness of the SIP message parser, seeded from ``tests/data/sip``.

Whatever the bytes, on the datagram and the stream path: ``parse_message`` raises nothing but
``SipParseError``; a message that parses serialises and parses back to the same start line and
headers, and its lazily parsed headers (Via, From, To, CSeq, Contact) raise nothing but
``SipParseError``; ``error_response_for`` never raises and what it returns is one response
(status line of printable ASCII, the salvaged Via first, an empty body).
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import SipRequest, error_response_for, parse_message
from siprec_node.sip.uri import NameAddr
from tests.fuzzing import corpus, fuzz_settings, mutated, with_examples

SEEDS = corpus("sip", ".sip")


def _check(data: bytes, stream: bool) -> None:
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as error:
        answer = error_response_for(data, error)
        if answer is not None:  # headers are copied byte for byte: only the frame is ours
            status = error.status if 300 <= error.status <= 699 else 400
            first, _, rest = answer.partition(b"\r\n")
            assert first.startswith(f"SIP/2.0 {status} ".encode())
            assert all(32 <= c < 127 for c in first)
            assert rest.startswith(b"Via: ") and answer.endswith(b"Content-Length: 0\r\n\r\n")
        return
    for read in (
        lambda: message.vias,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.cseq,
        lambda: [NameAddr.parse(v) for v in message.headers.get_all("Contact")],
    ):
        with contextlib.suppress(SipParseError):
            read()
    again = parse_message(message.serialize(), stream=True)
    assert type(again) is type(message)
    assert again.headers == message.headers
    assert again.body == message.body
    if isinstance(message, SipRequest):
        assert isinstance(again, SipRequest)
        assert (again.method, again.uri) == (message.method, message.uri)


@fuzz_settings(500)
@given(mutated(SEEDS), st.booleans())
@with_examples([(seed, False) for seed in SEEDS])
def test_sip_parser_fuzz(data: bytes, stream: bool) -> None:
    _check(data, stream)
