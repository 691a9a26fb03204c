"""Transcription jobs and the queue they wait on: `JobQueue`, and `MemoryJobQueue` for a node
whose sessions live in memory (`redis_queue.RedisJobQueue` is the durable, shared one).

A job is one finished recording: its session id and the path of its sidecar (the worker finds
the audio files and the turns there). A delivery is one attempt at it. The life of a job:

- `put` after finalisation;
- `take` hands it to one worker; `renew` keeps it that worker's while it runs;
- `ack` once the history is written (the job is gone);
- `fail` after an error: back on the queue with one more failed attempt, or, at
  `max_attempts`, to the dead letters with its error (`dead_letters`);
- a worker that dies holding a job stops renewing it; after `reclaim_after` the job is
  delivered again (the durable queue only: a memory queue dies with its node).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Job:
    """A recording to transcribe."""

    session_id: str
    sidecar: str
    """Path of the recording's `<stem>.json` (as the recorder wrote it; workers must see the
    same path, e.g. a shared folder mounted at the same place)."""

    def to_fields(self) -> dict[str, str]:
        return {"session_id": self.session_id, "sidecar": self.sidecar}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Job:
        return cls(str(fields.get("session_id", "")), str(fields.get("sidecar", "")))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt at a job: `attempt` 1 is the first."""

    id: str
    job: Job
    attempt: int
    failures: tuple[str, ...] = ()
    """Errors of the earlier attempts (a worker that died leaves "worker died")."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job given up on after `max_attempts`, with the last error."""

    job: Job
    error: str
    attempts: int


@dataclass(slots=True)
class QueueCounts:
    """How many jobs wait (not yet taken), run (taken, not acked) and are dead."""

    waiting: int = 0
    running: int = 0
    dead: int = 0

    @property
    def depth(self) -> int:
        """Jobs not finished: waiting and running."""
        return self.waiting + self.running


class JobQueue(ABC):
    """Where transcription jobs wait for a worker."""

    def __init__(self, *, max_attempts: int = 3, reclaim_after: float = 60.0) -> None:
        self.max_attempts = max_attempts
        self.reclaim_after = reclaim_after

    @abstractmethod
    async def put(self, job: Job) -> None:
        """Add a job."""

    @abstractmethod
    async def take(self, consumer: str, timeout: float) -> Delivery | None:
        """The next job for `consumer` (a re-delivery of a dead worker's first), or None after
        `timeout` seconds without one. A job that has died with its worker `max_attempts`
        times is dead-lettered here instead of being handed out again."""

    @abstractmethod
    async def renew(self, delivery: Delivery, consumer: str) -> None:
        """Tell the queue the job is still being worked on (not to be re-delivered)."""

    @abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """The job is done: remove it."""

    @abstractmethod
    async def fail(self, delivery: Delivery, error: str) -> DeadLetter | None:
        """The attempt failed: queue the job again, or dead-letter it (returned) at
        `max_attempts`."""

    @abstractmethod
    async def counts(self) -> QueueCounts:
        """Jobs waiting, running and dead."""

    @abstractmethod
    async def dead_letters(self) -> list[DeadLetter]:
        """The dead-lettered jobs, oldest first."""

    async def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""


@dataclass
class MemoryJobQueue(JobQueue):
    """A queue inside one node (the memory store's): lost with the node, like its sessions."""

    max_attempts: int = 3
    reclaim_after: float = 60.0
    _waiting: deque[Delivery] = field(default_factory=deque)
    _running: dict[str, Delivery] = field(default_factory=dict)
    _dead: list[DeadLetter] = field(default_factory=list)
    _next: int = 0
    _ready: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._ready is None:
            self._ready = asyncio.Condition()
        return self._ready

    async def _push(self, delivery: Delivery) -> None:
        async with self._condition():
            self._waiting.append(delivery)
            self._condition().notify()

    async def put(self, job: Job) -> None:
        self._next += 1
        await self._push(Delivery(str(self._next), job, 1))

    async def take(self, consumer: str, timeout: float) -> Delivery | None:
        ready = self._condition()
        async with ready:
            try:
                await asyncio.wait_for(ready.wait_for(lambda: bool(self._waiting)), timeout)
            except TimeoutError:
                return None
            delivery = self._waiting.popleft()
            self._running[delivery.id] = delivery
            return delivery

    async def renew(self, delivery: Delivery, consumer: str) -> None:
        return None

    async def ack(self, delivery: Delivery) -> None:
        self._running.pop(delivery.id, None)

    async def fail(self, delivery: Delivery, error: str) -> DeadLetter | None:
        self._running.pop(delivery.id, None)
        failures = (*delivery.failures, error)
        if delivery.attempt >= self.max_attempts:
            dead = DeadLetter(delivery.job, error, delivery.attempt)
            self._dead.append(dead)
            return dead
        await self._push(Delivery(delivery.id, delivery.job, delivery.attempt + 1, failures))
        return None

    async def counts(self) -> QueueCounts:
        return QueueCounts(len(self._waiting), len(self._running), len(self._dead))

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead)
