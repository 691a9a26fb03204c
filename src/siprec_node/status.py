"""The one status vocabulary of a recorded call, shared by the SIP side's ``CallData`` and the
session store's ``SessionState`` (which names it ``SessionStatus``), with its lifecycle."""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    """Lifecycle of a recorded call and of its stored session: `connecting` → `active` →
    (`finalising` →) `ended` | `failed`.

    `finalising`: the call is over and its recording not yet finalised; the session stays in the
    active index (and its node's) until it is, so that a restart or a takeover finalises it.
    """

    CONNECTING = "connecting"
    ACTIVE = "active"
    FINALISING = "finalising"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True for `ended` and `failed`: the call is over and leaves the active index."""
        return self in (CallStatus.ENDED, CallStatus.FAILED)

    def can_become(self, new: CallStatus) -> bool:
        """Whether the lifecycle allows going from this status to `new` (staying put is allowed)."""
        return CallStatus(new) in _TRANSITIONS[self]

    def predecessors(self) -> frozenset[CallStatus]:
        """The statuses from which this one may be reached (including itself)."""
        return frozenset(s for s, nexts in _TRANSITIONS.items() if self in nexts)


_TRANSITIONS: dict[CallStatus, frozenset[CallStatus]] = {
    CallStatus.CONNECTING: frozenset(CallStatus),
    CallStatus.ACTIVE: frozenset(
        {
            CallStatus.ACTIVE,
            CallStatus.FINALISING,
            CallStatus.ENDED,
            CallStatus.FAILED,
        }
    ),
    CallStatus.FINALISING: frozenset({CallStatus.FINALISING, CallStatus.ENDED, CallStatus.FAILED}),
    CallStatus.ENDED: frozenset({CallStatus.ENDED}),
    CallStatus.FAILED: frozenset({CallStatus.FAILED}),
}


TERMINAL = frozenset({CallStatus.ENDED, CallStatus.FAILED})
"""Statuses of a finished record (the store drops it from the active index)."""
OVER = frozenset({CallStatus.FINALISING, CallStatus.ENDED, CallStatus.FAILED})
"""Statuses of a call that is over (its recording may still be finalising)."""
