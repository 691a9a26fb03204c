"""Audio codecs as SDP names them: static payload types and rtpmap names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Codec:
    """An RTP payload format: encoding name, RTP clock rate and channel count."""

    name: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True)
class PayloadFormat:
    """One payload type accepted on a stream: what packets carrying it contain.

    ``name`` is the codec's canonical name as :data:`DECODABLE` keys it (``PCMU``, ``G729``,
    ``OPUS``...), ``clock_rate`` its RTP clock, ``fmtp`` the offer's format parameters for it
    (they change how some codecs are packed: AMR ``octet-align``, iLBC ``mode``, G.729
    ``annexb``).
    """

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form."""
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PayloadFormat:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)  # type: ignore[arg-type]


TELEPHONE_EVENT = "telephone-event"

# RFC 3551 static payload types (plus PT 2, which SRCs still send for G.726-32).
STATIC_PAYLOAD_TYPES: dict[int, Codec] = {
    0: Codec("PCMU", 8000),
    2: Codec("G726-32", 8000),
    3: Codec("GSM", 8000),
    4: Codec("G723", 8000),
    8: Codec("PCMA", 8000),
    9: Codec("G722", 8000),  # RFC 3551: 8000 on the RTP clock although sampled at 16 kHz
    13: Codec("CN", 8000),
    15: Codec("G728", 8000),
    18: Codec("G729", 8000),
}

# Codecs the recorder can decode, by canonical name, with the RTP clock rate they must use.
DECODABLE: dict[str, Codec] = {
    "PCMU": Codec("PCMU", 8000),
    "PCMA": Codec("PCMA", 8000),
    "G722": Codec("G722", 8000),
    "OPUS": Codec("opus", 48000, 2),
}

DEFAULT_CODEC_PREFERENCE: tuple[str, ...] = ("PCMU", "PCMA", "G722", "opus")


def normalize_codec_name(name: str) -> str:
    """Compare codec names ignoring case and dots (``G.722`` is ``G722``)."""
    return name.replace(".", "").strip().upper()


def codec_for_payload_type(payload_type: int, rtpmaps: Mapping[int, Codec]) -> Codec | None:
    """The codec a payload type stands for: its rtpmap if any, else the static assignment."""
    if payload_type in rtpmaps:
        return rtpmaps[payload_type]
    if payload_type < 96:
        return STATIC_PAYLOAD_TYPES.get(payload_type)
    return None


def decodable(codec: Codec) -> Codec | None:
    """The canonical decodable codec matching ``codec`` (name and clock rate), if any."""
    known = DECODABLE.get(normalize_codec_name(codec.name))
    if known is None or known.clock_rate != codec.clock_rate:
        return None
    return known
