"""Bulk decoding of recorded streams into PCM timelines (finalisation only, never per packet).

- G.711 (PCMU, PCMA): 256-entry tables indexed by the code bytes of a whole stream at once; for
  a stereo file of two G.711 legs, one 65 536-entry table indexed by the pair of codes gives the
  interleaved PCM in a single gather.
- G.722: the payloads of a stream are concatenated and decoded by PyAV (FFmpeg's g722) as one
  packet; every payload byte is two 16 kHz samples, so each payload's samples are scattered back
  to its position in one vectorised step. The RTP clock of G.722 is 8000 (RFC 3551), its audio
  16 kHz: a position `p` is sample `2p`.
- Opus: one decoder call per RTP payload (Opus packets are self-delimited by RTP only), decoded
  to mono at 48 kHz (a stereo stream is down-mixed by the decoder), then scattered like G.722.

A timeline is a 1-D int16 array whose sample 0 is the stream's epoch (media/FORMAT.md); gaps,
losses and undecodable packets are silence (0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import av
import numpy as np

from siprec_node.siprec.codecs import PayloadFormat

PCMU = "PCMU"
PCMA = "PCMA"
G722 = "G722"
OPUS = "OPUS"

G711_CODECS = frozenset({PCMU, PCMA})
G711_SILENCE = {PCMU: 0xFF, PCMA: 0xD5}
"""The code byte of a zero sample in each law (what the receive path writes into gaps)."""

DECODED_RATES = {PCMU: 8000, PCMA: 8000, G722: 16000, OPUS: 48000}
"""Sample rate of the audio each codec carries (not its RTP clock)."""

RTP_CLOCKS = {PCMU: 8000, PCMA: 8000, G722: 8000, OPUS: 48000}


class UnsupportedCodec(ValueError):
    """A stream whose codec the recorder does not decode (it is reported, not recorded)."""


def canonical_codec(name: str) -> str:
    """`PCMU`, `PCMA`, `G722` or `OPUS` for any spelling (`pcmu`, `G.722`, `opus`)."""
    canon = name.replace(".", "").strip().upper()
    if canon not in DECODED_RATES:
        raise UnsupportedCodec(f"codec not decodable: {name!r}")
    return canon


def output_rate(codecs: Iterable[str]) -> int:
    """The common rate of a call's mixed files: the highest rate any of its streams carries.

    8 kHz when every stream is G.711, 16 kHz with any G.722, 48 kHz with any Opus: nothing a
    stream carries is thrown away, and narrowband calls (most of them) stay small and are never
    resampled.
    """
    return max((DECODED_RATES[canonical_codec(c)] for c in codecs), default=8000)


# -- G.711 ---------------------------------------------------------------------------------


def _mulaw_table() -> np.ndarray:
    """ITU-T G.711 µ-law expansion of the 256 codes (the table FFmpeg and sox use)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """ITU-T G.711 A-law expansion of the 256 codes."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (a >> 4) & 0x07
    mantissa = (a & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        mantissa + 8,
        (mantissa + 0x108) << np.maximum(segment - 1, 0),
    )
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW_TABLE = _mulaw_table()
ALAW_TABLE = _alaw_table()
MULAW_TABLE.flags.writeable = False
ALAW_TABLE.flags.writeable = False
_G711_TABLES = {PCMU: MULAW_TABLE, PCMA: ALAW_TABLE}


def g711_table(codec: str) -> np.ndarray:
    """The 256-entry int16 expansion table of `PCMU` or `PCMA`."""
    canon = canonical_codec(codec)
    if canon not in _G711_TABLES:
        raise UnsupportedCodec(f"not a G.711 codec: {codec!r}")
    return _G711_TABLES[canon]


def as_codes(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """G.711 code bytes as a uint8 array (no copy when given bytes or a uint8 array)."""
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def decode_g711(data: bytes | bytearray | memoryview | np.ndarray, codec: str) -> np.ndarray:
    """G.711 code bytes to int16 PCM, table lookups over the whole stream.

    Consecutive code pairs are looked up in `g711_pair_table` (half as many lookups as
    samples, each giving two); an odd last code is looked up alone.
    """
    codes = as_codes(data)
    canon = canonical_codec(codec)
    table = g711_table(canon)
    pairs = codes.size // 2
    out = np.empty(codes.size, dtype="<i2")
    if pairs:
        index = np.ascontiguousarray(codes[: 2 * pairs]).view("<u2")
        # mode="wrap": every uint16 is a valid index, and with `out` the default mode buffers
        np.take(g711_pair_table(canon, canon), index, out=out[: 2 * pairs].view("<u4"), mode="wrap")
    if codes.size % 2:
        out[-1] = table[codes[-1]]
    return out


@lru_cache(maxsize=4)
def g711_pair_table(left: str, right: str) -> np.ndarray:
    """65 536 little-endian (left, right) int16 sample pairs indexed by `left | right << 8`."""
    pair = np.empty((256, 256, 2), dtype="<i2")  # [right code, left code, channel]
    pair[:, :, 0] = g711_table(left)[np.newaxis, :]
    pair[:, :, 1] = g711_table(right)[:, np.newaxis]
    table = pair.reshape(65536, 2).view("<u4").reshape(65536)
    table.flags.writeable = False
    return table


def decode_g711_stereo(
    left: np.ndarray, right: np.ndarray, left_codec: str, right_codec: str
) -> np.ndarray:
    """Two equally long code arrays to interleaved stereo int16 PCM, shape (n, 2).

    The code pairs are gathered through `g711_pair_table`: one lookup per stereo sample instead
    of a lookup and a strided store per channel.
    """
    if left.shape != right.shape:
        raise ValueError(f"channel lengths differ: {left.shape} and {right.shape}")
    index = left.astype(np.uint16)
    index |= right.astype(np.uint16) << 8
    table = g711_pair_table(left_codec, right_codec)
    return np.take(table, index, mode="wrap").view("<i2").reshape(-1, 2)


# -- frame logs (G.722, Opus) --------------------------------------------------------------


@dataclass(frozen=True)
class FrameLog:
    """The RTP payloads of one stream with their positions (units of the stream's RTP clock)."""

    clock_rate: int
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    payloads: Sequence[bytes] = ()

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.payloads):
            raise ValueError("one position per payload")

    def ordered(self) -> tuple[np.ndarray, list[bytes]]:
        """Positions and payloads in position order (file order kept among equal positions)."""
        order = np.argsort(self.positions, kind="stable")
        positions = np.asarray(self.positions, dtype=np.int64)[order]
        return positions, [self.payloads[i] for i in order]


def scatter(
    chunks: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    length: int | None = None,
    *,
    limit: int | None = None,
) -> np.ndarray:
    """Place consecutive runs of `chunks` at `starts` in a silent int16 timeline.

    Run `k` is `chunks[sum(lengths[:k]) : sum(lengths[:k + 1])]` and lands at `starts[k]`.
    The timeline is `length` samples long, or else ends with the last run but at most at
    `limit`; samples outside it are dropped; where runs overlap the later one wins.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if length is None:
        length = int((starts + lengths).max()) if starts.size else 0
        length = length if limit is None else min(length, limit)
    out = np.zeros(max(length, 0), dtype=np.int16)
    if total == 0 or length <= 0:
        return out
    src_starts = np.cumsum(lengths) - lengths
    dest = np.repeat(starts - src_starts, lengths) + np.arange(total, dtype=np.int64)
    keep = (dest >= 0) & (dest < length)
    out[dest[keep]] = chunks[:total][keep]
    return out


def _pcm16(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.int16:
        return values
    return np.clip(np.rint(values * 32768.0), -32768, 32767).astype(np.int16)


def _frames_pcm(frames: Iterable[av.AudioFrame]) -> np.ndarray:
    arrays = [_pcm16(f.to_ndarray().reshape(-1)) for f in frames]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int16)


def _decoder(name: str, rate: int) -> av.AudioCodecContext:
    ctx = av.CodecContext.create(name, "r")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    return ctx


def _bound(length: int | None, limit: int | None) -> int | None:
    return length if length is not None else limit


def decode_g722(
    log: FrameLog, length: int | None = None, *, limit: int | None = None
) -> np.ndarray:
    """A G.722 frame log to a 16 kHz int16 timeline: `length` samples if given, else up to the
    end of the last payload but at most `limit` (payloads past the end are not decoded)."""
    positions, payloads = log.ordered()
    scale = 16000 // log.clock_rate if log.clock_rate else 2
    bound = _bound(length, limit)
    if bound is not None:
        count = int(np.searchsorted(positions * scale, bound))
        positions, payloads = positions[:count], payloads[:count]
    lengths = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
    blob = b"".join(payloads)
    pcm = np.zeros(0, np.int16)
    if blob:
        ctx = _decoder("g722", 16000)
        pcm = _frames_pcm([*ctx.decode(av.Packet(blob)), *ctx.decode(None)])
    if pcm.size < 2 * len(blob):  # never expected: the decoder gives 2 samples per byte
        pcm = np.concatenate([pcm, np.zeros(2 * len(blob) - pcm.size, np.int16)])
    return scatter(pcm, positions * scale, 2 * lengths, length, limit=limit)


def decode_opus(
    log: FrameLog, length: int | None = None, *, limit: int | None = None
) -> np.ndarray:
    """An Opus frame log to a mono 48 kHz int16 timeline: `length` samples if given, else up
    to the end of the last payload but at most `limit` (payloads past the end are not decoded).

    A payload the decoder rejects (corrupt, truncated) is left as silence.
    """
    positions, payloads = log.ordered()
    scale = 48000 // log.clock_rate if log.clock_rate else 1
    bound = _bound(length, limit)
    if bound is not None:
        count = int(np.searchsorted(positions * scale, bound))
        positions, payloads = positions[:count], payloads[:count]
    ctx = _decoder("opus", 48000)
    chunks: list[np.ndarray] = []
    starts: list[int] = []
    for position, payload in zip(positions.tolist(), payloads, strict=True):
        if not payload:
            continue
        try:
            pcm = _frames_pcm(ctx.decode(av.Packet(payload)))
        except av.FFmpegError:
            continue
        chunks.append(pcm)
        starts.append(position * scale)
    if not chunks:
        return np.zeros(max(length or 0, 0), np.int16)
    lengths = np.fromiter((c.size for c in chunks), dtype=np.int64, count=len(chunks))
    starts_array = np.asarray(starts, np.int64)
    return scatter(np.concatenate(chunks), starts_array, lengths, length, limit=limit)


def decode_frames(
    codec: str, log: FrameLog, length: int | None = None, *, limit: int | None = None
) -> np.ndarray:
    """A frame log of `G722` or `OPUS` to its int16 timeline at `DECODED_RATES[codec]` (see
    `decode_g722`, `decode_opus` for `length` and `limit`)."""
    canon = canonical_codec(codec)
    if canon == G722:
        return decode_g722(log, length, limit=limit)
    if canon == OPUS:
        return decode_opus(log, length, limit=limit)
    raise UnsupportedCodec(f"{codec!r} streams are recorded as G.711 WAV, not as frame logs")


@dataclass(frozen=True)
class Decoded:
    """A stretch of one stream decoded: int16 mono PCM at ``rate``, sample 0 at position 0.

    ``frames`` counts the payloads decoded, ``errors`` those the decoder rejected (left as
    silence); the recording's verdict reports them as ``undecodable``.
    """

    pcm: np.ndarray
    rate: int
    frames: int
    errors: int = 0


def decoded_rate(fmt: PayloadFormat) -> int:
    """Sample rate of the audio packets of ``fmt`` carry (not its RTP clock)."""
    try:
        return DECODED_RATES[canonical_codec(fmt.name)]
    except UnsupportedCodec:
        raise UnsupportedCodec(f"codec not decodable: {fmt.name!r}") from None


def decode_stretch(
    fmt: PayloadFormat, log: FrameLog, length: int | None = None, *, limit: int | None = None
) -> Decoded:
    """The payloads of one payload format (positions in ``fmt.clock_rate`` units) decoded to
    a timeline at :func:`decoded_rate`: ``length`` samples if given, else up to the end of the
    last payload but at most ``limit``. Raises :class:`UnsupportedCodec` for other codecs."""
    canon = canonical_codec(fmt.name)
    log = FrameLog(fmt.clock_rate, log.positions, log.payloads)
    rate = DECODED_RATES[canon]
    if canon in G711_CODECS:
        positions, payloads = log.ordered()
        lengths = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
        pcm = decode_g711(b"".join(payloads), canon)
        return Decoded(scatter(pcm, positions, lengths, length, limit=limit), rate, len(payloads))
    return Decoded(decode_frames(canon, log, length, limit=limit), rate, len(log.payloads))


# -- timelines -----------------------------------------------------------------------------


def fit(samples: np.ndarray, length: int, offset: int = 0, fill: int = 0) -> np.ndarray:
    """`samples` shifted right by `offset` (left if negative), cut or padded with `fill`.

    Returns `samples` itself when it already has the wanted length and no offset.
    """
    if offset == 0 and samples.shape[0] == length:
        return samples
    out = np.full((length, *samples.shape[1:]), fill, dtype=samples.dtype)
    src = samples[max(-offset, 0) :]
    start = max(offset, 0)
    count = max(min(src.shape[0], length - start), 0)
    out[start : start + count] = src[:count]
    return out


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Mono int16 PCM from one rate to another (FFmpeg's swresample, time-aligned)."""
    if source_rate == target_rate or samples.size == 0:
        return samples
    resampler = av.AudioResampler(format="s16", layout="mono", rate=target_rate)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = source_rate
    frame.pts = 0
    out = _frames_pcm([*resampler.resample(frame), *resampler.resample(None)])
    return fit(out, round(samples.size * target_rate / source_rate))
