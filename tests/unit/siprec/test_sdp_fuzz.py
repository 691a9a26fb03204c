"""Fuzz harness of the SDP parser and the answerer, seeded from ``tests/data/sdp``.

Whatever the bytes: ``parse_sdp`` raises nothing but ``SdpError``; what parses serialises and
parses back to as many m-lines; its per-stream views (payload types, rtpmaps, fmtps, cryptos,
direction, hold, label) raise nothing; the answerer raises nothing but ``SdpError`` and
``NotAcceptable``, mirrors every m-line in order, echoes labels, gives each accepted stream its
own port and refuses the others with port 0; a second answer to the same offer keeps the ports.
"""

from __future__ import annotations

import itertools

from hypothesis import given

from siprec_node.siprec.errors import NotAcceptable, SdpError
from siprec_node.siprec.sdp import parse_sdp
from siprec_node.siprec.sdp_answer import SdpAnswerer
from tests.fuzzing import corpus, fuzz_settings, mutated, with_examples

SEEDS = corpus("sdp", ".sdp")


def _check(data: bytes) -> None:
    try:
        offer = parse_sdp(data)
    except SdpError:
        return
    assert len(parse_sdp(offer.to_bytes()).media) == len(offer.media)
    for media in offer.media:
        views = (media.payload_types, media.rtpmaps, media.fmtps, media.cryptos, media.label)
        assert len(views) == 5
        assert offer.direction_for(media) in ("sendrecv", "sendonly", "recvonly", "inactive")
        offer.is_on_hold(media)
        offer.connection_for(media)
    ports = itertools.count(40000, 2)
    answerer = SdpAnswerer("127.0.0.1", lambda index, label: next(ports))
    try:
        answer = answerer.answer(offer)
    except NotAcceptable:
        return
    lines = parse_sdp(answer.body).media
    assert len(lines) == len(offer.media) == len(answer.streams)
    accepted = [s.port for s in answer.streams if s.accepted]
    assert len(set(accepted)) == len(accepted) and all(p > 0 for p in accepted)
    for stream, line, offered in zip(answer.streams, lines, offer.media, strict=True):
        assert line.port == stream.port
        assert stream.label == offered.label
        if not stream.accepted:
            assert line.port == 0
    again = answerer.answer(offer)
    assert [s.port for s in again.streams] == [s.port for s in answer.streams]


@fuzz_settings(400)
@given(mutated(SEEDS))
@with_examples(SEEDS)
def test_sdp_fuzz(data: bytes) -> None:
    _check(data)
