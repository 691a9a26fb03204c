"""Errors raised by session stores; catch `StoreError` to catch them all."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error a `SessionStore` raises."""


class SessionNotFound(StoreError, KeyError):
    """No record with this session id (never saved, deleted, or expired)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"session {self.session_id!r} not found"


class StoreClosed(StoreError):
    """The store was closed; every later call raises this."""


class StoreUnavailable(StoreError):
    """The backing service (Redis) could not be reached or answered with an error."""


class VersionConflict(StoreError):
    """A compare-and-set save found another version than the one expected."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(session_id, expected, actual)
        self.session_id = session_id
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r}: expected version {self.expected}, "
            f"stored version is {self.actual}"
        )


class OwnershipConflict(StoreError):
    """A save named another owner node than the stored record; ownership moves only by `claim`."""

    def __init__(self, session_id: str, owner: str, attempted: str) -> None:
        super().__init__(session_id, owner, attempted)
        self.session_id = session_id
        self.owner = owner
        self.attempted = attempted

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} is owned by node {self.owner!r}, not {self.attempted!r}"
        )


class InvalidTransition(StoreError, ValueError):
    """A status change the session lifecycle does not allow (e.g. `ended` back to `active`)."""

    def __init__(self, session_id: str, current: str, requested: str) -> None:
        super().__init__(session_id, current, requested)
        self.session_id = session_id
        self.current = current
        self.requested = requested

    def __str__(self) -> str:
        return f"session {self.session_id!r}: cannot go from {self.current} to {self.requested}"


class CorruptRecord(StoreError):
    """A stored record could not be decoded into a `SessionState`."""

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(session_id, reason)
        self.session_id = session_id
        self.reason = reason

    def __str__(self) -> str:
        return f"session {self.session_id!r}: corrupt record: {self.reason}"
