"""Format switches of a stream timeline (``FORMAT.md``, Stretches): the packet of another
accepted payload type that starts a stretch, payload types accepted later (a re-INVITE) and the
packets of theirs that came just before, and the conversion between clocks.

:class:`FormatSwitching` is mixed into :class:`~siprec_node.media.timeline.StreamTimeline` and
works on its placement state (anchor, baseline, frontier, sequence counting); it lives apart
because a stream that never changes codec never runs any of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections import deque

NEVER = -(1 << 62)  # a position no packet has
FORCE = float(1 << 62)  # a baseline that makes the next packet re-anchor
GAPS_KEEP = 100  # gaps listed per run; the totals count every one
_new = tuple.__new__


class Placed(NamedTuple):
    """A payload ready to write at ``position`` (stream clock units since the epoch); the
    position :data:`SWITCH` marks a format switch instead: the payloads after it are of the new
    format (see ``StreamTimeline.take_switch``)."""

    position: int
    payload: bytes


SWITCH = -1
"""The position of a switch marker in the output of :meth:`StreamTimeline.push`."""
MAX_SWITCHES = 256
"""Format switches one stream follows; later packets of another format are dropped."""
RESCUE_KEEP = 16
"""Packets of payload types not accepted kept for :meth:`StreamTimeline.rescue` (320 ms)."""


class TimelineFormat(NamedTuple):
    """An audio format a stream may switch to: payload type, RTP clock, payload duration
    (None: one byte per clock tick)."""

    payload_type: int
    clock_rate: int
    frame_duration: Callable[[bytes], int] | None = None


class Switch(NamedTuple):
    """A format switch: the new payload type and clock, where its stretch starts (in that
    clock), and the packets counted before the switching packet."""

    payload_type: int
    clock_rate: int
    start: int
    packets_before: int


class FormatSwitching:
    """The format-switch half of :class:`~siprec_node.media.timeline.StreamTimeline`."""

    # The placement state of StreamTimeline this half reads and changes (set by its __init__).
    clock_rate: int
    epoch: float
    payload_type: int
    base_rate: int
    window: int
    window_seconds: float
    gap_min: int
    switches: int
    switches_refused: int
    late: int
    reanchors: int
    unexpected_payload: int
    unexpected_types: dict[int, int]
    first_position: int | None
    last_position: int | None
    _formats: dict[int, TimelineFormat]
    _switches: deque[Switch]
    _recent: deque[tuple[int, int, int, bytes, float]]
    _events: set[int]
    _comfort: set[int]
    _duration: Callable[[bytes], int] | None
    _to_base: float
    _limit: float
    _discontinuity: float
    _gap_min_seconds: float
    _ssrc: int | None
    _max_seq: int
    _seen: int
    _baseline: float
    _transit: float
    _jitter: float
    _anchor_ts: int
    _anchor_pos: int
    _next: int
    _frontier: int
    _end_seen: int
    _quiet_from: int
    _max_pos: int
    _span_pending: bool

    if TYPE_CHECKING:

        @property
        def packets(self) -> int: ...

        def flush(self) -> list[Placed]: ...

        def _place(
            self, sequence: int, timestamp: int, payload: bytes, arrival: float
        ) -> list[Placed]: ...

    def _switch(
        self,
        fmt: TimelineFormat,
        sequence: int,
        timestamp: int,
        payload: bytes,
        arrival: float,
        back: int = 0,
    ) -> list[Placed]:
        """A packet of another accepted format: a new stretch (module docstring). ``back``:
        how many packets after it (by sequence) were counted already (:meth:`rescue`)."""
        if sequence != (self._max_seq - back) & 0xFFFF:  # a straggler, not a switch back
            self.late += 1
            return []
        if self.switches >= MAX_SWITCHES:
            self.switches_refused += 1
            return []
        follows = bool(self._seen >> (back + 1) & 1)  # the packet before it was received
        packets_before = self.packets - 1 - back
        out = self.flush()
        old, new = self.clock_rate, fmt.clock_rate
        self.payload_type, self._duration = fmt.payload_type, fmt.frame_duration
        if new != old:
            scale = new / old
            self.clock_rate = new
            self._to_base = self.base_rate / new
            self._limit = self._discontinuity * new
            self.window = round(self.window_seconds * new)
            start = -(-max(self._frontier, self._end_seen) * new // old)  # rounded up
            quiet = self._quiet_from == self._frontier
            self._frontier = self._end_seen = start
            self._quiet_from = start if quiet else NEVER
            self.gap_min = round(self._gap_min_seconds * new)
            self._max_pos = NEVER
            if self.last_position is not None:
                self.last_position = self.last_position * new // old
            if self._baseline != FORCE:
                self._baseline, self._transit = self._baseline * scale, self._transit * scale
                self._jitter *= scale
                wall = (arrival - self.epoch) * new
                position = start if follows else max(start, round(wall - self._baseline))
                self._anchor_ts, self._anchor_pos = timestamp, position
                self.reanchors += 1  # another timestamp-to-position mapping
            known = self.first_position is not None and not self._span_pending
            self._next = start if known and self._baseline != FORCE else NEVER
        else:
            start = max(self._frontier, self._end_seen)
        self.switches += 1
        self._switches.append(Switch(fmt.payload_type, new, start, packets_before))
        out.append(_new(Placed, (SWITCH, b"")))
        out += self._place(sequence, timestamp, payload, arrival)
        return out

    def accept(
        self,
        formats: Sequence[TimelineFormat],
        telephone_event_pts: Collection[int] = (),
        comfort_noise_pts: Collection[int] = (),
    ) -> list[int]:
        """More payload types the stream may carry from now on (a re-INVITE's answer); a known
        payload type keeps its format. Returns the audio payload types added."""
        added = [f.payload_type for f in formats if f.payload_type not in self._formats]
        for fmt in formats:
            self._formats.setdefault(fmt.payload_type, fmt)
        self._events.update(telephone_event_pts)
        self._comfort.update(comfort_noise_pts)
        return added

    def rescue(self, payload_types: Collection[int]) -> list[Placed]:
        """Place, after all, the packets of ``payload_types`` (just accepted) that were dropped
        as unexpected, when they are the newest of the locked SSRC in an unbroken run by
        sequence number: an SRC that switched codec right after a re-INVITE's answer, before
        the recorder heard of the answer. Their counts leave ``unexpected_payload``."""
        recent = list(self._recent)
        run: list[tuple[int, int, int, bytes, float]] = []
        self._recent.clear()
        for item in reversed(recent):  # the newest first
            if item[0] != (self._max_seq - len(run)) & 0xFFFF or item[2] not in payload_types:
                break
            run.append(item)
        if self._ssrc is None or not run:
            return []
        out: list[Placed] = []
        for back, (sequence, timestamp, payload_type, payload, arrival) in reversed(
            list(enumerate(run))
        ):
            self.unexpected_payload -= 1
            self.unexpected_types[payload_type] -= 1
            if not self.unexpected_types[payload_type]:
                del self.unexpected_types[payload_type]
            if payload_type != self.payload_type:
                fmt = self._formats[payload_type]
                out += self._switch(fmt, sequence, timestamp, payload, arrival, back)
            else:
                out += self._place(sequence, timestamp, payload, arrival)
        return out

    def take_switch(self) -> Switch:
        """The oldest switch whose :data:`SWITCH` marker was emitted and not yet taken."""
        return self._switches.popleft()

    def to_base(self, position: int) -> int:
        """A position of the current clock in ``base_rate`` units."""
        return round(position * self._to_base)
