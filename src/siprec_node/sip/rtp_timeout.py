"""Dead-SRC detection: what to do when a call's streams stop receiving RTP (sans-I/O).

An SRC that crashes never sends BYE; its call would stay live, recording silence, until
``session.session_timeout``. :class:`RtpTimeout` watches the RTP counters of every call's
non-paused streams, fed once per check interval by the handler (one batched query of the media
workers, never a message per packet), and says what to do when every one of them has been silent
for ``media.rtp_timeout``:

* ``probe``: an in-dialog OPTIONS to the SRC. 481 (the SRC has no such dialog), 408 or no answer
  at all (Timer F) end the call; any other final response proves the SRC alive and keeping the
  dialog (200, but also 405/501 from an SRC that does not take OPTIONS in a dialog): the call is
  kept, marked stalled, and probed again after another ``rtp_timeout`` of silence.
* ``end``: the call is ended (BYE), reason ``rtp_timeout``.
* ``none``: nothing.

Streams paused by the SDP (hold, ``inactive``) or by an operator never time out, so a call whose
streams are all paused is never probed; the silence is counted again from when one resumes.
Streams that were never negotiated are not watched. Probes are sent only after silence, never on
a timer (INTEROP: SRCs dislike unexpected requests).

After 481 no BYE is sent (the SRC has no dialog left); after 408 or no answer the handler sends
a best-effort BYE (RFC 3261 §12.2.1.2 ends the dialog, and a BYE tells an SRC that only lost its
way to us that the recording stopped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Union


class RtpTimeoutAction(StrEnum):
    """``media.rtp_timeout_action``."""

    PROBE = "probe"
    END = "end"
    NONE = "none"


STALLED = "stalled"
"""The kind of the CallData flag (and verdict problem) of a call whose SRC answered a probe
while sending no RTP."""


@dataclass(frozen=True)
class SendProbe:
    """Send an in-dialog OPTIONS to the call's SRC and report its outcome."""

    session_id: str


@dataclass(frozen=True)
class EndCall:
    """End the call with ``reason``; ``bye`` says whether to send a BYE to the SRC."""

    session_id: str
    reason: str
    bye: bool


@dataclass(frozen=True)
class MarkStalled:
    """The SRC answered the probe: keep the call, flagged stalled with these figures (the
    probes it answered so far, the seconds of silence when it last did)."""

    session_id: str
    probes: int
    silent_s: float


Decision = Union[SendProbe, EndCall, MarkStalled]  # noqa: UP007 - a runtime alias


@dataclass
class _Watch:
    live: frozenset[int]
    received: int
    since: float
    """When the silence began, or the last probe was answered (the next timeout's start)."""
    silent_from: float
    """When the silence began."""
    probing: bool = False
    answered: int = 0


def check_interval(timeout: float) -> float:
    """How often the counters are read for ``timeout``: a tenth of it, within 0.25 to 5 s (a
    60 s timeout is detected 60 to 65 s after the last packet)."""
    return min(5.0, max(0.25, timeout / 10.0))


class RtpTimeout:
    """Per-call silence tracking and the decisions of ``media.rtp_timeout_action``.

    Feed :meth:`observe` each check interval with each live call's non-paused streams and their
    receive counters (any value that changes when packets arrive), :meth:`probe_answered` with
    the outcome of each probe, and :meth:`forget` when a call ends. ``now`` is any monotonic
    clock in seconds.
    """

    def __init__(self, timeout: float, action: RtpTimeoutAction | str = RtpTimeoutAction.PROBE):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.action = RtpTimeoutAction(action)
        self._watches: dict[str, _Watch] = {}
        self.timeouts = 0
        """Times a call's streams were found silent for the timeout."""
        self.probes = 0
        self.ended = 0
        self.stalled = 0

    def __len__(self) -> int:
        return len(self._watches)

    def watching(self, session_id: str) -> bool:
        """Whether ``session_id`` is tracked."""
        return session_id in self._watches

    def probing(self, session_id: str) -> bool:
        """Whether a probe of ``session_id`` is waiting for its outcome."""
        watch = self._watches.get(session_id)
        return watch is not None and watch.probing

    def observe(self, session_id: str, streams: Mapping[int, int], now: float) -> list[Decision]:
        """One check of a call: ``streams`` maps each non-paused stream index to its receive
        counter (empty: every stream paused, on hold, or none negotiated)."""
        if self.action is RtpTimeoutAction.NONE:
            return []
        live = frozenset(streams)
        received = sum(streams.values())
        watch = self._watches.get(session_id)
        if watch is None:
            self._watches[session_id] = _Watch(live, received, now, now)
            return []
        if not live or live != watch.live or received != watch.received:
            # Packets came, or the set of streams that should carry them changed (a hold, a
            # resume, a new stream): the silence is counted from now.
            watch.live, watch.received, watch.since, watch.silent_from = live, received, now, now
            return []
        if watch.probing or now - watch.since < self.timeout:
            return []
        self.timeouts += 1
        if self.action is RtpTimeoutAction.END:
            self.ended += 1
            del self._watches[session_id]
            return [EndCall(session_id, "rtp_timeout", bye=True)]
        watch.probing = True
        self.probes += 1
        return [SendProbe(session_id)]

    def probe_answered(self, session_id: str, status: int | None, now: float) -> list[Decision]:
        """The outcome of a probe: its final status, or None when none came (Timer F)."""
        watch = self._watches.get(session_id)
        if watch is None or not watch.probing or (status is not None and status < 200):
            return []
        watch.probing = False
        if status in (None, 408, 481):
            self.ended += 1
            del self._watches[session_id]
            outcome = "timeout" if status is None else str(status)
            return [EndCall(session_id, f"rtp_timeout_probe_{outcome}", bye=status != 481)]
        watch.since = now  # alive: probe again after another timeout of silence
        watch.answered += 1
        if watch.answered == 1:
            self.stalled += 1
        return [MarkStalled(session_id, watch.answered, round(now - watch.silent_from, 3))]

    def forget(self, session_id: str) -> None:
        """The call ended: stop tracking it."""
        self._watches.pop(session_id, None)

    def retain(self, session_ids: set[str] | Mapping[str, object]) -> None:
        """Forget every call not in ``session_ids`` (calls ended meanwhile)."""
        for session_id in [s for s in self._watches if s not in session_ids]:
            del self._watches[session_id]
