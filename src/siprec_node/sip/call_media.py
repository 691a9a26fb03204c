"""The media side of the calls the handler answers: open, pause, resume and close their streams.

Keeps, per call, which negotiated streams are being recorded and whether each is paused (by the
SDP — ``a=inactive`` or ``c=0.0.0.0`` — or by an operator), and turns every change of that into
requests to the media engine. The engine records into the call's parts folder (``FORMAT.md``),
aligned on the call's media epoch; a restarted node re-opens the same streams into the same files.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from siprec_node.media.engine import MediaEngine, StreamSpec
from siprec_node.media.paths import parts_dir, recording_dir, recording_stem
from siprec_node.media.rtp_ports import RtpPorts
from siprec_node.siprec.sdp_answer import NegotiatedStream

log = structlog.get_logger("siprec_node.sip.call_media")


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


class CallMedia:
    """Drives the media engine for the handler's calls."""

    def __init__(self, ports: RtpPorts, engine: MediaEngine) -> None:
        self.ports = ports
        self.engine = engine
        # The payload types each open stream was given, to tell the engine when an offer adds
        # some (a re-INVITE that changes codec): by (session id, stream index).
        self._accepted: dict[tuple[str, int], tuple[int, ...]] = {}

    async def sync(
        self,
        session_id: str,
        state: MediaState,
        streams: tuple[NegotiatedStream, ...],
        at: float | None = None,
    ) -> list[str]:
        """Make the engine match ``streams``: open new ones, pause and resume the others.

        Returns what changed, for logs. A refused stream that was open stays open and paused
        (its port stays the call's; the gap is silence).
        """
        at = time.time() if at is None else at
        changes: list[str] = []
        Path(state.parts).mkdir(parents=True, exist_ok=True)
        # New streams open together, so that no leg waits for another's round trip.
        opening = []
        for stream in streams:
            if stream.index in state.open or not stream.accepted or stream.port == 0:
                continue
            rtp, rtcp = self.ports.take(stream.port)
            spec = StreamSpec(
                session_id=session_id,
                index=stream.index,
                negotiated=stream.to_dict(),
                parts_dir=state.parts,
                epoch=state.epoch,
            )
            opening.append((stream.index, self.engine.open_stream(spec, rtp, rtcp)))
        await asyncio.gather(*(job for _, job in opening))
        for index, _ in opening:
            state.open[index] = False
            changes.append(f"stream {index} open")
        opened = {index for index, _ in opening}
        for stream in streams:
            key, accepted = (session_id, stream.index), _payload_types(stream)
            if stream.index in opened or key not in self._accepted:
                self._accepted[key] = accepted
            elif stream.index in state.open and stream.codec and accepted != self._accepted[key]:
                await self.engine.renegotiate(session_id, stream.index, stream.to_dict())
                self._accepted[key] = accepted
                changes.append(f"stream {stream.index} formats {list(accepted)}")
        for stream in streams:
            if stream.index not in state.open:
                continue
            wanted_pause = state.operator_paused or stream.paused or not stream.accepted
            if state.open[stream.index] != wanted_pause:
                if wanted_pause:
                    await self.engine.pause(session_id, stream.index, at)
                else:
                    await self.engine.resume(session_id, stream.index, at)
                state.open[stream.index] = wanted_pause
                changes.append(f"stream {stream.index} {'paused' if wanted_pause else 'resumed'}")
        return changes

    async def reopen(
        self, session_id: str, state: MediaState, streams: tuple[NegotiatedStream, ...]
    ) -> None:
        """Open every stream again, continuing its files (restart recovery, worker restart)."""
        state.open.clear()
        await self.sync(session_id, state, streams)

    async def close(self, session_id: str, at: float | None = None) -> dict[int, dict[str, Any]]:
        """Close the call's streams (files closed); returns their statistics."""
        for key in [k for k in self._accepted if k[0] == session_id]:
            del self._accepted[key]
        return await self.engine.close_call(session_id, time.time() if at is None else at)


def _payload_types(stream: NegotiatedStream) -> tuple[int, ...]:
    """Every payload type a stream accepts: its formats, telephone-event and comfort noise."""
    formats = tuple(f.payload_type for f in stream.formats)
    return formats + tuple(stream.telephone_event_pts) + tuple(stream.comfort_noise_pts)
