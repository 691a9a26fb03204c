"""Transcription of finished recordings: a durable job queue on the session store, worker
processes running faster-whisper (or an OpenAI-compatible endpoint), texts per turn into the
session history, the sidecar and a WebVTT file (see `service`, `runner`, `redis_queue`)."""

from __future__ import annotations

from typing import Any

from ..session import SessionStore
from ..session.redis_store import RedisSessionStore
from .engines import EngineSettings
from .jobs import DeadLetter, Delivery, Job, JobQueue, MemoryJobQueue, QueueCounts

__all__ = [
    "DeadLetter",
    "Delivery",
    "EngineSettings",
    "Job",
    "JobQueue",
    "MemoryJobQueue",
    "QueueCounts",
    "build_queue",
    "build_transcriber",
]


def build_queue(settings: Any, store: SessionStore) -> JobQueue:
    """The queue of `settings.transcription` on `store`: a Redis stream on a Redis store, a
    queue inside this process on a memory store."""
    options = settings.transcription
    reclaim = options.reclaim_after.total_seconds()
    if isinstance(store, RedisSessionStore):
        from .redis_queue import RedisJobQueue

        return RedisJobQueue(store, max_attempts=options.max_attempts, reclaim_after=reclaim)
    return MemoryJobQueue(max_attempts=options.max_attempts, reclaim_after=reclaim)


def build_transcriber(settings: Any, store: SessionStore, consumer: str, workers: int) -> Any:
    """A `service.Transcriber` for `settings` on `store`."""
    from .service import Transcriber

    return Transcriber(
        EngineSettings.from_settings(settings.transcription),
        build_queue(settings, store),
        store,
        consumer=consumer,
        workers=workers,
    )
