"""Audio codecs as SDP names them: static payload types and rtpmap names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache


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
COMFORT_NOISE = "CN"

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

# Codecs the recorder can decode, by canonical name, with the rtpmap name and RTP clock rate
# they are offered with. RFC 3551 names the G.726 rates with RFC 3551 packing (code words from
# the low bits of each octet up); RFC 3551's "AAL2-G726-*" names are ITU-T I.366.2's packing
# (from the high bits down). AMR and AMR-WB follow RFC 4867, iLBC RFC 3952, Opus RFC 7587.
DECODABLE: dict[str, Codec] = {
    "PCMU": Codec("PCMU", 8000),
    "PCMA": Codec("PCMA", 8000),
    "G722": Codec("G722", 8000),
    "OPUS": Codec("opus", 48000, 2),
    "G729": Codec("G729", 8000),
    "G723": Codec("G723", 8000),
    "G726-16": Codec("G726-16", 8000),
    "G726-24": Codec("G726-24", 8000),
    "G726-32": Codec("G726-32", 8000),
    "G726-40": Codec("G726-40", 8000),
    "AAL2-G726-16": Codec("AAL2-G726-16", 8000),
    "AAL2-G726-24": Codec("AAL2-G726-24", 8000),
    "AAL2-G726-32": Codec("AAL2-G726-32", 8000),
    "AAL2-G726-40": Codec("AAL2-G726-40", 8000),
    "AMR": Codec("AMR", 8000),
    "AMR-WB": Codec("AMR-WB", 16000),
    "ILBC": Codec("iLBC", 8000),
    "GSM": Codec("GSM", 8000),
}

# Other spellings SRCs put in rtpmaps, by normalised name.
_ALIASES = {"G729A": "G729", "G729B": "G729", "G729AB": "G729", "G7231": "G723"}

FFMPEG_DECODERS: dict[str, tuple[str, ...]] = {
    "PCMU": (),  # G.711 is expanded by table, no decoder needed
    "PCMA": (),
    "G722": ("g722",),
    "OPUS": ("opus", "libopus"),
    "G729": ("g729",),
    "G723": ("g723_1",),
    **{f"G726-{bits}": ("g726le",) for bits in (16, 24, 32, 40)},
    **{f"AAL2-G726-{bits}": ("g726",) for bits in (16, 24, 32, 40)},
    "AMR": ("libopencore_amrnb", "amrnb"),
    "AMR-WB": ("libopencore_amrwb", "amrwb"),
    "ILBC": ("ilbc",),
    "GSM": ("gsm",),
}
"""FFmpeg decoders able to decode each codec, the preferred first (OpenCORE's AMR decoders
render SID frames as comfort noise; FFmpeg's own render them as silence)."""

ALL_CODECS: tuple[str, ...] = tuple(DECODABLE)
"""Every codec the recorder knows how to decode, canonical names."""

DEFAULT_CODEC_PREFERENCE: tuple[str, ...] = ALL_CODECS
"""Kept for callers of earlier versions: the default allow-list, every decodable codec."""


def normalize_codec_name(name: str) -> str:
    """Compare codec names ignoring case and dots (``G.722`` is ``G722``)."""
    return name.replace(".", "").strip().upper()


def canonical_name(name: str) -> str | None:
    """The :data:`DECODABLE` key for any spelling of a codec's name (``g.729a`` is ``G729``),
    or None for a codec the recorder does not decode."""
    normal = normalize_codec_name(name)
    normal = _ALIASES.get(normal, normal)
    return normal if normal in DECODABLE else None


@lru_cache(maxsize=1)
def locally_decodable() -> frozenset[str]:
    """The codecs whose decoder the installed FFmpeg (the one PyAV loads) has, found once."""
    import av  # the media dependency; imported here so that SDP logic loads without it

    available = set(av.codecs_available)
    found = {name for name, decoders in FFMPEG_DECODERS.items() if not decoders}
    for name, decoders in FFMPEG_DECODERS.items():
        for decoder in decoders:
            if decoder not in available:
                continue
            try:
                av.Codec(decoder, "r")
            except (ValueError, av.FFmpegError):
                continue
            found.add(name)
            break
    return frozenset(found)


def codec_for_payload_type(payload_type: int, rtpmaps: Mapping[int, Codec]) -> Codec | None:
    """The codec a payload type stands for: its rtpmap if any, else the static assignment."""
    if payload_type in rtpmaps:
        return rtpmaps[payload_type]
    if payload_type < 96:
        return STATIC_PAYLOAD_TYPES.get(payload_type)
    return None


def decodable(codec: Codec) -> Codec | None:
    """The canonical decodable codec matching ``codec`` (name and clock rate), if any."""
    canon = canonical_name(codec.name)
    known = DECODABLE.get(canon) if canon else None
    if known is None or known.clock_rate != codec.clock_rate:
        return None
    return known
