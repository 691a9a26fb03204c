"""The session tests' store fixtures, reused: memory, and a redis-server of our own."""

from tests.unit.session.conftest import backend, redis_server

__all__ = ["backend", "redis_server"]
