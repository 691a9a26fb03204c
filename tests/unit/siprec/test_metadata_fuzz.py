"""Fuzz harness of the recording-metadata parser, seeded from ``tests/data/metadata``.

Whatever the bytes: ``parse_metadata`` raises nothing but ``MetadataError`` (unknown encodings,
nesting, element counts included); what parses survives ``apply_update`` onto every seed and a
``to_dict``/``from_dict`` round trip, and its look-ups raise nothing.
"""

from __future__ import annotations

from hypothesis import given

from siprec_node.siprec.errors import MetadataError
from siprec_node.siprec.metadata import RecordingMetadata, apply_update
from siprec_node.siprec.metadata_parser import parse_metadata
from tests.fuzzing import corpus, fuzz_settings, mutated, with_examples

SEEDS = corpus("metadata", ".xml")
BASES = [parse_metadata(seed) for seed in corpus("metadata", ".xml", include_bad=False)[:3]]


def _check(data: bytes) -> None:
    try:
        metadata = parse_metadata(data, max_elements=500)
    except MetadataError:
        return
    assert RecordingMetadata.from_dict(metadata.to_dict()) == metadata
    labels = metadata.senders_by_label()
    assert all(senders for senders in labels.values())
    assert len(metadata.active_participants()) <= len(metadata.participants)
    metadata.vendor_identifiers()
    for stream in metadata.streams:
        metadata.senders(stream.id)
    for base in BASES:
        merged = apply_update(base, metadata)
        assert merged.data_mode == "complete"


@fuzz_settings(500)
@given(mutated(SEEDS))
@with_examples(SEEDS)
def test_metadata_fuzz(data: bytes) -> None:
    _check(data)
