"""The session tests' store fixtures, reused (the redis-server comes from tests/conftest.py)."""

from tests.unit.session.conftest import backend

__all__ = ["backend"]
