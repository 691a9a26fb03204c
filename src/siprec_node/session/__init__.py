"""Session persistence: SessionState, stores (memory, Redis) and the SessionManager."""

from .errors import (
    CorruptRecord,
    InvalidTransition,
    OwnershipConflict,
    SessionNotFound,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)
from .manager import ManagerConfig, SessionCallback, SessionManager
from .memory_store import MemorySessionStore
from .redis_store import RedisSessionStore
from .state import (
    ConversationMetrics,
    RecordingVerdict,
    SessionState,
    SessionStatus,
    TranscriptionStatus,
    Turn,
)
from .store import NodeInfo, SessionStore

__all__ = [
    "ConversationMetrics",
    "CorruptRecord",
    "InvalidTransition",
    "ManagerConfig",
    "MemorySessionStore",
    "NodeInfo",
    "OwnershipConflict",
    "RecordingVerdict",
    "RedisSessionStore",
    "SessionCallback",
    "SessionManager",
    "SessionNotFound",
    "SessionState",
    "SessionStatus",
    "SessionStore",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "TranscriptionStatus",
    "Turn",
    "VersionConflict",
]
