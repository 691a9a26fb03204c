"""Fixtures shared across test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisProcess, redis_available


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A standalone redis-server on a free port for the whole test session."""
    if not redis_available():
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    server = RedisProcess()
    yield server
    server.stop()
