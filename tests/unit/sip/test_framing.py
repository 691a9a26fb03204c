"""StreamFramer: cutting a TCP/TLS byte stream into messages, keep-alives and framing errors."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siprec_node.sip import framing
from siprec_node.sip.framing import (
    FramedItem,
    FramedMessage,
    FramingError,
    KeepAlivePing,
    KeepAlivePong,
    StreamFramer,
)
from siprec_node.sip.message import SipMessage, error_response_for, parse_message
from tests.unit.sip.test_message_properties import messages

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"
# Every good corpus message that carries a Content-Length (mandatory on streams).
CORPUS = [
    p.read_bytes()
    for p in sorted(DATA.glob("*.sip"))
    if not p.name.startswith("bad_") and p.name != "options_no_content_length.sip"
]
OPTIONS = (
    b"OPTIONS sip:srs@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.9:5060;branch=z9hG4bK-1\r\n"
    b"From: <sip:probe@192.0.2.9>;tag=p\r\n"
    b"To: <sip:srs@192.0.2.1>\r\n"
    b"Call-ID: ka-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"abcd"
)


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[FramedItem]:
    items: list[FramedItem] = []
    for chunk in chunks:
        items.extend(framer.feed(chunk))
    return items


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def framed(items: list[FramedItem]) -> list[bytes]:
    return [item.data for item in items if isinstance(item, FramedMessage)]


def test_one_message() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS) == [FramedMessage(OPTIONS)]
    assert framer.buffered == 0 and not framer.failed


@pytest.mark.parametrize("chunked", [False, True])
def test_corpus_in_one_stream(chunked: bool) -> None:
    stream = b"".join(CORPUS)
    chunks = bytewise(stream) if chunked else [stream]
    items = feed_all(StreamFramer(), chunks)
    # freeswitch_compact_invite.sip starts with CRLFCRLF: a ping, as RFC 5626 would have it.
    assert [i for i in items if not isinstance(i, FramedMessage)] == [KeepAlivePing()]
    assert framed(items) == [c.lstrip(b"\r\n") for c in CORPUS]
    for data, original in zip(framed(items), CORPUS, strict=True):
        assert parse_message(data, stream=True) == parse_message(original)


def test_bare_lf_message_is_framed_by_its_content_length() -> None:
    data = (DATA / "audiocodes_invite_bare_lf.sip").read_bytes()
    assert b"\r" not in data
    items = feed_all(StreamFramer(), [data + data[:100], data[100:]])
    assert items == [FramedMessage(data), FramedMessage(data)]


def test_mixed_line_ends_at_the_end_of_the_head() -> None:
    head, _, body = OPTIONS.partition(b"\r\n\r\n")
    for sep in (b"\n\n", b"\r\n\n", b"\n\r\n"):
        data = head + sep + body
        assert StreamFramer().feed(data + OPTIONS) == [FramedMessage(data), FramedMessage(OPTIONS)]


def test_keep_alive_ping_and_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlivePing()]
    assert KeepAlivePing.REPLY == b"\r\n"
    assert framer.feed(b"\r\n") == []  # might be the first half of a ping
    assert framer.feed(b"\r\n") == [KeepAlivePing()]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(OPTIONS) == [KeepAlivePong(), FramedMessage(OPTIONS)]
    assert framer.feed(b"\n\n\r\n\r\n\n") == [KeepAlivePing(), KeepAlivePing()]
    assert framer.feed(b"O") == [KeepAlivePong()]
    assert framer.feed(OPTIONS[1:]) == [FramedMessage(OPTIONS)]


def test_ping_arriving_byte_by_byte_between_messages() -> None:
    stream = OPTIONS + b"\r\n\r\n" + OPTIONS + b"\r\n" + OPTIONS + b"\r\n\r\n\r\n\r\n"
    expected = [
        FramedMessage(OPTIONS),
        KeepAlivePing(),
        FramedMessage(OPTIONS),
        KeepAlivePong(),
        FramedMessage(OPTIONS),
        KeepAlivePing(),
        KeepAlivePing(),
    ]
    assert feed_all(StreamFramer(), bytewise(stream)) == expected
    assert StreamFramer().feed(stream) == expected


def test_stray_cr_before_a_message_is_dropped() -> None:
    assert StreamFramer().feed(b"\r" + OPTIONS) == [FramedMessage(OPTIONS)]


def test_crlf_inside_a_body_is_not_a_keep_alive() -> None:
    body = b"\r\n\r\n\r\n"
    data = OPTIONS.replace(b"Content-Length: 4", b"Content-Length: 6")[:-4] + body
    assert feed_all(StreamFramer(), bytewise(data)) == [FramedMessage(data)]


def test_empty_feed_and_partial_message() -> None:
    framer = StreamFramer()
    assert framer.feed(b"") == []
    assert framer.feed(OPTIONS[:-1]) == []
    assert framer.buffered == len(OPTIONS) - 1
    assert framer.feed(OPTIONS[-1:] + OPTIONS[:10]) == [FramedMessage(OPTIONS)]
    assert framer.buffered == 10


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"", "missing Content-Length"),
        (b"Content-Length: four\r\n", "bad Content-Length"),
        (b"Content-Length: -4\r\n", "bad Content-Length"),
        ("Content-Length: \u00b2\r\n".encode(), "bad Content-Length"),
        (b"Content-Length: " + b"9" * 5000 + b"\r\n", "bad Content-Length"),
        (b"Content-Length: 4\r\nl: 5\r\n", "conflicting Content-Length"),
    ],
)
def test_bad_or_missing_content_length_loses_framing(header: bytes, words: str) -> None:
    data = OPTIONS.replace(b"Content-Length: 4\r\n", header)
    framer = StreamFramer(max_size=100_000)
    items = framer.feed(OPTIONS + data + OPTIONS)
    assert items[0] == FramedMessage(OPTIONS)
    error = items[1]
    assert isinstance(error, FramingError) and len(items) == 2
    assert error.close_connection
    assert error.error.status == 400 and words in error.error.reason
    assert error.data.startswith(b"OPTIONS sip:srs@192.0.2.1 SIP/2.0\r\n")
    assert framer.failed and framer.buffered == 0
    assert framer.feed(OPTIONS) == []  # nothing more once framing is lost
    answer = error_response_for(error.data, error.error, to_tag="t")
    assert answer is not None and answer.startswith(b"SIP/2.0 400 ")


def test_equal_duplicate_content_lengths_are_accepted() -> None:
    data = OPTIONS.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl:4\r\n")
    assert StreamFramer().feed(data) == [FramedMessage(data)]


def test_header_section_without_end_over_max_size_is_413() -> None:
    framer = StreamFramer(max_size=1000)
    head = OPTIONS.partition(b"\r\n\r\n")[0] + b"\r\n"
    assert framer.feed(head) == []
    items: list[FramedItem] = []
    for i in range(100):
        items += framer.feed(b"X-Filler-%03d: %s\r\n" % (i, b"y" * 20))
        if items:
            break
    assert framer.buffered == 0
    [error] = items
    assert isinstance(error, FramingError) and error.error.status == 413
    assert error.data.startswith(head) and len(error.data) == 1000
    assert error_response_for(error.data, error.error, to_tag="t") is not None


def test_body_over_max_size_is_413_as_soon_as_the_head_is_known() -> None:
    data = OPTIONS.replace(b"Content-Length: 4", b"Content-Length: 5000")
    head = data[: data.index(b"\r\n\r\n") + 4]
    [error] = StreamFramer(max_size=4096).feed(head)
    assert isinstance(error, FramingError) and error.error.status == 413
    assert error.data == head


def test_message_of_exactly_max_size_passes() -> None:
    assert StreamFramer(max_size=len(OPTIONS)).feed(OPTIONS) == [FramedMessage(OPTIONS)]
    [error] = StreamFramer(max_size=len(OPTIONS) - 1).feed(OPTIONS)
    assert isinstance(error, FramingError)


class CountingPattern:
    """Wraps the header-end regex and counts the bytes each search may look at."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, data: bytearray, pos: int = 0) -> re.Match[bytes] | None:
        match = self.pattern.search(data, pos)
        self.scanned += (match.end() if match else len(data)) - pos
        return match


def test_slowly_arriving_large_message_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 KiB one byte at a time: the header search resumes where it stopped."""
    counter = CountingPattern(framing.HEADER_END)
    monkeypatch.setattr(framing, "HEADER_END", counter)
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"z" * 40) for i in range(600))
    head = OPTIONS.partition(b"\r\n\r\n")[0]
    data = (head + b"\r\n" + filler).replace(b"Content-Length: 4", b"Content-Length: 25000")
    data += b"\r\n" + b"b" * 25_000
    assert 60_000 < len(data) < 65_535
    framer = StreamFramer()
    started = time.perf_counter()
    items = feed_all(framer, bytewise(data))
    elapsed = time.perf_counter() - started
    assert items == [FramedMessage(data)]
    assert counter.scanned < 3 * len(data)  # a rescan per byte would be ~10**9
    assert elapsed < 3.0, f"{elapsed:.1f} s"


def test_many_messages_in_one_chunk() -> None:
    stream = (OPTIONS + b"\r\n\r\n") * 2000
    started = time.perf_counter()
    items = StreamFramer().feed(stream)
    assert time.perf_counter() - started < 3.0
    assert framed(items) == [OPTIONS] * 2000
    assert items.count(KeepAlivePing()) == 2000


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[SipMessage | str], bytes]:
    """Messages with keep-alives between them (a pong only right before a message: a pong
    followed by another keep-alive cannot be told apart from a ping)."""
    items: list[SipMessage | str] = draw(st.lists(messages, max_size=5))
    out: list[SipMessage | str] = []
    for item in items:
        out.extend(draw(st.lists(st.sampled_from(["ping"]), max_size=2)))
        if draw(st.booleans()):
            out.append("pong")
        out.append(item)
    out.extend(draw(st.lists(st.just("ping"), max_size=2)))
    wire = {"ping": b"\r\n\r\n", "pong": b"\r\n"}
    data = b"".join(wire[x] if isinstance(x, str) else x.serialize() for x in out)
    return out, data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_split_anywhere_gives_back_the_same_items(
    stream: tuple[list[SipMessage | str], bytes], data: st.DataObject
) -> None:
    expected, wire = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    framer = StreamFramer(max_size=100_000)
    items = feed_all(framer, chunks)
    assert framer.buffered == 0
    got: list[SipMessage | str] = []
    for item in items:
        if isinstance(item, FramedMessage):
            got.append(parse_message(item.data, stream=True))
        else:
            assert isinstance(item, KeepAlivePing | KeepAlivePong)
            got.append("ping" if isinstance(item, KeepAlivePing) else "pong")
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.sampled_from(CORPUS))), st.integers(50, 5000))
def test_any_bytes_give_items_never_exceptions(chunks: list[bytes], max_size: int) -> None:
    framer = StreamFramer(max_size=max_size)
    items = feed_all(framer, chunks)
    for item in items:
        if isinstance(item, FramedMessage):
            assert len(item.data) <= max_size
        elif isinstance(item, FramingError):
            assert item.error.status in (400, 413) and len(item.data) <= max_size
    errors = [i for i in items if isinstance(i, FramingError)]
    assert len(errors) <= 1 and (not errors or items[-1] is errors[0])
    assert framer.failed == bool(errors)


def test_message_pending_only_inside_a_message() -> None:
    """What the transport's message deadline keys on: line ends between messages (keep-alives,
    half a ping) do not start it, the first byte of a message does, completion ends it."""
    framer = StreamFramer()
    assert not framer.message_pending
    framer.feed(b"\r\n")  # half a ping, or a pong: not a message
    assert not framer.message_pending
    framer.feed(b"\r\n")
    assert not framer.message_pending
    framer.feed(OPTIONS[:1])
    assert framer.message_pending
    framer.feed(OPTIONS[1:-2])  # head complete, body still coming
    assert framer.message_pending
    assert framed(framer.feed(OPTIONS[-2:])) == [OPTIONS]
    assert not framer.message_pending
    framer.feed(OPTIONS + OPTIONS[:10])  # one done, the next begun in the same chunk
    assert framer.message_pending


def test_partial_header_buffer_bounded_by_max_size() -> None:
    framer = StreamFramer(max_size=2048)
    items: list[FramedItem] = []
    for _ in range(100):
        items += framer.feed(b"X-Pad: " + b"a" * 60 + b"\r\n")
        assert framer.buffered <= 2048 + 70
    assert isinstance(items[-1], FramingError) and items[-1].error.status == 413
    assert framer.buffered == 0
