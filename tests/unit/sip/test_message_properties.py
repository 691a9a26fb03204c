"""Property tests of the message layer: it never raises anything but SipParseError, and what it
serialises it parses back to the same message, on the datagram and the stream path.

The strategies here are shared with the framing and error-response tests.
"""

from __future__ import annotations

import contextlib
import re
import string
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    canonical_name,
    make_response,
    parse_message,
)
from siprec_node.sip.uri import NameAddr

CORPUS = sorted((Path(__file__).resolve().parents[2] / "data" / "sip").glob("*.sip"))
CORPUS_BYTES = [p.read_bytes() for p in CORPUS]
GOOD_BYTES = [p.read_bytes() for p in CORPUS if not p.name.startswith("bad_")]

TOKEN = string.ascii_letters + string.digits + "-.!%*_+`'~"
METHOD_CHARS = string.ascii_uppercase + string.digits + "-.!%*_+`'~"
URI_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))
# Names the generator sets itself: extra fields of these names would change the message's meaning.
RESERVED = {"via", "from", "to", "call-id", "cseq", "content-length"}

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

methods = st.one_of(
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK"]),
    st.text(METHOD_CHARS, min_size=1, max_size=12),
)
hostnames = st.lists(
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8), min_size=1, max_size=4
).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
    lambda g: "[" + ":".join(f"{x:x}" for x in g) + "]"
)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
sip_uris = st.builds(
    lambda scheme, user, host, port, params: f"{scheme}:{user}{host}{port}{params}",
    st.sampled_from(["sip", "sips"]),
    st.one_of(st.just(""), st.text(TOKEN, min_size=1, max_size=10).map(lambda u: u + "@")),
    hosts,
    ports,
    st.lists(st.text(TOKEN, min_size=1, max_size=8), max_size=3).map(
        lambda ps: "".join(";" + p for p in ps)
    ),
)
request_uris = st.one_of(
    sip_uris,
    st.builds(
        lambda scheme, rest: f"{scheme}:{rest}",
        st.sampled_from(["sip", "sips", "tel", "urn", "x-custom"]),
        st.text(URI_CHARS, min_size=1, max_size=40),
    ),
)
# Any text the header section can carry: no CR, LF or NUL (rejected), no SP/HTAB at either end.
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=60).map(
    lambda v: v.strip(" \t")
)
header_names = st.text(TOKEN, min_size=1, max_size=20).filter(
    lambda n: canonical_name(n).lower() not in RESERVED
)
extra_headers = st.lists(st.tuples(header_names, line_text), max_size=12)
displays = st.one_of(
    st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=20)
)
name_addrs = st.builds(
    lambda uri, display, tag: str(NameAddr(uri=uri, display=display, params=tag)),
    sip_uris,
    displays,
    st.one_of(st.just({}), st.text(TOKEN, min_size=1, max_size=12).map(lambda t: {"tag": t})),
)
vias = st.builds(
    lambda transport, host, port, branch: (
        f"SIP/2.0/{transport} {host}{port};branch=z9hG4bK{branch}"
    ),
    st.sampled_from(["UDP", "TCP", "TLS", "WS"]),
    hosts,
    ports,
    st.text(TOKEN, min_size=1, max_size=16),
)
call_ids = line_text.filter(bool)
cseq_numbers = st.integers(0, 2**31 - 1)
bodies = st.binary(max_size=1500)


@st.composite
def header_sections(draw: st.DrawFn, method: str) -> Headers:
    required = [
        *(("Via", v) for v in draw(st.lists(vias, min_size=1, max_size=3))),
        ("From", draw(name_addrs)),
        ("To", draw(name_addrs)),
        ("Call-ID", draw(call_ids)),
        ("CSeq", f"{draw(cseq_numbers)} {method}"),
    ]
    fields = draw(st.permutations(required + draw(extra_headers)))
    return Headers.of(fields)


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    method = draw(methods)
    headers = draw(header_sections(method))
    return SipRequest(method, draw(request_uris), headers, draw(bodies))


@st.composite
def responses(draw: st.DrawFn) -> SipResponse:
    headers = draw(header_sections(draw(methods)))
    return SipResponse(draw(st.integers(100, 699)), draw(line_text), headers, draw(bodies))


messages = st.one_of(requests(), responses())


# Replacements for a number: Unicode digits pass str.isdigit() but not int(); int() refuses
# more than 4300 digits; the rest probe range checks.
ODD_NUMBERS = [
    "\u00b2".encode(),
    "\u0661\u0662".encode(),
    b"9" * 5000,
    b"4294967296",
    b"2147483648",
    b"65536",
    b"-1",
    b"",
    b"0x1F",
    b"1e3",
    b" 7 ",
]
# Insertions: separators, line ends, and characters str.strip()/str.split() treat as whitespace.
ODD_BYTES = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"[",
    b"]",
    b"@",
    b"\t",
    "\x85".encode(),
    "\xa0".encode(),
    b"\x1c",
    b"\x0b",
    b"\xff\xfe",
]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """Valid messages (corpus or generated) mutated, truncated or spliced together."""
    base = draw(st.one_of(st.sampled_from(GOOD_BYTES), messages.map(lambda m: m.serialize())))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ["flip", "insert", "delete", "truncate", "splice", "dup", "number", "number"]
            )
        )
        at = draw(st.integers(0, len(data)))
        if op == "number":  # numbers are where int() and range checks live
            runs = list(re.finditer(rb"[0-9]+", data))
            after_colon = [
                r for r in runs if data[max(0, r.start() - 2) : r.start()].strip() == b":"
            ]
            runs = draw(st.sampled_from([runs, after_colon or runs]))  # header values, ports
            if runs:
                run = draw(st.sampled_from(runs))
                data[run.start() : run.end()] = draw(st.sampled_from(ODD_NUMBERS))
            continue
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i : i + 1] = draw(
                st.one_of(st.sampled_from(ODD_BYTES), st.binary(min_size=1, max_size=1))
            )
        elif op == "insert":
            data[at:at] = draw(
                st.one_of(
                    st.binary(max_size=8),
                    st.sampled_from(ODD_BYTES),
                )
            )
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(CORPUS_BYTES))
            data[at:] = other[draw(st.integers(0, len(other))) :]
        elif op == "dup":
            data[at:at] = data[max(0, at - 30) : at]
    return bytes(data)


def parse_or_none(data: bytes, **kwargs: object) -> SipMessage | None:
    """Parse, allowing only SipParseError (which gives None)."""
    try:
        return parse_message(data, **kwargs)  # type: ignore[arg-type]
    except SipParseError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status <= 599
        assert exc.reason
        return None


def exercise(message: SipMessage) -> None:
    """Everything a caller does with a parsed message raises nothing but SipParseError."""
    wire = message.serialize()
    assert parse_message(wire, stream=True) == message  # idempotent once parsed
    _ = message.call_id, message.content_type, message.cseq, message.from_, message.to
    _ = message.top_via
    with contextlib.suppress(SipParseError):
        _ = message.vias  # lower Vias are only checked when asked for
    if isinstance(message, SipRequest):
        answer = make_response(message, 486, to_tag="srs1")
        assert parse_message(answer.serialize()).to.tag in (message.to.tag, "srs1")


@FUZZ
@given(st.binary(max_size=3000), st.booleans())
def test_any_bytes_raise_only_parse_errors(data: bytes, stream: bool) -> None:
    message = parse_or_none(data, stream=stream)
    if message is not None:
        exercise(message)


@FUZZ
@given(mangled(), st.booleans(), st.integers(50, 70_000), st.integers(0, 300))
def test_mangled_messages_raise_only_parse_errors(
    data: bytes, stream: bool, max_size: int, max_headers: int
) -> None:
    message = parse_or_none(data, stream=stream, max_size=max_size, max_headers=max_headers)
    if message is not None:
        exercise(message)


# Numbers the parser converts: header values and ports after a colon, the status code.
NUMERIC_FIELD = re.compile(rb"(?<=:)[ \t]*([0-9]+)|^SIP/2\.0[ \t]+([0-9]+)")
odd_numbers = st.one_of(
    st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=5),  # "²", "١٢"
    st.integers(min_value=0).map(str),
    st.integers(4290, 4400).map(lambda n: "9" * n),  # int() refuses more than 4300 digits
    st.sampled_from(["-1", "+1", "0x1F", "1_000", " 7", "1e3", "", "\u00a012"]),
)


@FAST
@given(st.sampled_from(GOOD_BYTES), odd_numbers, st.data())
def test_odd_numbers_in_numeric_fields_raise_only_parse_errors(
    base: bytes, number: str, data: st.DataObject
) -> None:
    fields = [m.span(m.lastindex or 0) for m in NUMERIC_FIELD.finditer(base)]
    start, end = data.draw(st.sampled_from(fields))
    mutated = base[:start] + number.encode() + base[end:]
    for stream in (False, True):
        message = parse_or_none(mutated, stream=stream)
        if message is not None:
            exercise(message)


@FAST
@given(st.lists(st.sampled_from([*CORPUS_BYTES[:8], b"\r\n", b"\n", b": ", b";", b"\x00"])))
def test_concatenated_fragments_raise_only_parse_errors(parts: list[bytes]) -> None:
    message = parse_or_none(b"".join(parts))
    if message is not None:
        exercise(message)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"\n"]))
def test_round_trip_on_both_paths(message: SipMessage, lead: bytes) -> None:
    wire = message.serialize()
    assert parse_message(wire) == message
    assert parse_message(wire, stream=True) == message
    assert parse_message(lead + wire, stream=True) == message  # RFC 3261 §7.5


@FAST
@given(requests(), st.integers(1, 10))
def test_bare_lf_and_folded_header_sections_parse_like_plain_crlf(
    message: SipRequest, indent: int
) -> None:
    value = "first part second part"
    folded = SipRequest(
        message.method, message.uri, message.headers.add("X-Folded", value), message.body
    )
    wire = folded.serialize()
    continuation = b"\r\n" + b" \t"[indent % 2 :] * indent
    wire = wire.replace(b"first part ", b"first part" + continuation, 1)
    assert parse_message(wire) == folded
    head, _, body = wire.partition(b"\r\n\r\n")
    assume(b"\r" not in head.replace(b"\r\n", b""))  # a lone CR in a value is a line end
    assert parse_message(head.replace(b"\r\n", b"\n") + b"\n\n" + body, stream=True) == folded


@FAST
@given(messages.filter(lambda m: bool(m.body)))
def test_truncated_body_is_400(message: SipMessage) -> None:
    wire = message.serialize()
    for stream in (False, True):
        try:
            parse_message(wire[:-1], stream=stream)
        except SipParseError as exc:
            assert exc.status == 400
        else:
            raise AssertionError("a truncated body parsed")
