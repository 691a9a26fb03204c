"""Overload: new INVITEs are refused while the calls already accepted wait too long for media.

A call's 200 goes out when its streams are open in a media worker. A worker short of CPU falls
behind on its opens; every call accepted then is answered later than the one before, and the
RTP its SRC sends meanwhile waits in socket buffers that overflow. :class:`OpenBacklog` keeps the
accepted calls whose media is opening, oldest first, and says the node is overloaded while the
oldest has waited longer than ``sip.max_answer_delay``: new INVITEs then get 503 (the SRC fails
over to another recorder, or tries again after Retry-After: as many seconds as the oldest has
waited, about what the backlog takes to clear) instead of a late answer. It reads
no clock and walks no list: the oldest is the first entry, and calls leave as they are answered
or end.
"""

from __future__ import annotations

from collections import OrderedDict

import structlog

log = structlog.get_logger("siprec_node.sip.call_control")

__all__ = ["OpenBacklog"]


class OpenBacklog:
    """Calls whose media is opening, by session id, with when each was accepted."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        """Seconds the oldest may wait before new calls are refused; 0 never refuses."""
        self._waiting: OrderedDict[str, float] = OrderedDict()
        self._since: float | None = None  # when the current overload began
        self._refused = 0  # INVITEs refused in the current overload

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, session_id: str, now: float) -> None:
        """A call was accepted: its media starts opening now."""
        self._waiting[session_id] = now

    def discard(self, session_id: str) -> None:
        """A call's media opened or failed, or the call ended before it did."""
        self._waiting.pop(session_id, None)

    def oldest_wait(self, now: float) -> float:
        """Seconds the call waiting longest has waited (0 when none waits)."""
        for accepted in self._waiting.values():
            return max(0.0, now - accepted)
        return 0.0

    def admit(self, now: float) -> bool:
        """Whether a new INVITE may be accepted now; counts and logs the ones refused (one line
        when an overload begins, one when a call is accepted again after it)."""
        if self.limit <= 0:
            return True
        waited = self.oldest_wait(now)
        if waited <= self.limit:
            if self._since is not None:
                log.info(
                    "overload_ended",
                    refused=self._refused,
                    lasted_s=round(now - self._since, 3),
                )
                self._since, self._refused = None, 0
            return True
        if self._since is None:
            self._since = now
            log.warning(
                "overloaded",
                waited_s=round(waited, 3),
                limit_s=self.limit,
                waiting=len(self._waiting),
                setting="sip.max_answer_delay",
            )
        self._refused += 1
        return False
