"""Body extraction against the shapes real recording clients send (INTEROP.md)."""

from __future__ import annotations

import pytest

from siprec_node.siprec.errors import ACCEPTED_BODY_TYPES, BodyError, UnsupportedBody
from siprec_node.siprec.multipart import (
    BodyPart,
    build_multipart,
    extract_body,
    metadata_request_part,
    parse_content_type,
)

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=label:1"
)
XML = b'<?xml version="1.0"?>\r\n<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>'


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def test_metaswitch_boundary_with_trailing_space_unquoted() -> None:
    body = crlf(
        "--MSW_BOUNDARY_71 ",
        "Content-Type: application/sdp",
        "",
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "m=audio 4000 RTP/AVP 0 8",
        "--MSW_BOUNDARY_71 ",
        "Content-Type: application/rs-metadata",
        "Content-Disposition: recording-session",
        "",
        '<recording xmlns="urn:ietf:params:xml:ns:recording"/>',
        "--MSW_BOUNDARY_71-- ",
    )
    result = extract_body("multipart/mixed;boundary=MSW_BOUNDARY_71 ", body)
    assert result.sdp == b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0 8"
    assert result.metadata == b'<recording xmlns="urn:ietf:params:xml:ns:recording"/>'
    assert result.metadata_content_type == "application/rs-metadata"
    assert result.dispositions == ["recording-session"]
    assert result.other_types == []


def test_metaswitch_boundary_with_trailing_space_quoted() -> None:
    body = crlf(
        "--uniqueBoundary ",
        "Content-Type: application/sdp",
        "",
        "v=0",
        "--uniqueBoundary ",
        "Content-Type: application/rs-metadata",
        "",
        "<recording/>",
        "--uniqueBoundary--",
    )
    result = extract_body('multipart/mixed; boundary="uniqueBoundary "', body)
    assert result.sdp == b"v=0"
    assert result.metadata == b"<recording/>"


def test_webex_metadata_part_first_without_disposition() -> None:
    body = crlf(
        "--wx-boundary",
        "Content-Type: application/rs-metadata+xml",
        "",
        "<recording_metadata/>",
        "--wx-boundary",
        "Content-Type: application/sdp",
        "",
        "v=0",
        "m=audio 5004 RTP/AVP 111 0",
        "",
        "--wx-boundary--",
    )
    result = extract_body("multipart/mixed;boundary=wx-boundary", body)
    assert result.metadata == b"<recording_metadata/>"
    assert result.metadata_content_type == "application/rs-metadata+xml"
    # the blank line before the delimiter is content: only the delimiter's CRLF is removed
    assert result.sdp == b"v=0\r\nm=audio 5004 RTP/AVP 111 0\r\n"
    assert result.dispositions == []


def test_acme_quoted_boundary_mime_version_charset_and_preamble() -> None:
    body = crlf(
        "This is a multi-part message in MIME format.",
        "",
        "--unique-boundary-1",
        "Content-Type: application/sdp;charset=UTF-8",
        "MIME-Version: 1.0",
        "",
        "v=0",
        "--unique-boundary-1",
        'Content-type: application/rs-metadata+xml; charset="utf-8"',
        "Content-Disposition: recording-session;handling=required",
        "",
        "<recording/>",
        "--unique-boundary-1--",
        "epilogue to be ignored",
    )
    result = extract_body('Multipart/Mixed; Boundary="unique-boundary-1"', body)
    assert result.sdp == b"v=0"
    assert result.metadata == b"<recording/>"
    assert result.dispositions == ["recording-session"]


def test_audiocodes_bare_lf_line_endings() -> None:
    body = (
        b"--ac-b\nContent-Type: application/sdp\n\nv=0\nm=audio 6000 RTP/AVP 8\na=label:1\n"
        b"m=audio 6002 RTP/AVP 8\na=label:2\n"
        b"--ac-b\nContent-Type: application/rs-metadata+xml\n"
        b"Content-Disposition: recording-session\n"
        b"\n<recording/>\n--ac-b--\n"
    )
    result = extract_body("multipart/mixed;boundary=ac-b", body)
    assert (
        result.sdp == b"v=0\nm=audio 6000 RTP/AVP 8\na=label:1\nm=audio 6002 RTP/AVP 8\na=label:2"
    )
    assert result.metadata == b"<recording/>"


def test_extra_parts_are_ignored_and_listed() -> None:
    body = crlf(
        "--b",
        "Content-Type: application/pidf+xml",
        "",
        "<presence/>",
        "--b",
        "Content-Type: application/sdp",
        "",
        "v=0",
        "--b",
        "Content-Type: application/rs-metadata+xml",
        "",
        "<first/>",
        "--b",
        "Content-Type: application/rs-metadata+xml",
        "",
        "<second/>",
        "--b--",
    )
    result = extract_body("multipart/mixed;boundary=b", body)
    assert result.sdp == b"v=0"
    assert result.metadata == b"<first/>"
    assert result.other_types == ["application/pidf+xml", "application/rs-metadata+xml"]


def test_part_without_headers_that_is_sdp_is_recognised() -> None:
    body = crlf("--b", "", "v=0", "--b", "Content-Type: text/plain", "", "hello", "--b--")
    result = extract_body("multipart/mixed;boundary=b", body)
    assert result.sdp == b"v=0"
    assert result.other_types == ["text/plain"]


def test_base64_part_is_decoded() -> None:
    body = crlf(
        "--b",
        "Content-Type: application/rs-metadata+xml",
        "Content-Transfer-Encoding: base64",
        "",
        "PHJlY29yZGluZy8+",
        "--b--",
    )
    assert extract_body("multipart/mixed;boundary=b", body).metadata == b"<recording/>"


def test_metadata_only_multipart_is_accepted() -> None:
    body = crlf("--b", "Content-Type: application/rs-metadata+xml", "", "<recording/>", "--b--")
    result = extract_body("multipart/mixed;boundary=b", body)
    assert result.sdp is None
    assert result.metadata == b"<recording/>"


def test_plain_sdp_body_cisco_cube() -> None:
    result = extract_body("application/sdp", SDP)
    assert result.sdp == SDP
    assert result.metadata is None
    assert result.metadata_content_type is None


def test_plain_metadata_body() -> None:
    result = extract_body("application/rs-metadata+xml; charset=UTF-8", XML)
    assert result.metadata == XML
    assert result.metadata_content_type == "application/rs-metadata+xml"


@pytest.mark.parametrize("content_type", [None, "", "application/sdp"])
@pytest.mark.parametrize("body", [None, b"", b"\r\n"])
def test_no_body_is_a_delayed_offer(content_type: str | None, body: bytes | None) -> None:
    result = extract_body(content_type, body)
    assert result.is_empty
    assert (result.sdp, result.metadata, result.other_types) == (None, None, [])


def test_body_without_content_type_that_looks_like_sdp() -> None:
    assert extract_body(None, SDP).sdp == SDP


def test_unsupported_top_level_type_is_415_with_accept() -> None:
    with pytest.raises(UnsupportedBody) as info:
        extract_body("text/plain", b"hello")
    assert info.value.status == 415
    assert info.value.accept == ACCEPTED_BODY_TYPES
    assert "application/rs-metadata+xml" in info.value.accept


def test_multipart_without_sdp_or_metadata_is_415() -> None:
    body = crlf("--b", "Content-Type: text/plain", "", "hello", "--b--")
    with pytest.raises(UnsupportedBody) as info:
        extract_body("multipart/mixed;boundary=b", body)
    assert info.value.status == 415


def test_multipart_without_closing_delimiter_is_400() -> None:
    body = crlf("--b", "Content-Type: application/sdp", "", "v=0")
    with pytest.raises(BodyError) as info:
        extract_body("multipart/mixed;boundary=b", body)
    assert info.value.status == 400


@pytest.mark.parametrize("content_type", ["multipart/mixed", "multipart/mixed; boundary="])
def test_multipart_without_boundary_is_400(content_type: str) -> None:
    with pytest.raises(BodyError):
        extract_body(content_type, crlf("--b", "", "v=0", "--b--"))


def test_multipart_whose_boundary_never_appears_is_400() -> None:
    with pytest.raises(BodyError):
        extract_body("multipart/mixed;boundary=other", crlf("--b", "", "v=0", "--b--"))


def test_parse_content_type_parameters() -> None:
    assert parse_content_type('multipart/mixed ; boundary = "a;b\\"c" ; charset=UTF-8') == (
        "multipart/mixed",
        {"boundary": 'a;b"c', "charset": "UTF-8"},
    )
    assert parse_content_type("APPLICATION/SDP") == ("application/sdp", {})


def test_build_multipart_round_trips_and_uses_crlf() -> None:
    sdp = b"v=0\r\ns=-\r\n"
    parts = [
        BodyPart("application/sdp", sdp),
        BodyPart("application/rs-metadata+xml", XML, disposition="recording-session"),
    ]
    content_type, body = build_multipart(parts, boundary="srs-boundary")
    assert content_type == "multipart/mixed;boundary=srs-boundary"
    assert body == (
        b"--srs-boundary\r\nContent-Type: application/sdp\r\n\r\nv=0\r\ns=-\r\n\r\n"
        b"--srs-boundary\r\nContent-Type: application/rs-metadata+xml\r\n"
        b"Content-Disposition: recording-session\r\n\r\n" + XML + b"\r\n--srs-boundary--\r\n"
    )
    result = extract_body(content_type, body)
    assert (result.sdp, result.metadata) == (sdp, XML)


def test_build_multipart_generates_a_boundary_absent_from_the_parts() -> None:
    request = metadata_request_part()
    content_type, body = build_multipart([BodyPart("application/sdp", b"v=0\r\n"), request])
    media_type, params = parse_content_type(content_type)
    assert media_type == "multipart/mixed"
    assert params["boundary"].encode() not in b"v=0\r\n" + request.content
    assert b"Content-Type: application/rs-metadata-request\r\n" in body
    assert b"Content-Disposition: recording-session\r\n" in body
    assert extract_body(content_type, body).other_types == ["application/rs-metadata-request"]


def test_build_multipart_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        build_multipart([])
    with pytest.raises(ValueError):
        build_multipart([BodyPart("application/sdp", b"v=0")], boundary="trailing ")


def test_empty_sdp_part_counts_as_no_sdp() -> None:
    body = crlf(
        "--b",
        "Content-Type: application/sdp",
        "",
        "",
        "--b",
        "Content-Type: application/rs-metadata+xml",
        "",
        "<recording/>",
        "--b--",
    )
    result = extract_body("multipart/mixed;boundary=b", body)
    assert (result.sdp, result.metadata) == (None, b"<recording/>")
    assert result.other_types == ["application/sdp"]
