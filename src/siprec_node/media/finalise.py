"""Finalisation of a recording: per-stream parts in, final audio files and sidecar JSON out.

`finalise_call` reads a call's `<stem>.parts/` folder (media/FORMAT.md), decodes every stream in
bulk, aligns them on the call's media epoch and writes, beside the parts folder:

- `recording.channels = "stereo"` (and `"both"`): `<stem>.<ext>`, the first offered stream
  (lowest m-line index) on the left, the second on the right, at the call's common rate
  (`decode.output_rate`: 8 kHz for G.711 calls, 16 kHz with G.722, 48 kHz with Opus). A call
  with a single stream (a mixed one, as BroadWorks and Metaswitch send) gets a **mono** file: a
  mix cannot be split into parties, and copying it to both channels would only suggest it was.
  A call with three or more streams gets the stereo file of the first two **and** one file per
  stream, so that no stream is lost.
- `"separate"` (and `"both"`): `<stem>.stream-<i>.<ext>` per stream, at the rate the stream
  carries (no resampling).
- `recording.format`: `wav` (PCM16), `flac`, `opus` (Ogg Opus at 32 kbps per channel; see
  `audio_out`), or `wav-g711`: the G.711 bytes as received, no transcoding. Two legs in the same
  law make one stereo G.711 WAV; legs in different laws cannot share a WAV header, so each
  stream gets its own G.711 file (and there is no stereo file). A G.722 or Opus stream has no
  G.711 form: in `wav-g711` it gets a PCM16 WAV of its own, and so does a stream whose codec
  changed (PCMU to PCMA included; its sidecar entry's `notes` says so). A stream that sent
  one law only, whichever payload type of its answer that was, stays G.711.
- `<stem>.json`: the sidecar of SPEC ("Files written per recording"), written last. Times in
  ms (turns, DTMF, gaps) count from `media_epoch`, sample 0 of every file; `files` are names
  beside the sidecar, `audio` says which streams each file holds, at what rate and encoding;
  `verdict` (the call's, and each stream's) is `ok` or the named problems of
  `media/verdict.py` (FORMAT.md, "The verdict").

A stream that changed payload type is decoded stretch by stretch (`media/stream_parts.py`),
each resampled to the highest rate of its stretches; the call's rate is the highest of its
streams'. Each stream's sidecar entry lists its stretches (`codecs`: codec, payload type,
start and end in seconds from `media_epoch`, packets), the packets of payload types never
accepted (`unexpected_payload`, per type) and the frames its decoders rejected
(`undecodable`); `codec` is its first stretch's.

Streams are placed where the receive path put them (arrival wall clock of each leg's first
packet, then RTP timestamps), refined by RTCP: when two or more streams carry an SR offset
(`sr_offset_ms` of `stream-<i>.json`, the median of at least `SR_MIN_REPORTS` SRs), the legs are
moved so that their offsets agree, i.e. so that they line up on their sender's clock. A stream
whose offset is larger by Δ than the reference's sits Δ late: it is moved earlier, through the
silence before its first packet only; as far as that silence is too short, the other legs are
delayed instead (through the silence after their last packet: the file keeps its length).
Nothing is moved for |Δ| below `ALIGN_MIN_S` (1 ms: already aligned), nor beyond `ALIGN_MAX_S`
(500 ms: that is not network delay but different clocks, so the SRs are not trusted and the
sidecar says so), nor when a move would cut audio. What was done is in the sidecar: `alignment`
(`method` "rtcp" or "arrival", `reference` stream, `notes`) and each stream's `alignment_ms`
(how far its audio, pauses and DTMF were moved, negative = earlier) with the `sr_offset_ms` and
`sr_offset_reports` it came from (`media/alignment.py`).

Every file has the call's duration, `ended_at - media_epoch`, on every channel: streams that
start late or stop early are padded with silence, gaps and pauses are silence. Pauses given by
the caller (the SIP layer's pause/resume) and the pauses in the streams' JSON are silenced even
if media was written during them.

Crash-cut parts are finalised like any others: a `.wav` is read to its last whole sample
whatever its header says, a `.frames` log to its last whole record, a missing or unreadable
`stream-<i>.json` falls back to what the media file says (the law of a `.wav`, the clock of a
`.frames`: 48 kHz is Opus, 8 kHz is G.722; a `.wav` header overrules the JSON's law), an open
pause of a stream that was not closed is not trusted (the stream may have resumed after the
last rewrite of its JSON; the receive path wrote no media while paused anyway). Finalising again
gives the same files: each is written to a temporary name and renamed, leftovers of an
interrupted run are removed (tried by name: the day folder is never listed), and files an
earlier run listed in the sidecar that this run does not write are deleted once the new sidecar
is in place. The parts folder is left alone unless `remove_parts=True` (the node removes it
once the recording is final: ``recorder/finalisations.py``, ``recording.keep_parts``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..siprec.recording_session import RecordingSession
from . import audio_out
from .alignment import align
from .decode import (
    G711_SILENCE,
    decode_g711,
    decode_g711_stereo,
    fit,
    resample,
)
from .disk import clean_leftovers
from .evidence import judge
from .sidecar import Dtmf, Sidecar, SidecarParticipant, SidecarStream, Span
from .stream_parts import StreamParts, common_pauses, load_streams
from .vad import Conversation, TurnSink, VadConfig, analyse_levels, frame_levels
from .verdict import CallVerdict, Verdict

Format = Literal["wav", "wav-g711", "flac", "opus"]
Channels = Literal["stereo", "separate", "both"]
FORMATS: tuple[str, ...] = ("wav", "wav-g711", "flac", "opus")
CHANNELS: tuple[str, ...] = ("stereo", "separate", "both")
EXTENSIONS = {"wav": "wav", "wav-g711": "wav", "flac": "flac", "opus": "opus"}


# -- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParticipantInfo:
    """A participant of the recording and the streams they are heard on.

    A stream belongs to a participant when its m-line index is in `streams` or its label in
    `labels`. When no participant names any stream, the n-th stream is the n-th participant's.
    """

    id: str
    name: str | None = None
    aor: str | None = None
    streams: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallInfo:
    """What the sidecar says about the call besides its media."""

    session_id: str
    call_id: str
    node_id: str
    status: str
    end_reason: str | None
    started_at: datetime
    ended_at: datetime | None = None
    """None when unknown (a takeover of a dead node's call): the end of the recorded media."""
    flags: tuple[Mapping[str, Any], ...] = ()
    """Call-level problems raised outside the media (``{"kind": "metadata_unparsed", ...}``),
    added to the verdict (``media/verdict.py``)."""


Pause = tuple[datetime, datetime | None]
"""Start and end of a pause of the whole recording; end None: paused until the call ended."""


def participants_from_session(session: RecordingSession) -> list[ParticipantInfo]:
    """The participants of a SIPREC session with the streams each is heard on."""
    heard = session.streams_by_participant()
    return [
        ParticipantInfo(p.id, p.name, p.aor, streams=tuple(heard.get(p.id, ())))
        for p in session.participants()
    ]


# -- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalisedRecording:
    """What finalisation wrote: the sidecar, the audio files, and the conversation found."""

    sidecar: Path
    files: tuple[Path, ...]
    duration_s: float
    sample_rate: int
    media_epoch: datetime
    conversation: Conversation | None
    metadata: dict[str, Any] = field(repr=False)
    """The sidecar's content."""
    verdict: CallVerdict = field(default_factory=lambda: CallVerdict(Verdict(), {}))
    """The recording's verdict, of the call and of each stream (also in the sidecar)."""

    def record_turns(self, state: TurnSink) -> None:
        """Add the turns to a `SessionState` (its `history` and `metrics`); call it once."""
        if self.conversation is not None:
            self.conversation.record_into(state, self.media_epoch)


# -- reading the parts ---------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- timelines -----------------------------------------------------------------------------

BLOCK_SECONDS = 8
"""Files are produced in blocks of this many seconds (a whole number of VAD frames at every
rate): the working set stays in cache, and a long call never needs its file in memory."""


def _sample_spans(
    spans: Iterable[tuple[float, float | None]], rate: int, length: int
) -> list[tuple[int, int]]:
    out = []
    for start, end in spans:
        first = max(round(start * rate), 0)
        last = length if end is None else min(round(end * rate), length)
        if last > first:
            out.append((first, last))
    return out


class _Line:
    """One stream over the whole call (sample 0 = the call's media epoch), read in blocks."""

    def __init__(self, stream: StreamParts, rate: int, length: int) -> None:
        self.stream, self.rate, self.length = stream, rate, length

    def blocks(self) -> Iterator[tuple[int, int]]:
        step = BLOCK_SECONDS * self.rate
        for start in range(0, self.length, step):
            yield start, min(start + step, self.length)

    def pcm(self, start: int, stop: int) -> np.ndarray:
        """int16 PCM of a block."""
        raise NotImplementedError

    def whole(self) -> np.ndarray:
        return self.pcm(0, self.length)

    def at(self, rate: int, length: int) -> _Line:
        """This line at another rate, exactly `length` samples long."""
        if rate == self.rate and length == self.length:
            return self
        return _PcmLine(self.stream, rate, fit(resample(self.whole(), self.rate, rate), length))


class _CodesLine(_Line):
    """A G.711 stream: its code bytes as recorded, shifted, padded, pauses silenced per block."""

    def __init__(
        self,
        stream: StreamParts,
        codes: np.ndarray,
        offset: int,
        length: int,
        silent: list[tuple[int, int]],
    ) -> None:
        super().__init__(stream, 8000, length)
        assert stream.codec is not None
        self.law, self.source, self.offset, self.silent = stream.codec, codes, offset, silent
        self.silence = G711_SILENCE[stream.codec]

    def codes(self, start: int, stop: int) -> np.ndarray:
        """The code bytes of a block."""
        first, last = start - self.offset, stop - self.offset
        muted = [(a, b) for a, b in self.silent if a < stop and b > start]
        if first >= 0 and last <= self.source.size and not muted:
            return self.source[first:last]  # the common case: no copy
        block = np.full(stop - start, self.silence, dtype=np.uint8)
        lo, hi = max(first, 0), min(last, self.source.size)
        if hi > lo:
            block[lo - first : hi - first] = self.source[lo:hi]
        for a, b in muted:
            block[max(a - start, 0) : b - start] = self.silence
        return block

    def pcm(self, start: int, stop: int) -> np.ndarray:
        return decode_g711(self.codes(start, stop), self.law)

    def unrecorded(self, start: int, stop: int) -> bool:
        """Whether a block holds none of the recorded codes (all of it is the law's silence)."""
        return min(stop - self.offset, self.source.size) <= max(start - self.offset, 0)


_SILENT_PAIRS: dict[tuple[str, str, int, int], tuple[np.ndarray, list[np.ndarray]]] = {}
"""A whole block of two G.711 legs without a recorded code (a call without RTP, a leg that
started late), decoded, with each channel's frame levels, by laws, length and frame: the same
arrays every time, so computed once per process (read-only)."""


def _silent_pair(
    left: _CodesLine, right: _CodesLine, size: int, frame_ms: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    key = (left.law, right.law, size, frame_ms)
    known = _SILENT_PAIRS.get(key)
    if known is None:
        block = decode_g711_stereo(
            np.full(size, left.silence, np.uint8),
            np.full(size, right.silence, np.uint8),
            left.law,
            right.law,
        )
        levels = [frame_levels(block[:, c], left.rate, frame_ms) for c in range(2)]
        for array in (block, *levels):
            array.flags.writeable = False
        known = _SILENT_PAIRS[key] = (block, levels)
    return known


class _PcmLine(_Line):
    """A stream decoded in full (G.722, Opus, or resampled)."""

    def __init__(self, stream: StreamParts, rate: int, samples: np.ndarray) -> None:
        super().__init__(stream, rate, samples.size)
        self.samples = samples

    def pcm(self, start: int, stop: int) -> np.ndarray:
        return self.samples[start:stop]


def _line(
    stream: StreamParts, epoch: float, end: float, pauses: Sequence[tuple[float, float | None]]
) -> _Line:
    rate = stream.rate
    length = max(round((end - epoch) * rate), 0)
    offset = round((stream.start(epoch) - epoch) * rate)
    shift = offset / rate
    offset += stream.origin if stream.codes is not None else 0
    own = ((s + shift, None if e is None else e + shift) for s, e in stream.pause_spans())
    silent = _sample_spans([*pauses, *own], rate, length)
    if stream.codes is not None:
        return _CodesLine(stream, stream.codes, offset, length, silent)
    samples = fit(stream.decoded(), length, offset)
    if silent:
        samples = samples.copy() if samples is stream.decoded() else samples
        for a, b in silent:
            samples[a:b] = 0
    return _PcmLine(stream, rate, samples)


class _Levels:
    """Frame levels of each stream for voice activity, taken from the first file written."""

    def __init__(self, enabled: bool, frame_ms: int) -> None:
        self.enabled, self.frame_ms = enabled, frame_ms
        self.done: dict[int, list[np.ndarray]] = {}
        self._open: dict[int, list[np.ndarray]] = {}

    def wants(self, line: _Line) -> bool:
        return self.enabled and line.stream.index not in self.done

    def add(
        self, lines: Sequence[_Line], block: np.ndarray, known: Sequence[np.ndarray] = ()
    ) -> None:
        """Levels of a mono block of one line or an interleaved block of several (`known`:
        already computed, one per line)."""
        columns = [block] if block.ndim == 1 else [block[:, c] for c in range(block.shape[1])]
        for n, (line, pcm) in enumerate(zip(lines, columns, strict=True)):
            if self.wants(line):
                levels = known[n] if known else frame_levels(pcm, line.rate, self.frame_ms)
                self._open.setdefault(line.stream.index, []).append(levels)

    def close(self) -> None:
        self.done.update(self._open)
        self._open = {}

    def of(self, line: _Line) -> np.ndarray:
        if line.stream.index not in self.done:
            self.done[line.stream.index] = [frame_levels(line.whole(), line.rate, self.frame_ms)]
        return np.concatenate(self.done[line.stream.index])


# -- participants --------------------------------------------------------------------------


def _heard_on(
    participants: Sequence[ParticipantInfo], streams: Sequence[StreamParts]
) -> dict[int, list[ParticipantInfo]]:
    if not any(p.streams or p.labels for p in participants):
        return {s.index: list(participants[n : n + 1]) for n, s in enumerate(streams)}
    return {
        s.index: [p for p in participants if s.index in p.streams or (s.label in p.labels)]
        for s in streams
    }


def _voice(stream: StreamParts, heard: Sequence[ParticipantInfo]) -> str:
    """Whose voice a stream is, for turns: its one participant, else the stream itself."""
    return heard[0].id if len(heard) == 1 else f"stream-{stream.index}"


# -- writing -------------------------------------------------------------------------------


def _iso(value: datetime | float) -> str:
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _write_pcm(fmt: str, path: Path, audio: audio_out.Audio, rate: int, durable: bool) -> str:
    if fmt == "flac":
        audio_out.write_flac(path, audio, rate, durable=durable)
        return "flac"
    if fmt == "opus":
        audio_out.write_opus(path, audio, rate, durable=durable)
        return "opus"
    audio_out.write_wav(path, audio, rate, durable=durable)
    return "pcm_s16le"


class _Output:
    """The files of one recording, written in blocks; levels for voice activity on the way."""

    def __init__(
        self, directory: Path, stem: str, fmt: str, durable: bool, levels: _Levels
    ) -> None:
        self.directory, self.stem, self.fmt, self.durable = directory, stem, fmt, durable
        self.levels = levels
        self.ext = EXTENSIONS[fmt]
        self.files: list[Path] = []
        self.described: list[dict[str, Any]] = []

    def path(self, suffix: str = "") -> Path:
        return self.directory / f"{self.stem}{suffix}.{self.ext}"

    def add(self, path: Path, lines: Sequence[_Line], encoding: str) -> None:
        self.files.append(path)
        self.described.append(
            {
                "path": path.name,
                "streams": [line.stream.index for line in lines],
                "channels": len(lines),
                "sample_rate": lines[0].rate,
                "encoding": encoding,
                "duration_s": round(lines[0].length / lines[0].rate, 3),
            }
        )
        self.levels.close()

    def _pcm_blocks(self, lines: Sequence[_Line]) -> Iterator[np.ndarray]:
        """Mono or interleaved stereo PCM blocks of lines of equal rate and length."""
        pair = [line for line in lines if isinstance(line, _CodesLine)]
        whole = BLOCK_SECONDS * lines[0].rate
        for start, stop in lines[0].blocks():
            if len(pair) == len(lines) == 2:  # two G.711 legs: one lookup per stereo sample
                left, right = pair
                empty = left.unrecorded(start, stop) and right.unrecorded(start, stop)
                if empty and stop - start == whole:
                    block, known = _silent_pair(left, right, whole, self.levels.frame_ms)
                    self.levels.add(lines, block, known)
                    yield block
                    continue
                block = decode_g711_stereo(
                    left.codes(start, stop), right.codes(start, stop), left.law, right.law
                )
            elif len(lines) == 1:
                block = lines[0].pcm(start, stop)
            else:
                block = np.stack([line.pcm(start, stop) for line in lines], axis=1)
            self.levels.add(lines, block)
            yield block

    def _code_blocks(self, lines: Sequence[_CodesLine]) -> Iterator[np.ndarray]:
        """G.711 code blocks, mono or interleaved, of lines of the same law."""
        for start, stop in lines[0].blocks():
            channels = [line.codes(start, stop) for line in lines]
            for line, codes in zip(lines, channels, strict=True):
                if self.levels.wants(line):
                    self.levels.add([line], decode_g711(codes, line.law))
            yield channels[0] if len(lines) == 1 else np.stack(channels, axis=1)

    def mixed(self, lines: Sequence[_Line], rate: int, length: int) -> None:
        """The stereo (two streams) or mono (one stream) file of the call."""
        path = self.path()
        if self.fmt == "wav-g711":
            legs = [line for line in lines if isinstance(line, _CodesLine)]
            if len(legs) != len(lines) or len({leg.law for leg in legs}) != 1:
                return  # no common G.711 form: the caller writes a file per stream
            law = legs[0].law
            audio_out.write_wav_g711(path, self._code_blocks(legs), law, durable=self.durable)
            self.add(path, lines, f"g711_{law}".lower())
            return
        lines = [line.at(rate, length) for line in lines]
        encoding = _write_pcm(self.fmt, path, self._pcm_blocks(lines), rate, self.durable)
        self.add(path, lines, encoding)

    def separate(self, line: _Line) -> None:
        """One stream's own file, at the rate it carries."""
        path = self.path(f".stream-{line.stream.index}")
        if self.fmt == "wav-g711" and isinstance(line, _CodesLine):
            audio_out.write_wav_g711(
                path, self._code_blocks([line]), line.law, durable=self.durable
            )
            encoding = f"g711_{line.law}".lower()
        else:
            fmt = "wav" if self.fmt == "wav-g711" else self.fmt
            encoding = _write_pcm(fmt, path, self._pcm_blocks([line]), line.rate, self.durable)
        self.add(path, [line], encoding)


def _write_json(path: Path, data: Mapping[str, Any], durable: bool) -> None:
    with audio_out.atomic_file(path, durable=durable) as out:
        # compact: with `indent` the json module falls back to its pure-Python encoder
        out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _previous_files(sidecar: Path) -> set[str]:
    data = _read_json(sidecar)
    files = data.get("files") if data else None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


# -- the whole call ------------------------------------------------------------------------


def finalise_call(
    parts_dir: str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    stem: str,
    call: CallInfo,
    fmt: Format | str = "wav",
    channels: Channels | str = "stereo",
    participants: Sequence[ParticipantInfo] = (),
    pauses: Sequence[Pause] | None = None,
    metrics: bool = True,
    vad: VadConfig | None = None,
    durable: bool = True,
    remove_parts: bool = False,
) -> FinalisedRecording:
    """Write the final files and the sidecar of one recording from its parts (see module doc).

    `pauses` are the recording's pauses as the SIP layer knows them (their audio is silenced);
    None takes the times every stream had recorded as paused. `metrics=False` skips voice
    activity (the sidecar's `metrics` is then null). `durable=False` skips the fsyncs.
    """
    if fmt not in FORMATS:
        raise ValueError(f"recording.format must be one of {FORMATS}, not {fmt!r}")
    if channels not in CHANNELS:
        raise ValueError(f"recording.channels must be one of {CHANNELS}, not {channels!r}")
    for when in (call.started_at, call.ended_at, *(t for p in pauses or () for t in p)):
        if when is not None and when.tzinfo is None:
            raise ValueError(f"times must be timezone-aware, got {when!r}")
    parts, directory = Path(parts_dir), Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    loaded = load_streams(parts)
    # an interrupted earlier run's temporary files, by name: the day folder is never listed
    clean_leftovers(directory, stem, (s.index for s in loaded))
    streams = [s for s in loaded if s.codec is not None]
    epochs = [s.epoch for s in streams if s.epoch is not None]
    epoch = min(epochs) if epochs else call.started_at.timestamp()
    rate = max((s.rate for s in streams), default=8000)
    if call.ended_at is not None:
        end = max(call.ended_at.timestamp(), epoch)
    else:
        now = time.time()  # nothing recorded can lie beyond it
        for s in streams:
            s.limit = max(round((now - s.start(epoch)) * s.rate), 0)
        end = max((s.start(epoch) + s.native_length() / s.rate for s in streams), default=epoch)
    length = max(round((end - epoch) * rate), 0)

    call_pauses = [
        (p[0].timestamp() - epoch, None if p[1] is None else p[1].timestamp() - epoch)
        for p in pauses or ()
    ]
    for s in streams:
        s.limit = max(round((end - s.start(epoch)) * s.rate), 0) if s.limit is None else s.limit
    alignment = align(streams, epoch, end)
    if fmt == "wav-g711":
        for s in streams:
            if s.composed:
                used = ", ".join(dict.fromkeys(x.fmt.name for x in s.sources or ()))
                s.notes.append(
                    f"the codec changed during the stream ({used}): no single G.711 form, "
                    "written as a PCM16 WAV of its own"
                )
    lines = [_line(s, epoch, end, call_pauses) for s in streams]
    vad = vad or VadConfig()
    levels = _Levels(metrics, vad.frame_ms)

    out = _Output(directory, stem, fmt, durable, levels)
    if channels != "separate" and lines:
        out.mixed(lines[:2], rate, length)
    # every stream in a file of its own: asked for, or not all in the mixed file
    if channels != "stereo" or len(lines) > 2 or (lines and not out.files):
        for line in lines:
            out.separate(line)

    heard = _heard_on(participants, streams)
    conversation = None
    if metrics and lines:
        voices = [
            (_voice(line.stream, heard[line.stream.index]), levels.of(line)) for line in lines
        ]
        conversation = analyse_levels(voices, vad)

    if pauses is not None:
        pause_list = [(p[0].timestamp(), end if p[1] is None else p[1].timestamp()) for p in pauses]
    else:
        pause_list = [(epoch + s, epoch + e) for s, e in common_pauses(streams, epoch, end)]
    typed = _sidecar(
        call,
        fmt,
        channels,
        rate,
        epoch,
        end,
        out,
        streams,
        loaded,
        heard,
        participants,
        pause_list,
        conversation,
        alignment,
    )
    metadata = typed.to_dict()
    verdict = judge(call.started_at, call.flags, loaded, epoch, end, call_pauses, metadata)
    sidecar = directory / f"{stem}.json"
    previous = _previous_files(sidecar)
    _write_json(sidecar, metadata, durable)
    if durable:  # the renames too, before anything they replace is deleted
        _fsync_directory(directory)
    for name in previous - {p.name for p in out.files}:
        stale = directory / name
        if stale.parent == directory and name.startswith(stem):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    if remove_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return FinalisedRecording(
        sidecar=sidecar,
        files=tuple(out.files),
        duration_s=length / rate,
        sample_rate=rate,
        media_epoch=datetime.fromtimestamp(epoch, UTC),
        conversation=conversation,
        metadata=metadata,
        verdict=verdict,
    )


def _sidecar(
    call: CallInfo,
    fmt: str,
    channels: str,
    rate: int,
    epoch: float,
    end: float,
    out: _Output,
    streams: Sequence[StreamParts],
    loaded: Sequence[StreamParts],
    heard: Mapping[int, Sequence[ParticipantInfo]],
    participants: Sequence[ParticipantInfo],
    pauses: Sequence[tuple[float, float]],
    conversation: Conversation | None,
    alignment: Mapping[str, Any],
) -> Sidecar:
    mixed = next((f for f in out.described if f["path"] == out.path().name), None)
    positions = ["left", "right"] if mixed and len(mixed["streams"]) == 2 else ["mono"]
    channel_of = dict(zip(mixed["streams"], positions, strict=False)) if mixed else {}

    def participant(p: ParticipantInfo) -> SidecarParticipant:
        indexes = [i for i, heard_here in heard.items() if p in heard_here]
        channel = next((channel_of[i] for i in indexes if i in channel_of), None)
        return SidecarParticipant(p.id, p.name, p.aor, channel, indexes)

    def stream(s: StreamParts) -> SidecarStream:
        info = s.info
        ssrcs = [x.get("ssrc") for x in info.get("ssrcs") or () if isinstance(x, Mapping)]
        ids = [p.id for p in heard.get(s.index, ())]
        ms = 1000 / s.clock_rate
        return SidecarStream(
            index=s.index,
            label=s.label,
            participant=ids[0] if len(ids) == 1 else None,
            participants=ids,
            codec=s.codec or info.get("codec"),
            payload_type=info.get("payload_type"),
            ssrc=ssrcs[0] if ssrcs else None,
            ssrcs=ssrcs,
            packets=info.get("packets", 0),
            lost=info.get("lost", 0),
            duplicates=info.get("duplicates", 0),
            late=info.get("late", 0),
            jitter_ms=info.get("jitter_ms", 0.0),
            foreign_packets=info.get("foreign_packets", 0),
            write_errors=info.get("write_errors", 0),
            pauses=[
                Span(
                    start=_iso(s.start(epoch) + a),
                    end=_iso(end if b is None else s.start(epoch) + b),
                )
                for a, b in s.pause_spans()
            ],
            dtmf=[
                Dtmf(
                    at_ms=round(d.get("position", 0) * ms + s.shift * 1000),
                    event=d.get("event"),
                    duration_ms=round(d.get("duration", 0) * ms),
                )
                for d in info.get("dtmf") or ()
                if isinstance(d, Mapping)
            ],
            codecs=s.codecs(s.start(epoch) - epoch, end - epoch),
            unexpected_payload={
                str(pt): n for pt, n in (info.get("unexpected_payload") or {}).items()
            },
            undecodable=s.undecodable,
            recorded=s in streams,
            complete=s.closed,
            problems=s.problems,
            notes=s.notes,
            sr_offset_ms=info.get("sr_offset_ms"),
            sr_offset_reports=info.get("sr_offset_reports", 0),
            alignment_ms=round(s.shift * 1000, 3),
        )

    return Sidecar(
        session_id=call.session_id,
        call_id=call.call_id,
        node_id=call.node_id,
        status=call.status,
        end_reason=call.end_reason,
        started_at=_iso(call.started_at),
        ended_at=_iso(call.ended_at or end),
        media_epoch=_iso(epoch),
        duration_s=round(end - epoch, 3),
        format=fmt,
        channels=channels,
        sample_rate=rate,
        files=[p.name for p in out.files],
        audio=out.described,
        participants=[participant(p) for p in participants],
        streams=[stream(s) for s in loaded],
        pauses=[Span(start=_iso(a), end=_iso(b)) for a, b in pauses],
        metrics=conversation.metrics() if conversation is not None else None,
        alignment=dict(alignment),
    )
