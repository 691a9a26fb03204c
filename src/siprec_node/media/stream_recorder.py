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
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from siprec_node.media.rtp import is_rtcp, parse_rtcp, parse_rtp
from siprec_node.media.srtp import SrtpReceiver
from siprec_node.media.stream_file import (
    G711_LAWS,
    FramesWriter,
    PauseSpan,
    StreamFileError,
    StreamInfo,
    WavG711Writer,
    info_file_name,
    media_file_name,
    read_stream_info,
    write_stream_info,
)
from siprec_node.media.timeline import Placed, StreamTimeline, opus_duration
from siprec_node.siprec.sdp_answer import NegotiatedStream

_HEADER = struct.Struct("!BBHII")
_unpack_header = _HEADER.unpack_from


_FAST_ROOM = 3 * 8000
"""Room (samples) the fast path gets ahead of it at each arming: more than a tick apart."""


def _one_tick(payload: bytes) -> int:
    """Duration of a payload of a codec whose frames we cannot size: one clock tick."""
    return 1


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
    unexpected_payload: int  # payload types other than the codec, telephone-event, CN
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
    foreign_packets: int  # dropped by the source check (media.source_check) before the timeline
    held: int
    first_position: int | None
    last_position: int | None
    paused: bool
    closed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StreamRecorder:
    """Records one stream of a call (see the module docstring).

    ``parts_dir`` is the call's ``<stem>.parts`` folder (created if missing); ``epoch`` the
    call's media epoch. ``now`` is when the recorder starts (default: ``epoch``); a stream
    negotiated ``inactive`` starts paused there.
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
    ) -> None:
        if not stream.accepted or stream.codec is None or stream.payload_type is None:
            raise ValueError(f"stream {stream.index} was not accepted: {stream.reason}")
        self.stream = stream
        self.codec = stream.codec
        self.clock_rate = stream.clock_rate or 8000
        self.epoch = epoch
        self.header_interval = header_interval
        self.info_interval = info_interval
        now = epoch if now is None else now
        directory = Path(parts_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.media_path = directory / media_file_name(stream.index, self.codec)
        self.info_path = directory / info_file_name(stream.index)

        prior = self._prior()
        self._writer: WavG711Writer | FramesWriter
        law = self.codec.upper()
        if law in G711_LAWS:
            self._writer = WavG711Writer(self.media_path, law, buffer_ms=buffer_ms)
            start = self._writer.end
        else:
            self._writer = FramesWriter(self.media_path, self.clock_rate, buffer_ms=buffer_ms)
            start = self._writer.last_position + 1
        duration: Callable[[bytes], int] | None = None  # one byte per clock tick
        if law == "OPUS":
            duration = opus_duration
        elif law not in G711_LAWS and law != "G722":
            duration = _one_tick
        self._timeline = StreamTimeline(
            self.clock_rate,
            epoch,
            payload_type=stream.payload_type,
            telephone_event_pt=stream.telephone_event_pt,
            reorder_window=self.clock_rate * reorder_window_ms // 1000,
            frame_duration=duration,
            start=start,
        )
        self._srtp = SrtpReceiver.from_keys(stream.srtp) if stream.srtp else None
        self._prior_info = prior
        self._unclean: list[int] = list(prior.unclean_restarts) if prior else []
        if prior is not None and not prior.closed:
            self._unclean.append(start)  # the run before died without closing its files
        self._pauses: list[PauseSpan] = list(prior.pauses) if prior else []
        if self._pauses and self._pauses[-1].end is None:  # paused when the node died
            self._pauses[-1] = replace(self._pauses[-1], end=max(self._position(now), start))
        self._paused = False
        self.malformed = 0
        self.paused_packets = 0
        self.rtcp_packets = 0
        self.rtcp_malformed = 0
        self.foreign_packets = 0
        """Datagrams from addresses the source check refused (counted by the receive path)."""
        self.closed = False
        self._info_due = now + info_interval
        self._due = now  # next time on_rtp hands over to _periodic
        self.fast_stream: Any = None
        """The C in-order path (``_rtprecv.FastStream``) for the receiver to feed, when ``fast``
        (the extension module) is given and the stream is G.711 without SRTP."""
        if fast is not None and isinstance(self._writer, WavG711Writer) and self._srtp is None:
            self.fast_stream = fast.FastStream(self._writer.fileno())
        try:
            if stream.paused:
                self.pause(now)
            self._write_info()
        except BaseException:  # e.g. out of descriptors for the sidecar: close the media file
            self._writer.close()
            raise

    def _prior(self) -> StreamInfo | None:
        """The sidecar of an earlier run on these files, if any (node restart)."""
        if not self.info_path.exists():
            return None
        prior = read_stream_info(self.info_path)
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
            write = self._writer.write
            for position, chunk in placed:
                write(position, chunk)
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
        self._timeline.absorb(
            packets, last_seq, last_ts, last_pos, end, transit, jitter, last_arrival
        )
        assert isinstance(self._writer, WavG711Writer)
        self._writer.absorb(written)

    def _arm(self) -> None:
        """Let the fast path take the next in-order packets, when the timeline allows it."""
        if self._paused or self.closed:
            return
        state = self._timeline.fast_state()
        if state is None:
            return
        writer = self._writer
        assert isinstance(writer, WavG711Writer)
        # the fast path's samples follow everything written so far, into preallocated silence
        at, end = writer.reserve(_FAST_ROOM)
        if writer.end == state.next_position:
            self.fast_stream.arm(at, end, *state)

    def settle(self) -> None:
        """Bring the timeline and counters up to date with the fast path (stats, sidecar)."""
        if self.fast_stream is not None and not self.closed:
            self._sync()
            self._arm()

    def _write(self, placed: list[Placed]) -> None:
        write = self._writer.write
        for position, chunk in placed:
            write(position, chunk)

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
        self._writer.tick(now)
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
        self._writer.close()
        self.closed = True
        self._write_info()

    # -- statistics --------------------------------------------------------------------------

    def info(self) -> StreamInfo:
        """The sidecar's content now (earlier runs on the same files included)."""
        self.settle()
        t = self._timeline
        s = self.stream
        prior = self._prior_info
        ssrcs = t.ssrcs
        dtmf = t.dtmf
        packets, lost, duplicates, late = t.packets, t.lost, self._duplicates(), t.late
        first, last = t.first_position, t.last_position
        jitter = t.jitter_ms
        sr_offset = t.sr_offset_median
        sr_ms = None if sr_offset is None else round(sr_offset * 1000.0, 3)
        sr_reports = t.sr_offset_count
        foreign = self.foreign_packets
        if prior is not None:
            foreign += prior.foreign_packets
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
            foreign_packets=foreign,
        )

    def _duplicates(self) -> int:
        replays = self._srtp.replays if self._srtp is not None else 0
        return self._timeline.duplicates + replays

    def _write_info(self) -> None:
        write_stream_info(self.info_path, self.info())

    def stats(self) -> StreamStats:
        self.settle()
        t = self._timeline
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
            foreign_packets=self.foreign_packets,
            held=t.held,
            first_position=t.first_position,
            last_position=t.last_position,
            paused=self._paused,
            closed=self.closed,
        )
