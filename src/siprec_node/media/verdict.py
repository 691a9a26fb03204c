"""The verdict on a recording: ``ok``, or the named problems with their figures.

Pure: typed evidence in (what each stream's receive path counted, where its audio lies, how
loud it is, and the call's active window), typed :class:`Verdict` out, per stream and for the
call. Finalisation gathers the evidence (``media/finalise.py``); the sidecar, the session
store, the metrics and the log carry the result.

Problems of a stream (``media/FORMAT.md`` and the thresholds below):

``no_rtp``
    A negotiated stream that received no RTP packet, although it was not paused for the whole
    active time (a call taken over from a dead node, whose end is not known, counts as not
    paused). The other checks are not made on it.
``silent``
    Packets arrived but the decoded audio never reaches ``SILENT_DBFS`` (-60 dBFS, peak sample):
    digital silence, or payloads that decode to nothing. Figure: ``peak_dbfs`` (null: no audio
    sample at all).
``unexpected_payload``
    Packets of a payload type that was never offered. Figures: ``packets``, and
    ``payload_types`` (payload type → packets).
``foreign_packets``
    Datagrams sent to the stream's ports from addresses ``media.source_check`` refused (a third
    party speaking into the recording, or an SRC sending media from an address neither its SDP
    nor its signalling names): dropped, so none is in the file. Figure: ``packets``.
``undecodable``
    Payloads the decoder rejected (left as silence), or every packet of a stream whose codec is
    not decoded. Figure: ``frames``.
``short``
    The stream's audio covers less than ``SHORT_RATIO`` (95 %) of the dialog's active time (ACK
    to BYE, pauses excluded) and more than ``SHORT_SLACK_S`` (0.5 s) of it is missing: RTP
    that starts late, stops early, or has gaps. Figures: ``covered_ms``, ``active_ms``,
    ``percent``.
``gaps``
    Holes of at least ``GAP_MIN_MS`` (100 ms) inside the stream's audio that no pause explains:
    a loss burst, the SRC stopping, the downtime of a node restart or of a media worker crash.
    Figures: ``count``, ``ms``.
``write_errors``
    Writes of the stream's files the recording disk refused (full): the audio they held is
    silence in the recording. Figures: ``count`` (failed writes), ``ms`` (audio they held;
    approximate for codecs other than G.711), ``detail`` (the first error). Judged even on a
    stream without RTP.

Problems of the call are those of its streams, merged by kind (``streams`` lists the m-line
indexes; counts and milliseconds add up, payload types merge, ``short`` and ``silent`` keep the
worst stream's figures), followed by the call-level flags other parts of the node raise
(``metadata_unparsed``: the recording metadata could not be parsed and participants come from
From/To; ``stalled``: the RTP-timeout probe kept a call with no media up; ``write_errors``, from
the streams' close statistics, when their JSON could not record them), passed through as they
are unless a stream already named that kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .timeline import GAP_MIN_MS as TIMELINE_GAP_MIN_MS

SILENT_DBFS = -60.0
"""A stream whose loudest sample stays below this level (dBFS) is ``silent``."""
GAP_MIN_MS = TIMELINE_GAP_MIN_MS
"""Holes in a stream's audio shorter than this (100 ms) are not gaps: one to four lost packets
of 20 ms are loss, which ``lost`` counts; the receive path notes only holes this long."""
SHORT_RATIO = 0.95
"""A stream covering less than this share of the active time (pauses excluded) is ``short``..."""
SHORT_SLACK_S = 0.5
"""... when more than this is missing (RTP begins a few packets after the answer: a 2 s call
must not be short for the first 100 ms)."""

StreamProblemKind = Literal[
    "no_rtp",
    "silent",
    "unexpected_payload",
    "foreign_packets",
    "undecodable",
    "short",
    "gaps",
    "write_errors",
]
PROBLEM_KINDS: tuple[str, ...] = (
    "no_rtp",
    "silent",
    "unexpected_payload",
    "foreign_packets",
    "undecodable",
    "short",
    "gaps",
    "write_errors",
    "metadata_unparsed",
    "stalled",
)
"""Every kind a verdict may name, stream problems first, then the call-level flags."""

Span = tuple[float, float]
"""Start and end in seconds from the call's media epoch."""


# -- evidence ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvidence:
    """What is known about one recorded stream at finalisation (times in seconds from the
    call's media epoch)."""

    index: int
    packets: int = 0
    """RTP packets received of the recorded SSRCs (any payload type)."""
    audio: Span | None = None
    """From the first recorded sample to the end of the last one; None when none was placed."""
    pauses: Sequence[Span] = ()
    """When the stream was paused (nothing expected then)."""
    gaps: Sequence[Span] = ()
    """Holes of at least ``GAP_MIN_MS`` in the audio, as the receive path noted them."""
    gap_count: int | None = None
    """All gaps, when more happened than ``gaps`` lists (None: ``len(gaps)``)."""
    gap_seconds: float | None = None
    """Their total length (None: the sum of ``gaps``)."""
    unexpected_payload: Mapping[int, int] = field(default_factory=dict)
    """Packets per payload type that was never offered."""
    foreign_packets: int = 0
    """Datagrams refused by the source check (``media.source_check``)."""
    undecodable: int = 0
    """Payloads the decoder rejected."""
    decodable: bool = True
    """False when the stream's codec is not decoded at all (its packets are undecodable)."""
    peak_dbfs: float | None = None
    """The loudest decoded sample, dBFS; None (or -inf) when no sample was decoded."""
    write_errors: int = 0
    """Writes of the stream's files the disk refused."""
    write_lost_ms: int = 0
    """The audio those writes held (ms)."""
    write_error: str | None = None
    """The first such error."""


@dataclass(frozen=True)
class CallWindow:
    """The dialog's active time, seconds from the media epoch: the answer (ACK) to the end."""

    start: float
    end: float
    pauses: Sequence[Span] = ()
    """Pauses of the whole recording (the SIP layer's), besides each stream's own."""


# -- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One named problem with its figures (None: not a figure of this kind)."""

    kind: str
    streams: tuple[int, ...] = ()
    """m-line indexes of the streams that have it (call verdicts only)."""
    count: int | None = None
    ms: int | None = None
    packets: int | None = None
    payload_types: Mapping[int, int] | None = None
    frames: int | None = None
    peak_dbfs: float | None = None
    covered_ms: int | None = None
    active_ms: int | None = None
    percent: float | None = None
    detail: str | None = None

    def to_dict(self, *, with_streams: bool = True) -> dict[str, Any]:
        """JSON-safe: ``kind``, then the figures this kind has (payload types as strings)."""
        out: dict[str, Any] = {"kind": self.kind}
        if with_streams and self.streams:
            out["streams"] = list(self.streams)
        for name in (
            "count",
            "ms",
            "packets",
            "frames",
            "covered_ms",
            "active_ms",
            "percent",
            "detail",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.payload_types is not None:
            out["payload_types"] = {str(pt): n for pt, n in sorted(self.payload_types.items())}
        if self.kind == "silent":  # null: not one sample decoded
            out["peak_dbfs"] = self.peak_dbfs
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"problem without a kind: {data!r}")
        types = data.get("payload_types")

        def number(name: str, kind_: type) -> Any:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return kind_(value)

        detail = data.get("detail")
        return cls(
            kind=kind,
            streams=tuple(int(i) for i in data.get("streams") or ()),
            count=number("count", int),
            ms=number("ms", int),
            packets=number("packets", int),
            payload_types=(
                {int(k): int(v) for k, v in types.items()} if isinstance(types, Mapping) else None
            ),
            frames=number("frames", int),
            peak_dbfs=number("peak_dbfs", float),
            covered_ms=number("covered_ms", int),
            active_ms=number("active_ms", int),
            percent=number("percent", float),
            detail=detail if isinstance(detail, str) else None,
        )


@dataclass(frozen=True)
class Verdict:
    """``ok`` when there is no problem, else ``problems``."""

    problems: tuple[Problem, ...] = ()

    @property
    def status(self) -> Literal["ok", "problems"]:
        return "problems" if self.problems else "ok"

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of the problems, in order."""
        return tuple(p.kind for p in self.problems)

    def get(self, kind: str) -> Problem | None:
        """The problem of that kind, if any."""
        return next((p for p in self.problems if p.kind == kind), None)

    def to_dict(self, *, with_streams: bool = True) -> dict[str, Any]:
        """``{"status": "ok"|"problems", "problems": [{"kind": ..., figures...}, ...]}``."""
        return {
            "status": self.status,
            "problems": [p.to_dict(with_streams=with_streams) for p in self.problems],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict`."""
        problems = data.get("problems") or ()
        return cls(tuple(Problem.from_dict(p) for p in problems if isinstance(p, Mapping)))


@dataclass(frozen=True)
class CallVerdict:
    """The verdict of the call and of each of its streams (by m-line index)."""

    call: Verdict
    streams: Mapping[int, Verdict]


# -- judging -------------------------------------------------------------------------------


def _clip(spans: Iterable[Span], lo: float, hi: float) -> list[Span]:
    out = [(max(a, lo), min(b, hi)) for a, b in spans]
    return [(a, b) for a, b in out if b > a]


def _union(spans: Iterable[Span]) -> list[Span]:
    merged: list[list[float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _length(spans: Iterable[Span]) -> float:
    return sum(b - a for a, b in _union(spans))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def judge_stream(stream: StreamEvidence, window: CallWindow) -> Verdict:
    """The problems of one stream (module docstring)."""
    lo, hi = window.start, max(window.end, window.start)
    pauses = _union(_clip([*window.pauses, *stream.pauses], lo, hi))
    active = (hi - lo) - _length(pauses)
    foreign = [Problem("foreign_packets", packets=stream.foreign_packets)]
    foreign = foreign if stream.foreign_packets > 0 else []
    if stream.write_errors > 0:
        foreign.append(
            Problem(
                "write_errors",
                count=stream.write_errors,
                ms=stream.write_lost_ms,
                detail=stream.write_error,
            )
        )
    if stream.packets <= 0:  # unless paused all along (an unknown end, a takeover's: no_rtp)
        return Verdict((*([] if hi > lo and active <= 0 else [Problem("no_rtp")]), *foreign))
    problems: list[Problem] = []
    peak = stream.peak_dbfs
    if stream.decodable and (peak is None or not peak >= SILENT_DBFS):
        figure = None if peak is None or not math.isfinite(peak) else round(peak, 1)
        problems.append(Problem("silent", peak_dbfs=figure))
    unexpected = {pt: n for pt, n in stream.unexpected_payload.items() if n > 0}
    if unexpected:
        problems.append(
            Problem(
                "unexpected_payload", packets=sum(unexpected.values()), payload_types=unexpected
            )
        )
    problems += foreign
    undecodable = stream.undecodable if stream.decodable else stream.packets
    if undecodable > 0:
        problems.append(Problem("undecodable", frames=undecodable))
    if active > 0:
        covered = 0.0
        if stream.audio is not None and stream.decodable:
            span = _clip([stream.audio], lo, hi)
            if span:
                a, b = span[0]
                holes = _union([*_clip(pauses, a, b), *_clip(stream.gaps, a, b)])
                covered = (b - a) - _length(holes)
        if covered < SHORT_RATIO * active and active - covered > SHORT_SLACK_S:
            problems.append(
                Problem(
                    "short",
                    covered_ms=_ms(covered),
                    active_ms=_ms(active),
                    percent=round(100 * covered / active, 1),
                )
            )
    count, seconds = _gaps(stream, _union([*window.pauses, *stream.pauses]))
    if count > 0:
        problems.append(Problem("gaps", count=count, ms=_ms(seconds)))
    order = {kind: n for n, kind in enumerate(PROBLEM_KINDS)}
    return Verdict(tuple(sorted(problems, key=lambda p: order.get(p.kind, len(order)))))


def _gaps(stream: StreamEvidence, pauses: list[Span]) -> tuple[int, float]:
    """How many gaps and how long, less what a pause covers (a node that restarts after the
    stream was paused sees one hole: the pause and its downtime)."""
    count, seconds = 0, 0.0
    for a, b in stream.gaps:
        left = (b - a) - _length(_clip(pauses, a, b))
        if left * 1000 >= GAP_MIN_MS - 0.5:
            count, seconds = count + 1, seconds + left
    listed = sum(b - a for a, b in stream.gaps)
    if stream.gap_count is not None and stream.gap_count > len(stream.gaps):  # beyond the list
        count += stream.gap_count - len(stream.gaps)
        seconds += max((stream.gap_seconds or listed) - listed, 0.0)
    return count, seconds


def _merge(kind: str, found: list[tuple[int, Problem]]) -> Problem:
    streams = tuple(i for i, _ in found)
    problems = [p for _, p in found]
    if kind == "gaps":
        return Problem(
            kind,
            streams,
            count=sum(p.count or 0 for p in problems),
            ms=sum(p.ms or 0 for p in problems),
        )
    if kind == "unexpected_payload":
        types: dict[int, int] = {}
        for p in problems:
            for pt, n in (p.payload_types or {}).items():
                types[pt] = types.get(pt, 0) + n
        return Problem(kind, streams, packets=sum(types.values()), payload_types=types)
    if kind == "undecodable":
        return Problem(kind, streams, frames=sum(p.frames or 0 for p in problems))
    if kind == "foreign_packets":
        return Problem(kind, streams, packets=sum(p.packets or 0 for p in problems))
    if kind == "write_errors":
        detail = next((p.detail for p in problems if p.detail), None)
        return Problem(
            kind,
            streams,
            count=sum(p.count or 0 for p in problems),
            ms=sum(p.ms or 0 for p in problems),
            detail=detail,
        )
    if kind == "short":
        worst = min(problems, key=lambda p: p.percent if p.percent is not None else 100.0)
        return Problem(
            kind,
            streams,
            covered_ms=worst.covered_ms,
            active_ms=worst.active_ms,
            percent=worst.percent,
        )
    if kind == "silent":
        peaks = [p.peak_dbfs for p in problems if p.peak_dbfs is not None]
        return Problem(kind, streams, peak_dbfs=max(peaks) if peaks else None)
    return Problem(kind, streams)


def judge_call(
    streams: Sequence[StreamEvidence],
    window: CallWindow,
    flags: Iterable[Mapping[str, Any] | Problem] = (),
) -> CallVerdict:
    """The verdict of every stream and of the call (module docstring). ``flags`` are the
    call-level problems raised elsewhere (``{"kind": "metadata_unparsed", ...}``)."""
    per_stream = {s.index: judge_stream(s, window) for s in streams}
    by_kind: dict[str, list[tuple[int, Problem]]] = {}
    for index in sorted(per_stream):
        for problem in per_stream[index].problems:
            by_kind.setdefault(problem.kind, []).append((index, problem))
    problems = [_merge(kind, by_kind[kind]) for kind in PROBLEM_KINDS if kind in by_kind]
    seen = {p.kind for p in problems}
    for flag in flags:
        problem = flag if isinstance(flag, Problem) else Problem.from_dict(flag)
        if problem.kind not in seen:
            seen.add(problem.kind)
            problems.append(problem)
    return CallVerdict(Verdict(tuple(problems)), per_stream)
