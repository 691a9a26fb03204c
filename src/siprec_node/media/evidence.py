"""What the verdict judges, gathered from a call's parts at finalisation (``media/verdict.py``).

Each stream's evidence comes from its ``stream-<i>.json`` (packets, gaps, payload types, source
check, write errors) and its audio (where it lies, how loud it is); the verdict is written into
the sidecar's metadata (the call's ``verdict``, and each stream's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from .decode import decode_g711
from .stream_parts import StreamParts, number
from .verdict import CallVerdict, CallWindow, StreamEvidence, judge_call


def _peak_dbfs(s: StreamParts) -> float | None:
    """The loudest sample of a stream's recorded audio in dBFS (None: no sample; -inf: all
    zero). G.711 without decoding: the magnitude bits of a code grow with its level."""
    if s.codes is not None:
        if not s.codes.size:
            return None
        xor = 0xFF if s.codec == "PCMU" else 0x55
        loudest = int(np.max(np.bitwise_and(np.bitwise_xor(s.codes, xor), 0x7F))) ^ xor
        peak = abs(int(decode_g711(np.array([loudest], np.uint8), str(s.codec))[0]))
    else:
        pcm = s.decoded()
        if not pcm.size:
            return None
        peak = max(int(pcm.max()), -int(pcm.min()))
    return 20 * math.log10(peak / 32768) if peak else -math.inf


def _evidence(
    s: StreamParts, epoch: float, end: float, described: Mapping[str, Any]
) -> StreamEvidence:
    """What the verdict judges of one stream, in seconds from the call's media epoch."""
    info, rate = s.info, s.clock_rate
    offset = s.start(epoch) - epoch
    first = number(info.get("first_position"))
    decodable = s.codec is not None
    audio = None
    if decodable and first is not None and s.native_length():
        audio = (offset + first / rate, offset + s.native_length() / s.rate)
    gaps = [
        (offset + g["start"] / rate, offset + g["end"] / rate)
        for g in info.get("gaps") or ()
        if isinstance(g, Mapping) and number(g.get("start")) is not None
    ]
    unexpected = described.get("unexpected_payload") or info.get("unexpected_payload") or {}
    return StreamEvidence(
        index=s.index,
        packets=int(number(info.get("packets"), 0) or 0),
        audio=audio,
        pauses=[(offset + a, end - epoch if b is None else offset + b) for a, b in s.pause_spans()],
        gaps=gaps,
        gap_count=int(number(info.get("gap_count"), len(gaps)) or 0),
        gap_seconds=(number(info.get("gap_length"), 0) or 0) / rate or None,
        unexpected_payload={int(pt): int(n) for pt, n in dict(unexpected).items()},
        foreign_packets=int(number(info.get("foreign_packets"), 0) or 0),
        undecodable=int(number(described.get("undecodable"), 0) or 0),
        decodable=decodable,
        peak_dbfs=_peak_dbfs(s) if decodable else None,
        write_errors=int(number(info.get("write_errors"), 0) or 0),
        write_lost_ms=int(number(info.get("write_lost_ms"), 0) or 0),
        write_error=info.get("write_error") if isinstance(info.get("write_error"), str) else None,
    )


def judge(
    started_at: datetime,
    flags: Iterable[Mapping[str, Any]],
    loaded: Sequence[StreamParts],
    epoch: float,
    end: float,
    pauses: Sequence[tuple[float, float | None]],
    metadata: dict[str, Any],
) -> CallVerdict:
    """The verdict of the recording (``media/verdict.py``), written into the sidecar: the
    call's `verdict`, and each stream's `verdict`, `peak_dbfs`, `gaps` (ms from the media
    epoch) and `unexpected_payload` (packets per payload type)."""
    described = {d["index"]: d for d in metadata["streams"]}
    evidence = [_evidence(s, epoch, end, described[s.index]) for s in loaded]
    window = CallWindow(
        started_at.timestamp() - epoch,
        end - epoch,
        [(a, end - epoch if b is None else b) for a, b in pauses],
    )
    verdict = judge_call(evidence, window, flags)
    for e in evidence:
        d = described[e.index]
        d["verdict"] = verdict.streams[e.index].to_dict(with_streams=False)
        d["peak_dbfs"] = None if e.peak_dbfs is None else max(round(e.peak_dbfs, 1), -200.0)
        d["gaps"] = [{"at_ms": round(a * 1000), "ms": round((b - a) * 1000)} for a, b in e.gaps]
        d.setdefault("unexpected_payload", {str(k): v for k, v in e.unexpected_payload.items()})
    metadata["verdict"] = verdict.call.to_dict()
    return verdict
