"""`SessionManager`: node liveness, session timeouts, and takeover of dead nodes' sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from .errors import SessionNotFound, StoreError, VersionConflict
from .state import SessionState, SessionStatus, as_utc, utcnow
from .store import Clock, SessionStore

SessionCallback = Callable[[SessionState], Awaitable[None]]
"""Async hook given a session the manager is about to end or fail."""

TIMEOUT_REASON = "timeout"
_SAVE_ATTEMPTS = 5

log = structlog.get_logger("siprec_node.session.manager")


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Settings of one node's manager (`session.*` keys); `node_ttl` defaults to 3 heartbeats."""

    node_id: str
    heartbeat_interval: timedelta = timedelta(seconds=5)
    cleanup_interval: timedelta = timedelta(seconds=30)
    session_timeout: timedelta = timedelta(hours=1)
    node_ttl: timedelta | None = None
    forget_dead_nodes_after: timedelta = timedelta(hours=24)
    """A dead node with no session left is dropped from the node list after this long."""
    takeover_concurrency: int = 16
    """Sessions of a dead node finalised in parallel."""

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        if self.node_ttl is None:
            object.__setattr__(self, "node_ttl", 3 * self.heartbeat_interval)
        for name in ("heartbeat_interval", "cleanup_interval", "session_timeout", "node_ttl"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.effective_node_ttl <= self.heartbeat_interval:
            raise ValueError(
                f"node_ttl ({self.node_ttl}) must be longer than heartbeat_interval "
                f"({self.heartbeat_interval}), or live nodes would be taken over"
            )
        if self.takeover_concurrency < 1:
            raise ValueError("takeover_concurrency must be at least 1")

    @property
    def effective_node_ttl(self) -> timedelta:
        """`node_ttl`, filled in."""
        assert self.node_ttl is not None
        return self.node_ttl


class SessionManager:
    """Runs one node's duties against a shared `SessionStore`.

    Each duty is a plain coroutine (`heartbeat`, `takeover`, `cleanup`, `recover_own`) that tests
    drive with an injected clock; `start` runs them periodically: heartbeat then takeover every
    `heartbeat_interval`, cleanup every `cleanup_interval`.
    """

    def __init__(
        self,
        store: SessionStore,
        config: ManagerConfig,
        *,
        on_timeout: SessionCallback | None = None,
        on_takeover: SessionCallback | None = None,
        on_presumed_dead: Callable[[], Awaitable[None]] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.on_timeout = on_timeout
        self.on_takeover = on_takeover
        self.on_presumed_dead = on_presumed_dead
        self._last_beat: datetime | None = None
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._log = log.bind(node_id=config.node_id)

    @property
    def node_id(self) -> str:
        """This node's identity."""
        return self.config.node_id

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return bool(self._tasks)

    def _now(self) -> datetime:
        return as_utc(self._clock(), "clock()")

    # -- duties ------------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Prove this node is alive: one write, whatever the number of calls.

        If the previous successful heartbeat is older than `node_ttl` (the process was stalled,
        or the store unreachable), other nodes may have taken this node's sessions over:
        `on_presumed_dead` runs so that the node stops recording what is no longer its own.
        """
        now = self._now()
        await self.store.update_heartbeat(self.node_id, now)
        stalled = (
            self._last_beat is not None and now - self._last_beat > self.config.effective_node_ttl
        )
        self._last_beat = now
        if stalled and self.on_presumed_dead is not None:
            self._log.warning("heartbeat gap longer than node_ttl; checking ownership")
            try:
                await self.on_presumed_dead()
            except Exception:
                self._log.exception("on_presumed_dead hook failed")

    async def recover_own(self) -> list[SessionState]:
        """Active sessions this node id owns (after a restart), for the SIP layer to restore."""
        return await self.store.list_by_node(self.node_id)

    async def cleanup(self) -> list[SessionState]:
        """End this node's sessions idle (no SIP, no RTP) for `session_timeout` (those
        `finalising` are left to the finalisation retries).

        `on_timeout` runs first (send BYE, finalise the recording); then the session is saved
        `ended` with reason "timeout". Returns the sessions ended.
        """
        cutoff = self._now() - self.config.session_timeout
        ended = []
        for state in await self.store.list_by_node(self.node_id, idle_before=cutoff):
            if state.status is SessionStatus.FINALISING:
                continue  # not idle: its recording waits for a finalisation retry (disk)
            slog = self._log.bind(session_id=state.id, call_id=state.call_id)
            slog.info("session timed out", last_activity=state.last_activity.isoformat())
            await self._run_hook(self.on_timeout, state, slog, "on_timeout")
            done = await self._finish(
                state,
                SessionStatus.ENDED,
                TIMEOUT_REASON,
                still_due=lambda s: s.last_activity <= cutoff,
            )
            if done is not None:
                ended.append(done)
        return ended

    async def takeover(self) -> list[SessionState]:
        """Fail the sessions of nodes whose heartbeat is older than `node_ttl`.

        Each session is claimed atomically first, so among racing managers exactly one
        finalises it: `on_takeover` runs (finalise the recording it can reach), then the session
        is saved `failed` with reason "node <id> died". Returns the sessions this node failed.
        """
        now = self._now()
        taken: list[SessionState] = []
        gate = asyncio.Semaphore(self.config.takeover_concurrency)
        for node in await self.store.list_nodes(self.config.effective_node_ttl, now=now):
            if node.alive or node.node_id == self.node_id:
                continue
            orphans = await self.store.list_by_node(node.node_id)

            async def take(state: SessionState, dead: str = node.node_id) -> SessionState | None:
                async with gate:
                    return await self._take_one(dead, state.id)

            results = await asyncio.gather(*(take(s) for s in orphans))
            taken.extend(r for r in results if r is not None)
            forget_before = now - self.config.forget_dead_nodes_after
            if node.last_heartbeat < forget_before and await self.store.forget_node(
                node.node_id, dead_before=forget_before
            ):
                self._log.info("forgot dead node", dead_node=node.node_id)
        return taken

    async def _take_one(self, dead_node: str, session_id: str) -> SessionState | None:
        if not await self.store.claim(session_id, dead_node, self.node_id):
            return None  # another node won, or the session ended meanwhile
        try:
            state = await self.store.load(session_id)
        except SessionNotFound:
            return None
        slog = self._log.bind(session_id=state.id, call_id=state.call_id, dead_node=dead_node)
        slog.warning("taking over session of dead node")
        await self._run_hook(self.on_takeover, state, slog, "on_takeover")
        return await self._finish(state, SessionStatus.FAILED, f"node {dead_node} died")

    async def _finish(
        self,
        state: SessionState,
        status: SessionStatus,
        reason: str,
        still_due: Callable[[SessionState], bool] | None = None,
    ) -> SessionState | None:
        """Save `state` as `status` by compare-and-set, re-reading after a concurrent write.

        Returns the final state, or None if it no longer concerns this node (activity resumed,
        ownership moved, or the record is gone).
        """
        for _ in range(_SAVE_ATTEMPTS):
            if state.is_terminal:
                return state  # e.g. the hook already ended it
            state.transition(status, reason=reason)
            try:
                await self.store.save(state, expected_version=state.version)
                return state
            except VersionConflict:
                try:
                    state = await self.store.load(state.id)
                except SessionNotFound:
                    return None
                if state.node_id != self.node_id:
                    return None
                if still_due is not None and not state.is_terminal and not still_due(state):
                    return None
        self._log.warning("could not finish session: concurrent writes", session_id=state.id)
        return None

    async def _run_hook(
        self,
        hook: SessionCallback | None,
        state: SessionState,
        slog: Any,
        name: str,
    ) -> None:
        if hook is None:
            return
        try:
            await hook(state)
        except Exception:
            slog.exception(f"{name} hook failed; finishing the session anyway")

    # -- background loop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Send a first heartbeat (errors propagate) and start the periodic duties."""
        if self._tasks:
            return
        await self.heartbeat()
        self._tasks = [
            asyncio.create_task(
                self._every(self.config.heartbeat_interval, self._tick),
                name=f"session-heartbeat-{self.node_id}",
            ),
            asyncio.create_task(
                self._every(self.config.cleanup_interval, self.cleanup),
                name=f"session-cleanup-{self.node_id}",
            ),
        ]
        self._log.info("session manager started")

    async def stop(self) -> None:
        """Stop the periodic duties (the node's entry stays; it simply stops beating)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            self._log.info("session manager stopped")

    async def leave(self) -> bool:
        """A clean stop, after `stop`: mark this node stopped in the store, so that the fleet
        (and `siprec-node nodes`) sees at once that it left rather than after `node_ttl`.

        Only when none of its sessions is still active in the store (a clean stop has
        finalised them all); otherwise the node is left to expire like a dead one, so that a
        restart with the same id, or a takeover, deals with what is left. True if marked.
        """
        left = await self.store.list_by_node(self.node_id)
        if left:
            self._log.warning(
                "node left with active sessions; not marked stopped",
                sessions=[s.id for s in left[:20]],
                count=len(left),
            )
            return False
        await self.store.mark_node_stopped(self.node_id, self._now())
        self._log.info("node marked stopped")
        return True

    async def _tick(self) -> None:
        await self.heartbeat()
        await self.takeover()

    async def _every(
        self,
        interval: timedelta,
        duty: Callable[[], Awaitable[object]],
    ) -> None:
        seconds = interval.total_seconds()
        while True:
            await asyncio.sleep(seconds)
            try:
                await duty()
            except StoreError as exc:
                self._log.warning("session duty failed", duty=duty.__name__, error=str(exc))
            except Exception:
                self._log.exception("session duty crashed", duty=duty.__name__)
