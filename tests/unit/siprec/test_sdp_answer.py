"""The SRS answer for the offers real recording clients send (INTEROP.md)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from siprec_node.siprec.codecs import PayloadFormat
from siprec_node.siprec.errors import NotAcceptable
from siprec_node.siprec.sdp import parse_sdp
from siprec_node.siprec.sdp_answer import NegotiatedStream, SdpAnswerer

SDP_DIR = Path(__file__).resolve().parents[2] / "data" / "sdp"
ADDRESS = "192.0.2.10"


def offer(name: str) -> bytes:
    return (SDP_DIR / name).read_bytes()


def counter(start: int = 20000) -> Iterator[int]:
    port = start
    while True:
        yield port
        port += 2


def answerer(codecs: tuple[str, ...] | list[str] = ("PCMU", "PCMA", "G722", "opus")) -> SdpAnswerer:
    ports = counter()
    return SdpAnswerer(ADDRESS, lambda index, label: next(ports), codecs=codecs, session_id=1000)


def lines(body: bytes) -> list[str]:
    assert body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    return body.decode().split("\r\n")[:-1]


HEAD = [
    "v=0",
    "o=siprec-node 1000 1 IN IP4 192.0.2.10",
    "s=siprec-node",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
]


def test_metaswitch_single_mixed_stream_without_direction() -> None:
    # RFC 3264 §6.1: the offer's order (8 0 101), every codec we decode, not our preference
    result = answerer().answer(offer("metaswitch_mixed.sdp"))
    assert lines(result.body) == [
        *HEAD,
        "m=audio 20000 RTP/AVP 8 0 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=label:1",
        "a=recvonly",
    ]
    (stream,) = result.streams
    assert stream == NegotiatedStream(
        index=0,
        label="1",
        media="audio",
        accepted=True,
        port=20000,
        proto="RTP/AVP",
        codec="PCMA",
        payload_type=8,
        clock_rate=8000,
        channels=1,
        fmtp=None,
        telephone_event_pt=101,
        direction="recvonly",
        paused=False,
        srtp=None,
        remote_address="198.51.100.20",
        remote_port=31420,
        formats=(PayloadFormat(8, "PCMA", 8000), PayloadFormat(0, "PCMU", 8000)),
        telephone_event_pts=(101,),
    )
    assert not result.changed


def test_webex_opus_first_gets_opus_first() -> None:
    result = answerer().answer(offer("webex_opus_first.sdp"))
    (stream,) = result.streams
    assert (stream.codec, stream.payload_type, stream.direction) == ("opus", 111, "recvonly")
    assert "m=audio 20000 RTP/AVP 111 0 8 101" in lines(result.body)
    assert [f.name for f in stream.formats] == ["OPUS", "PCMU", "PCMA"]


def test_webex_allow_list_filters_without_reordering() -> None:
    result = answerer(codecs=["PCMU", "opus"]).answer(offer("webex_opus_first.sdp"))
    assert lines(result.body)[5:] == [
        "m=audio 20000 RTP/AVP 111 0 101",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 useinbandfec=1;maxaveragebitrate=32000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=label:1",
        "a=recvonly",
    ]
    (stream,) = result.streams
    assert (stream.codec, stream.clock_rate, stream.channels) == ("opus", 48000, 2)
    assert stream.fmtp == "useinbandfec=1;maxaveragebitrate=32000"


def test_avaya_label_10_keeps_telephone_event_pt() -> None:
    result = answerer().answer(offer("avaya_label10.sdp"))
    assert lines(result.body)[5:] == [
        "m=audio 20000 RTP/AVP 0 127",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:127 telephone-event/8000",
        "a=label:10",
        "a=recvonly",
    ]
    assert result.streams[0].telephone_event_pt == 127


def test_acme_two_streams_with_large_labels() -> None:
    result = answerer().answer(offer("acme_two_streams.sdp"))
    body = lines(result.body)
    assert body[5:] == [
        "m=audio 20000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=label:16777227",
        "a=recvonly",
        "m=audio 20002 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=label:16777228",
        "a=recvonly",
    ]
    assert [(s.label, s.port, s.remote_port) for s in result.streams] == [
        ("16777227", 20000, 49170),
        ("16777228", 20002, 49172),
    ]


def test_cube_plain_sdp_without_label() -> None:
    result = answerer().answer(offer("cube_plain.sdp"))
    assert lines(result.body)[5:] == [
        "m=audio 20000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=recvonly",
    ]
    (stream,) = result.streams
    assert stream.label is None
    assert (stream.remote_address, stream.remote_port) == ("10.20.30.41", 16384)


def test_audiocodes_bare_lf_two_labelled_streams() -> None:
    result = answerer().answer(offer("audiocodes_two_labels_lf.sdp"))
    assert [(s.label, s.codec, s.payload_type, s.telephone_event_pt) for s in result.streams] == [
        ("1", "G722", 9, 107),
        ("2", "G722", 9, 107),
    ]
    g722 = answerer(codecs=["G.722", "PCMA"]).answer(offer("audiocodes_two_labels_lf.sdp"))
    assert [(s.codec, s.payload_type, s.clock_rate) for s in g722.streams] == [
        ("G722", 9, 8000),
        ("G722", 9, 8000),
    ]
    assert "a=rtpmap:9 G722/8000" in lines(g722.body)
    pcma = answerer(codecs=["PCMA"]).answer(offer("audiocodes_two_labels_lf.sdp"))
    assert [(s.codec, s.payload_type, s.telephone_event_pt) for s in pcma.streams] == [
        ("PCMA", 8, 107),
        ("PCMA", 8, 107),
    ]


def test_video_beside_audio_is_refused_with_port_zero() -> None:
    result = answerer().answer(offer("video_beside_audio.sdp"))
    assert lines(result.body)[5:] == [
        "m=audio 20000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=label:1",
        "a=recvonly",
        "m=video 0 RTP/AVP 96 97",
        "a=label:2",
    ]
    video = result.streams[1]
    assert (video.accepted, video.port, video.media) == (False, 0, "video")
    assert video.reason == "video is not recorded"


def test_g729_only_stream_refused_while_the_other_is_recorded() -> None:
    result = answerer().answer(offer("g729_beside_pcmu.sdp"))
    assert lines(result.body)[5:] == [
        "m=audio 0 RTP/AVP 18",
        "a=label:1",
        "m=audio 20000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=label:2",
        "a=recvonly",
    ]
    assert [s.accepted for s in result.streams] == [False, True]
    assert result.accepted_streams[0].label == "2"
    assert result.streams[0].reason == "no acceptable codec offered"


def test_nothing_acceptable_is_488() -> None:
    with pytest.raises(NotAcceptable) as info:
        answerer().answer(offer("all_unacceptable.sdp"))
    assert info.value.status == 488
    with pytest.raises(NotAcceptable):
        answerer().answer(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n")


def test_static_payload_types_without_rtpmap_and_dynamic_by_name() -> None:
    static = b"v=0\nc=IN IP4 192.0.2.1\nm=audio 5000 RTP/AVP 9 0\n"
    (stream,) = answerer().answer(static).streams
    assert (stream.codec, stream.payload_type) == ("G722", 9)
    assert [f.payload_type for f in stream.formats] == [9, 0]
    dynamic = (
        b"v=0\nc=IN IP4 192.0.2.1\nm=audio 5000 RTP/AVP 96 97\n"
        b"a=rtpmap:96 G729/8000\na=rtpmap:97 pcma/8000\n"
    )
    result = answerer().answer(dynamic)
    assert (result.streams[0].codec, result.streams[0].payload_type) == ("PCMA", 97)
    assert "a=rtpmap:97 pcma/8000" in lines(result.body)
    wrong_rate = b"v=0\nc=IN IP4 192.0.2.1\nm=audio 5000 RTP/AVP 96\na=rtpmap:96 PCMU/16000\n"
    with pytest.raises(NotAcceptable):
        answerer().answer(wrong_rate)


HOLD_BASE = (
    "v=0\r\no=- 5 5 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\na=label:1\r\n{a}"
)


@pytest.mark.parametrize(
    ("connection", "attribute", "direction"),
    [
        ("192.0.2.1", "a=inactive\r\n", "inactive"),
        ("0.0.0.0", "a=sendonly\r\n", "inactive"),
        ("0.0.0.0", "a=inactive\r\n", "inactive"),
        ("0.0.0.0", "", "inactive"),
        ("192.0.2.1", "a=recvonly\r\n", "inactive"),
        ("192.0.2.1", "a=sendonly\r\n", "recvonly"),
        ("192.0.2.1", "a=sendrecv\r\n", "recvonly"),
        ("192.0.2.1", "", "recvonly"),
    ],
)
def test_hold_variants(connection: str, attribute: str, direction: str) -> None:
    result = answerer().answer(HOLD_BASE.format(c=connection, a=attribute))
    (stream,) = result.streams
    assert stream.accepted
    assert stream.port == 20000  # a held stream keeps its port
    assert stream.direction == direction
    assert stream.paused is (direction == "inactive")
    assert lines(result.body)[-1] == f"a={direction}"


def test_reoffer_keeps_ports_and_only_bumps_version_on_change() -> None:
    srs = answerer()
    first = srs.answer(offer("acme_two_streams.sdp"))
    again = srs.answer(offer("acme_two_streams.sdp"))
    assert again.body == first.body and not again.changed
    # the SRC moves its media port: our answer does not change
    moved = srs.answer(offer("acme_two_streams.sdp").replace(b"49170", b"50000"))
    assert moved.body == first.body
    assert moved.streams[0].remote_port == 50000
    # hold on the first stream: answer changes, version 2, same ports
    held = srs.answer(
        offer("acme_two_streams.sdp").replace(
            b"a=sendonly\na=label:16777227", b"a=inactive\na=label:16777227"
        )
    )
    assert held.changed
    assert "o=siprec-node 1000 2 IN IP4 192.0.2.10" in lines(held.body)
    assert [(s.port, s.direction) for s in held.streams] == [
        (20000, "inactive"),
        (20002, "recvonly"),
    ]
    # resume: version 3
    resumed = srs.answer(offer("acme_two_streams.sdp"))
    assert resumed.changed and "o=siprec-node 1000 3 IN IP4 192.0.2.10" in lines(resumed.body)
    assert resumed.body.replace(b" 3 IN", b" 1 IN") == first.body


def test_reoffer_matches_streams_by_label_then_index() -> None:
    srs = answerer()
    srs.answer(offer("acme_two_streams.sdp"))
    swapped_text = offer("acme_two_streams.sdp").decode()
    head, first, second = swapped_text.split("m=audio")
    swapped = srs.answer(head + "m=audio" + second + "m=audio" + first)
    assert [(s.label, s.port) for s in swapped.streams] == [
        ("16777228", 20002),
        ("16777227", 20000),
    ]
    plain = answerer()
    plain.answer(offer("cube_plain.sdp"))
    assert (
        plain.answer(offer("cube_plain.sdp").replace(b"16384", b"16390")).streams[0].port == 20000
    )
    # a stream with a new label gets a new port; the others keep theirs
    third = offer("acme_two_streams.sdp") + b"m=audio 49174 RTP/AVP 0\na=label:16777229\n"
    grown = srs.answer(third)
    assert [s.port for s in grown.streams] == [20000, 20002, 20004]
    assert grown.changed
    assert srs.local_ports == {0: 20000, 1: 20002, 2: 20004}


def test_ports_from_a_mapping_by_label_or_index() -> None:
    by_label = SdpAnswerer(ADDRESS, {"16777227": 30000, "16777228": 30010})
    assert [s.port for s in by_label.answer(offer("acme_two_streams.sdp")).streams] == [
        30000,
        30010,
    ]
    by_index = SdpAnswerer(ADDRESS, {0: 31000})
    result = by_index.answer(offer("acme_two_streams.sdp"))
    assert [(s.port, s.accepted, s.reason) for s in result.streams] == [
        (31000, True, None),
        (0, False, "no port available"),
    ]
    with pytest.raises(NotAcceptable):
        SdpAnswerer(ADDRESS, lambda index, label: 0).answer(offer("cube_plain.sdp"))


def test_session_id_is_stable_and_random_by_default() -> None:
    a, b = SdpAnswerer(ADDRESS, {0: 1}), SdpAnswerer(ADDRESS, {0: 1})
    assert a.session_id != b.session_id
    first = parse_sdp(a.answer(offer("cube_plain.sdp")).body).origin
    second = parse_sdp(a.answer(offer("cube_plain.sdp")).body).origin
    assert first.session_id == second.session_id == str(a.session_id)


def test_ipv6_answer_address() -> None:
    srs = SdpAnswerer("2001:db8::10", {0: 4000}, session_id=7)
    assert lines(srs.answer(offer("cube_plain.sdp")).body)[1:4] == [
        "o=siprec-node 7 1 IN IP6 2001:db8::10",
        "s=siprec-node",
        "c=IN IP6 2001:db8::10",
    ]


def test_srtp_crypto_answered_with_our_own_key() -> None:
    srs = answerer()
    result = srs.answer(offer("srtp_offer.sdp"))
    body = lines(result.body)
    assert body[5] == "m=audio 20000 RTP/SAVP 0 101"
    (crypto_line,) = [line for line in body if line.startswith("a=crypto:")]
    tag, suite, key_param = crypto_line.removeprefix("a=crypto:").split(" ")
    # first offered suite we support (tag 1 is AES-256, not supported)
    assert (tag, suite) == ("2", "AES_CM_128_HMAC_SHA1_32")
    key = key_param.removeprefix("inline:")
    assert len(base64.b64decode(key, validate=True)) == 30
    assert key != "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"
    srtp = result.streams[0].srtp
    assert srtp is not None
    assert srtp.remote_key == "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"
    assert srtp.remote_key_params == "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^31|1:1"
    assert srtp.local_key == key
    # re-offer: same key, same body, no version change
    assert srs.answer(offer("srtp_offer.sdp")).body == result.body


def test_srtp_without_supported_suite_is_refused() -> None:
    unsupported = offer("srtp_offer.sdp").replace(b"AES_CM_128", b"F8_128")
    with pytest.raises(NotAcceptable, match="a=crypto"):
        answerer().answer(unsupported)
    dtls = offer("cube_plain.sdp").replace(b"RTP/AVP", b"UDP/TLS/RTP/SAVP")
    with pytest.raises(NotAcceptable, match="transport"):
        answerer().answer(dtls)


def test_stream_disabled_in_offer_is_mirrored_with_port_zero() -> None:
    data = offer("acme_two_streams.sdp").replace(b"49172", b"0")
    result = answerer().answer(data)
    assert [(s.port, s.accepted) for s in result.streams] == [(20000, True), (0, False)]
    assert "m=audio 0 RTP/AVP 0 101" in lines(result.body)


def test_delayed_offer_for_cisco_cucm() -> None:
    srs = answerer()
    ours = srs.offer_for_delayed_offer()
    assert lines(ours.body) == [
        *HEAD,
        "m=audio 20000 RTP/AVP 0 8 9 111 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=recvonly",
    ]
    ack_answer = (
        b"v=0\r\no=CiscoSystemsCCM-SIP 2000 1 IN IP4 10.1.1.1\r\ns=SIP Call\r\n"
        b"c=IN IP4 10.1.1.1\r\nt=0 0\r\nm=audio 24580 RTP/AVP 8 101\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendonly\r\n"
    )
    (stream,) = srs.accept_answer(ack_answer)
    assert stream.accepted
    assert (stream.codec, stream.payload_type, stream.telephone_event_pt) == ("PCMA", 8, 101)
    assert (stream.remote_address, stream.remote_port, stream.port) == ("10.1.1.1", 24580, 20000)
    assert (stream.direction, stream.paused) == ("recvonly", False)
    with pytest.raises(ValueError):
        srs.accept_answer(ack_answer)
    # a later re-INVITE with an offer keeps the port
    assert srs.answer(offer("cube_plain.sdp")).streams[0].port == 20000


def test_delayed_offer_with_labels_and_srtp() -> None:
    srs = answerer()
    ours = srs.offer_for_delayed_offer(labels=["1", "2"], srtp=True)
    sdp = parse_sdp(ours.body)
    assert [(m.label, m.proto, m.direction) for m in sdp.media] == [
        ("1", "RTP/SAVP", "recvonly"),
        ("2", "RTP/SAVP", "recvonly"),
    ]
    local_key = sdp.media[0].cryptos[0].inline_key
    answer = (
        b"v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 1000 RTP/SAVP 0\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj\r\n"
        b"a=inactive\r\nm=audio 0 RTP/SAVP 0\r\n"
    )
    first, second = srs.accept_answer(answer)
    assert first.accepted and first.paused and first.direction == "inactive"
    assert first.srtp is not None and first.srtp.local_key == local_key
    assert first.srtp.remote_key == "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"
    assert (second.accepted, second.port) == (False, 0)


def test_state_round_trips_through_json() -> None:
    srs = answerer()
    first = srs.answer(offer("srtp_offer.sdp"))
    data = json.loads(json.dumps(srs.to_dict()))
    restored = SdpAnswerer.from_dict(data, lambda index, label: 40000)
    again = restored.answer(offer("srtp_offer.sdp"))
    assert again.body == first.body and not again.changed
    assert restored.session_id == srs.session_id
    stream = first.streams[0]
    assert NegotiatedStream.from_dict(json.loads(json.dumps(stream.to_dict()))) == stream


# -- RFC 3264 §6.1: every decodable offered codec, the offer's order ---------------------------


def sdp(m_line: str, *attributes: str) -> bytes:
    body = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", m_line]
    return ("\r\n".join([*body, *(f"a={a}" for a in attributes)]) + "\r\n").encode()


def all_codecs() -> SdpAnswerer:
    ports = counter()
    return SdpAnswerer(ADDRESS, lambda index, label: next(ports), session_id=1000)


def test_every_decodable_codec_in_the_offers_order_dynamic_pts_included() -> None:
    offer_sdp = sdp(
        "m=audio 5000 RTP/AVP 18 96 4 3 2 112 113 97 102 8 0 9 101",
        "rtpmap:18 G729/8000",
        "fmtp:18 annexb=yes",
        "rtpmap:96 AMR/8000",
        "fmtp:96 octet-align=1; mode-change-capability=2",
        "rtpmap:112 G726-24/8000",
        "rtpmap:113 AAL2-G726-32/8000",
        "rtpmap:97 AMR-WB/16000",
        "rtpmap:102 iLBC/8000",
        "fmtp:102 mode=20",
        "rtpmap:101 telephone-event/8000",
        "sendonly",
    )
    result = all_codecs().answer(offer_sdp)
    (stream,) = result.streams
    assert lines(result.body)[5] == "m=audio 20000 RTP/AVP 18 96 4 3 2 112 113 97 102 8 0 9 101"
    assert [(f.payload_type, f.name, f.clock_rate, f.fmtp) for f in stream.formats] == [
        (18, "G729", 8000, "annexb=yes"),
        (96, "AMR", 8000, "octet-align=1; mode-change-capability=2"),
        (4, "G723", 8000, None),
        (3, "GSM", 8000, None),
        (2, "G726-32", 8000, None),
        (112, "G726-24", 8000, None),
        (113, "AAL2-G726-32", 8000, None),
        (97, "AMR-WB", 16000, None),
        (102, "ILBC", 8000, "mode=20"),
        (8, "PCMA", 8000, None),
        (0, "PCMU", 8000, None),
        (9, "G722", 8000, None),
    ]
    # the first accepted format describes the stream, as before
    assert (stream.codec, stream.payload_type, stream.fmtp) == ("G729", 18, "annexb=yes")
    assert (stream.telephone_event_pt, stream.telephone_event_pts) == (101, (101,))
    body = lines(result.body)
    # format parameters echoed (RFC 4867 §8.3.1 requires AMR's), rtpmaps as offered
    assert "a=fmtp:96 octet-align=1; mode-change-capability=2" in body
    assert "a=rtpmap:113 AAL2-G726-32/8000" in body
    assert "a=rtpmap:2 G726-32/8000" in body  # static PT 2 without an rtpmap, named


def test_allow_list_filters_the_offer_never_reorders_it() -> None:
    offer_sdp = sdp("m=audio 5000 RTP/AVP 18 8 0 101", "rtpmap:101 telephone-event/8000")
    result = answerer(codecs=["PCMU", "pcma"]).answer(offer_sdp)
    assert lines(result.body)[5] == "m=audio 20000 RTP/AVP 8 0 101"
    assert [f.name for f in result.streams[0].formats] == ["PCMA", "PCMU"]
    with pytest.raises(NotAcceptable):
        answerer(codecs=["G722"]).answer(offer_sdp)


def test_telephone_event_and_cn_only_at_an_accepted_codecs_rate() -> None:
    offer_sdp = sdp(
        "m=audio 5000 RTP/AVP 111 0 110 105 101 13 98",
        "rtpmap:111 opus/48000/2",
        "rtpmap:110 telephone-event/48000",
        "rtpmap:105 telephone-event/16000",
        "rtpmap:101 telephone-event/8000",
        "fmtp:101 0-15",
        "rtpmap:98 CN/16000",
    )
    result = all_codecs().answer(offer_sdp)
    (stream,) = result.streams
    assert lines(result.body)[5] == "m=audio 20000 RTP/AVP 111 0 110 101 13"
    assert stream.telephone_event_pt == 110  # the rate of the first format, opus
    assert stream.telephone_event_pts == (110, 101)
    assert stream.comfort_noise_pts == (13,)
    assert "a=rtpmap:13 CN/8000" in lines(result.body)
    # PCMU alone: only the 8 kHz events
    narrow = answerer(codecs=["PCMU"]).answer(offer_sdp)
    assert lines(narrow.body)[5] == "m=audio 20000 RTP/AVP 0 101 13"
    assert (narrow.streams[0].telephone_event_pt, narrow.streams[0].telephone_event_pts) == (
        101,
        (101,),
    )
    # AMR-WB at 16 kHz takes the 16 kHz event and CN
    wide = all_codecs().answer(
        sdp(
            "m=audio 5000 RTP/AVP 97 105 101 98",
            "rtpmap:97 AMR-WB/16000",
            "rtpmap:105 telephone-event/16000",
            "rtpmap:101 telephone-event/8000",
            "rtpmap:98 CN/16000",
        )
    )
    assert lines(wide.body)[5] == "m=audio 20000 RTP/AVP 97 105 98"
    assert (wide.streams[0].telephone_event_pt, wide.streams[0].comfort_noise_pts) == (105, (98,))


def test_codec_without_a_local_decoder_is_refused() -> None:
    offer_sdp = sdp("m=audio 5000 RTP/AVP 18 0", "rtpmap:18 G729/8000")
    everything_but_g729 = set(SdpAnswerer(ADDRESS, {0: 1}).available) - {"G729"}
    srs = SdpAnswerer(ADDRESS, {0: 20000}, available=everything_but_g729)
    result = srs.answer(offer_sdp)
    assert lines(result.body)[5] == "m=audio 20000 RTP/AVP 0"
    with pytest.raises(NotAcceptable):
        SdpAnswerer(ADDRESS, {0: 20000}, available=everything_but_g729).answer(
            sdp("m=audio 5000 RTP/AVP 18")
        )
    # real ones: G.728 (static 15) and an rtpmap nobody decodes
    with pytest.raises(NotAcceptable, match="no acceptable codec offered"):
        all_codecs().answer(sdp("m=audio 5000 RTP/AVP 15 96", "rtpmap:96 X-SPEEX-NB/8000"))
    mixed = all_codecs().answer(sdp("m=audio 5000 RTP/AVP 15 96 8", "rtpmap:96 speex/8000"))
    assert lines(mixed.body)[5] == "m=audio 20000 RTP/AVP 8"


def test_available_decoders_are_what_the_installed_ffmpeg_has() -> None:
    import av

    from siprec_node.siprec.codecs import FFMPEG_DECODERS, locally_decodable

    have = set(av.codecs_available)
    for name, decoders in FFMPEG_DECODERS.items():
        expected = not decoders or any(d in have for d in decoders)
        assert (name in locally_decodable()) is expected, name
    assert all_codecs().available == locally_decodable()


def test_amr_interleaving_and_robust_sorting_refused_per_payload_type() -> None:
    offer_sdp = sdp(
        "m=audio 5000 RTP/AVP 96 97 98 99",
        "rtpmap:96 AMR/8000",
        "fmtp:96 octet-align=1; interleaving=30",
        "rtpmap:97 AMR/8000",
        "fmtp:97 octet-align=1; robust-sorting=1",
        "rtpmap:98 AMR/8000",
        "fmtp:98 octet-align=1; crc=1",
        "rtpmap:99 AMR/8000",
    )
    (stream,) = all_codecs().answer(offer_sdp).streams
    assert [(f.payload_type, f.fmtp) for f in stream.formats] == [
        (98, "octet-align=1; crc=1"),
        (99, None),
    ]


def test_delayed_offer_offers_every_allowed_codec_and_keeps_every_answered_one() -> None:
    srs = all_codecs()
    ours = parse_sdp(srs.offer_for_delayed_offer().body).media[0]
    names = [ours.rtpmaps[pt].name for pt in ours.payload_types]
    assert names[:4] == ["PCMU", "PCMA", "G722", "opus"]
    assert {"G729", "AMR", "AMR-WB", "iLBC", "GSM", "G723", "G726-32", "AAL2-G726-40"} <= set(
        names
    )
    assert ours.fmtps[96] == "octet-align=1" and 97 not in ours.fmtps  # AMR in both packings
    (stream,) = srs.accept_answer(
        sdp("m=audio 6000 RTP/AVP 18 97 0 101", "rtpmap:97 AMR/8000", "sendonly")
    )
    assert [(f.payload_type, f.name) for f in stream.formats] == [
        (18, "G729"),
        (97, "AMR"),
        (0, "PCMU"),
    ]
    assert (stream.codec, stream.telephone_event_pt) == ("G729", 101)
    allowed = answerer(codecs=["PCMA", "PCMU"])
    media = parse_sdp(allowed.offer_for_delayed_offer().body).media[0]
    assert media.payload_types == [8, 0, 101]


def test_snapshots_of_earlier_versions_restore() -> None:
    old = {
        "address": ADDRESS,
        "codecs": ["PCMU", "PCMA", "G722", "OPUS"],  # a preference list, now an allow-list
        "session_id": 1000,
        "version": 1,
        "signature": None,
        "slots": [{"index": 0, "label": "1", "port": 20000, "srtp_key": None}],
    }
    restored = SdpAnswerer.from_dict(old, lambda index, label: 40000)
    result = restored.answer(offer("metaswitch_mixed.sdp"))
    assert lines(result.body)[5] == "m=audio 20000 RTP/AVP 8 0 101"
    g729 = restored.answer(sdp("m=audio 5000 RTP/AVP 18 0", "label:1"))
    assert lines(g729.body)[5] == "m=audio 20000 RTP/AVP 0"  # G.729 was not on its list
    stream = result.streams[0].to_dict()
    for key in ("formats", "telephone_event_pts", "comfort_noise_pts"):
        del stream[key]
    again = NegotiatedStream.from_dict(stream)
    assert again.formats == (PayloadFormat(8, "PCMA", 8000),)
    assert (again.telephone_event_pts, again.comfort_noise_pts) == ((101,), ())
