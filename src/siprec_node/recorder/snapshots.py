"""Writes call snapshots to a CallStore without ever blocking SIP.

Snapshots are frozen (``CallSnapshot``), so they are kept as given, never copied. They are
coalesced per session (the newest wins: a store that is slow or down never makes the node write
stale states after fresh ones) and written by one background task. A failed write keeps the
snapshot pending and is retried with backoff, so an outage of the store loses nothing: the store
catches up when it is back. ``healthy`` is False while writes are failing, for readiness.

An idle writer waits ``linger`` seconds after the first new snapshot before it writes: a call's
INVITE, answer and ACK come within milliseconds, and their three snapshots then cost one write
(five store writes per call became 2.2 in bench/sipcall). A snapshot of a call that is over
(finalising, ended, failed) cuts the wait short: what a restarted or surviving node needs to
finalise the recording (the streams' statistics, the end reason) is written at once. The price:
a node that dies within ``linger`` of a call's start has not stored its newest state (as for
any write still in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from siprec_node.sip.call import CallData, CallSnapshot, CallStore, SnapshotRejected

log = structlog.get_logger("siprec_node.recorder.snapshots")


LINGER = 0.02
"""Seconds an idle writer lets new snapshots gather before it writes (see the module doc)."""


class SnapshotWriter:
    """Coalescing, retrying, ordered-per-session writer of call snapshots."""

    def __init__(
        self,
        store: CallStore,
        *,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        on_rejected: Callable[[str, str], None] | None = None,
        linger: float = LINGER,
    ) -> None:
        self.store = store
        self.linger = linger
        self.on_rejected = on_rejected
        self._pending: dict[str, CallSnapshot] = {}
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._idle = asyncio.Event()
        self._idle.set()
        self.healthy = True
        self.writes = 0
        self.failures = 0
        self.rejected = 0

    @property
    def pending_ids(self) -> set[str]:
        """Sessions with a snapshot not yet written."""
        return set(self._pending)

    @property
    def backlog(self) -> int:
        """Snapshots waiting to be written."""
        return len(self._pending)

    def submit(self, call: CallSnapshot | CallData) -> None:
        """Queue ``call`` (it replaces any older snapshot of its session not yet written);
        returns at once. A snapshot is kept as given; a live CallData is frozen first."""
        snapshot = call.snapshot()
        self._pending[snapshot.session_id] = snapshot
        self._idle.clear()
        self._wakeup.set()
        if snapshot.is_final:
            self._hurry.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout``, then stop."""
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _linger(self) -> None:
        """Let new snapshots gather for ``linger`` seconds, less when one of a call that is
        over comes."""
        if self.linger > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), self.linger)
        self._hurry.clear()

    async def _run(self) -> None:
        delay = self._retry_initial
        await self._linger()  # started by a first snapshot
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                self._hurry.clear()  # its snapshot is written: the next wake lingers
                await self._wakeup.wait()
                await self._linger()
                continue
            session_id, call = next(iter(self._pending.items()))
            try:
                await self.store.save(call)
            except SnapshotRejected as exc:
                self.rejected += 1
                log.warning("snapshot_rejected", session_id=session_id, error=str(exc))
                if self._pending.get(session_id) is call:
                    del self._pending[session_id]
                if self.on_rejected is not None:
                    self.on_rejected(session_id, str(exc))
                continue
            except Exception as exc:
                self.failures += 1
                if self.healthy:
                    log.warning("snapshot_store_failing", error=str(exc), backlog=self.backlog)
                self.healthy = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self.writes += 1
            if not self.healthy:
                log.info("snapshot_store_recovered", backlog=self.backlog)
            self.healthy = True
            delay = self._retry_initial
            # Remove only if no newer snapshot arrived while this one was being written.
            if self._pending.get(session_id) is call:
                del self._pending[session_id]
            else:
                # move the newer one to the back so that other sessions are not starved
                newer = self._pending.pop(session_id)
                self._pending[session_id] = newer
