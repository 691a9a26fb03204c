"""SDP parsing and serialisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from siprec_node.siprec.codecs import Codec
from siprec_node.siprec.errors import SdpError
from siprec_node.siprec.sdp import Connection, Crypto, parse_sdp

SDP_DIR = Path(__file__).resolve().parents[2] / "data" / "sdp"


def read(name: str) -> bytes:
    return (SDP_DIR / name).read_bytes()


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_endings(ending: bytes) -> None:
    data = read("acme_two_streams.sdp").replace(b"\n", ending)
    sdp = parse_sdp(data)
    assert sdp.origin.session_id == "2890"
    assert sdp.session_name == "SIP Media Capabilities"
    assert [m.label for m in sdp.media] == ["16777227", "16777228"]
    assert sdp.warnings == []


def test_media_level_fields() -> None:
    sdp = parse_sdp(read("webex_opus_first.sdp"))
    (media,) = sdp.media
    assert (media.media, media.port, media.proto) == ("audio", 17060, "RTP/AVP")
    assert media.formats == ["111", "0", "8", "101"]
    assert media.payload_types == [111, 0, 8, 101]
    assert media.rtpmaps == {
        111: Codec("opus", 48000, 2),
        0: Codec("PCMU", 8000),
        8: Codec("PCMA", 8000),
        101: Codec("telephone-event", 8000),
    }
    assert media.fmtps == {111: "useinbandfec=1;maxaveragebitrate=32000", 101: "0-15"}
    assert media.direction == "sendonly"
    assert media.label == "1"
    assert sdp.connection == Connection("203.0.113.44")
    assert sdp.connection_for(media) == Connection("203.0.113.44")


def test_media_level_connection_overrides_session_level() -> None:
    sdp = parse_sdp(read("cube_plain.sdp"))
    (media,) = sdp.media
    assert media.label is None
    assert sdp.connection_for(media).host == "10.20.30.41"


def test_direction_defaults_and_session_level_direction() -> None:
    sdp = parse_sdp(read("metaswitch_mixed.sdp"))
    assert sdp.media[0].direction is None
    assert sdp.direction_for(sdp.media[0]) == "sendrecv"
    held = parse_sdp(read("metaswitch_mixed.sdp") + b"")
    held.attributes.append(parse_sdp(b"v=0\na=inactive").attributes[0])
    assert held.direction_for(held.media[0]) == "inactive"


@pytest.mark.parametrize(
    ("extra", "session_c", "hold"),
    [
        (b"a=inactive\n", b"192.0.2.1", True),
        (b"a=sendonly\n", b"0.0.0.0", True),
        (b"a=inactive\n", b"0.0.0.0", True),
        (b"", b"0.0.0.0", True),
        (b"a=sendonly\n", b"192.0.2.1", False),
        (b"a=sendrecv\n", b"192.0.2.1", False),
        (b"", b"192.0.2.1", False),
        (b"a=recvonly\n", b"192.0.2.1", False),
    ],
)
def test_hold_detection(extra: bytes, session_c: bytes, hold: bool) -> None:
    data = b"v=0\no=- 1 1 IN IP4 x\ns=-\nc=IN IP4 " + session_c + b"\nt=0 0\nm=audio 5 RTP/AVP 0\n"
    sdp = parse_sdp(data + extra)
    assert sdp.is_on_hold(sdp.media[0]) is hold


def test_ipv6_hold_address() -> None:
    assert Connection("::", addr_type="IP6").is_hold
    assert not Connection("2001:db8::1", addr_type="IP6").is_hold
    assert not Connection("host.example.com").is_hold


def test_sloppy_sdp_is_accepted() -> None:
    sdp = parse_sdp(read("sloppy.sdp"))
    assert sdp.origin.username == "sloppy"
    assert sdp.origin.address == "192.0.2.94"
    assert sdp.session_name == "-"
    (media,) = sdp.media
    assert (media.port, media.formats) == (11000, ["0", "8"])
    assert media.rtpmaps == {0: Codec("PCMU", 8000)}
    assert media.label == "7"
    assert media.direction == "sendonly"
    assert any("missing s=" in w for w in sdp.warnings)
    assert any("garbage" in w for w in sdp.warnings)


def test_crypto_attributes() -> None:
    (media,) = parse_sdp(read("srtp_offer.sdp")).media
    tags = [(c.tag, c.suite) for c in media.cryptos]
    assert tags == [
        (1, "AES_256_CM_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
        (3, "AES_CM_128_HMAC_SHA1_80"),
    ]
    assert media.cryptos[1].inline_key == "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"
    assert Crypto.parse("x AES inline:k") is None
    assert (
        str(Crypto(1, "S", "inline:k", ("UNENCRYPTED_SRTCP",))) == "1 S inline:k UNENCRYPTED_SRTCP"
    )


def test_port_count_and_serialisation_order() -> None:
    data = (
        b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=x\r\ni=info\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\n"
        b"t=0 0\r\na=tool:test\r\nm=audio 5000/2 RTP/AVP 0\r\ni=media info\r\n"
        b"c=IN IP4 192.0.2.2\r\nb=AS:32\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
    )
    sdp = parse_sdp(data)
    assert sdp.media[0].port_count == 2
    assert sdp.to_bytes() == data


def test_serialisation_normalises_line_endings_and_field_spacing() -> None:
    sdp = parse_sdp(read("sloppy.sdp"))
    assert sdp.to_bytes() == (
        b"v=0\r\no=sloppy 1 1 IN IP4 192.0.2.94\r\ns=-\r\nc=IN IP4 192.0.2.94\r\nt=0 0\r\n"
        b"m=audio 11000 RTP/AVP 0 8\r\na=rtpmap:0  PCMU/8000\r\na=label:7\r\na=sendonly\r\n"
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"v=0\nm=audio\n", b"m=audio x RTP/AVP 0", b"m=audio 70000 RTP/AVP 0"],
)
def test_unusable_sdp_raises(data: bytes) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(data)
    assert info.value.status == 400
