"""Fixtures of the session integration tests: redis-server, Sentinel and Cluster processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import ClusterSetup, SentinelSetup, redis_available


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[SentinelSetup]:
    """A master, a replica and a sentinel."""
    if not redis_available():
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    setup = SentinelSetup()
    yield setup
    setup.stop()


@pytest.fixture(scope="module")
def cluster_setup() -> Iterator[ClusterSetup]:
    """A three-master Redis Cluster."""
    if not redis_available():
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    setup = ClusterSetup()
    yield setup
    setup.stop()
