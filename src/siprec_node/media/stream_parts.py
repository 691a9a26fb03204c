"""One stream's parts (``media/FORMAT.md``) read back for finalisation, stretch by stretch.

:func:`load_streams` reads every stream of a ``<stem>.parts`` folder into a
:class:`StreamParts`: its ``stream-<i>.json`` (as a dict: a lost or torn one leaves what the
media files say) and its audio, in one of two forms:

- **one file** (a version 1 stream, or a version 2 stream all of whose stretches are in one
  payload type's file): a ``.wav`` stays G.711 code bytes (so ``wav-g711`` output copies them
  and two legs decode in one table lookup), a ``.frames`` log is decoded on demand with
  :func:`~siprec_node.media.decode.decode_stretch`;
- **several files** (the stream changed payload type): each stretch is decoded from its own
  file with ``decode_stretch`` for its format, resampled to the highest decoded rate of the
  stream's stretches (``decode.resample``), and placed from its start to the next stretch's
  start. Stretches tile the stream's time (the receive path starts each where the audio of the
  one before ended), so nothing is left out or doubled at a switch.

Stream-level positions of the JSON (first/last position, pauses, DTMF, restarts) are in units of
its ``clock_rate`` (the stream's first format); each stretch's ``start`` in its own clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siprec_node.siprec.codecs import PayloadFormat

from .decode import (
    G711_CODECS,
    Decoded,
    FrameLog,
    UnsupportedCodec,
    canonical_codec,
    decode_stretch,
    decoded_rate,
    resample,
)
from .stream_file import (
    Stretch,
    info_file_name,
    media_file_name,
    read_frames,
    read_stream_info,
    read_wav_g711,
)

SR_MIN_REPORTS = 2
"""SRs a stream's offset must be the median of before legs are moved by it."""


def read_info(path: Path) -> dict[str, Any]:
    """`stream-<i>.json` as a dict; empty when missing or unreadable (the media file decides)."""
    try:
        return read_stream_info(path).to_dict()
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def number(value: Any, default: float | None = None) -> float | None:
    """A JSON number as a float (``default`` for anything else, booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


@dataclass(frozen=True)
class StretchSource:
    """A stretch and where its audio comes from: G.711 codes (sample 0 at ``origin``) or a
    frame log (absolute positions)."""

    stretch: Stretch
    fmt: PayloadFormat
    rate: int  # decoded rate
    codes: np.ndarray | None = None
    origin: int = 0
    frames: FrameLog | None = None


@dataclass(eq=False)
class StreamParts:
    """One stream of a call as finalisation sees it."""

    index: int
    info: dict[str, Any]
    codec: str | None  # canonical; None when not decodable
    clock_rate: int  # of the JSON's positions (the stream's first format)
    epoch: float | None
    codes: np.ndarray | None = None  # G.711, one file
    origin: int = 0
    """Position (samples at 8 kHz) of ``codes[0]``: 0 but for another payload type's file."""
    frames: FrameLog | None = None  # another codec, one file
    fmt: PayloadFormat | None = None  # of the one file
    sources: list[StretchSource] | None = None  # several files
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    limit: int | None = None
    """Samples after which a frame log is not decoded (the call's end, or now when unknown):
    a corrupt position far in the future must not become hours of silence in memory."""
    shift: float = 0.0
    """Seconds the stream is moved by (RTCP alignment; negative: earlier), whole samples."""
    undecodable: int = 0
    """Frames the decoders rejected (silence in their place), known once decoded."""
    _pcm: np.ndarray | None = field(default=None, init=False, repr=False)

    def start(self, call_epoch: float) -> float:
        """Where the stream's position 0 is (its epoch, the call's when its JSON is lost),
        moved by the alignment."""
        return (call_epoch if self.epoch is None else self.epoch) + self.shift

    @property
    def composed(self) -> bool:
        """Whether the stream is in several payload types' files (decoded stretch by stretch)."""
        return self.sources is not None

    def decoded(self) -> np.ndarray:
        """The PCM (at :attr:`rate`) from the stream's epoch to its last payload, decoded once."""
        if self._pcm is None:
            if self.sources is not None:
                self._pcm = self._compose()
            else:
                assert self.fmt is not None and self.frames is not None
                result = decode_stretch(self.fmt, self.frames, limit=self.limit)
                self.undecodable += result.errors
                self._pcm = result.pcm
        return self._pcm

    def _compose(self) -> np.ndarray:
        assert self.sources is not None
        rate = self.rate
        pieces: list[tuple[int, np.ndarray]] = []
        for k, source in enumerate(self.sources):
            stretch = source.stretch
            first = stretch.start / stretch.clock_rate
            following = self.sources[k + 1].stretch if k + 1 < len(self.sources) else None
            until = None if following is None else following.start / following.clock_rate
            decoded = _decode_source(source, until, self.limit, rate)
            if decoded is None:
                continue
            self.undecodable += decoded.errors
            pcm = resample(decoded.pcm, decoded.rate, rate)
            at = round(first * rate)
            if until is not None:
                pcm = pcm[: max(round(until * rate) - at, 0)]
            if self.limit is not None:
                pcm = pcm[: max(self.limit - at, 0)]
            if pcm.size:
                pieces.append((at, pcm))
        length = max((at + pcm.size for at, pcm in pieces), default=0)
        out = np.zeros(length, np.int16)
        for at, pcm in pieces:
            out[at : at + pcm.size] = pcm
        return out

    @property
    def label(self) -> str | None:
        label = self.info.get("label")
        return None if label is None else str(label)

    @property
    def closed(self) -> bool:
        return self.info.get("closed") is True

    @property
    def rate(self) -> int:
        """The rate of :meth:`decoded` (8000 for G.711 codes)."""
        if self.sources is not None:
            return max((s.rate for s in self.sources), default=8000)
        if self.fmt is not None:
            return decoded_rate(self.fmt)
        return 8000

    def native_length(self) -> int:
        """Samples recorded, at :attr:`rate`, from the stream's epoch."""
        if self.codes is not None:
            return self.origin + self.codes.size if self.codes.size else 0
        return self.decoded().size

    def sr_offset(self) -> float | None:
        """The SR offset (s) when it is the median of enough SRs to align by."""
        offset = number(self.info.get("sr_offset_ms"))
        reports = number(self.info.get("sr_offset_reports"), 0) or 0
        if offset is None or not math.isfinite(offset) or reports < SR_MIN_REPORTS:
            return None
        return offset / 1000.0

    def lead(self, call_epoch: float) -> float:
        """Seconds of silence before the stream's first packet, from the call's epoch."""
        first = number(self.info.get("first_position"))
        if first is None or first < 0:
            return 0.0
        return max(self.start(call_epoch) - call_epoch + first / self.clock_rate, 0.0)

    def tail(self, call_epoch: float, end: float) -> float:
        """Seconds of the call after the stream's last sample (0 when it reaches the end)."""
        last = self.start(call_epoch) + self.native_length() / self.rate
        return max(end - last, 0.0)

    def pause_spans(self) -> list[tuple[float, float | None]]:
        """This stream's pauses in seconds from its epoch; an open one only if it was closed."""
        spans = []
        for pause in self.info.get("pauses") or ():
            if not isinstance(pause, Mapping):
                continue
            start, end = number(pause.get("start")), number(pause.get("end"))
            if start is None or (end is None and not self.closed):
                continue
            spans.append((start / self.clock_rate, None if end is None else end / self.clock_rate))
        return spans

    def codecs(self, offset: float, duration: float) -> list[dict[str, Any]]:
        """The sidecar's ``codecs``: each stretch's codec, payload type, start and end (seconds
        from the call's media epoch, ``offset`` being where the stream's position 0 is) and
        packets; a version 1 stream is one stretch over the whole call."""
        stretches = stretches_of(self.info)
        if not stretches:
            payload_type = self.info.get("payload_type")
            return [
                {
                    "codec": self.codec or self.info.get("codec"),
                    "payload_type": payload_type,
                    "start_s": 0.0,
                    "end_s": round(duration, 3),
                    "packets": self.info.get("packets", 0),
                }
            ]
        out = []
        for k, stretch in enumerate(stretches):
            start = 0.0 if k == 0 else offset + stretch.start / stretch.clock_rate
            if k + 1 < len(stretches):
                following = stretches[k + 1]
                end = offset + following.start / following.clock_rate
            else:
                end = duration
            out.append(
                {
                    "codec": stretch.codec,
                    "payload_type": stretch.payload_type,
                    "start_s": round(min(max(start, 0.0), duration), 3),
                    "end_s": round(min(max(end, 0.0), duration), 3),
                    "packets": stretch.packets,
                }
            )
        return out


def _decode_source(
    source: StretchSource, until: float | None, limit: int | None, rate: int
) -> Decoded | None:
    """A stretch's payloads decoded, sample 0 at the stretch's start."""
    stretch, fmt = source.stretch, source.fmt
    first = stretch.start
    last = None if until is None else math.ceil(until * stretch.clock_rate)
    if limit is not None:
        bound = math.ceil(limit * stretch.clock_rate / rate)
        last = bound if last is None else min(last, bound)
    if source.codes is not None:
        lo = max(first - source.origin, 0)
        hi = source.codes.size if last is None else min(last - source.origin, source.codes.size)
        if hi <= lo:
            return None
        codes = source.codes[lo:hi]
        log = FrameLog(fmt.clock_rate, np.array([source.origin + lo - first]), [codes.tobytes()])
        return decode_stretch(fmt, log)
    assert source.frames is not None
    positions = np.asarray(source.frames.positions, np.int64)
    keep = positions >= first
    if last is not None:
        keep &= positions < last
    chosen = np.flatnonzero(keep)
    if not chosen.size:
        return None
    payloads = source.frames.payloads
    chosen_payloads = [payloads[i] for i in chosen.tolist()]
    log = FrameLog(fmt.clock_rate, positions[chosen] - first, chosen_payloads)
    return decode_stretch(fmt, log)


def stretches_of(info: Mapping[str, Any]) -> list[Stretch]:
    """The stretches a (version 2) ``stream-<i>.json`` lists, in order; [] for version 1."""
    out = []
    for item in info.get("stretches") or ():
        if isinstance(item, Stretch):
            out.append(item)
        elif isinstance(item, Mapping):
            try:
                out.append(Stretch(**item))
            except TypeError:
                continue
    return [s for s in out if s.clock_rate > 0]


def _index_of(name: str) -> int | None:
    stem = name.split(".", 1)[0]
    if not stem.startswith("stream-") or not name.endswith((".wav", ".frames", ".json")):
        return None
    digits = stem.removeprefix("stream-")
    return int(digits) if digits.isdigit() else None


def load_streams(parts: Path) -> list[StreamParts]:
    """Every stream of a parts folder, by m-line index (none when the folder is missing)."""
    try:
        names = sorted(p.name for p in parts.iterdir())
    except FileNotFoundError:
        return []
    indexes = sorted({i for i in map(_index_of, names) if i is not None})
    return [load_stream(parts, i) for i in indexes]


def load_stream(parts: Path, index: int) -> StreamParts:
    """One stream's JSON and audio (see the module docstring)."""
    info = read_info(parts / info_file_name(index))
    stream = StreamParts(index, info, None, 8000, number(info.get("epoch")))
    base = int(number(info.get("clock_rate"), 0) or 0)
    for position in info.get("unclean_restarts") or []:
        stream.problems.append(
            f"recording resumed at {position / (base or 8000):.3f}s after a crash: packet "
            "counters of the seconds before it were lost"
        )
    stretches = stretches_of(info)
    if len({s.file for s in stretches}) > 1:
        return _load_composed(parts, stream, stretches, base)
    if stretches:  # one file: the stretches' own format
        one = stretches[0]
        named: Any = one.codec
        wav = frames = parts / Path(one.file).name
        stream.origin = one.origin
        payload_type, channels, fmtp = one.payload_type, one.channels, one.fmtp
    else:
        named = info.get("codec")
        wav, frames = parts / media_file_name(index, "PCMU"), parts / media_file_name(index, "G722")
        payload_type = int(number(info.get("payload_type"), 0) or 0)
        channels, fmtp = int(number(info.get("channels"), 1) or 1), None
    if isinstance(named, str):
        try:
            stream.codec = canonical_codec(named)
        except UnsupportedCodec:
            stream.problems.append(f"codec {named!r} is not decoded")
            return stream
    if stream.codec in (None, *G711_CODECS) and wav.suffix == ".wav" and wav.exists():
        try:
            law, samples = read_wav_g711(wav)
        except (OSError, ValueError) as exc:
            stream.problems.append(f"unreadable {wav.name}: {exc}")
        else:
            if stream.codec not in (None, law):
                stream.problems.append(f"{wav.name} is {law}, its JSON says {stream.codec}")
            stream.codec = law  # the bytes are what the header says they are
            stream.codes = np.frombuffer(samples, dtype=np.uint8)
    elif stream.codec not in G711_CODECS and frames.suffix == ".frames" and frames.exists():
        try:
            clock_rate, records = read_frames(frames)
        except (OSError, ValueError) as exc:
            stream.problems.append(f"unreadable {frames.name}: {exc}")
        else:
            stream.codec = stream.codec or ("OPUS" if clock_rate == 48000 else "G722")
            stream.clock_rate = clock_rate
            positions = np.fromiter((p for p, _ in records), np.int64, count=len(records))
            stream.frames = FrameLog(clock_rate, positions, [r for _, r in records])
    if stream.codec is not None and stream.codes is None and stream.frames is None:
        # described but nothing recorded (no packet came, or the media file is unreadable)
        stream.clock_rate = base or (48000 if stream.codec == "OPUS" else 8000)
        if stream.codec in G711_CODECS:
            stream.codes = np.zeros(0, np.uint8)
        else:
            stream.frames = FrameLog(stream.clock_rate)
    if base:
        stream.clock_rate = base  # the JSON's positions are in its clock
    if stream.codec is not None and stream.codes is None:
        assert stream.frames is not None
        stream.fmt = PayloadFormat(
            payload_type, stream.codec, stream.frames.clock_rate, channels, fmtp
        )
    return stream


def _load_composed(
    parts: Path, stream: StreamParts, stretches: list[Stretch], base: int
) -> StreamParts:
    """A stream in several payload types' files: each stretch with its source."""
    stream.clock_rate = base or stretches[0].clock_rate
    files: dict[str, tuple[np.ndarray | None, FrameLog | None]] = {}
    sources: list[StretchSource] = []
    for stretch in stretches:
        try:
            codec = canonical_codec(stretch.codec)
            fmt = PayloadFormat(
                stretch.payload_type, codec, stretch.clock_rate, stretch.channels, stretch.fmtp
            )
            rate = decoded_rate(fmt)
        except UnsupportedCodec:
            stream.problems.append(
                f"codec {stretch.codec!r} (payload type {stretch.payload_type}) is not decoded: "
                "its stretch is silence"
            )
            continue
        if stretch.file not in files:
            files[stretch.file] = _read_media(parts / Path(stretch.file).name, stream.problems)
        codes, frames = files[stretch.file]
        if codes is None and frames is None:
            continue
        sources.append(StretchSource(stretch, fmt, rate, codes, stretch.origin, frames))
    stream.sources = sources
    stream.codec = sources[0].fmt.name if sources else canonical_or_none(stretches[0].codec)
    return stream


def canonical_or_none(name: str) -> str | None:
    """The canonical codec name, or None when it is not decoded."""
    try:
        return canonical_codec(name)
    except UnsupportedCodec:
        return None


def _read_media(path: Path, problems: list[str]) -> tuple[np.ndarray | None, FrameLog | None]:
    """G.711 codes of a ``.wav`` or the records of a ``.frames`` (None, None: unreadable)."""
    try:
        if path.suffix == ".wav":
            _, samples = read_wav_g711(path)
            return np.frombuffer(samples, dtype=np.uint8), None
        clock_rate, records = read_frames(path)
    except FileNotFoundError:
        return None, None  # described but never written (a crash before its first packet)
    except (OSError, ValueError) as exc:
        problems.append(f"unreadable {path.name}: {exc}")
        return None, None
    positions = np.fromiter((p for p, _ in records), np.int64, count=len(records))
    return None, FrameLog(clock_rate, positions, [r for _, r in records])


def _intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out = []
    for s1, e1 in a:
        for s2, e2 in b:
            if min(e1, e2) > max(s1, s2):
                out.append((max(s1, s2), min(e1, e2)))
    return sorted(out)


def common_pauses(
    streams: Sequence[StreamParts], epoch: float, end: float
) -> list[tuple[float, float]]:
    """The times (s from `epoch`) when every stream was paused."""
    common: list[tuple[float, float]] | None = None
    for stream in streams:
        shift = stream.start(epoch) - epoch
        spans = [
            (s + shift, (end - epoch) if e is None else e + shift) for s, e in stream.pause_spans()
        ]
        common = spans if common is None else _intersect(common, spans)
    return common or []
