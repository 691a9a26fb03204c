"""Where a call records and what each of its streams is doing: the media part of a snapshot.

Plain data shared by the call-control core (which decides) and the driver's ``CallMedia`` (which
asks the media engine): no I/O here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from siprec_node.media.paths import parts_dir, recording_dir, recording_stem


@dataclass
class MediaState:
    """Where a call records and what each of its streams is doing (part of the snapshot)."""

    epoch: float
    stem: str
    directory: str
    parts: str
    open: dict[int, bool] = field(default_factory=dict)
    """Stream index → paused, for every stream handed to the engine."""
    operator_paused: bool = False
    files: list[str] = field(default_factory=list)
    """The final recording files, once finalised."""
    sidecar: str | None = None
    sources: dict[int, list[str]] = field(default_factory=dict)
    """Stream index → the addresses its packets are accepted from (``media.source_check``)."""
    engaged: bool = field(default=False, compare=False)
    """The engine was asked for something for this call (not saved: a restored call is)."""
    closed: bool = field(default=False, compare=False)
    """The call's media is closed or closing: nothing may be opened for it any more."""
    lock: Any = field(default=None, compare=False, repr=False)
    """The driver's lock ordering the engine requests of this call (a close waits for an open
    in flight); set by the driver on first use, never by the call-control core."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (stream indexes as strings, as JSON keys must be)."""
        return {
            "epoch": self.epoch,
            "stem": self.stem,
            "directory": self.directory,
            "parts": self.parts,
            "open": {str(k): v for k, v in self.open.items()},
            "operator_paused": self.operator_paused,
            "files": list(self.files),
            "sidecar": self.sidecar,
            "sources": {str(k): list(v) for k, v in self.sources.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            epoch=float(data["epoch"]),
            stem=str(data["stem"]),
            directory=str(data["directory"]),
            parts=str(data["parts"]),
            open={int(k): bool(v) for k, v in (data.get("open") or {}).items()},
            operator_paused=bool(data.get("operator_paused", False)),
            files=list(data.get("files") or []),
            sidecar=data.get("sidecar"),
            sources={int(k): list(v) for k, v in (data.get("sources") or {}).items()},
        )


def new_media_state(root: str | Path, call_id: str, session_id: str) -> MediaState:
    """The recording location of a new call, its epoch being now."""
    epoch = time.time()
    started = datetime.fromtimestamp(epoch, UTC)
    stem = recording_stem(started, call_id, session_id)
    return MediaState(
        epoch=epoch,
        stem=stem,
        directory=str(recording_dir(root, started)),
        parts=str(parts_dir(root, started, stem)),
    )
