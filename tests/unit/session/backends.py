"""Store factories shared by the conformance suite and the integration tests that re-run it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from siprec_node.session import MemorySessionStore, RedisSessionStore, SessionStore


class FakeClock:
    """A settable clock returning aware UTC datetimes."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by `delta` (seconds if a number)."""
        self.now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self.now


class Backend:
    """Makes stores of one kind; each `new()` store gets a namespace of its own."""

    name = "?"

    def __init__(self) -> None:
        self._stores: list[SessionStore] = []

    def new(self, **options: Any) -> SessionStore:
        """A store on a fresh, empty namespace."""
        raise NotImplementedError

    def peer(self, store: SessionStore) -> SessionStore:
        """Another handle (connection) onto the same data as `store`."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close every store made."""
        for store in self._stores:
            await store.close()


class MemoryBackend(Backend):
    """A memory store is one process: its peer is itself."""

    name = "memory"

    def new(self, **options: Any) -> SessionStore:
        store = MemorySessionStore(**options)
        self._stores.append(store)
        return store

    def peer(self, store: SessionStore) -> SessionStore:
        return store


class RedisBackend(Backend):
    """Redis stores on a server (standalone URL, Sentinel URL, or cluster node URLs)."""

    def __init__(self, url: str | Sequence[str], name: str = "redis") -> None:
        super().__init__()
        self.url = url
        self.name = name
        self._options: dict[int, dict[str, Any]] = {}

    def new(self, **options: Any) -> SessionStore:
        options.setdefault("prefix", f"test:{uuid.uuid4().hex[:12]}:")
        store = RedisSessionStore(self.url, **options)
        self._options[id(store)] = options
        self._stores.append(store)
        return store

    def peer(self, store: SessionStore) -> SessionStore:
        options = self._options[id(store)]
        other = RedisSessionStore(self.url, **options)
        self._options[id(other)] = options
        self._stores.append(other)
        return other
