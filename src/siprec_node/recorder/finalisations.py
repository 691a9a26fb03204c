"""Recordings of ended calls until they are final: held ``finalising``, retried, cleaned up.

A call that ends with a recording to finalise is saved ``finalising`` (``CallData.outcome``
says whether it then becomes ``ended`` or ``failed``): the store keeps it in the active index
and its node's, so that a node killed before the finalisation is done finds it again at
start-up (:meth:`Finalisations.resume`) and a surviving node takes it over like a live call.
Only a successful finalisation makes the call ``ended`` (or ``failed``); its parts folder is
removed then (kept with ``recording.keep_parts``).

Finalisations run in the node's finalisation pool (``recorder/finalise_pool.py``). When its
queue is full the call waits here, still ``finalising`` (one ``recording_finalise_deferred``
line), and goes into the queue as soon as it has room (:meth:`Finalisations.room`); a node that
dies meanwhile leaves it ``finalising`` in the store, for its next start or a surviving node.

A finalisation that fails (the disk is full, the directory is not writable) is logged as one
``recording_finalise_failed`` line per attempt and tried again after ``retry_initial``
seconds, doubling up to ``retry_max``, and at once when the recording disk gets back above
``recording.min_free``; attempts, failures and retries are counted (``/metrics``).

At start-up, parts folders of the last days with no final sidecar and no live recorder
(``media.disk.unfinalised_parts``) are finalised too: the recordings of calls a node with a
per-process store (``memory``) was finalising when it died, or whose store record is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from siprec_node.media.disk import STALE_S, LeftParts, remove_parts, unfinalised_parts
from siprec_node.sip.call import CallData, CallStatus, CallStore, utc_now
from siprec_node.sip.media_state import MediaState
from siprec_node.siprec.recording_session import RecordingSession

log = structlog.get_logger("siprec_node.recorder.finalisations")

RETRY_INITIAL = 2.0
RETRY_MAX = 60.0
ORPHAN_REASON = "finalised at start-up: its node stopped before finalising it"

Finalise = Callable[[CallData, MediaState | None, RecordingSession | None], Awaitable[Any]]
Save = Callable[[CallData], None]


@dataclass
class _Pending:
    data: CallData
    state: MediaState
    session: RecordingSession | None
    failures: int = 0
    due: float = float("inf")
    delay: float = 0.0
    save: bool = True
    waiting: bool = False
    """Deferred for want of room in the pool's queue (not a failure)."""


def _session_of(data: CallData) -> RecordingSession | None:
    stored = (data.recording or {}).get("session")
    return RecordingSession.from_dict(stored) if stored else None


def _state_of(data: CallData) -> MediaState | None:
    stored = (data.media or {}).get("state")
    return MediaState.from_dict(stored) if stored else None


class Finalisations:
    """The node's recordings still to be finalised (see the module docstring).

    ``finalise`` is the handler's finalisation of one recording, which reports back through
    :meth:`done`, :meth:`failed` or :meth:`gone`; ``save`` writes a CallData snapshot.
    """

    def __init__(
        self,
        finalise: Finalise,
        save: Save,
        *,
        keep_parts: bool = False,
        retry_initial: float = RETRY_INITIAL,
        retry_max: float = RETRY_MAX,
        clock: Callable[[], float] = time.monotonic,
        free_slots: Callable[[], int] = lambda: sys.maxsize,
    ) -> None:
        self._finalise = finalise
        self._save = save
        self.keep_parts = keep_parts
        self.retry_initial = retry_initial
        self.retry_max = max(retry_max, retry_initial)
        self._clock = clock
        self._free_slots = free_slots
        self.pending: dict[str, _Pending] = {}
        self.attempts = 0
        """Finalisations run by the retry loop (retries and start-up recoveries)."""
        self.failures = 0
        """Finalisations that failed (each attempt)."""
        self.retries = 0
        """Attempts made after a failure."""
        self.recovered = 0
        """Recordings finalised at start-up (from the store, or from parts folders)."""
        self.parts_removed = 0
        self.write_errors = 0
        """Failed writes of stream files, as the media workers reported them at close."""
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._scan: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self.deferrals = 0
        """Finalisations deferred because the pool's queue was full."""
        # Nothing here walks every pending recording per event: with the pool's queue full a
        # node can hold thousands, and room() comes with each finished finalisation.
        self._timers: list[tuple[float, int, _Pending]] = []
        """Heap of (due, seq, pending); an entry whose due is no longer its pending's is stale."""
        self._seq = itertools.count()
        self._waiting: deque[_Pending] = deque()
        """Deferred for room in the pool's queue, first deferred first."""

    # -- the call's status -------------------------------------------------------------------

    @staticmethod
    def hold(data: CallData, status: str) -> None:
        """The call ends with ``status`` once its recording is final: ``finalising`` until."""
        data.outcome = status
        data.status = CallStatus.FINALISING

    def done(self, data: CallData, state: MediaState, *, parts_removed: bool = False) -> None:
        """The recording is final: the call takes its outcome, the parts folder goes (unless
        the finalisation removed it already: ``parts_removed``)."""
        if data.status == CallStatus.FINALISING:
            data.status = data.outcome or CallStatus.ENDED
        data.outcome = None
        pending = self.pending.pop(data.session_id, None)
        if pending is not None and pending.failures:
            log.info(
                "recording_finalise_recovered",
                session_id=data.session_id,
                call_id=data.call_id,
                attempts=pending.failures + 1,
            )
        if parts_removed or (not self.keep_parts and remove_parts(state.parts)):
            self.parts_removed += 1

    def gone(self, data: CallData) -> None:
        """Nothing to finalise here (the parts folder is not reachable): the call is closed
        with its outcome, as before finalisation existed."""
        if data.status == CallStatus.FINALISING:
            data.status = data.outcome or CallStatus.FAILED
            data.outcome = None
        self.pending.pop(data.session_id, None)

    def failed(
        self,
        data: CallData,
        state: MediaState,
        session: RecordingSession | None,
        error: BaseException,
    ) -> None:
        """A finalisation failed: one log line, and a retry after the backoff."""
        self.failures += 1
        pending = self.pending.get(data.session_id)
        if pending is None:
            pending = _Pending(data, state, session)
            self.pending[data.session_id] = pending
        pending.failures += 1
        pending.delay = (
            self.retry_initial if pending.delay <= 0 else min(pending.delay * 2, self.retry_max)
        )
        self._due(pending, self._clock() + pending.delay)
        log.warning(
            "recording_finalise_failed",
            session_id=data.session_id,
            call_id=data.call_id,
            error=repr(error),
            attempt=pending.failures,
            retry_in_s=pending.delay,
            parts=state.parts,
        )
        self._wake_loop()

    def deferred(self, data: CallData, state: MediaState, session: RecordingSession | None) -> None:
        """The pool's queue is full: the call stays ``finalising`` and is queued once there is
        room (:meth:`room`)."""
        self.deferrals += 1
        pending = self.pending.get(data.session_id)
        if pending is None:
            pending = _Pending(data, state, session)
            self.pending[data.session_id] = pending
            log.info(
                "recording_finalise_deferred", session_id=data.session_id, call_id=data.call_id
            )
        pending.due = float("inf")  # until room() says the queue has room
        if not pending.waiting:
            pending.waiting = True
            self._waiting.append(pending)

    def room(self) -> None:
        """The pool's queue has room again: the deferred finalisations go in, oldest first."""
        if self._waiting:
            self._wake_loop()

    def _due(self, pending: _Pending, due: float) -> None:
        pending.due = due
        heapq.heappush(self._timers, (due, next(self._seq), pending))

    def note_write_errors(
        self, data: CallData, stats: dict[int, dict[str, Any]], call_log: Any
    ) -> None:
        """Streams whose files could not all be written (disk full): counted, logged once for
        the call, and flagged for the verdict (the stream JSON may not have been writable)."""
        failed = {i: int(s.get("write_errors") or 0) for i, s in stats.items()}
        failed = {i: n for i, n in failed.items() if n > 0}
        if not failed:
            return
        count = sum(failed.values())
        self.write_errors += count
        error = next((s.get("write_error") for s in stats.values() if s.get("write_error")), None)
        lost_ms = sum(int(s.get("write_lost_ms") or 0) for s in stats.values())
        data.flag("write_errors", streams=sorted(failed), count=count, ms=lost_ms, detail=error)
        call_log.warning(
            "recording_write_errors",
            streams=sorted(failed),
            count=count,
            lost_ms=lost_ms,
            error=error,
        )

    # -- start-up ----------------------------------------------------------------------------

    def resume(self, data: CallData) -> bool:
        """A call the store lists ``finalising`` for this node (it stopped before finishing):
        finalise it now. False when the snapshot holds no recording state."""
        state = _state_of(data)
        if state is None:
            self.gone(data)
            self._save(data)
            return False
        if data.session_id not in self.pending:
            pending = _Pending(data, state, _session_of(data))
            self.pending[data.session_id] = pending
            self._due(pending, self._clock())
            self.recovered += 1
            log.info("recording_finalise_resumed", session_id=data.session_id, parts=state.parts)
        self._wake_loop()
        return True

    def recover_parts_soon(
        self,
        root: str | Path,
        node_id: str,
        store: CallStore,
        busy: Callable[[], Iterable[str]],
    ) -> None:
        """:meth:`recover_parts` in the background: now, and again once the folders too fresh
        to judge now can be (``STALE_S``)."""

        async def scan() -> None:
            for wait in (0.0, STALE_S + 1.0):
                await asyncio.sleep(wait)
                try:
                    await self.recover_parts(root, node_id, store, busy())
                except Exception as exc:
                    log.warning("recording_parts_scan_failed", root=str(root), error=repr(exc))

        if self._scan is None:
            self._scan = asyncio.get_running_loop().create_task(scan())

    async def recover_parts(
        self,
        root: str | Path,
        node_id: str,
        store: CallStore,
        busy: Iterable[str] = (),
    ) -> list[str]:
        """Finalise the parts folders left without a final sidecar (module docstring);
        ``busy``: parts folders of calls this node records or finalises. Returns their paths."""
        loop = asyncio.get_running_loop()
        scan = functools.partial(unfinalised_parts, root, with_final=not self.keep_parts)
        left: list[LeftParts] = await loop.run_in_executor(None, scan)
        taken = {str(Path(p)) for p in busy}
        taken |= {str(Path(p.state.parts)) for p in self.pending.values()}
        found = []
        for item in left:
            if str(item.parts) in taken:
                continue
            stored = None
            with contextlib.suppress(Exception):
                stored = await store.load(item.session_id)
            if stored is not None and not stored.is_terminal:
                continue  # someone's live call or finalisation: theirs to finish
            if item.final:  # finalised, but its parts were not removed yet
                if remove_parts(item.parts):
                    self.parts_removed += 1
                    log.info("recording_parts_removed", parts=str(item.parts))
                continue
            data = stored or CallData(
                session_id=item.session_id,
                call_id=item.call_id,
                node_id=node_id,
                status=CallStatus.FAILED,
                end_reason=ORPHAN_REASON,
                started_at=item.started_at,
                created_at=item.started_at,
            )
            state = MediaState(
                epoch=item.started_at.timestamp(),
                stem=item.stem,
                directory=str(item.directory),
                parts=str(item.parts),
            )
            pending = _Pending(data, state, _session_of(data), save=stored is None)
            self.pending[data.session_id] = pending
            self._due(pending, self._clock())
            self.recovered += 1
            found.append(str(item.parts))
            log.warning(
                "recording_left_unfinalised",
                session_id=data.session_id,
                parts=str(item.parts),
                in_store=stored is not None,
            )
        if found:
            self._wake_loop()
        return found

    # -- the retry loop ----------------------------------------------------------------------

    def wake(self) -> None:
        """Try every pending finalisation now (the disk has room again)."""
        now = self._clock()
        for pending in self.pending.values():
            if pending.due > now:
                self._due(pending, now)
        self._wake_loop()

    def _wake_loop(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def start(self) -> None:
        """Run the retry loop in the background (once, inside the event loop)."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop retrying; attempts under way get ``grace`` seconds to finish (what is pending
        then stays ``finalising`` in the store)."""
        if self._scan is not None:
            self._scan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan
            self._scan = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._attempts:
            _, left = await asyncio.wait(set(self._attempts), timeout=grace)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            started = 0
            for pending in self._take_due(self._clock()):
                self._start(loop, pending)
                started += 1
            free = self._free_slots() - started
            while self._waiting and free > 0:
                pending = self._waiting.popleft()
                if not pending.waiting or self.pending.get(pending.data.session_id) is not pending:
                    continue  # started by wake() meanwhile, or done
                self._start(loop, pending)
                started += 1
                free -= 1
            if started:
                await asyncio.sleep(0)  # the attempts take their place in the pool's queue
                continue
            wait = self._timers[0][0] - self._clock() if self._timers else None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    def _take_due(self, now: float) -> list[_Pending]:
        due = []
        while self._timers and self._timers[0][0] <= now:
            when, _, pending = heapq.heappop(self._timers)
            if pending.due == when and self.pending.get(pending.data.session_id) is pending:
                due.append(pending)
        return due

    def _start(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        pending.due = float("inf")  # until failed() or deferred() decides again
        pending.waiting = False
        task = loop.create_task(self._attempt(pending))
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    async def _attempt(self, pending: _Pending) -> None:
        if pending.failures:
            self.retries += 1
        self.attempts += 1
        data = pending.data
        try:
            await self._finalise(data, pending.state, pending.session)
        except Exception as exc:  # the handler's finalise reports its own failures
            self.failed(data, pending.state, pending.session, exc)
        if pending.waiting:
            return  # deferred again: still finalising, nothing new to save
        if self.pending.get(data.session_id) is pending and pending.due == float("inf"):
            self.pending.pop(data.session_id, None)  # neither done nor failed: nothing to do
        if pending.save:
            data.updated_at = utc_now()
            self._save(data)

    @property
    def backlog(self) -> int:
        """Recordings waiting for a (new) attempt, or for room in the pool's queue."""
        return len(self.pending)
