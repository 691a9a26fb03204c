"""The sidecar JSON of a finalised recording as typed objects (``FORMAT.md``, "Sidecar").

Finalisation builds a :class:`Sidecar`; ``to_dict()`` is the JSON written beside the audio,
field for field and in this order, so that the contract ``FORMAT.md`` states is one a type
checker holds the writer to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SIDECAR_SCHEMA = 1

_ATOMS = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True)
class _Box:
    value: Any


def _plain(value: Any) -> Any:
    """What ``dataclasses.asdict`` makes of a field's value (dataclasses as dicts, containers
    copied, the rest deep-copied), without its per-item overhead for the JSON types."""
    cls = value.__class__
    if cls in _ATOMS:
        return value  # what deepcopy gives
    if cls is list:
        return [_plain(item) for item in value]
    if cls is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    names = _FIELDS.get(cls)
    if names is None:
        if not hasattr(cls, "__dataclass_fields__"):
            return asdict(_Box(value))["value"]  # tuples, subclasses, other objects
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return {name: _plain(getattr(value, name)) for name in names}


@dataclass(frozen=True)
class Span:
    """A pause: ISO 8601 start and end."""

    start: str
    end: str


@dataclass(frozen=True)
class Dtmf:
    """A telephone-event: where in the recording (ms), which event, how long."""

    at_ms: int
    event: Any
    duration_ms: int


@dataclass(frozen=True)
class SidecarParticipant:
    """A participant, the channel of the mixed file it is heard on and its streams."""

    id: str
    name: str | None
    aor: str | None
    channel: str | None
    streams: list[int]


@dataclass(frozen=True)
class SidecarStream:
    """One recorded stream: identity, RTP figures, pauses, DTMF, codecs, problems."""

    index: int
    label: str | None
    participant: str | None
    participants: list[str]
    codec: str | None
    payload_type: int | None
    ssrc: int | None
    ssrcs: list[int | None]
    packets: int
    lost: int
    duplicates: int
    late: int
    jitter_ms: float
    foreign_packets: int
    write_errors: int
    pauses: list[Span]
    dtmf: list[Dtmf]
    codecs: list[dict[str, Any]]
    unexpected_payload: dict[str, int]
    undecodable: int
    recorded: bool
    complete: bool
    problems: list[str]
    notes: list[str]
    sr_offset_ms: float | None
    sr_offset_reports: int
    alignment_ms: float


@dataclass(frozen=True)
class Sidecar:
    """The whole sidecar of one call's recording."""

    session_id: str
    call_id: str
    node_id: str
    status: str
    end_reason: str | None
    started_at: str
    ended_at: str
    media_epoch: str
    duration_s: float
    format: str
    channels: str
    sample_rate: int
    files: list[str]
    audio: list[dict[str, Any]]
    participants: list[SidecarParticipant]
    streams: list[SidecarStream]
    pauses: list[Span]
    metrics: dict[str, Any] | None
    alignment: dict[str, Any]
    schema: int = field(default=SIDECAR_SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk (``schema`` first, as readers expect)."""
        data = _plain(self)
        return {"schema": data.pop("schema"), **data}
