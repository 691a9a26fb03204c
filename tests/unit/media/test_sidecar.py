"""``Sidecar.to_dict`` gives what ``dataclasses.asdict`` gives, values, types and order."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from siprec_node.media.sidecar import Dtmf, Sidecar, SidecarParticipant, SidecarStream, Span


def _stream(index: int) -> SidecarStream:
    return SidecarStream(
        index=index,
        label=str(index + 1),
        participant="a",
        participants=["a"],
        codec="PCMU",
        payload_type=0,
        ssrc=7,
        ssrcs=[7, None],
        packets=1000,
        lost=2,
        duplicates=0,
        late=1,
        jitter_ms=0.5,
        foreign_packets=0,
        write_errors=0,
        pauses=[Span("2024-05-01T12:00:01.000+00:00", "2024-05-01T12:00:02.000+00:00")],
        dtmf=[Dtmf(1200, 5, 100), Dtmf(1500, "A", 80)],
        codecs=[{"codec": "PCMU", "payload_type": 0, "start_s": 0.0, "end_s": 20.0}],
        unexpected_payload={"96": 3},
        undecodable=0,
        recorded=True,
        complete=True,
        problems=["x"],
        notes=[],
        sr_offset_ms=None,
        sr_offset_reports=0,
        alignment_ms=-1.5,
    )


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down, dict keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_to_dict_is_asdict_with_the_schema_first() -> None:
    sidecar = Sidecar(
        session_id="s",
        call_id="c",
        node_id="n",
        status="ended",
        end_reason=None,
        started_at="2024-05-01T12:00:00.000+00:00",
        ended_at="2024-05-01T12:00:20.000+00:00",
        media_epoch="2024-05-01T12:00:00.000+00:00",
        duration_s=20.0,
        format="wav",
        channels="stereo",
        sample_rate=8000,
        files=["call.wav"],
        audio=[{"path": "call.wav", "streams": [0, 1], "duration_s": 20.0}],
        participants=[SidecarParticipant("a", None, "sip:a@x", "left", [0])],
        streams=[_stream(0), _stream(1)],
        pauses=[],
        metrics={"turns": [{"participant": "a", "start_ms": 0}], "pair": (1, [2, 3])},
        alignment={"method": "rtcp", "reference": 0, "notes": [], "span": Span("a", "b")},
    )
    expected = asdict(sidecar)
    expected = {"schema": expected.pop("schema"), **expected}
    got = sidecar.to_dict()
    assert _same(got, expected)
    # a copy: nothing of the result is shared with the sidecar
    got["audio"][0]["streams"].append(2)
    got["streams"][0]["codecs"][0]["codec"] = "PCMA"
    assert sidecar.audio[0]["streams"] == [0, 1]
    assert sidecar.streams[0].codecs[0]["codec"] == "PCMU"
