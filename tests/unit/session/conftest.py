"""Fixtures of the session tests: a redis-server of our own, the store `backend`, a clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .backends import Backend, FakeClock, MemoryBackend, RedisBackend


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Every store kind the conformance suite runs against."""
    made: Backend
    if request.param == "memory":
        made = MemoryBackend()
    else:
        made = RedisBackend(request.getfixturevalue("redis_server").url)
    yield made
    await made.aclose()


@pytest.fixture
def clock() -> FakeClock:
    """A settable clock."""
    return FakeClock()
