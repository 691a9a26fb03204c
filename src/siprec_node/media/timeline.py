"""Where each RTP payload of one stream goes in the stream file (``FORMAT.md``, Timeline).

:class:`StreamTimeline` is sans-I/O: fed packets (header fields, payload, arrival time), it
returns the payloads that are ready to write, in position order. Positions are in RTP clock
units since the call's media epoch, the same origin for every stream of the call.

Placement
  The first packet of an SSRC is placed by its arrival, ``round((arrival - epoch) * rate)``;
  later packets by RTP timestamp relative to an anchor (the newest packet seen), the timestamp
  difference taken modulo 2^32 as a signed number, so timestamp wrap needs nothing special.
  When timestamp and wall clock disagree by more than ``discontinuity`` (1 s) against what
  they agreed on at the last anchoring (pause/resume, SSRC change, timestamp jump) the packet
  is re-anchored by its arrival. So is a packet that would open a gap ending more than
  ``max_ahead`` (0.5 s) ahead of the wall clock: silence is inserted only for time that has
  passed, so a sender whose timestamps leap ahead (0.9 s a packet) cannot make the file grow
  faster than the call lasts. A re-anchored position never goes below the end of what was
  already accepted: audio is never dropped to honour the wall clock, the file only ever gets
  silence inserted. (So a sender whose clock runs fast stays ahead by its drift; one that runs
  slow gets a silence gap per second of drift.)

Reordering
  A packet that continues exactly where the last emitted one ended is emitted at once (the
  common case: one comparison). Any other packet waits in a small buffer indexed by position;
  the buffer's first packet is released when it continues the output, or when a packet
  ``reorder_window`` (60 ms) later has arrived, or by :meth:`expire` when its time is that far
  in the past by the wall clock, or at :meth:`flush`. A packet before the end of what was
  emitted is late: dropped and counted, and so is a packet older (by sequence number) than the
  newest that disagrees with the wall clock: a straggler from before a discontinuity. So any
  permutation of packets whose displacement is below the window gives the same output as the
  ordered stream.

Sequence numbers (RFC 3550 A.1)
  Only count: extended highest sequence with 16-bit wrap, a 64-packet bitmap of what was
  received for duplicates, ``lost = expected - received`` (duplicates not received twice). A jump
  of 3000 or more starts a new counting segment (a sender that renumbered).

Jitter (RFC 3550 A.8)
  ``J += (|D| - J) / 16`` over transit times in clock units; reported in ms.

SSRC
  Locked on the first packet. Packets of another SSRC are held as a candidate (the last
  ``max(50, switch_packets)``); once the candidate has sent ``switch_packets`` packets while
  the locked SSRC has been silent for ``switch_silence`` seconds, the timeline switches to it:
  what waits in the reorder buffer is emitted, the new SSRC is re-anchored by wall clock and its
  held packets replayed, so none of its audio is lost. Otherwise foreign packets are dropped and
  counted as ``ignored``.

Payload types
  The current audio format's PT is placed; ``telephone-event`` becomes DTMF records (RFC 4733:
  one per event, identified by its timestamp; duration is the largest seen, long events split
  in segments are merged) and is not placed; comfort noise (PT 13) places nothing, so DTX is
  silence; any other PT is counted per PT in ``unexpected_types`` and dropped, except the
  stream's other accepted ``formats``.

Format switches (stretches)
  A packet of another accepted format (``formats``) of the locked SSRC starts a stretch
  (``FORMAT.md``, Stretches): what waits is flushed, a :data:`SWITCH` marker is emitted, and
  :meth:`take_switch` says where the stretch starts (where the audio before it ended, in the
  new clock). Same clock: placed by timestamp; another clock: positions, anchor, baseline and
  jitter converted, the packet placed at the start when it follows by sequence number, else by
  arrival. An older packet of another format is late, not a switch back; at most
  ``MAX_SWITCHES``. Positions are in the current clock; ``first_position``, SSRC spans, DTMF
  and gaps are in ``base_rate`` units (:meth:`to_base`).

Gaps
  A packet emitted more than ``gap_min`` (100 ms) after the end of what was written before it
  leaves a gap (a loss burst, the SRC stopping, or the downtime before the first packet of a
  run that continues the files of a crashed one: ``start`` > 0), unless a pause (:meth:`restart`)
  or comfort noise (DTX) came since. The first ``GAPS_KEEP`` are kept in :attr:`gaps`,
  :attr:`gap_count` and :attr:`gap_length` count them all (in ``base_rate`` units). Only the
  slow path sees them: a packet that continues the output exactly leaves no hole.

RTCP
  :meth:`sender_report` takes the SRs of the locked SSRC and measures ``sr_offset``: how far
  the file's time of the SR's RTP timestamp (``epoch + position / rate``) is from the sender's
  NTP time. It does not move positions (moving the anchor would insert silence or drop written
  audio, and the first packet's placement is the contract's); it measures the residual
  misalignment: two legs from one SRC share its clock, so the difference of their offsets is
  how far apart the legs are in the files (finalisation moves the legs by it).
  The offsets of the last ``SR_KEEP`` (16) SRs of one timestamp-to-position mapping are kept;
  :attr:`sr_offset_median` is their median (robust to an SR whose NTP time was taken late) and
  :attr:`sr_offset_count` how many there are. Every change of the mapping goes through a
  re-anchoring (SSRC switch, resume after a pause, timestamp jump, stall), so the offsets are
  tied to ``reanchors``: the first SR of a new mapping discards those of the old one. Until
  then the old mapping's offsets stand (they describe the audio recorded with it).
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

from siprec_node.media.durations import frame_duration as frame_duration
from siprec_node.media.durations import opus_duration as opus_duration
from siprec_node.media.stream_file import DtmfRecord, SsrcSpan
from siprec_node.media.timeline_formats import FORCE as _FORCE
from siprec_node.media.timeline_formats import GAPS_KEEP as GAPS_KEEP
from siprec_node.media.timeline_formats import MAX_SWITCHES as MAX_SWITCHES
from siprec_node.media.timeline_formats import NEVER as _NEVER
from siprec_node.media.timeline_formats import RESCUE_KEEP, FormatSwitching, Placed, Switch
from siprec_node.media.timeline_formats import SWITCH as SWITCH
from siprec_node.media.timeline_formats import TimelineFormat as TimelineFormat

COMFORT_NOISE_PT = 13
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_SEEN_BITS = 64
_SEEN_MASK = (1 << _SEEN_BITS) - 1
_CANDIDATE_KEEP = 50
SR_KEEP = 16  # sender-report offsets kept per timestamp-to-position mapping
GAP_MIN_MS = 100  # shorter holes are loss, not gaps (media/verdict.py)


_new = tuple.__new__


class FastState(NamedTuple):
    """The expectations :meth:`StreamTimeline.fast_state` hands to a fast path (the argument
    order of ``_rtprecv.FastStream.arm``)."""

    ssrc: int
    next_sequence: int
    next_timestamp: int
    next_position: int
    payload_type: int
    epoch: float
    clock_rate: float
    baseline: float
    limit: float
    transit: float
    jitter: float


class _Dtmf:
    __slots__ = ("duration", "ended", "event", "offset", "position", "rate", "timestamp")

    def __init__(
        self, position: int, event: int, timestamp: int, duration: int, rate: float = 1.0
    ) -> None:
        self.rate = rate  # base units per clock unit when recorded
        self.position = position
        self.event = event
        self.timestamp = timestamp
        self.offset = 0  # duration of the earlier segments of a long event
        self.duration = duration
        self.ended = False


class StreamTimeline(FormatSwitching):
    """Places one stream's RTP payloads on the call's timeline (see the module docstring).

    ``reorder_window`` is in clock units (default 60 ms). ``frame_duration`` gives a payload's
    duration in clock units; None means one byte per clock tick (G.711, and G.722 on its
    8000 Hz RTP clock). ``start`` is the first position that may still be written (a file
    continued after a restart). ``formats`` are the other audio formats the stream may switch
    to; ``base_rate`` the clock the stream-level positions are reported in (default: this one);
    ``telephone_event_pts`` and ``comfort_noise_pts`` more payload types of those kinds (one per
    clock rate).
    """

    def __init__(
        self,
        clock_rate: int,
        epoch: float,
        *,
        payload_type: int,
        telephone_event_pt: int | None = None,
        comfort_noise_pt: int | None = COMFORT_NOISE_PT,
        reorder_window: int | None = None,
        frame_duration: Callable[[bytes], int] | None = None,
        switch_packets: int = 5,
        switch_silence: float = 0.1,
        discontinuity: float = 1.0,
        max_ahead: float = 0.5,
        start: int = 0,
        formats: Sequence[TimelineFormat] = (),
        base_rate: int | None = None,
        telephone_event_pts: Collection[int] = (),
        comfort_noise_pts: Collection[int] = (),
        gap_min: int | None = None,
    ) -> None:
        self.clock_rate = clock_rate
        self.epoch = epoch
        self.payload_type = payload_type
        self.base_rate = base_rate or clock_rate
        self._to_base = self.base_rate / clock_rate
        self._formats = {f.payload_type: f for f in formats if f.payload_type != payload_type}
        self._formats[payload_type] = TimelineFormat(payload_type, clock_rate, frame_duration)
        self._switches: deque[Switch] = deque()
        # the last packets of payload types not (yet) accepted, for :meth:`rescue`
        self._recent: deque[tuple[int, int, int, bytes, float]] = deque(maxlen=RESCUE_KEEP)
        self.switches = 0
        self.switches_refused = 0
        self._discontinuity = discontinuity
        self.telephone_event_pt = telephone_event_pt
        self.comfort_noise_pt = comfort_noise_pt
        # every telephone-event (one per clock rate) and comfort noise payload type accepted
        self._events = {pt for pt in (telephone_event_pt, *telephone_event_pts) if pt is not None}
        self._comfort = {pt for pt in (comfort_noise_pt, *comfort_noise_pts) if pt is not None}
        self.window = reorder_window if reorder_window is not None else clock_rate * 60 // 1000
        self.window_seconds = self.window / clock_rate
        self._duration = frame_duration
        self.switch_packets = switch_packets
        self.switch_silence = switch_silence
        self._limit = discontinuity * clock_rate
        self._ahead = max_ahead * clock_rate

        # SSRC and sequence counting (current segment, and the segments before it)
        self._ssrc: int | None = None
        self._max_seq = 0xFFFF  # with _cycles and _base: nothing expected yet
        self._cycles = -0x10000
        self._base = 0
        self._received = 0
        self._seen = 0
        self._expected_before = 0
        self._received_before = 0
        self._last_arrival = 0.0
        # anchor, jitter
        self._anchor_ts = 0
        self._anchor_pos = 0
        self._baseline = _FORCE
        self._transit = 0.0
        self._jitter = 0.0
        # output
        self._next = _NEVER  # where a packet continues the output exactly
        self._frontier = start  # earlier positions are late
        self._end_seen = start  # end of the furthest packet accepted
        self._max_pos = _NEVER
        self._held: dict[int, tuple[bytes, float]] = {}
        self._order: list[int] = []
        self._span_pending = False
        # candidate SSRC
        self._cand_ssrc: int | None = None
        self._cand: deque[tuple[int, int, int, bytes, float]] = deque(
            maxlen=max(_CANDIDATE_KEEP, switch_packets)
        )
        self._cand_count = 0
        # records and counters
        self._spans: list[list[int | None]] = []  # [ssrc, first position]
        self._dtmf: list[_Dtmf] = []
        self._dtmf_current: _Dtmf | None = None
        self.first_position: int | None = None
        self.last_position: int | None = None
        self.duplicates = 0
        self.late = 0
        self.ignored = 0
        self.unexpected_payload = 0
        self.unexpected_types: dict[int, int] = {}  # the same, per payload type
        self.comfort_noise = 0
        self.dtmf_packets = 0
        self.malformed_dtmf = 0
        self.reanchors = 0
        self.ssrc_switches = 0
        self.sender_reports = 0
        self.sr_offset: float | None = None  # of the latest SR
        self.gap_min = gap_min if gap_min is not None else clock_rate * GAP_MIN_MS // 1000
        self._gap_min_seconds = self.gap_min / clock_rate
        self.gaps: list[tuple[int, int]] = []
        self.gap_count = 0
        self.gap_length = 0
        self._quiet_from = _NEVER  # the output's end when a pause or DTX explained what follows
        self._sr_offsets: deque[float] = deque(maxlen=SR_KEEP)
        self._sr_mapping: tuple[int, int] | None = None  # (SSRC, reanchors) of _sr_offsets

    # -- the per-packet path ---------------------------------------------------------------

    def push(
        self,
        ssrc: int,
        sequence: int,
        timestamp: int,
        payload_type: int,
        payload: bytes,
        arrival: float,
    ) -> list[Placed]:
        """Take one RTP packet; return what is ready to write, in position order."""
        if ssrc != self._ssrc:
            return self._foreign(ssrc, sequence, timestamp, payload_type, payload, arrival)
        self._last_arrival = arrival
        if (sequence - self._max_seq) & 0xFFFF == 1:
            if sequence == 0:
                self._cycles += 0x10000
            self._max_seq = sequence
            self._seen = ((self._seen << 1) | 1) & _SEEN_MASK
            self._received += 1
        elif not self._sequence(sequence):
            self.duplicates += 1
            return []
        if payload_type != self.payload_type:
            return self._other_payload(sequence, timestamp, payload_type, payload, arrival)
        return self._place(sequence, timestamp, payload, arrival)

    def _place(self, sequence: int, timestamp: int, payload: bytes, arrival: float) -> list[Placed]:
        """Place a counted packet of the current format by its timestamp (re-anchoring on a
        discontinuity or a leap ahead of the wall clock), in order or through the reorder
        window: the rest of :meth:`push`, and the packet that switched format."""
        d = (timestamp - self._anchor_ts) & 0xFFFFFFFF
        if d & 0x80000000:
            d -= 0x100000000
        position = self._anchor_pos + d
        wall = (arrival - self.epoch) * self.clock_rate
        transit = wall - position
        deviation = transit - self._baseline
        if (
            deviation > self._limit
            or deviation < -self._limit
            or (position > self._end_seen and -transit > self._ahead)
        ):
            if self._baseline != _FORCE and 0 < (self._max_seq - sequence) & 0xFFFF < MAX_MISORDER:
                self.late += 1  # a straggler from before a discontinuity: its place is gone
                return []
            position = self._reanchor(timestamp, wall)
        else:
            if d > 0:
                self._anchor_ts = timestamp
                self._anchor_pos = position
            jump = transit - self._transit
            if jump < 0:
                jump = -jump
            self._jitter += (jump - self._jitter) * 0.0625
            self._transit = transit

        duration = self._duration
        end = position + (len(payload) if duration is None else duration(payload))
        if position == self._next and not self._order:
            self._next = self._frontier = self._end_seen = end
            self._max_pos = self.last_position = position
            return [_new(Placed, (position, payload))]
        return self._hold(position, end, payload, arrival)

    # -- slower paths ------------------------------------------------------------------------

    def _sequence(self, sequence: int) -> bool:
        """Count a sequence number that does not follow the highest; False for a duplicate."""
        delta = (sequence - self._max_seq) & 0xFFFF
        if delta == 0:
            return False
        if delta < MAX_DROPOUT:  # ahead, after a loss
            if sequence < self._max_seq:
                self._cycles += 0x10000
            self._max_seq = sequence
            self._seen = ((self._seen << delta) | 1) & _SEEN_MASK
            self._received += 1
            return True
        if delta >= 0x10000 - MAX_MISORDER:  # behind: reordered or duplicated
            back = 0x10000 - delta
            if back < _SEEN_BITS:
                bit = 1 << back
                if self._seen & bit:
                    return False
                self._seen |= bit
            extended = self._cycles + sequence - (0x10000 if sequence > self._max_seq else 0)
            if extended < self._base:
                self._base = extended
            self._received += 1
            return True
        # A jump: the sender renumbered. Close the counting segment, start another here.
        self._new_segment(sequence)
        self._max_seq = sequence
        self._cycles = 0
        self._base = sequence
        self._received = 1
        self._seen = 1
        return True

    def _new_segment(self, sequence: int) -> None:
        self._expected_before += self._expected()
        self._received_before += self._received
        self._max_seq = (sequence - 1) & 0xFFFF
        self._cycles = -0x10000 if sequence == 0 else 0
        self._base = sequence
        self._received = 0
        self._seen = 0

    def _expected(self) -> int:
        return self._cycles + self._max_seq - self._base + 1

    def _reanchor(self, timestamp: int, wall: float) -> int:
        position = round(wall)
        if position < self._end_seen:
            position = self._end_seen
        self._anchor_ts = timestamp
        self._anchor_pos = position
        self._baseline = self._transit = wall - position
        self.reanchors += 1
        return position

    def _hold(self, position: int, end: int, payload: bytes, arrival: float) -> list[Placed]:
        if position < self._frontier:
            self.late += 1
            return []
        held = self._held
        if position in held:
            self.duplicates += 1
            return []
        held[position] = (payload, arrival)
        insort(self._order, position)
        if position > self._max_pos:
            self._max_pos = position
        if end > self._end_seen:
            self._end_seen = end
        return self._release(self._max_pos - self.window)

    def _release(self, limit: int) -> list[Placed]:
        """Emit held packets from the first while each continues the output or is ≤ ``limit``."""
        out: list[Placed] = []
        order = self._order
        while order:
            position = order[0]
            if position > self._next and position > limit:
                break
            del order[0]
            self._emit(position, self._held.pop(position)[0], out)
        return out

    def _emit(self, position: int, payload: bytes, out: list[Placed]) -> None:
        duration = self._duration
        end = position + (len(payload) if duration is None else duration(payload))
        if end <= self._frontier:  # wholly inside what an earlier, longer packet covered
            self.late += 1
            return
        hole = position - self._frontier
        if hole >= self.gap_min and self._frontier > 0 and self._quiet_from != self._frontier:
            self._gap(self._frontier, position)
        if self._span_pending:
            self._span_pending = False
            self._spans[-1][1] = round(position * self._to_base)
        if self.first_position is None:
            self.first_position = round(position * self._to_base)
        self.last_position = position
        self._next = end
        if end > self._frontier:
            self._frontier = end
        out.append(_new(Placed, (position, payload)))

    def _other_payload(
        self, sequence: int, timestamp: int, payload_type: int, payload: bytes, arrival: float
    ) -> list[Placed]:
        if payload_type in self._events:
            self._telephone_event(timestamp, payload, arrival)
        elif payload_type in self._comfort:
            self.comfort_noise += 1
            self._quiet_from = self._frontier  # DTX: the silence that follows is meant
        elif payload_type in self._formats:
            return self._switch(self._formats[payload_type], sequence, timestamp, payload, arrival)
        else:
            self.unexpected_payload += 1
            counts = self.unexpected_types
            counts[payload_type] = counts.get(payload_type, 0) + 1
            self._recent.append((sequence, timestamp, payload_type, payload, arrival))
        return []

    def _gap(self, start: int, end: int) -> None:
        start, end = self.to_base(start), self.to_base(end)
        self.gap_count += 1
        self.gap_length += end - start
        if len(self.gaps) < GAPS_KEEP:
            self.gaps.append((start, end))

    def _telephone_event(self, timestamp: int, payload: bytes, arrival: float) -> None:
        self.dtmf_packets += 1
        if len(payload) < 4:
            self.malformed_dtmf += 1
            return
        event = payload[0]
        ended = bool(payload[1] & 0x80)
        duration = (payload[2] << 8) | payload[3]
        current = self._dtmf_current
        if current is not None:
            duration_so_far = current.duration - current.offset
            if timestamp == current.timestamp:
                if current.offset + duration > current.duration:
                    current.duration = current.offset + duration
                current.ended = current.ended or ended
                return
            step = (timestamp - current.timestamp) & 0xFFFFFFFF
            if not current.ended and event == current.event and step == duration_so_far:
                # the next segment of a long event (RFC 4733 §2.5.1.3)
                current.offset = current.duration
                current.timestamp = timestamp
                current.duration += duration
                current.ended = ended
                return
        if self._baseline == _FORCE:  # no audio anchor yet: the event started `duration` ago
            position = round((arrival - self.epoch) * self.clock_rate) - duration
        else:
            d = (timestamp - self._anchor_ts) & 0xFFFFFFFF
            if d & 0x80000000:
                d -= 0x100000000
            position = self._anchor_pos + d
        record = _Dtmf(max(position, 0), event, timestamp, duration, self._to_base)
        record.ended = ended
        self._dtmf.append(record)
        self._dtmf_current = record

    def _foreign(
        self,
        ssrc: int,
        sequence: int,
        timestamp: int,
        payload_type: int,
        payload: bytes,
        arrival: float,
    ) -> list[Placed]:
        if self._ssrc is None:
            self._lock(ssrc, sequence)
            return self.push(ssrc, sequence, timestamp, payload_type, payload, arrival)
        if ssrc != self._cand_ssrc:
            self.ignored += self._cand_count
            self._cand_ssrc = ssrc
            self._cand.clear()
            self._cand_count = 0
        self._cand.append((sequence, timestamp, payload_type, payload, arrival))
        self._cand_count += 1
        if (
            self._cand_count >= self.switch_packets
            and arrival - self._last_arrival >= self.switch_silence
        ):
            out = self.flush()
            packets = list(self._cand)
            self.ignored += self._cand_count - len(packets)
            self._cand_ssrc = None
            self._cand.clear()
            self._cand_count = 0
            self.ssrc_switches += 1
            self._lock(ssrc, packets[0][0])
            for packet in packets:
                out += self.push(ssrc, *packet)
            return out
        return []

    def _lock(self, ssrc: int, sequence: int) -> None:
        self._ssrc = ssrc
        self._new_segment(sequence)
        self._baseline = _FORCE
        self._next = _NEVER
        self._max_pos = _NEVER
        self._dtmf_current = None
        if not self._spans or self._spans[-1][0] != ssrc:
            self._spans.append([ssrc, None])
            self._span_pending = True

    # -- control -----------------------------------------------------------------------------

    def flush(self) -> list[Placed]:
        """Emit everything held (at close, before a pause, before an SSRC switch)."""
        return self._release(1 << 62)

    def expire(self, now: float) -> list[Placed]:
        """Emit the held packets whose time, by the current anchor, is more than
        ``reorder_window`` past: a gap before them has waited long enough in wall-clock time.

        (A packet placed ahead of the wall clock, e.g. a stray timestamp, keeps waiting for the
        packets before it rather than pushing the end of the file ahead of them.)
        """
        if not self._order or self._baseline == _FORCE:
            return []
        cut = (now - self.epoch) * self.clock_rate - self._baseline - self.window
        return self._release(int(cut)) if self._order[0] <= cut else []

    def restart(self) -> list[Placed]:
        """Flush, and take the next packet as a new start (resume after a pause): it locks its
        SSRC, starts a new counting segment and is placed by its arrival."""
        out = self.flush()
        self._quiet_from = self._frontier  # the hole up to the next packet is the pause
        self._new_segment(0)
        self._ssrc = None
        self.ignored += self._cand_count
        self._cand_ssrc = None
        self._cand.clear()
        self._cand_count = 0
        return out

    def sender_report(self, ssrc: int, ntp_time: float, rtp_timestamp: int) -> None:
        """An RTCP SR (``ntp_time`` in Unix seconds) of the locked SSRC: measure ``sr_offset``."""
        if ssrc != self._ssrc or self._baseline == _FORCE:
            return
        self.sender_reports += 1
        d = (rtp_timestamp - self._anchor_ts) & 0xFFFFFFFF
        if d & 0x80000000:
            d -= 0x100000000
        self.sr_offset = self.epoch + (self._anchor_pos + d) / self.clock_rate - ntp_time
        mapping = (ssrc, self.reanchors)
        if mapping != self._sr_mapping:  # positions are placed another way since: start again
            self._sr_mapping = mapping
            self._sr_offsets.clear()
        self._sr_offsets.append(self.sr_offset)

    @property
    def sr_offset_median(self) -> float | None:
        """Median ``sr_offset`` (seconds) of the last SRs of the current (or, when no SR came
        since it changed, the last) timestamp-to-position mapping; None before any SR."""
        offsets = sorted(self._sr_offsets)
        n = len(offsets)
        if not n:
            return None
        return offsets[n // 2] if n % 2 else (offsets[n // 2 - 1] + offsets[n // 2]) / 2

    @property
    def sr_offset_count(self) -> int:
        """How many SRs :attr:`sr_offset_median` is the median of."""
        return len(self._sr_offsets)

    # -- the in-order fast path (media/_rtprecv.c) ------------------------------------------

    def fast_state(self) -> FastState | None:
        """What a packet must carry to continue the output exactly, for a fast path that does
        :meth:`push`'s in-order case elsewhere; None when the next packet needs :meth:`push`
        (nothing locked or anchored yet, packets held, payloads not one byte per clock tick)."""
        if (
            self._ssrc is None
            or self._order
            or self._baseline == _FORCE
            or self._duration is not None
            or self._span_pending
            or self._next <= self._anchor_pos
        ):
            return None
        return FastState(
            self._ssrc,
            (self._max_seq + 1) & 0xFFFF,
            (self._anchor_ts + self._next - self._anchor_pos) & 0xFFFFFFFF,
            self._next,
            self.payload_type,
            self.epoch,
            float(self.clock_rate),
            self._baseline,
            float(self._limit),
            self._transit,
            self._jitter,
        )

    def absorb(
        self,
        packets: int,
        last_sequence: int,
        last_timestamp: int,
        last_position: int,
        end: int,
        transit: float,
        jitter: float,
        last_arrival: float,
    ) -> None:
        """Take over ``packets`` in-order packets a fast path placed after :meth:`fast_state`:
        the state is what :meth:`push` would have left after them."""
        if packets <= 0:
            return
        if (self._max_seq + packets) & 0xFFFF != last_sequence:
            raise ValueError("absorbed packets do not follow the highest sequence number")
        self._cycles += ((self._max_seq + packets) >> 16) << 16
        self._max_seq = last_sequence
        ones = (1 << packets) - 1 if packets < _SEEN_BITS else _SEEN_MASK
        self._seen = ((self._seen << min(packets, _SEEN_BITS)) | ones) & _SEEN_MASK
        self._received += packets
        self._last_arrival = last_arrival
        self._anchor_ts = last_timestamp
        self._anchor_pos = last_position
        self._transit = transit
        self._jitter = jitter
        self._next = self._frontier = self._end_seen = end
        self._max_pos = self.last_position = last_position

    # -- statistics --------------------------------------------------------------------------

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    @property
    def packets(self) -> int:
        """RTP packets of the recorded SSRCs, duplicates not counted."""
        return self._received_before + self._received

    @property
    def lost(self) -> int:
        expected = self._expected_before + (self._expected() if self._ssrc is not None else 0)
        return max(0, expected - self.packets)

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self.clock_rate

    @property
    def held(self) -> int:
        """Packets waiting in the reorder buffer."""
        return len(self._order)

    @property
    def ssrcs(self) -> list[SsrcSpan]:
        """SSRCs recorded, with the position of their first placed packet (None: none yet)."""
        return [SsrcSpan(ssrc, first) for ssrc, first in self._spans]  # type: ignore[arg-type]

    @property
    def dtmf(self) -> list[DtmfRecord]:
        return [
            DtmfRecord(round(d.position * d.rate), d.event, round(d.duration * d.rate))
            for d in self._dtmf
        ]
