"""`RedisJobQueue`: transcription jobs on a Redis stream with a consumer group, shared by every
node and worker of a fleet (keys under the session store's prefix and hash tag)::

    siprec:{siprec}:transcription:jobs   stream  session_id, sidecar, failures (JSON list)
    siprec:{siprec}:transcription:dead   stream  session_id, sidecar, error, attempts

Consumer group `transcribers` on the jobs stream. `take` first claims a job whose worker
stopped renewing it for `reclaim_after` (XAUTOCLAIM: the worker died), else reads a new one
(XREADGROUP). A job is removed (XACK + XDEL) once done; a failed attempt is removed and added
again with its error appended, in one script; a job with `max_attempts` failures — a worker
dying holding it counts as one (the entry's delivery count) — moves to the dead stream. The
stream lives in Redis's own persistence: with AOF on, a restarted Redis has every job that was
queued, and taken-but-unacknowledged ones are re-delivered after `reclaim_after`.
"""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import ResponseError

from ..session.redis_store import RedisSessionStore
from .jobs import DeadLetter, Delivery, Job, JobQueue, QueueCounts

GROUP = "transcribers"
WORKER_DIED = "worker died while transcribing"

# KEYS: jobs, dead. ARGV: id, group, dead 0|1, session_id, sidecar, failures JSON, error, attempts
_FAIL = """
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  return redis.call('XADD', KEYS[2], '*', 'session_id', ARGV[4], 'sidecar', ARGV[5],
                    'error', ARGV[7], 'attempts', ARGV[8])
end
return redis.call('XADD', KEYS[1], '*', 'session_id', ARGV[4], 'sidecar', ARGV[5],
                  'failures', ARGV[6])
"""


def _failures(fields: dict[str, Any]) -> tuple[str, ...]:
    try:
        value = json.loads(fields.get("failures") or "[]")
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


class RedisJobQueue(JobQueue):
    """The durable, shared queue (see module doc)."""

    def __init__(
        self, store: RedisSessionStore, *, max_attempts: int = 3, reclaim_after: float = 60.0
    ) -> None:
        super().__init__(max_attempts=max_attempts, reclaim_after=reclaim_after)
        self.client = store.client
        self.jobs_key = store.key("transcription:jobs")
        self.dead_key = store.key("transcription:dead")
        self._fail = self.client.register_script(_FAIL)
        self._group_ready = False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.jobs_key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def put(self, job: Job) -> None:
        await self.client.xadd(self.jobs_key, {**job.to_fields(), "failures": "[]"})

    async def _delivered(self, entry_id: str) -> int:
        rows = await self.client.xpending_range(self.jobs_key, GROUP, entry_id, entry_id, 1)
        return int(rows[0]["times_delivered"]) if rows else 1

    async def take(self, consumer: str, timeout: float) -> Delivery | None:
        try:
            return await self._take(consumer, timeout)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was lost (a Redis without persistence)
            return None

    async def _take(self, consumer: str, timeout: float) -> Delivery | None:
        await self._ensure_group()
        idle_ms = max(int(self.reclaim_after * 1000), 1)
        while True:
            claimed = await self.client.xautoclaim(
                self.jobs_key, GROUP, consumer, idle_ms, start_id="0-0", count=1
            )
            entries = [e for e in (claimed[1] if len(claimed) > 1 else []) if e and e[1]]
            if not entries:
                break
            entry_id, fields = entries[0]
            failures = _failures(fields)
            died = await self._delivered(entry_id) - 1  # deliveries that ended with no answer
            failures = (*failures, *([WORKER_DIED] * died))
            delivery = Delivery(entry_id, Job.from_fields(fields), len(failures) + 1, failures)
            if len(failures) >= self.max_attempts:
                await self._dead_letter(delivery, WORKER_DIED, len(failures))
                continue
            return delivery
        rows = await self.client.xreadgroup(
            GROUP, consumer, {self.jobs_key: ">"}, count=1, block=max(int(timeout * 1000), 1)
        )
        for _stream, entries in rows or ():
            for entry_id, fields in entries:
                failures = _failures(fields)
                return Delivery(entry_id, Job.from_fields(fields), len(failures) + 1, failures)
        return None

    async def renew(self, delivery: Delivery, consumer: str) -> None:
        # XCLAIM with JUSTID resets the idle time without counting a delivery
        await self.client.xclaim(self.jobs_key, GROUP, consumer, 0, [delivery.id], justid=True)

    async def ack(self, delivery: Delivery) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.jobs_key, GROUP, delivery.id)
        pipe.xdel(self.jobs_key, delivery.id)
        await pipe.execute()

    async def _dead_letter(self, delivery: Delivery, error: str, attempts: int) -> DeadLetter:
        job = delivery.job
        await self._fail(
            keys=[self.jobs_key, self.dead_key],
            args=[delivery.id, GROUP, "1", job.session_id, job.sidecar, "[]", error, attempts],
        )
        return DeadLetter(job, error, attempts)

    async def fail(self, delivery: Delivery, error: str) -> DeadLetter | None:
        failures = (*delivery.failures, error)
        if len(failures) >= self.max_attempts:
            return await self._dead_letter(delivery, error, len(failures))
        job = delivery.job
        await self._fail(
            keys=[self.jobs_key, self.dead_key],
            args=[
                delivery.id,
                GROUP,
                "0",
                job.session_id,
                job.sidecar,
                json.dumps(failures),
                "",
                0,
            ],
        )
        return None

    async def counts(self) -> QueueCounts:
        await self._ensure_group()
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.jobs_key)
        pipe.xpending(self.jobs_key, GROUP)
        pipe.xlen(self.dead_key)
        total, pending, dead = await pipe.execute()
        running = int(pending["pending"]) if isinstance(pending, dict) else 0
        return QueueCounts(max(int(total) - running, 0), running, int(dead))

    async def dead_letters(self) -> list[DeadLetter]:
        rows = await self.client.xrange(self.dead_key)
        return [
            DeadLetter(
                Job.from_fields(fields), str(fields.get("error", "")), int(fields["attempts"])
            )
            for _id, fields in rows
        ]
