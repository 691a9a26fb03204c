"""Per-stream recording files of ``FORMAT.md``: writers for the receive path, readers for the rest.

Writers do plain file I/O on a raw descriptor and never read a clock: the caller passes the time
to :meth:`~WavG711Writer.tick`. Each file is born whole: its header is written to a temporary name
and renamed into place, so a stream file that exists always has a complete header.

Crash safety. Payload is buffered in memory and written (one ``pwrite``) once the buffer holds
``buffer_ms`` of audio (100 ms by default, or 4 KiB for frame logs), at every ``tick`` and at
close; a ``.wav``'s header is rewritten after each such write, so its sizes are exact. Bytes
handed to the kernel survive SIGKILL of the process (the page cache is the kernel's), so what
SIGKILL loses is what was buffered: at most ``buffer_ms`` of audio, plus what the caller had not
yet handed over (the stream timeline's reorder window, 60 ms by default). Samples the C fast
path copies into a ``.wav`` through its shared mapping, header sizes included, are the kernel's
at once: nothing of them is lost. Nothing is fsync'ed: a power cut may lose what the kernel had
not written back, which is outside what this format promises.

An existing file is continued, not replaced (a restarted node records into the same files): the
writer takes the samples/records already there and appends after them, after cutting a truncated
last frame record.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

G711_LAWS = {"PCMU": 7, "PCMA": 6}  # WAVE format tags
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
G711_RATE = 8000

# RIFF header, fmt chunk (18 bytes: WAVEFORMATEX with cbSize 0), fact chunk, data chunk header.
_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHHH4sII4sI")
WAV_HEADER_SIZE = _WAV_HEADER.size  # 58
_CHUNK = struct.Struct("<4sI")
_DATA_SIZE = struct.Struct("<I")
_FMT = struct.Struct("<HHIIHH")

FRAMES_MAGIC = b"SRFRAMES"
FRAMES_VERSION = 1
_FRAMES_HEADER = struct.Struct("<8sII")
FRAMES_HEADER_SIZE = _FRAMES_HEADER.size  # 16
_RECORD = struct.Struct("<QH")
RECORD_HEADER_SIZE = _RECORD.size  # 10
_RECORD_PACK = _RECORD.pack

FRAMES_BUFFER_BYTES = 4096
_SILENCE_CHUNK = 65536


class StreamFileError(ValueError):
    """A stream file is not in the format of ``FORMAT.md`` (or not ours to continue)."""


class WriteErrors:
    """Writes a writer could not make (disk full): counted, never raised to the receive path.

    The audio they held is lost; positions stay right (a ``.wav`` writes silence in its place
    once the disk takes writes again, a frame log simply lacks those records).
    """

    __slots__ = ("count", "error", "lost")

    def __init__(self) -> None:
        self.count = 0
        self.lost = 0
        """Clock units of audio lost (samples for a ``.wav``; for a frame log, the span of the
        positions of the records dropped)."""
        self.error: str | None = None

    def add(self, exc: OSError, lost: int) -> None:
        self.count += 1
        self.lost += lost
        if self.error is None:
            self.error = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})"


STREAM_FORMAT_VERSION = 2
"""Version of ``stream-<i>.json`` written (1: one codec per stream, no ``stretches``)."""


def media_file_name(index: int, codec: str, payload_type: int | None = None) -> str:
    """``stream-<i>.wav`` for PCMU/PCMA, ``stream-<i>.frames`` for every other codec: the file
    of a stream's primary format; ``stream-<i>.pt<N>.wav|frames`` for another payload type."""
    suffix = "wav" if codec.upper() in G711_LAWS else "frames"
    if payload_type is not None:
        return f"stream-{index}.pt{payload_type}.{suffix}"
    return f"stream-{index}.{suffix}"


def info_file_name(index: int) -> str:
    return f"stream-{index}.json"


def _open_or_create(path: Path, header: bytes, new: bool = False) -> tuple[int, bool]:
    """(descriptor open read-write, whether it was created) of ``path``: the existing file, or
    a new one holding just ``header``, created whole (temp + rename) and kept open. ``new``:
    the caller knows there is none (a file there would be replaced)."""
    if not new:
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            pass
    tmp = os.fspath(path) + ".tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        _pwrite_all(fd, header, 0)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd, True


def _wav_header(law: str, data_size: int) -> bytes:
    return _WAV_HEADER.pack(
        b"RIFF",
        WAV_HEADER_SIZE - 8 + data_size,
        b"WAVE",
        b"fmt ",
        18,
        G711_LAWS[law],
        1,  # channels
        G711_RATE,
        G711_RATE,  # bytes per second
        1,  # block align
        8,  # bits per sample
        0,  # cbSize
        b"fact",
        4,
        data_size,  # samples per channel
        b"data",
        data_size,
    )


PREALLOCATE_SECONDS = 8
"""How far ahead of the samples a ``.wav`` is filled with silence (see :class:`WavG711Writer`)."""


class WavG711Writer:
    """Writes one G.711 stream as a RIFF/WAVE file (mono, 8 kHz, 8-bit µ-law or A-law).

    ``write(position, payload)`` takes payloads in increasing position order (positions are
    samples since the call's media epoch); a gap before a position is filled with the law's
    silence byte, and bytes overlapping what was already written are skipped.

    The header's sizes are the truth: they are rewritten with every write, and the file runs
    ahead of them with up to ``PREALLOCATE_SECONDS`` of silence (written in one go), into which
    the C fast path copies samples through a shared mapping (``reserve``, ``absorb``). Readers
    take the header's size (``read_wav_g711``); ``close`` cuts the silence ahead.

    Sample 0 of the file is position ``origin`` (0 but for a stream's other payload types,
    whose file starts with their first stretch): positions given and ``end`` are absolute.
    An existing file is continued; ``new`` says the caller knows there is none (no look).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        law: str,
        *,
        buffer_ms: int = 100,
        origin: int = 0,
        new: bool = False,
    ) -> None:
        if law not in G711_LAWS:
            raise ValueError(f"law must be PCMU or PCMA, not {law!r}")
        self.path = Path(path)
        self.law = law
        self.silence = SILENCE[law]
        self._limit = max(1, G711_RATE * buffer_ms // 1000)
        self._fd, self.created = _open_or_create(self.path, _wav_header(law, 0), new)
        """Whether this writer created the file (else it continues one)."""
        self._header_size = -1  # a continued file's header may be one write behind
        if self.created:
            self._written = self._room = 0
            self._header_size = 0
        else:
            try:
                self._written, self._room = self._continue()
            except BaseException:
                os.close(self._fd)
                raise
        self.origin = origin
        self._end = origin + self._written  # position after the samples, buffered ones included
        self._buffer = bytearray()
        self._hole = 0  # samples lost to failed writes, not yet replaced by silence on disk
        self.errors = WriteErrors()
        self.closed = False

    def _continue(self) -> tuple[int, int]:
        """(samples present, as read_wav_g711 counts them; samples the file has room for)."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0)
        law, data_offset = _parse_wav_header(data, str(self.path))
        if law != self.law or data_offset != WAV_HEADER_SIZE:
            raise StreamFileError(f"{self.path}: not a {self.law} stream file of ours")
        return _samples_present(data, data_offset, law), size - WAV_HEADER_SIZE

    @property
    def end(self) -> int:
        """Position after the samples so far (written or buffered): the next contiguous one."""
        return self._end

    @property
    def samples_on_disk(self) -> int:
        return self._written

    def fileno(self) -> int:
        """The file's descriptor (the C fast path maps it)."""
        return self._fd

    def write(self, position: int, payload: bytes | memoryview) -> None:
        end = self._end
        if position != end:
            if position > end:
                self._fill(position - end)
            else:
                payload = payload[end - position :]
                if not payload:
                    return
        buffer = self._buffer
        buffer += payload
        self._end += len(payload)
        if len(buffer) >= self._limit:
            self.flush()

    def _fill(self, count: int) -> None:
        buffer = self._buffer
        self._end += count
        while count > 0:
            n = min(count, _SILENCE_CHUNK)
            buffer += bytes((self.silence,)) * n
            count -= n
            if len(buffer) >= _SILENCE_CHUNK:
                self.flush()

    @property
    def pending(self) -> bool:
        """Samples are buffered, or lost ones not yet replaced by silence (no fast path then)."""
        return bool(self._buffer or self._hole)

    def flush(self) -> None:
        """Hand the buffered samples to the kernel, then the header that counts them. A write
        the disk refuses loses the buffered samples it did not take (counted in ``errors``);
        silence takes their place at the next write that succeeds."""
        data = self._buffer
        if not data and not self._hole:
            return
        error = None
        while self._hole and error is None:  # what failed writes lost: silence, in its place
            n = min(self._hole, _SILENCE_CHUNK)
            done, error = self._append(bytes((self.silence,)) * n)
            self._hole -= done
        if data:
            done, error = self._append(data) if error is None else (0, error)
            if error is not None:
                self.errors.add(error, len(data) - done)
                self._hole += len(data) - done
            data.clear()
        self._update_header()

    def _append(self, data: bytes | bytearray) -> tuple[int, OSError | None]:
        """Write after the samples written: (bytes the disk took, the error if not all). The
        samples go first, the silence preallocated ahead of them (room for the fast path) after:
        a disk with little left keeps audio rather than room."""
        grow = self._written + len(data) > self._room
        try:
            done = _pwrite_some(self._fd, data, WAV_HEADER_SIZE + self._written)
        except OSError as exc:
            return 0, exc
        self._written += done
        self._room = max(self._room, self._written)
        if done < len(data):
            return done, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if grow:
            with contextlib.suppress(OSError):  # no room ahead: the next write extends the file
                self._grow(self._written)
        return done, None

    def reserve(
        self, samples: int, put: Callable[[int, bytearray], bool] | None = None
    ) -> tuple[int, int]:
        """Make sure the file has room for ``samples`` more after the ones written (preallocating
        ``PREALLOCATE_SECONDS`` more when it has not); flushes first. Returns the file offsets
        (write at, room ends at) for the C fast path.

        ``put`` (the fast path's ``FastStream.put``) may take the buffered samples into their
        place in the file, header sizes included, through its mapping: the same bytes without
        the two pwrite of a flush (a packet the fast path declined costs no system call)."""
        data = self._buffer
        if (
            put is not None
            and data
            and not self._hole
            and self._written + len(data) <= self._room
            and put(WAV_HEADER_SIZE + self._written, data)
        ):
            self._written += len(data)
            self._header_size = self._written
            data.clear()
        elif data or self._hole:
            self.flush()
        if self._written + samples > self._room:
            try:
                self._grow(self._written + samples)
            except OSError as exc:  # disk full: the fast path gets what room there is
                self.errors.add(exc, 0)
        return WAV_HEADER_SIZE + self._written, WAV_HEADER_SIZE + self._room

    def _grow(self, needed: int) -> None:
        room = needed + PREALLOCATE_SECONDS * G711_RATE
        done = _pwrite_some(
            self._fd,
            bytes((self.silence,)) * (room - self._room),
            WAV_HEADER_SIZE + self._room,
        )
        self._room += done
        if self._room < room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def absorb(self, written: int) -> None:
        """Account for ``written`` samples the C fast path put after ours (and counted in the
        header)."""
        if written:
            if self._buffer:
                raise RuntimeError("samples were appended while this writer had some buffered")
            self._written += written
            self._end += written
            self._header_size = self._written

    def tick(self, now: float) -> None:
        """Flush (which keeps the header exact)."""
        self.flush()

    def _update_header(self) -> None:
        if self._header_size != self._written:
            try:  # rewrites allocated bytes: fails only on a broken disk
                os.pwrite(self._fd, _wav_header(self.law, self._written), 0)
            except OSError as exc:
                self.errors.add(exc, 0)
                return
            self._header_size = self._written

    def close(self) -> None:
        """Flush, pad the data to an even size with one silence sample if needed, final header,
        and cut the preallocated silence.

        (RIFF wants even chunks; a silence sample rather than a pad byte keeps the data size equal
        to the bytes present, so a reader never has to guess which it is.)
        """
        if self.closed:
            return
        if (self._end - self.origin) % 2:
            self._buffer.append(self.silence)
            self._end += 1
        self.flush()
        self._update_header()
        if self._room != self._written:  # else the file ends with the samples already
            os.ftruncate(self._fd, WAV_HEADER_SIZE + self._written)
        os.close(self._fd)
        self.closed = True


def _pwrite_some(fd: int, data: bytes | bytearray, offset: int) -> int:
    """Write as much of ``data`` at ``offset`` as the disk takes; how many bytes that was.
    Raises only when nothing could be written."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            chunk = view[done:]
            try:
                done += os.pwrite(fd, chunk, offset + done)
            except OSError:
                if done == 0:
                    raise
                break
            finally:
                chunk.release()
    finally:
        view.release()
    return done


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        offset += done
        view = view[done:]
    view.release()


def _parse_wav_header(data: bytes, name: str) -> tuple[str, int]:
    """(law, offset of the samples) from the start of a G.711 WAVE file."""
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise StreamFileError(f"{name}: not a RIFF/WAVE file")
    law = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = _CHUNK.unpack_from(data, pos)
        body = pos + 8
        if chunk == b"fmt ":
            if size < _FMT.size or body + _FMT.size > len(data):
                raise StreamFileError(f"{name}: short fmt chunk")
            tag, channels, rate, _, _, bits = _FMT.unpack_from(data, body)
            law = {7: "PCMU", 6: "PCMA"}.get(tag)
            if law is None or channels != 1 or rate != G711_RATE or bits != 8:
                raise StreamFileError(
                    f"{name}: not mono 8 kHz G.711 (tag {tag}, {channels} ch, {rate} Hz, {bits})"
                )
        elif chunk == b"data":
            if law is None:
                raise StreamFileError(f"{name}: data before fmt")
            return law, body
        pos = body + size + (size & 1)
    raise StreamFileError(f"{name}: no data chunk in the header")


def read_wav_g711(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """(``"PCMU"``|``"PCMA"``, samples) of a stream ``.wav``.

    Takes the samples the ``data`` header counts (the writer keeps it exact), or what is present
    when the file is shorter; after them, whatever is not the law's silence up to the end of the
    file (a header left one write behind by a crash) and none of the silence preallocated for
    samples to come.
    """
    data = Path(path).read_bytes()
    law, offset = _parse_wav_header(data, str(path))
    return law, data[offset : offset + _samples_present(data, offset, law)]


def _samples_present(data: bytes, offset: int, law: str) -> int:
    """Samples of a stream ``.wav`` whose first sample is at ``offset``: see read_wav_g711."""
    declared: int = _DATA_SIZE.unpack_from(data, offset - 4)[0]
    body = len(data) - offset
    if body <= declared:
        return body
    after = data[offset + declared :].rstrip(bytes((SILENCE[law],)))
    return declared + len(after)


class FramesWriter:
    """Writes a frame log (``.frames``): one record per RTP payload, at its position (an
    existing log is continued; ``new`` says the caller knows there is none: no look)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock_rate: int,
        *,
        buffer_ms: int = 100,
        new: bool = False,
    ) -> None:
        self.path = Path(path)
        self.clock_rate = clock_rate
        self._limit_ticks = max(1, clock_rate * buffer_ms // 1000)
        header = _FRAMES_HEADER.pack(FRAMES_MAGIC, FRAMES_VERSION, clock_rate)
        self._fd, self.created = _open_or_create(self.path, header, new)
        """Whether this writer created the file (else it continues one)."""
        if self.created:
            self._last = -1
            self._size = FRAMES_HEADER_SIZE  # end of the last whole record
        else:
            try:
                self._last = self._continue()
            except BaseException:
                os.close(self._fd)
                raise
            self._size = os.lseek(self._fd, 0, os.SEEK_CUR)
        self._buffer = bytearray()
        self._buffer_first = 0
        self.errors = WriteErrors()
        self.closed = False

    def _continue(self) -> int:
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        clock_rate, records, whole = _parse_frames(data, str(self.path))
        if clock_rate != self.clock_rate:
            raise StreamFileError(f"{self.path}: clock rate {clock_rate}, not {self.clock_rate}")
        if whole < len(data):
            os.ftruncate(self._fd, whole)
        os.lseek(self._fd, whole, os.SEEK_SET)
        return records[-1][0] if records else -1

    @property
    def last_position(self) -> int:
        """Position of the last record written or buffered (-1 when none)."""
        return self._last

    def write(self, position: int, payload: bytes | memoryview) -> None:
        buffer = self._buffer
        if not buffer:
            self._buffer_first = position
        buffer += _RECORD_PACK(position, len(payload))
        buffer += payload
        self._last = position
        if len(buffer) >= FRAMES_BUFFER_BYTES or position - self._buffer_first >= self._limit_ticks:
            self.flush()

    def flush(self) -> None:
        """Append the buffered records. A write the disk refuses drops them (counted in
        ``errors``) and cuts what it wrote of them, so that the log stays whole records."""
        if self._buffer:
            try:
                _pwrite_all(self._fd, self._buffer, self._size)
                self._size += len(self._buffer)
            except OSError as exc:
                self.errors.add(exc, self._last - self._buffer_first)
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            self._buffer.clear()

    def tick(self, now: float) -> None:
        """Flush (a frame log has no header to update)."""
        self.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        os.close(self._fd)
        self.closed = True


def _parse_frames(data: bytes, name: str) -> tuple[int, list[tuple[int, bytes]], int]:
    """(clock rate, whole records, offset just past the last whole record)."""
    if len(data) < FRAMES_HEADER_SIZE:
        raise StreamFileError(f"{name}: shorter than a frame log header")
    magic, version, clock_rate = _FRAMES_HEADER.unpack_from(data)
    if magic != FRAMES_MAGIC or version != FRAMES_VERSION:
        raise StreamFileError(f"{name}: not a version {FRAMES_VERSION} frame log")
    records: list[tuple[int, bytes]] = []
    pos = FRAMES_HEADER_SIZE
    size = len(data)
    unpack = _RECORD.unpack_from
    while pos + RECORD_HEADER_SIZE <= size:
        position, length = unpack(data, pos)
        start = pos + RECORD_HEADER_SIZE
        if start + length > size:
            break
        records.append((position, data[start : start + length]))
        pos = start + length
    return clock_rate, records, pos


def read_frames(path: str | os.PathLike[str]) -> tuple[int, list[tuple[int, bytes]]]:
    """(clock rate, [(position, payload)]) of a ``.frames`` log; a truncated last record is
    ignored."""
    clock_rate, records, _ = _parse_frames(Path(path).read_bytes(), str(path))
    return clock_rate, records


# -- stream-<i>.json --------------------------------------------------------------------------


def _plain(item: Any) -> Any:
    return dict(item.__dict__) if hasattr(item, "__dataclass_fields__") else item


@dataclass(frozen=True)
class SsrcSpan:
    """An SSRC recorded on the stream, from ``first_position`` on (None: nothing placed yet)."""

    ssrc: int
    first_position: int | None


@dataclass(frozen=True)
class PauseSpan:
    """A pause (SDP ``inactive``), in positions; ``end`` is None while it lasts."""

    start: int
    end: int | None


@dataclass(frozen=True)
class GapSpan:
    """A hole in the stream's audio that no pause explains (FORMAT.md), in positions."""

    start: int
    end: int


@dataclass(frozen=True)
class DtmfRecord:
    """One RFC 4733 telephone-event: where it starts, which key, how long (in clock units)."""

    position: int
    event: int
    duration: int


@dataclass(frozen=True)
class Stretch:
    """A stretch of a stream in one payload format, from ``start`` (in ``clock_rate`` units
    since the epoch) to the next stretch's start (the end of the call for the last).

    Its packets are in ``file`` (one per payload type), whose sample 0 is position ``origin``
    for a ``.wav`` (positions are absolute in a ``.frames``: origin 0). ``packets`` counts the
    packets received while it was current.
    """

    payload_type: int
    codec: str
    clock_rate: int
    start: int
    file: str
    channels: int = 1
    fmtp: str | None = None
    origin: int = 0
    packets: int = 0


@dataclass
class StreamInfo:
    """The content of ``stream-<i>.json``: the stream's description and statistics."""

    index: int
    label: str | None
    codec: str
    payload_type: int
    clock_rate: int
    channels: int
    epoch: float
    ssrcs: list[SsrcSpan] = field(default_factory=list)
    packets: int = 0
    lost: int = 0
    duplicates: int = 0
    late: int = 0
    jitter_ms: float = 0.0
    first_position: int | None = None
    last_position: int | None = None
    pauses: list[PauseSpan] = field(default_factory=list)
    dtmf: list[DtmfRecord] = field(default_factory=list)
    closed: bool = False
    unclean_restarts: list[int] = field(default_factory=list)
    """Positions where recording resumed after an unclean stop (a crash of the node or of its
    worker): the counters of the up to ``info_interval`` seconds before each were lost."""
    sr_offset_ms: float | None = None
    """Where the stream's audio sits in the file against its sender's clock: the file's time of
    an RTCP SR's RTP timestamp minus the SR's NTP time, in ms, the median of the last SRs of
    the SSRC recorded (None: no SR). Only differences between streams of one sender mean
    something: stream B's offset larger by Δ than A's puts B's audio Δ late against A's."""
    sr_offset_reports: int = 0
    """How many SRs ``sr_offset_ms`` is the median of (at most 16)."""
    gaps: list[GapSpan] = field(default_factory=list)
    """Holes of at least 100 ms in the audio that no pause explains (loss bursts, the SRC
    stopping, the downtime of a restart), the first ``GAPS_KEEP``; the totals count them all."""
    gap_count: int = 0
    gap_length: int = 0
    """How many gaps there were and their total length (clock units)."""
    version: int = STREAM_FORMAT_VERSION
    stretches: list[Stretch] = field(default_factory=list)
    """The stream's stretches in time order (version 2; empty in version 1: one codec)."""
    unexpected_payload: dict[int, int] = field(default_factory=dict)
    """Packets dropped per payload type never accepted (JSON keys are strings)."""
    switches_refused: int = 0
    """Packets of another accepted format dropped after ``MAX_SWITCHES`` switches."""
    foreign_packets: int = 0
    """Datagrams to the stream's ports from addresses ``media.source_check`` refused: dropped
    before they could reach the recording."""
    write_errors: int = 0
    """Writes of the stream's files the disk refused (full): their audio is lost."""
    write_lost_ms: int = 0
    """How much audio those writes held (ms; approximate for a frame log)."""
    write_error: str | None = None
    """The first such error (``No space left on device (ENOSPC)``)."""

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives (for the flat dataclasses in the lists), at a tenth
        of its cost (2 µs rather than 20 µs: most of a sidecar rewrite's time went there)."""
        data: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value.__class__ is list:
                value = [_plain(item) for item in value]
            elif value.__class__ is dict:
                value = dict(value)
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamInfo:
        values = dict(data)
        values["ssrcs"] = [SsrcSpan(**s) for s in values.get("ssrcs", [])]
        values["pauses"] = [PauseSpan(**p) for p in values.get("pauses", [])]
        values["dtmf"] = [DtmfRecord(**d) for d in values.get("dtmf", [])]
        values["gaps"] = [GapSpan(**g) for g in values.get("gaps", [])]
        fields = Stretch.__dataclass_fields__
        values["stretches"] = [
            Stretch(**{k: v for k, v in s.items() if k in fields})
            for s in values.get("stretches") or []
        ]
        values["unexpected_payload"] = {
            int(pt): int(n) for pt, n in (values.get("unexpected_payload") or {}).items()
        }
        values.setdefault("version", 1)
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in known})


# Sidecars are rewritten thousands of times per worker, and creating a file costs an inode
# allocation (0.2-0.7 ms on ext4). So ``stream-<i>.json.tmp`` is kept as a persistent twin: the
# new JSON is written into it in place (pwrite + ftruncate), then the two names are swapped
# atomically with renameat2(RENAME_EXCHANGE). The old sidecar's inode is then the twin, which the
# next write reuses (~15 µs of file work, ~24 µs a write with the JSON encoding, against
# 0.4-0.8 ms for a new file renamed over the sidecar). The first write renames the twin into place;
# the second creates a new twin. A writer that knows which of the two it is (a recorder of a new
# stream) skips what cannot apply: the first creates the temporary file with O_EXCL and renames
# it (no lock: nobody can hold a file just made; no exchange: there is no sidecar), the second
# makes the twin with O_EXCL (no lock, nothing to cut) before the exchange. A process whose
# renameat2 is missing or refused (by the filesystem, or a seccomp filter) writes a new
# temporary file and renames it over the sidecar instead, as every write did before.
#
# Reusing an inode means writing into a file that a reader may still have open (it was the
# sidecar until the last swap). So the writer takes an exclusive flock on the twin before writing
# into it, and ``read_stream_info`` a shared one before reading: a twin that a reader holds is
# left to the reader (unlinked, still readable through its descriptor) and a new one created.
# Readers that take no lock (cat, jq) may see a torn file if they hold it across two rewrites.

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_EXCHANGE_REFUSED = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}
)


def _load_renameat2() -> Any:
    """libc's ``renameat2``, or None (glibc before 2.28, not Linux)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    c_int, c_path = ctypes.c_int, ctypes.c_char_p
    function.argtypes = (c_int, c_path, c_int, c_path, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_renameat2: Any = _load_renameat2()
_exchange_works = _renameat2 is not None
"""Cleared for the rest of the process when the exchange (or a lock) is refused once."""


def _exchange(a: bytes, b: bytes) -> int:
    """Swap the names ``a`` and ``b`` atomically: 0, or the errno of the failure."""
    if _renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return 0
    return ctypes.get_errno() or errno.EINVAL


def _write_at_zero(fd: int, data: bytes) -> None:
    """Make the file hold exactly ``data``."""
    size = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)
    if size > len(data):  # only when shorter: an ftruncate costs a fifth of the whole write
        os.ftruncate(fd, len(data))


def _write_twin(tmp: bytes, name: bytes, data: bytes, no_twin: bool = False) -> bool:
    """Publish ``data`` through the twin; False (nothing done) when locks are not available.
    ``no_twin``: the caller knows there is none; one made with O_EXCL is nobody else's yet, so
    it needs no lock and holds nothing to cut (when one exists after all: the usual way)."""
    global _exchange_works
    fd = -1
    if no_twin:
        with contextlib.suppress(FileExistsError):
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    if fd >= 0:
        try:
            _pwrite_all(fd, data, 0)
            error = _exchange(tmp, name)
            if error:  # as below
                os.replace(tmp, name)
                if error in _EXCHANGE_REFUSED:
                    _exchange_works = False
        finally:
            os.close(fd)
        return True
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a reader holds this inode: leave it to them
            os.close(fd)
            fd = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError:  # no locks on this filesystem: readers could not protect themselves
            _exchange_works = False
            return False
        _write_at_zero(fd, data)
        error = _exchange(tmp, name)
        if error:
            # ENOENT: no sidecar yet, the twin becomes it. Refused: the plain rename, from now
            # on. Anything else: os.replace most likely raises it again.
            os.replace(tmp, name)
            if error in _EXCHANGE_REFUSED:
                _exchange_works = False
    finally:
        if fd >= 0:
            os.close(fd)
    return True


def _write_new(tmp: bytes, name: bytes, data: bytes) -> None:
    """Publish ``data`` through a new temporary file renamed over the sidecar."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a twin left by the exchange may still be held by a reader
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _write_at_zero(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, name)


def _write_first(tmp: bytes, name: bytes, data: bytes) -> bool:
    """Publish the first sidecar through a fresh temporary file renamed into place: False
    (nothing done) when ``tmp`` exists (a twin or a crash's leftover: the general path)."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        try:
            _pwrite_all(fd, data, 0)
        finally:
            os.close(fd)
        os.rename(tmp, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def write_stream_info(
    path: str | os.PathLike[str], info: StreamInfo, *, new: bool = False, no_twin: bool = False
) -> None:
    """Write the sidecar atomically: a reader sees the old or the new one, never a partial file.

    The JSON is written into the twin ``<path>.tmp``, which then takes the sidecar's name; the
    sidecar's previous content is left in the twin (see the comment above). ``new``: the caller
    found no sidecar; a fresh temporary file then takes its name, which needs no lock (no
    reader can hold a file just created) and no exchange (there is nothing to swap with): it
    leaves the sidecar and no twin, as the first write through the twin does. ``no_twin``: the
    caller knows there is no twin (the second write of a stream it created), so the one made
    needs no lock (see ``_write_twin``).
    """
    name = os.fsencode(path)
    tmp = name + b".tmp"
    data = json.dumps(info.to_dict(), separators=(",", ":")).encode()
    if new and _write_first(tmp, name, data):
        return
    if not (_exchange_works and _write_twin(tmp, name, data, no_twin)):
        _write_new(tmp, name, data)


def read_stream_info(path: str | os.PathLike[str]) -> StreamInfo:
    with open(path, "rb") as f:
        # the writer may be about to reuse this inode (see above): hold it still while reading
        with contextlib.suppress(OSError):  # e.g. ENOLCK on a filesystem without locks
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        data = f.read()
    return StreamInfo.from_dict(json.loads(data))
