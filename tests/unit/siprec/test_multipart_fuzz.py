"""Fuzz harness of the multipart body splitter, seeded from the SIPREC bodies of the SIP corpus
(``tests/data/sip``) and bodies built from ``tests/data/sdp`` and ``tests/data/metadata``.

Whatever the bytes and the Content-Type: ``extract_body`` raises nothing but ``BodyError`` and
``UnsupportedBody``; what it finds is a sub-range of what was sent (or its transfer decoding).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from siprec_node.sip.message import parse_message
from siprec_node.siprec.errors import BodyError, UnsupportedBody
from siprec_node.siprec.multipart import BodyPart, build_multipart, extract_body, parse_content_type
from tests.fuzzing import corpus, fuzz_settings, mutated, with_examples


def _seeds() -> list[tuple[str, bytes]]:
    seeds: list[tuple[str, bytes]] = []
    for data in corpus("sip", ".sip", include_bad=False):
        message = parse_message(data)
        if message.body and message.content_type:
            seeds.append((message.content_type, message.body))
    for sdp, metadata in zip(corpus("sdp", ".sdp"), corpus("metadata", ".xml"), strict=False):
        parts = [
            BodyPart("application/sdp", sdp),
            BodyPart("application/rs-metadata+xml", metadata, "recording-session"),
        ]
        seeds.append(build_multipart(parts, boundary="unique-boundary-1"))
    return seeds


SEEDS = _seeds()
CONTENT_TYPES = [
    *sorted({content_type for content_type, _ in SEEDS}),
    "multipart/mixed",
    'multipart/mixed; boundary="unique-boundary-1 "',
    "multipart/mixed;boundary=",
    "multipart/alternative;boundary=unique-boundary-1",
    "application/sdp",
    "application/rs-metadata",
    "text/plain",
    "",
]


@fuzz_settings(400)
@given(st.sampled_from(CONTENT_TYPES), mutated([body for _, body in SEEDS]))
@with_examples(SEEDS)
def test_multipart_fuzz(content_type: str, body: bytes) -> None:
    parse_content_type(content_type)
    try:
        found = extract_body(content_type, body)
    except (BodyError, UnsupportedBody):
        return
    assert len(found.other_types) + len(found.dispositions) <= body.count(b"\n") + 2
    for part in (found.sdp, found.metadata):
        assert part is None or isinstance(part, bytes)
