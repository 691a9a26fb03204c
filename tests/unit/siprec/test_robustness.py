"""Property tests: hostile input only ever raises the domain's own errors."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siprec_node.siprec.errors import (
    BodyError,
    MetadataError,
    NotAcceptable,
    SdpError,
    UnsupportedBody,
)
from siprec_node.siprec.metadata_parser import parse_metadata
from siprec_node.siprec.multipart import BodyPart, build_multipart, extract_body
from siprec_node.siprec.sdp import parse_sdp
from siprec_node.siprec.sdp_answer import SdpAnswerer

SDP_LINES = st.sampled_from(
    [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 8 101",
        "m=audio 4002 RTP/SAVP 0",
        "m=audio 0 RTP/AVP 0",
        "m=video 5000 RTP/AVP 96",
        "m=audio 4004 RTP/AVP 96",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:x",
        "a=fmtp:101 0-15",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj",
        "a=crypto:zz",
        "a=label:1",
        "a=label:",
        "a=sendonly",
        "a=inactive",
        "a=recvonly",
        "garbage",
        "",
    ]
)


@given(st.binary(max_size=400))
def test_extract_body_on_random_bytes(body: bytes) -> None:
    with contextlib.suppress(BodyError, UnsupportedBody):
        extract_body("multipart/mixed;boundary=b", body)


@given(
    st.lists(st.text(max_size=30), max_size=12).map(lambda lines: "\r\n".join(lines).encode()),
    st.sampled_from(["--b", "--b ", "--b--", "Content-Type: application/sdp", "v=0", ""]),
)
def test_extract_body_on_multipart_like_bytes(noise: bytes, line: str) -> None:
    body = b"--b\r\n" + noise + b"\r\n" + line.encode() + b"\r\n--b--\r\n"
    with contextlib.suppress(UnsupportedBody):
        extract_body("multipart/mixed;boundary=b", body)


@given(st.binary(min_size=1, max_size=300), st.binary(min_size=1, max_size=300))
def test_build_then_extract_round_trips(sdp: bytes, metadata: bytes) -> None:
    sdp, metadata = b"v=0" + sdp, b"<" + metadata
    content_type, body = build_multipart(
        [
            BodyPart("application/rs-metadata+xml", metadata, "recording-session"),
            BodyPart("application/sdp", sdp),
        ]
    )
    result = extract_body(content_type, body)
    assert (result.sdp, result.metadata) == (sdp, metadata)
    assert result.dispositions == ["recording-session"]


@given(st.text(max_size=300))
def test_parse_sdp_on_random_text(text: str) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(text)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SDP_LINES, max_size=25), st.sampled_from(["\r\n", "\n"]))
def test_answer_on_random_sdp(lines: list[str], ending: str) -> None:
    srs = SdpAnswerer("192.0.2.10", lambda index, label: 20000 + 2 * index)
    try:
        result = srs.answer(ending.join(lines))
    except (SdpError, NotAcceptable):
        return
    offered = parse_sdp(ending.join(lines))
    answered = parse_sdp(result.body)
    assert len(answered.media) == len(offered.media)
    for ours, theirs in zip(answered.media, offered.media, strict=True):
        assert ours.media == theirs.media
        assert ours.label == theirs.label
        assert ours.port == 0 or ours.direction in ("recvonly", "inactive")
    assert any(s.accepted for s in result.streams)


@given(st.binary(max_size=300))
def test_parse_metadata_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MetadataError):
        parse_metadata(data)


XML_PIECES = st.sampled_from(
    [
        "<participant id='p'>",
        "</participant>",
        "<stream stream_id='s'>",
        "<stream>",
        "</stream>",
        "<label>1</label>",
        "<send>s</send>",
        "<send><id>s</id></send>",
        "<nameID aor='x'>",
        "</nameID>",
        "<name>n</name>",
        "<aor>a@b</aor>",
        "<datamode>partial</datamode>",
        "<x:e xmlns:x='urn:x'>1</x:e>",
        "<extensiondata><y:z xmlns:y='urn:y'/></extensiondata>",
        "<participantstreamassoc participant_id='p'>",
        "</participantstreamassoc>",
    ]
)


@given(st.lists(XML_PIECES, max_size=20))
def test_parse_metadata_on_random_element_soup(pieces: list[str]) -> None:
    document = "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>" + "".join(pieces)
    with contextlib.suppress(MetadataError):
        parse_metadata(document + "</recording>")
