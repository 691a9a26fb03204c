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


def skip_unless_c_receive_path() -> None:
    """Skip a test (or, called at import, a module) of the C receive path where the extension
    was not built, unless the run requires it (``REQUIRE_RTPRECV=1``, set by ``.ci/run``): then
    fail, so that CI never skips it silently."""
    import os

    from siprec_node.media import fastpath

    if fastpath.available():
        return
    if os.environ.get("REQUIRE_RTPRECV") == "1":
        pytest.fail("siprec_node.media._rtprecv was not built (REQUIRE_RTPRECV=1)")
    pytest.skip("the C receive path was not built on this install", allow_module_level=True)
