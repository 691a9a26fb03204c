"""``CallSnapshot``: the frozen, typed snapshot of a recorded call that crosses the store boundary.

The SIP core keeps a mutable ``sip.call.CallData`` while a call lives and freezes it into a
``CallSnapshot`` at every change of state; the snapshot is what the ``CallStore`` saves and what
the session store keeps (``SessionState.call``, written under ``recovery_data.call`` as before).
It sits beside ``status`` at the bottom of the package, so ``sip`` and ``session`` both import it
without either importing the other.

A msgspec ``Struct``: building one costs about a microsecond and encoding it to JSON a few (bench/
snapshot), where ``dataclasses.asdict`` + ``copy.deepcopy`` + ``json.dumps`` cost hundreds.
Its JSON has the field names and shapes of the previous ``CallData.to_dict()`` (times as RFC 3339
strings), so records written by the previous version decode into it, and it into them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from siprec_node.status import OVER, TERMINAL, CallStatus

__all__ = ["CallSnapshot", "decode_call", "encode_call", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class CallSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a node needs to know about one recorded call, as it stood at one moment.

    ``recording`` is ``RecordingSession.to_dict()`` (participants, streams, labels, metadata),
    ``dialog`` is ``Dialog.to_dict()`` (Call-ID, tags, URIs, CSeqs, contact, route set, transport
    and peer), ``media`` holds per-stream ports, codecs, SSRCs, file paths and offsets. Those
    three are built fresh for each snapshot and nobody changes them afterwards; the lists of the
    live call are copied into tuples, so a snapshot never changes once taken.
    """

    session_id: str
    call_id: str
    node_id: str
    status: CallStatus = CallStatus.CONNECTING
    created_at: datetime = msgspec.field(default_factory=utc_now)
    updated_at: datetime = msgspec.field(default_factory=utc_now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    from_uri: str = ""
    to_uri: str = ""
    from_display: str | None = None
    to_display: str | None = None
    vendor_ids: dict[str, str] = msgspec.field(default_factory=dict)
    dialog: dict[str, Any] = msgspec.field(default_factory=dict)
    recording: dict[str, Any] = msgspec.field(default_factory=dict)
    media: dict[str, Any] = msgspec.field(default_factory=dict)
    last_activity: datetime = msgspec.field(default_factory=utc_now)
    recoveries: int = 0
    turns: tuple[dict[str, Any], ...] = ()
    """Conversation turns found at finalisation (``participant``, ``start``, ``duration_ms``,
    ``interrupted``, ``text`` once transcribed)."""
    flags: tuple[dict[str, Any], ...] = ()
    """Call-level problems raised while the call ran (``{"kind": ..., figures...}``)."""
    verdict: dict[str, Any] | None = None
    """The recording's verdict once finalised: ``{"status": ..., "problems": [...]}``."""
    transcription: dict[str, Any] | None = None
    """``{"status": "pending" | "done" | "failed", "error": ...}`` once one was queued."""
    outcome: str | None = None
    """While ``finalising``: the status the call takes once its recording is finalised."""
    version: int = 0

    def snapshot(self) -> CallSnapshot:
        """Itself (a ``CallData`` freezes into one: stores accept either)."""
        return self

    @property
    def is_final(self) -> bool:
        """True once the call is over: ended or failed, or finalising its recording."""
        return self.status in OVER

    @property
    def is_terminal(self) -> bool:
        """True once the record is finished: ended or failed (recording finalised)."""
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (times as RFC 3339 strings, tuples as lists), the stored form."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["turns"], out["flags"] = list(self.turns), list(self.flags)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallSnapshot:
        """Inverse of :meth:`to_dict`, also for the ``CallData.to_dict()`` of the previous
        version; unknown keys are ignored (newer writers). Raises ``ValueError``."""
        return msgspec.convert(data, cls)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CallSnapshot)


def encode_call(call: CallSnapshot) -> bytes:
    """The snapshot as compact JSON (the same bytes ``SessionState`` embeds)."""
    return _encoder.encode(call)


def decode_call(data: bytes | str) -> CallSnapshot:
    """Inverse of :func:`encode_call`; raises ``ValueError`` on anything else."""
    return _decoder.decode(data)
