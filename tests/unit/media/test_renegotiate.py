"""A re-INVITE that adds payload types to an open stream: the SRC switches to one of them once
it is answered, and those packets start a stretch instead of being dropped as unexpected.

From the call's media driver (``CallMedia.sync`` tells the engine only when an offer added
payload types) down to the recording (the new codec's tone after the old one's, no hole).
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from siprec_node.media.engine import LocalEngine, StreamSpec
from siprec_node.media.port_allocator import PortAllocator, PortRange
from siprec_node.media.rtp_ports import RtpPorts
from siprec_node.media.stream_file import read_stream_info
from siprec_node.media.stream_recorder import StreamRecorder
from siprec_node.recorder.call_media import CallMedia
from siprec_node.sip.media_state import MediaState

from .test_finalise import span
from .test_stretches import (
    PCMA,
    PCMU,
    T0,
    Segment,
    dominant,
    feed,
    finalise,
    holes,
    negotiated,
    packets,
    rms,
)


def test_packets_of_a_type_added_by_a_reinvite_start_a_stretch(tmp_path: Path) -> None:
    folder = tmp_path / "rec.parts"
    rec = StreamRecorder(negotiated([PCMU]), folder, T0)
    sent = packets([Segment(PCMU, 1.0, 440), Segment(PCMA, 0.2, 1000), Segment(PCMA, 1.0, 1000)])
    early, late = sent[:60], sent[60:]  # PCMU, then PCMA before the re-INVITE was answered
    feed(rec, early)
    rec.accept(negotiated([PCMA, PCMU]))  # the re-INVITE's answer: PCMA first, PCMU kept
    feed(rec, late)
    rec.close(sent[-1][1] + 0.02)

    info = read_stream_info(folder / "stream-0.json")
    assert [s.payload_type for s in info.stretches] == [0, 8]
    # every PCMA packet: the 10 that came just before the answer are placed after all
    assert info.stretches[1].packets == 60
    assert info.unexpected_payload == {}
    audio, rate, _ = finalise(folder, 2.7)
    assert abs(dominant(span(audio, rate, 0.6, 1.4), rate) - 440) < 5
    assert abs(dominant(span(audio, rate, 1.8, 2.6), rate) - 1000) < 5
    level = rms(span(audio, rate, 1.8, 2.6))
    assert holes(audio, rate, 1.75, 2.65, level) < 0.01


def test_accepting_what_the_stream_accepts_already_changes_nothing(tmp_path: Path) -> None:
    rec = StreamRecorder(negotiated([PCMU, PCMA]), tmp_path / "parts", T0)
    stream = negotiated([PCMA, PCMU])
    rec.accept(stream)
    rec.accept(dataclasses.replace(stream, codec=None, payload_type=None, formats=()))
    feed(rec, packets([Segment(PCMU, 0.2, 440), Segment(PCMA, 0.2, 440)]))
    rec.close(T0 + 2)
    info = read_stream_info(tmp_path / "parts" / "stream-0.json")
    assert [s.payload_type for s in info.stretches] == [0, 8]
    assert info.unexpected_payload == {}


class RecordingEngine(LocalEngine):
    """The in-process engine, noting what ``update_stream`` was asked."""

    def __init__(self) -> None:
        super().__init__("python")
        self.renegotiated: list[tuple[str, int, dict[str, Any]]] = []

    async def update_stream(self, spec: StreamSpec) -> None:
        self.renegotiated.append((spec.session_id, spec.index, spec.negotiated))
        await super().update_stream(spec)


@pytest.fixture
def ports() -> RtpPorts:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] & ~1
    return RtpPorts(PortAllocator(PortRange(base, base + 9), 0.0), host="127.0.0.1")


async def test_sync_tells_the_engine_only_when_an_offer_adds_payload_types(
    tmp_path: Path, ports: RtpPorts
) -> None:
    engine = RecordingEngine()
    await engine.start()
    media = CallMedia(ports, engine)
    state = MediaState(T0, "rec", str(tmp_path), str(tmp_path / "parts"))
    port = ports.reserve(0.0)
    first = dataclasses.replace(negotiated([PCMU]), port=port)
    try:
        assert await media.sync("s1", state, (first,)) == ["stream 0 open"]
        assert await media.sync("s1", state, (first,)) == []  # the same answer again
        again = dataclasses.replace(first, codec="PCMA", payload_type=8, formats=(PCMA, PCMU))
        assert await media.sync("s1", state, (again,)) == [
            "stream 0 formats [(8, 'PCMA', 8000), (0, 'PCMU', 8000)]"
        ]
        assert [(s, i, n["formats"][0]["payload_type"]) for s, i, n in engine.renegotiated] == [
            ("s1", 0, 8)
        ]
        assert await media.sync("s1", state, (again,)) == []
        # the recorder got it: PCMA packets are recorded, not counted as unexpected
        recorder = engine._streams[("s1", 0)].recorder
        feed(recorder, packets([Segment(PCMU, 0.1, 440), Segment(PCMA, 0.1, 440)]))
        stats = await media.close("s1")
        assert stats[0]["unexpected_payload"] == 0
        assert media._formats == {}
    finally:
        await engine.stop()
        ports.close()
