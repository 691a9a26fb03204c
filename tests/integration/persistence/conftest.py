"""Fixtures of the persistence fault tests: a private redis-server per module, and a registry
that kills whatever node or SIPp process a test leaves behind (a failed assertion mid-test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.persistence.harness import Processes, RedisServer
from tests.redis_server import redis_available


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free port for this module only, killed at its end."""
    if not redis_available():
        pytest.fail("redis-server is not installed: the persistence tests need it")
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def procs() -> Iterator[Processes]:
    registry = Processes()
    yield registry
    registry.cleanup()
