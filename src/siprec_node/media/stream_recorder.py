"""Records one negotiated stream into its files of ``FORMAT.md``.

:class:`StreamRecorder` glues the receive path together for one m-line: SRTP unprotect when
negotiated, RTP header parse, :class:`~siprec_node.media.timeline.StreamTimeline` placement, and
the stream file writer (``stream-<i>.wav`` for PCMU/PCMA, ``stream-<i>.frames`` otherwise) with
its ``stream-<i>.json`` sidecar. It owns no socket and reads no clock: the caller passes each
datagram with its arrival time (Unix seconds, the clock of the call's ``epoch``) and calls
:meth:`~StreamRecorder.tick` about once a second.

Crash safety: after SIGKILL the files hold everything but what the Python path had buffered
(at most ``buffer_ms``, 100 ms, of audio) and the reorder window (60 ms) not yet placed, so at
most 160 ms plus one packet; packets the C fast path took are in the file at once. The sidecar
is at most ``info_interval`` (30 s) old when ``tick`` is called about once a second (``on_rtp``
never writes it).

A recorder constructed again on the same folder (node restart) continues the files: samples
already there are kept, statistics, pauses, DTMF and SSRCs of the sidecar are carried over, and
new packets are placed after what was written.

Payload types: every accepted audio format of the stream (``NegotiatedStream.formats``) is
recorded. The stream's first format has the v1 file names; each other payload type gets its
own file, ``stream-<i>.pt<N>.wav|frames``, opened at its first packet. A packet of another
format than the current one starts a stretch (see ``StreamTimeline``): the sidecar's
``stretches`` is rewritten at once, before the new file gets a byte, so a file that exists is
always described. The C fast path follows the current stretch when it is G.711.
:meth:`~StreamRecorder.accept` adds the payload types a re-INVITE's answer accepted.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from siprec_node.media.rtp import is_rtcp, parse_rtcp, parse_rtp
from siprec_node.media.srtp import SrtpReceiver
from siprec_node.media.stream_file import (
    G711_LAWS,
    FramesWriter,
    GapSpan,
    PauseSpan,
    StreamFileError,
    StreamInfo,
    Stretch,
    WavG711Writer,
    WriteErrors,
    info_file_name,
    media_file_name,
    read_stream_info,
    write_stream_info,
)
from siprec_node.media.timeline import (
    GAPS_KEEP,
    SWITCH,
    Placed,
    StreamTimeline,
    TimelineFormat,
    frame_duration,
)
from siprec_node.siprec.codecs import PayloadFormat
from siprec_node.siprec.sdp_answer import NegotiatedStream

_HEADER = struct.Struct("!BBHII")
_unpack_header = _HEADER.unpack_from


_FAST_ROOM = 3 * 8000
"""Room (samples) the fast path gets ahead of it at each arming: more than a tick apart."""


class _Unwritable:
    """A new stretch's file that could not be created (disk full): its packets are lost and
    counted; creating the file is tried again at the next switch to its format."""

    origin = 0

    def __init__(self, error: OSError, position: int) -> None:
        self.errors = WriteErrors()
        self.errors.add(error, 0)
        self.first = position
        self.last_position = position - 1

    def write(self, position: int, payload: bytes | memoryview) -> None:
        self.last_position = max(self.last_position, position)
        self.errors.lost = max(self.errors.lost, self.last_position - self.first)

    def flush(self) -> None:
        """Nothing is held."""

    def tick(self, now: float) -> None:
        """Nothing is held."""

    def close(self) -> None:
        """Nothing is open."""


Writer = WavG711Writer | FramesWriter | _Unwritable


def _formats(stream: NegotiatedStream) -> list[PayloadFormat]:
    """The stream's accepted audio formats, its first one first."""
    assert stream.codec is not None and stream.payload_type is not None
    first = PayloadFormat(
        stream.payload_type,
        stream.codec.upper(),
        stream.clock_rate or 8000,
        stream.channels or 1,
        stream.fmtp,
    )
    rest = [f for f in stream.formats if f.payload_type != first.payload_type]
    return [first, *rest]


def _make_folder(directory: Path) -> bool:
    """Make ``directory`` (and its parents) if missing: whether it was made (one mkdir when
    the parents exist, as they do for a call's second stream and after the first call of a
    day)."""
    try:
        os.mkdir(directory)
    except FileExistsError:
        return False
    except FileNotFoundError:
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(directory)
        except FileExistsError:
            return False
    return True


def _end_of(writer: Writer) -> int:
    """The first position after what a writer holds (its clock)."""
    if isinstance(writer, WavG711Writer):
        return writer.end
    return writer.last_position + 1


@dataclass(frozen=True)
class StreamStats:
    """What one stream's receive path counted (the sidecar has the subset FORMAT.md lists)."""

    index: int
    label: str | None
    codec: str
    ssrc: int | None
    packets: int
    lost: int
    duplicates: int
    late: int
    jitter_ms: float
    ignored: int  # packets of an SSRC other than the recorded one
    unexpected_payload: int  # payload types never accepted (not telephone-event or CN)
    unexpected_types: dict[str, int]  # the same per payload type
    comfort_noise: int
    dtmf_events: int
    malformed: int
    paused_packets: int
    rtcp_packets: int
    rtcp_malformed: int
    sender_reports: int
    sr_offset_ms: float | None  # file time minus the sender's clock at its last SR
    sr_offset_median_ms: float | None  # the median of the last SRs (the sidecar's sr_offset_ms)
    sr_offset_reports: int  # how many SRs that median is of
    srtp_failures: int
    srtp_replays: int
    reanchors: int
    ssrc_switches: int
    format_switches: int
    switches_refused: int
    foreign_packets: int  # dropped by the source check (media.source_check) before the timeline
    held: int
    first_position: int | None
    last_position: int | None
    paused: bool
    closed: bool
    write_errors: int = 0  # writes of the stream's files the disk refused (this run)
    write_lost_ms: int = 0
    write_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives (every field is flat but one dict of str to int,
        copied), without its deep copy of each value: it was a third of closing a stream."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["unexpected_types"] = dict(self.unexpected_types)
        return data


class StreamRecorder:
    """Records one stream of a call (see the module docstring).

    ``parts_dir`` is the call's ``<stem>.parts`` folder, created if missing unless the caller
    knows (``parts_dir_made``, from another stream's recorder: True, it was made empty by that
    one, so no file of this stream is there yet; False, it was there already). ``epoch`` is
    the call's media epoch. ``now`` is when the recorder starts (default: ``epoch``); a
    stream negotiated ``inactive`` starts paused there. ``created``, when given, gets the
    path of each file the recorder creates, as it creates it (so that a caller whose open
    fails later can remove them).
    """

    def __init__(
        self,
        stream: NegotiatedStream,
        parts_dir: str | Path,
        epoch: float,
        *,
        now: float | None = None,
        reorder_window_ms: int = 60,
        buffer_ms: int = 100,
        header_interval: float = 1.0,
        info_interval: float = 30.0,
        fast: ModuleType | None = None,
        parts_dir_made: bool | None = None,
        created: list[Path] | None = None,
    ) -> None:
        if not stream.accepted or stream.codec is None or stream.payload_type is None:
            raise ValueError(f"stream {stream.index} was not accepted: {stream.reason}")
        self.stream = stream
        self.codec = stream.codec
        self.clock_rate = stream.clock_rate or 8000
        self.epoch = epoch
        self.header_interval = header_interval
        self.info_interval = info_interval
        self.buffer_ms = buffer_ms
        now = epoch if now is None else now
        directory = Path(parts_dir)
        if parts_dir_made is None:
            parts_dir_made = _make_folder(directory)
        self.parts_dir_made = parts_dir_made
        """Whether the folder was made (empty) for this call in this run: a file of the
        stream found missing needs no look (see ``parts_dir_made`` above)."""
        self.directory = directory
        self._created = created
        formats = _formats(stream)
        self._primary = formats[0]
        self._formats = {f.payload_type: f for f in formats}
        self.media_path = directory / media_file_name(stream.index, self.codec)
        self.info_path = directory / info_file_name(stream.index)

        prior = None if parts_dir_made else self._prior()
        self._info_writes = 0 if prior is None else -1
        """Sidecar writes of a new stream so far (-1: a continued stream, not counted)."""
        self._stretches: list[Stretch] = list(prior.stretches) if prior else []
        if not self._stretches:  # a new stream, or a version 1 sidecar: its one codec
            self._stretches = [self._stretch(self._primary, 0, prior.packets if prior else 0)]
        self._writers: dict[str, Writer] = {}
        self._writer = self._open(self._primary, self.media_path.name, 0)
        for stretch in self._stretches:  # files of an earlier run: continue after all of them
            self._open(self._format_of(stretch), stretch.file, stretch.origin)
        current = self._stretches[-1]
        self._writer = self._writers[current.file]
        start = max(
            -(-_end_of(w) * current.clock_rate // self._clock_of(name))
            for name, w in self._writers.items()
        )
        self._carried = current.packets  # of the current stretch, before this run
        self._stretch_base = 0  # the timeline's packets when the current stretch began
        fmt = self._format_of(current)
        self._formats.setdefault(fmt.payload_type, fmt)  # one the stream no longer offers
        self._timeline = StreamTimeline(
            fmt.clock_rate,
            epoch,
            payload_type=fmt.payload_type,
            telephone_event_pt=stream.telephone_event_pt,
            telephone_event_pts=stream.telephone_event_pts,
            comfort_noise_pts=stream.comfort_noise_pts,
            reorder_window=fmt.clock_rate * reorder_window_ms // 1000,
            frame_duration=frame_duration(fmt.name, fmt.fmtp),
            start=start,
            formats=[
                TimelineFormat(f.payload_type, f.clock_rate, frame_duration(f.name, f.fmtp))
                for f in formats
            ],
            base_rate=self.clock_rate,
        )
        self._srtp = SrtpReceiver.from_keys(stream.srtp) if stream.srtp else None
        self._prior_info = prior
        self._unclean: list[int] = list(prior.unclean_restarts) if prior else []
        if prior is not None and not prior.closed:
            # the run before died without closing its files
            self._unclean.append(self._timeline.to_base(start))
        self._pauses: list[PauseSpan] = list(prior.pauses) if prior else []
        if self._pauses and self._pauses[-1].end is None:  # paused when the node died
            self._pauses[-1] = replace(
                self._pauses[-1], end=max(self._position(now), self._timeline.to_base(start))
            )
        self._paused = False
        self._datagrams = 0
        self.malformed = 0
        self.paused_packets = 0
        self.rtcp_packets = 0
        self.rtcp_malformed = 0
        self.foreign_packets = 0
        """Datagrams from addresses the source check refused (counted by the receive path)."""
        self.closed = False
        self.info_errors = WriteErrors()
        """Rewrites of ``stream-<i>.json`` the disk refused."""
        self._lost_ms = 0.0  # of stretches whose file could not be created (counted above)
        self._info_due = now + info_interval
        self._due = now  # next time on_rtp hands over to _periodic
        self.fast_stream: Any = None
        """The C in-order path (``_rtprecv.FastStream``) for the receiver to feed, when ``fast``
        (the extension module) is given, the stream has a G.711 format and no SRTP; it follows
        the current stretch's file while that is G.711."""
        if fast is not None and self._srtp is None and any(f.name in G711_LAWS for f in formats):
            writer = self._writer
            fd = writer.fileno() if isinstance(writer, WavG711Writer) else -1
            self.fast_stream = fast.FastStream(fd)
        try:
            if stream.paused:
                self.pause(now)
            self._write_info()
        except BaseException:  # e.g. out of descriptors for the sidecar: close the media files
            for writer in self._writers.values():
                writer.close()
            raise

    def accept(self, stream: NegotiatedStream) -> list[int]:
        """The stream renegotiated (a re-INVITE): record the payload types its answer added
        from now on. A payload type already known keeps its codec (its file is that codec's).
        Returns the audio payload types added."""
        if not stream.accepted or stream.codec is None or stream.payload_type is None:
            return []
        new = [f for f in _formats(stream) if f.payload_type not in self._formats]
        for fmt in new:
            self._formats[fmt.payload_type] = fmt
        added = self._timeline.accept(
            [
                TimelineFormat(f.payload_type, f.clock_rate, frame_duration(f.name, f.fmtp))
                for f in new
            ],
            stream.telephone_event_pts,
            stream.comfort_noise_pts,
        )
        if added and not self.closed and not self._paused:
            # what the SRC sent in them before we heard of the answer
            if self.fast_stream is not None:
                self._sync()
            self._write(self._timeline.rescue(added))
            if self.fast_stream is not None:
                self._arm()
        return added

    def _stretch(self, fmt: PayloadFormat, start: int, packets: int = 0) -> Stretch:
        primary = fmt.payload_type == self._primary.payload_type
        name = media_file_name(self.stream.index, fmt.name, None if primary else fmt.payload_type)
        return Stretch(
            fmt.payload_type,
            fmt.name,
            fmt.clock_rate,
            start,
            name,
            fmt.channels,
            fmt.fmtp,
            0,
            packets,
        )

    def _format_of(self, stretch: Stretch) -> PayloadFormat:
        known = self._formats.get(stretch.payload_type)
        if known is not None and known.name == stretch.codec:
            return known
        # a payload type the renegotiated stream no longer has: its file is kept as it was
        return PayloadFormat(
            stretch.payload_type, stretch.codec, stretch.clock_rate, stretch.channels, stretch.fmtp
        )

    def _clock_of(self, name: str) -> int:
        for stretch in self._stretches:
            if stretch.file == name:
                return stretch.clock_rate
        return self._primary.clock_rate

    def _open(self, fmt: PayloadFormat, name: str, origin: int) -> Writer:
        """The writer of file ``name`` (opened, continuing it, if not yet)."""
        writer = self._writers.get(name)
        if isinstance(writer, _Unwritable):  # tried again: what it lost stays counted
            self.info_errors.count += writer.errors.count
            self._lost_ms += writer.errors.lost * 1000 / fmt.clock_rate
            writer = None
        if writer is None:
            path = self.directory / name
            law = fmt.name.upper()
            if law in G711_LAWS:
                writer = WavG711Writer(
                    path, law, buffer_ms=self.buffer_ms, origin=origin, new=self.parts_dir_made
                )
            else:
                writer = FramesWriter(
                    path, fmt.clock_rate, buffer_ms=self.buffer_ms, new=self.parts_dir_made
                )
            self._writers[name] = writer
            if writer.created and self._created is not None:
                self._created.append(path)
        return writer

    def _prior(self) -> StreamInfo | None:
        """The sidecar of an earlier run on these files, if any (node restart)."""
        try:
            prior = read_stream_info(self.info_path)
        except FileNotFoundError:
            return None
        if prior.index != self.stream.index or prior.codec != self.codec:
            raise StreamFileError(f"{self.info_path}: another stream's sidecar")
        if abs(prior.epoch - self.epoch) > 1e-6:
            raise StreamFileError(
                f"{self.info_path}: recorded with epoch {prior.epoch}, not {self.epoch}"
            )
        return prior

    def _position(self, at: float) -> int:
        return max(0, round((at - self.epoch) * self.clock_rate))

    # -- packets -----------------------------------------------------------------------------

    def on_rtp(self, data: bytes, arrival: float) -> None:
        """One datagram from the stream's RTP port (RTCP multiplexed on it is recognised)."""
        self._datagrams += 1
        if self.fast_stream is None:
            self._on_rtp(data, arrival)
            return
        self._sync()
        try:
            self._on_rtp(data, arrival)
        finally:
            self._arm()

    def _on_rtp(self, data: bytes, arrival: float) -> None:
        if len(data) < 12:
            if is_rtcp(data):
                self.on_rtcp(data, arrival)
            else:
                self.malformed += 1
            return
        second = data[1]
        if 191 < second < 224:  # RFC 5761: RTCP on the RTP port
            self.on_rtcp(data, arrival)
            return
        if self._paused:
            self.paused_packets += 1
            return
        if self._srtp is not None:
            clear = self._srtp.unprotect_rtp(data)
            if clear is None:
                return
            data = clear
        first, second, sequence, timestamp, ssrc = _unpack_header(data)
        if first == 0x80:  # version 2, no padding, extension or CSRC: the usual packet
            payload = data[12:]
        else:
            header = parse_rtp(data)
            if header is None:
                self.malformed += 1
                return
            payload = header.payload(data)
        placed = self._timeline.push(ssrc, sequence, timestamp, second & 0x7F, payload, arrival)
        if placed:
            self._write(placed)
        if arrival >= self._due:
            self._periodic(arrival)

    def on_rtcp(self, data: bytes, arrival: float) -> None:
        """One datagram from the stream's RTCP port (or multiplexed on the RTP port)."""
        if self.fast_stream is not None and self.fast_stream.packets:
            self._sync()  # a sender report is measured against the current anchor
            self._arm()
        self.rtcp_packets += 1
        if self._srtp is not None:
            clear = self._srtp.unprotect_rtcp(data)
            if clear is None:
                return
            data = clear
        report = parse_rtcp(data)
        if report is None:
            self.rtcp_malformed += 1
            return
        for sr in report.sender_reports:
            self._timeline.sender_report(sr.ssrc, sr.ntp_time, sr.rtp_timestamp)

    def count_foreign(self, count: int) -> None:
        """``count`` more datagrams were dropped by the receive path's source check."""
        self.foreign_packets += count

    # -- the C fast path ---------------------------------------------------------------------

    def _sync(self) -> None:
        """Take over what the fast path did since it was armed (and disarm it): the timeline
        and the writer then stand where on_rtp would have left them."""
        taken = self.fast_stream.take()
        if taken is None:
            return
        packets, last_seq, last_ts, last_pos, end, transit, jitter, last_arrival, written = taken
        self._datagrams += packets
        self._timeline.absorb(
            packets, last_seq, last_ts, last_pos, end, transit, jitter, last_arrival
        )
        assert isinstance(self._writer, WavG711Writer)
        self._writer.absorb(written)

    def _arm(self) -> None:
        """Let the fast path take the next in-order packets, when the timeline allows it."""
        if self._paused or self.closed:
            return
        writer = self._writer
        if not isinstance(writer, WavG711Writer):
            return
        state = self._timeline.fast_state()
        if state is None:
            return
        # the fast path's samples follow everything written so far, into preallocated silence
        at, end = writer.reserve(_FAST_ROOM, self.fast_stream.put)
        if writer.end == state.next_position and not writer.pending:
            self.fast_stream.arm(at, end, *state)

    def settle(self) -> None:
        """Bring the timeline and counters up to date with the fast path (stats, sidecar)."""
        if self.fast_stream is not None and not self.closed:
            self._sync()
            self._arm()

    def _write(self, placed: list[Placed]) -> None:
        write = self._writer.write
        for position, chunk in placed:
            if position == SWITCH:
                self._switch()
                write = self._writer.write
            else:
                write(position, chunk)

    def _switch(self) -> None:
        """The timeline started a stretch: describe it in the sidecar, then write into its file
        (the fast path, synced before the packet that switched, follows when it is G.711)."""
        switch = self._timeline.take_switch()
        fmt = self._formats[switch.payload_type]
        last = self._stretches[-1]
        packets = self._carried + switch.packets_before - self._stretch_base
        start = switch.start
        if packets == 0:  # nothing came in the current stretch: the new one replaces it
            self._stretches.pop()
            start = -(-last.start * fmt.clock_rate // last.clock_rate)
        else:
            self._stretches[-1] = replace(last, packets=packets)
        stretch = self._stretch(fmt, start)
        opened = self._writers.get(stretch.file)
        if opened is not None:
            origin = opened.origin if isinstance(opened, WavG711Writer) else 0
        else:
            origin = start if fmt.name in G711_LAWS else 0
        self._stretches.append(replace(stretch, origin=origin))
        self._carried = 0
        self._stretch_base = switch.packets_before
        self._writer.flush()
        self._write_info()  # the file is described before it holds anything
        try:
            self._writer = self._open(fmt, stretch.file, origin)
        except OSError as exc:  # disk full: this stretch's packets are lost, and counted
            self._writer = self._writers[stretch.file] = _Unwritable(exc, start)
        if self.fast_stream is not None:
            writer = self._writer
            self.fast_stream.rebind(writer.fileno() if isinstance(writer, WavG711Writer) else -1)

    # -- control -----------------------------------------------------------------------------

    def pause(self, at: float) -> None:
        """The stream went ``inactive`` at ``at``: place what waits, write nothing until resume."""
        if self._paused or self.closed:
            return
        if self.fast_stream is not None:
            self._sync()
        self._write(self._timeline.flush())
        self._pauses.append(PauseSpan(self._position(at), None))
        self._paused = True
        self._write_info()

    def resume(self, at: float) -> None:
        """The stream is received again from ``at``: the next packet is placed by its arrival."""
        if not self._paused or self.closed:
            return
        last = self._pauses[-1]
        self._pauses[-1] = replace(last, end=max(last.start, self._position(at)))
        self._paused = False
        self._write(self._timeline.restart())
        self._write_info()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def received(self) -> int:
        """Datagrams that reached the RTP port since this recorder started (the C fast path's
        included), without syncing anything: a cheap activity counter (RTP timeout)."""
        fast = self.fast_stream
        return self._datagrams + (fast.packets if fast is not None else 0)

    def tick(self, now: float) -> None:
        """Periodic work (call about once a second): take over the fast path's progress, release
        packets that waited the reorder window, flush (``on_rtp`` does this too each
        ``header_interval`` while packets flow), rewrite the sidecar each ``info_interval``, and
        arm the fast path again."""
        if self.closed:
            return
        fast = self.fast_stream
        if fast is not None:
            self._sync()
        self._periodic(now)
        if now >= self._info_due:
            self._info_due = now + self.info_interval
            self._write_info()
        if fast is not None:
            self._arm()

    def _periodic(self, now: float) -> None:
        """What ``on_rtp`` also does once a ``header_interval``: cheap (a write and a pwrite);
        the sidecar is left to ``tick``."""
        self._write(self._timeline.expire(now))
        for writer in self._writers.values():
            writer.tick(now)
        self._due = now + self.header_interval

    def close(self, now: float) -> None:
        """Place everything, end an open pause at ``now``, final header and sidecar."""
        if self.closed:
            return
        if self.fast_stream is not None:
            self._sync()
        self._write(self._timeline.flush())
        if self._paused:
            last = self._pauses[-1]
            self._pauses[-1] = replace(last, end=max(last.start, self._position(now)))
            self._paused = False
        if self.fast_stream is not None:
            self.fast_stream.release()
        for writer in self._writers.values():
            writer.close()
        self.closed = True
        self._write_info()

    # -- statistics --------------------------------------------------------------------------

    def info(self) -> StreamInfo:
        """The sidecar's content now (earlier runs on the same files included)."""
        self.settle()
        return self._info()

    def _info(self) -> StreamInfo:
        t = self._timeline
        s = self.stream
        prior = self._prior_info
        ssrcs = t.ssrcs
        dtmf = t.dtmf
        packets, lost, duplicates, late = t.packets, t.lost, self._duplicates(), t.late
        first = t.first_position
        last = None if t.last_position is None else t.to_base(t.last_position)
        jitter = t.jitter_ms
        refused = t.switches_refused
        sr_offset = t.sr_offset_median
        sr_ms = None if sr_offset is None else round(sr_offset * 1000.0, 3)
        sr_reports = t.sr_offset_count
        gaps = [GapSpan(a, b) for a, b in t.gaps]
        gap_count, gap_length = t.gap_count, t.gap_length
        unexpected = dict(t.unexpected_types)
        if prior is not None:
            gaps = (prior.gaps + gaps)[:GAPS_KEEP]
            gap_count += prior.gap_count
            gap_length += prior.gap_length
            for pt, n in prior.unexpected_payload.items():
                unexpected[pt] = unexpected.get(pt, 0) + n
        foreign = self.foreign_packets
        write_errors, write_lost_ms, write_error = self.write_errors()
        if prior is not None:
            foreign += prior.foreign_packets
            write_errors += prior.write_errors
            write_lost_ms += prior.write_lost_ms
            write_error = prior.write_error or write_error
            ssrcs = prior.ssrcs + ssrcs
            dtmf = prior.dtmf + dtmf
            packets += prior.packets
            lost += prior.lost
            duplicates += prior.duplicates
            late += prior.late
            first = prior.first_position if prior.first_position is not None else first
            last = last if last is not None else prior.last_position
            jitter = jitter if t.packets else prior.jitter_ms
            if not sr_reports:  # no SR in this run yet: the last run's measure stands
                sr_ms, sr_reports = prior.sr_offset_ms, prior.sr_offset_reports
            refused += prior.switches_refused
        stretches = list(self._stretches)
        stretches[-1] = replace(
            stretches[-1], packets=self._carried + t.packets - self._stretch_base
        )
        return StreamInfo(
            index=s.index,
            label=s.label,
            codec=self.codec,
            payload_type=s.payload_type or 0,
            clock_rate=self.clock_rate,
            channels=s.channels or 1,
            epoch=self.epoch,
            ssrcs=ssrcs,
            packets=packets,
            lost=lost,
            duplicates=duplicates,
            late=late,
            jitter_ms=round(jitter, 3),
            first_position=first,
            last_position=last,
            pauses=list(self._pauses),
            dtmf=dtmf,
            closed=self.closed,
            unclean_restarts=list(self._unclean),
            sr_offset_ms=sr_ms,
            sr_offset_reports=sr_reports,
            stretches=stretches,
            switches_refused=refused,
            gaps=gaps,
            gap_count=gap_count,
            gap_length=gap_length,
            unexpected_payload=unexpected,
            foreign_packets=foreign,
            write_errors=write_errors,
            write_lost_ms=write_lost_ms,
            write_error=write_error,
        )

    def _duplicates(self) -> int:
        replays = self._srtp.replays if self._srtp is not None else 0
        return self._timeline.duplicates + replays

    def _write_info(self) -> None:
        writes = self._info_writes
        try:
            # a new stream's first write finds no sidecar, its second no twin (see stream_file)
            write_stream_info(self.info_path, self._info(), new=writes == 0, no_twin=writes == 1)
        except OSError as exc:  # disk full: the next rewrite (or the close) says it all
            self.info_errors.add(exc, 0)
            return
        if writes >= 0:
            self._info_writes = writes + 1 if writes < 2 else writes
            if writes == 0 and self._created is not None:
                self._created.append(self.info_path)

    def write_errors(self) -> tuple[int, int, str | None]:
        """(failed writes, ms of audio they lost, the first error) of this run's files."""
        count, lost_ms, first = self.info_errors.count, self._lost_ms, self.info_errors.error
        for name, writer in self._writers.items():
            errors = writer.errors
            count += errors.count
            lost_ms += errors.lost * 1000 / self._clock_of(name)
            first = first or errors.error
        return count, round(lost_ms), first

    def stats(self) -> StreamStats:
        self.settle()
        t = self._timeline
        write_errors, write_lost_ms, write_error = self.write_errors()
        srtp = self._srtp
        return StreamStats(
            index=self.stream.index,
            label=self.stream.label,
            codec=self.codec,
            ssrc=t.ssrc,
            packets=t.packets,
            lost=t.lost,
            duplicates=self._duplicates(),
            late=t.late,
            jitter_ms=round(t.jitter_ms, 3),
            ignored=t.ignored,
            unexpected_payload=t.unexpected_payload,
            unexpected_types={str(pt): n for pt, n in t.unexpected_types.items()},
            comfort_noise=t.comfort_noise,
            dtmf_events=len(t.dtmf),
            malformed=self.malformed,
            paused_packets=self.paused_packets,
            rtcp_packets=self.rtcp_packets,
            rtcp_malformed=self.rtcp_malformed,
            sender_reports=t.sender_reports,
            sr_offset_ms=None if t.sr_offset is None else round(t.sr_offset * 1000.0, 3),
            sr_offset_median_ms=(
                None if t.sr_offset_median is None else round(t.sr_offset_median * 1000.0, 3)
            ),
            sr_offset_reports=t.sr_offset_count,
            srtp_failures=(srtp.failures + srtp.rtcp_failures) if srtp else 0,
            srtp_replays=srtp.replays if srtp else 0,
            reanchors=t.reanchors,
            ssrc_switches=t.ssrc_switches,
            format_switches=t.switches,
            switches_refused=t.switches_refused,
            foreign_packets=self.foreign_packets,
            held=t.held,
            first_position=t.first_position,
            last_position=None if t.last_position is None else t.to_base(t.last_position),
            paused=self._paused,
            closed=self.closed,
            write_errors=write_errors,
            write_lost_ms=write_lost_ms,
            write_error=write_error,
        )
