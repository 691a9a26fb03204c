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

- Every other codec (G.729, G.723.1, G.726, AMR, AMR-WB, iLBC, GSM): each payload is split
  into the codec's frames (RFC 3551; RFC 4867 depacketised by :mod:`~siprec_node.media.amr`
  into the storage format FFmpeg's AMR decoders take), the frames of a whole stretch are
  concatenated and decoded by one FFmpeg decoder in one call, and each payload's samples are
  scattered to its position as for G.722.
  Should the decoder reject anything, the stretch is decoded again payload by payload, the
  rejected ones left as silence and counted. Comfort-noise frames (G.729 Annex B SID) are
  silence; G.723.1 and (with OpenCORE's decoder) AMR render theirs as the decoder does.

A timeline is a 1-D int16 array whose sample 0 is the stream's epoch (media/FORMAT.md); gaps,
losses and undecodable packets are silence (0).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

import av
import numpy as np

from siprec_node.media import amr
from siprec_node.siprec.codecs import (
    DECODABLE,
    FFMPEG_DECODERS,
    PayloadFormat,
    canonical_name,
    locally_decodable,
)

PCMU = "PCMU"
PCMA = "PCMA"
G722 = "G722"
OPUS = "OPUS"
G729 = "G729"
G723 = "G723"
AMR = "AMR"
AMR_WB = "AMR-WB"
ILBC = "ILBC"
GSM = "GSM"
G726_BITS = {
    **{f"G726-{kbit}": kbit // 8 for kbit in (16, 24, 32, 40)},
    **{f"AAL2-G726-{kbit}": kbit // 8 for kbit in (16, 24, 32, 40)},
}
"""Bits per code word of each G.726 variant (RFC 3551 packing, and AAL2's)."""

G711_CODECS = frozenset({PCMU, PCMA})
G711_SILENCE = {PCMU: 0xFF, PCMA: 0xD5}
"""The code byte of a zero sample in each law (what the receive path writes into gaps)."""

DECODED_RATES = {name: 8000 for name in DECODABLE} | {G722: 16000, OPUS: 48000, AMR_WB: 16000}
"""Sample rate of the audio each codec carries (not its RTP clock)."""

RTP_CLOCKS = {name: codec.clock_rate for name, codec in DECODABLE.items()}


class UnsupportedCodec(ValueError):
    """A stream whose codec the recorder does not decode (it is reported, not recorded)."""


def canonical_codec(name: str) -> str:
    """The canonical name (`PCMU`, `G722`, `OPUS`, `G729`, `AMR-WB`...) for any spelling
    (`pcmu`, `G.722`, `opus`, `g729a`); :class:`UnsupportedCodec` for codecs not decoded."""
    canon = canonical_name(name)
    if canon is None:
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
    ctx = cast(av.AudioCodecContext, av.CodecContext.create(name, "r"))
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
    return _decode_opus(log, length, limit=limit)[0]


def _decode_opus(
    log: FrameLog, length: int | None = None, *, limit: int | None = None
) -> tuple[np.ndarray, int]:
    """`decode_opus` and the number of payloads the decoder rejected."""
    positions, payloads = log.ordered()
    scale = 48000 // log.clock_rate if log.clock_rate else 1
    bound = _bound(length, limit)
    if bound is not None:
        count = int(np.searchsorted(positions * scale, bound))
        positions, payloads = positions[:count], payloads[:count]
    ctx = _decoder("opus", 48000)
    chunks: list[np.ndarray] = []
    starts: list[int] = []
    errors = 0
    for position, payload in zip(positions.tolist(), payloads, strict=True):
        if not payload:
            continue
        try:
            pcm = _frames_pcm(ctx.decode(av.Packet(payload)))
        except av.FFmpegError:
            errors += 1
            continue
        chunks.append(pcm)
        starts.append(position * scale)
    if not chunks:
        return np.zeros(max(length or 0, 0), np.int16), errors
    lengths = np.fromiter((c.size for c in chunks), dtype=np.int64, count=len(chunks))
    starts_array = np.asarray(starts, np.int64)
    return scatter(np.concatenate(chunks), starts_array, lengths, length, limit=limit), errors


def decode_frames(
    codec: str, log: FrameLog, length: int | None = None, *, limit: int | None = None
) -> np.ndarray:
    """A frame log of any codec but G.711 to its int16 timeline at `DECODED_RATES[codec]`
    (see `decode_g722`, `decode_opus` for `length` and `limit`; `decode_stretch` takes the
    payload format's parameters too, e.g. AMR's packing)."""
    canon = canonical_codec(codec)
    if canon in G711_CODECS:
        raise UnsupportedCodec(f"{codec!r} streams are recorded as G.711 WAV, not as frame logs")
    fmt = PayloadFormat(-1, canon, log.clock_rate or RTP_CLOCKS[canon])
    return decode_stretch(fmt, log, length, limit=limit).pcm


@dataclass(frozen=True)
class Decoded:
    """A stretch of one stream decoded: int16 mono PCM at ``rate``, sample 0 at position 0.

    ``frames`` counts the RTP payloads decoded, ``errors`` those (among them) the decoder or
    the depacketiser rejected in whole or in part, left as silence; the recording's verdict
    reports them as ``undecodable``.
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
    last payload but at most ``limit``. Payloads starting at or past the end are not decoded.

    Raises :class:`UnsupportedCodec` for codecs not decoded, or whose decoder the installed
    FFmpeg lacks (the SDP answer refuses those, so only a hand-made format gets here).
    """
    canon = canonical_codec(fmt.name)
    rate = DECODED_RATES[canon]
    clock = fmt.clock_rate or RTP_CLOCKS[canon]
    log = FrameLog(clock, log.positions, log.payloads)
    if canon in G711_CODECS:
        positions, payloads = log.ordered()
        sizes = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
        pcm = decode_g711(b"".join(payloads), canon)
        return Decoded(scatter(pcm, positions, sizes, length, limit=limit), rate, len(payloads))
    if canon == G722:
        return Decoded(decode_g722(log, length, limit=limit), rate, len(log.payloads))
    if canon == OPUS:
        pcm, errors = _decode_opus(log, length, limit=limit)
        return Decoded(pcm, rate, len(log.payloads), errors)
    if canon not in locally_decodable():
        raise UnsupportedCodec(f"the installed FFmpeg has no decoder for {fmt.name!r}")
    scale = max(rate // clock, 1)
    positions, payloads = log.ordered()
    bound = _bound(length, limit)
    if bound is not None:
        count = int(np.searchsorted(positions * scale, bound))
        positions, payloads = positions[:count], payloads[:count]
    units, rejected = _FRAMERS[_framer_key(canon)](fmt, positions.tolist(), payloads, scale)
    pcm_chunks, starts, lengths, bad = _decode_units(canon, fmt, units)
    errors = len(rejected | bad)
    if not starts:
        return Decoded(np.zeros(max(length or 0, 0), np.int16), rate, len(log.payloads), errors)
    pcm = scatter(
        pcm_chunks,
        np.asarray(starts, np.int64),
        np.asarray(lengths, np.int64),
        length,
        limit=limit,
    )
    return Decoded(pcm, rate, len(log.payloads), errors)


# -- frame-based codecs: depacketising -----------------------------------------------------


@dataclass
class _Units:
    """What a stretch hands to its decoder: runs of whole codec frames (each run from one
    payload, ``samples`` long once decoded, landing at ``start`` of the timeline), grouped by
    the decoder they need (iLBC's two frame sizes need one decoder each). A group named
    ``single...`` is decoded run by run, never concatenated."""

    groups: dict[str, list[tuple[int, bytes, int, int]]] = field(default_factory=dict)
    # group -> [(start sample, frames' bytes, samples, payload index)]

    def add(self, group: str, start: int, data: bytes, samples: int, index: int) -> None:
        self.groups.setdefault(group, []).append((start, data, samples, index))


Framer = Callable[[PayloadFormat, list[int], list[bytes], int], tuple[_Units, set[int]]]


def _fmtp_params(fmt: PayloadFormat) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (fmt.fmtp or "").split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            params[key.strip().lower()] = value.strip()
    return params


def _frame_g729(
    fmt: PayloadFormat, positions: list[int], payloads: list[bytes], scale: int
) -> tuple[_Units, set[int]]:
    """RFC 3551 §4.5.6: 10-byte frames of 10 ms, an Annex B SID frame (2 bytes) last."""
    units, rejected = _Units(), set[int]()
    for index, (position, payload) in enumerate(zip(positions, payloads, strict=True)):
        count, rest = divmod(len(payload), 10)
        if rest not in (0, 2):
            rejected.add(index)
        elif count:
            units.add("", position * scale, payload[: count * 10], count * 80, index)
    return units, rejected


_G723_SIZES = (24, 20, 4, 1)  # 6.3 kbit/s, 5.3 kbit/s, SID, untransmitted: by the first byte


def _frame_g723(
    fmt: PayloadFormat, positions: list[int], payloads: list[bytes], scale: int
) -> tuple[_Units, set[int]]:
    """RFC 3551 §4.5.3: frames of 30 ms whose size the low two bits of their first byte give."""
    units, rejected = _Units(), set[int]()
    for index, (position, payload) in enumerate(zip(positions, payloads, strict=True)):
        at = frames = 0
        while at < len(payload):
            at += _G723_SIZES[payload[at] & 3]
            frames += 1
        if at != len(payload):
            rejected.add(index)
        elif frames:
            units.add("", position * scale, payload, frames * 240, index)
    return units, rejected


def _frame_gsm(
    fmt: PayloadFormat, positions: list[int], payloads: list[bytes], scale: int
) -> tuple[_Units, set[int]]:
    """RFC 3551 §4.5.8: 33-byte frames of 20 ms, each starting with the signature 0xD."""
    units, rejected = _Units(), set[int]()
    for index, (position, payload) in enumerate(zip(positions, payloads, strict=True)):
        count, rest = divmod(len(payload), 33)
        if rest or any(payload[i * 33] >> 4 != 0xD for i in range(count)):
            rejected.add(index)
        elif count:
            units.add("", position * scale, payload, count * 160, index)
    return units, rejected


def _frame_ilbc(
    fmt: PayloadFormat, positions: list[int], payloads: list[bytes], scale: int
) -> tuple[_Units, set[int]]:
    """RFC 3952: 38-byte frames of 20 ms or 50-byte frames of 30 ms (``mode`` says which when
    a payload's size fits both). FFmpeg's decoder takes one frame per packet: each frame is
    a run of its own."""
    mode = 20 if _fmtp_params(fmt).get("mode") == "20" else 30
    units, rejected = _Units(), set[int]()
    for index, (position, payload) in enumerate(zip(positions, payloads, strict=True)):
        size = len(payload)
        fits20, fits30 = size % 38 == 0, size % 50 == 0
        if size and fits20 and (mode == 20 or not fits30):
            frame, samples = 38, 160
        elif size and fits30:
            frame, samples = 50, 240
        else:
            if size:
                rejected.add(index)
            continue
        for k in range(size // frame):
            start = (position + k * samples) * scale
            data = payload[k * frame : (k + 1) * frame]
            units.add(f"single:{frame}", start, data, samples, index)
    return units, rejected


def _frame_g726(
    fmt: PayloadFormat, positions: list[int], payloads: list[bytes], scale: int
) -> tuple[_Units, set[int]]:
    """RFC 3551 §4.5.4: code words back to back, one per 8 kHz sample; a payload's trailing
    bits that make no whole code word are dropped. Payloads whose size is not a whole number
    of code words go to the decoder one by one (``"single"``), lest they shift the rest."""
    bits = G726_BITS[canonical_codec(fmt.name)]
    units, rejected = _Units(), set[int]()
    for index, (position, payload) in enumerate(zip(positions, payloads, strict=True)):
        if payload:
            group = "" if len(payload) * 8 % bits == 0 else "single"
            units.add(group, position * scale, payload, len(payload) * 8 // bits, index)
    return units, rejected


def _frame_amr(
    fmt: PayloadFormat, positions: list[int], payloads: list[bytes], scale: int
) -> tuple[_Units, set[int]]:
    """RFC 4867 §4.3 (bandwidth-efficient) and §4.4 (octet-aligned, ``octet-align=1``, with
    ``crc=1`` its CRC octets): the CMR, the table of contents, then the frames; each speech or
    SID frame becomes the storage format (§5.3: a ToC octet, the bits padded to octets), one
    run per payload stretch of frames, 20 ms apart. NO_DATA and lost frames stay silent."""
    wideband = canonical_codec(fmt.name) == AMR_WB
    bits_of = amr.AMR_WB_BITS if wideband else amr.AMR_NB_BITS
    samples = 320 if wideband else 160
    ticks = samples // scale
    params = _fmtp_params(fmt)
    octet = params.get("octet-align") == "1"
    crc = octet and params.get("crc") == "1"
    # Interleaving and robust sorting reorder frames across packets; the answer refuses them.
    unsupported = "interleaving" in params or params.get("robust-sorting") == "1"
    sid_decoded = _decoder_name(fmt.name).startswith("libopencore")
    single = {} if octet or unsupported else amr.efficient_single(payloads, bits_of)
    read_frames = amr.octet_aligned if octet else amr.bandwidth_efficient
    units, rejected = _Units(), set[int]()
    for index, (position, payload) in enumerate(zip(positions, payloads, strict=True)):
        if unsupported:
            rejected.add(index)
            continue
        if index in single:
            frames: list[tuple[int, bytes]] | None = [single[index]]
        else:
            frames = read_frames(payload, bits_of, crc)
        if frames is None:
            rejected.add(index)
            continue
        run: list[bytes] = []
        run_start = 0
        for k, (ft, frame) in enumerate(frames):
            speech = ft < len(bits_of) - 1 or (ft == len(bits_of) - 1 and sid_decoded)
            if speech:
                if not run:
                    run_start = k
                run.append(frame)
                continue
            if run:
                start = (position + run_start * ticks) * scale
                units.add("", start, b"".join(run), len(run) * samples, index)
                run = []
        if run:
            start = (position + run_start * ticks) * scale
            units.add("", start, b"".join(run), len(run) * samples, index)
    return units, rejected


def _framer_key(canon: str) -> str:
    return "G726" if canon in G726_BITS else canon


_FRAMERS: dict[str, Framer] = {
    G729: _frame_g729,
    G723: _frame_g723,
    GSM: _frame_gsm,
    ILBC: _frame_ilbc,
    "G726": _frame_g726,
    AMR: _frame_amr,
    AMR_WB: _frame_amr,
}


def payload_ticks(fmt: PayloadFormat) -> Callable[[bytes], int] | None:
    """How many ticks of its RTP clock a payload of ``fmt`` covers, read from its size (and
    AMR's table of contents), without decoding: for the receive path's ``frame_duration``.
    None for codecs whose payloads are one byte per tick (G.711, G.722) or that need their
    own reader (Opus: ``timeline.opus_duration``)."""
    canon = canonical_codec(fmt.name)
    if canon in G711_CODECS or canon in (G722, OPUS):
        return None
    if canon == G729:
        return lambda p: len(p) // 10 * 80 + (80 if len(p) % 10 == 2 else 0)
    if canon == GSM:
        return lambda p: len(p) // 33 * 160
    if canon in G726_BITS:
        bits = G726_BITS[canon]
        return lambda p: len(p) * 8 // bits
    if canon == ILBC:
        mode = 20 if _fmtp_params(fmt).get("mode") == "20" else 30

        def ilbc(p: bytes) -> int:
            if len(p) % 38 == 0 and (mode == 20 or len(p) % 50):
                return len(p) // 38 * 160
            return len(p) // 50 * 240

        return ilbc
    if canon == G723:

        def g723(p: bytes) -> int:
            at = frames = 0
            while at < len(p):
                at += _G723_SIZES[p[at] & 3]
                frames += 1
            return frames * 240

        return g723
    octet = _fmtp_params(fmt).get("octet-align") == "1"
    ticks = 320 if canon == AMR_WB else 160  # 20 ms at 16 kHz or 8 kHz

    def amr(p: bytes) -> int:
        value, total, count = int.from_bytes(p, "big"), len(p) * 8, 0
        at, step, first = (8, 8, 0) if octet else (4, 6, 0)
        while at + step <= total:
            count += 1
            if not (value >> (total - at - 1 - first)) & 1:  # F bit clear: the last entry
                break
            at += step
        return count * ticks

    return amr


# -- frame-based codecs: decoding ----------------------------------------------------------


def _decoder_name(codec: str) -> str:
    """The first FFmpeg decoder of ``codec`` the installed FFmpeg has."""
    canon = canonical_codec(codec)
    return _installed_decoder(canon)


@lru_cache(maxsize=64)
def _installed_decoder(canon: str) -> str:
    for name in FFMPEG_DECODERS[canon]:
        try:
            av.Codec(name, "r")
        except (ValueError, av.FFmpegError):
            continue
        return name
    raise UnsupportedCodec(f"the installed FFmpeg has no decoder for {canon}")


def _open_decoder(canon: str, group: str) -> av.AudioCodecContext:
    ctx = _decoder(_decoder_name(canon), DECODED_RATES[canon])
    options: dict[str, str] = {}
    if canon in G726_BITS:
        options["bits_per_coded_sample"] = str(G726_BITS[canon])
    if canon == ILBC:
        options["block_align"] = group.rpartition(":")[2]
    if options:
        ctx.options = options
    return ctx


def _plane_pcm(frames: Sequence[av.AudioFrame]) -> np.ndarray:
    """Decoded mono frames as one int16 array: straight from the planes when already int16."""
    if not frames:
        return np.zeros(0, np.int16)
    if frames[0].format.name in ("s16", "s16p"):
        return np.frombuffer(
            b"".join(bytes(f.planes[0])[: 2 * f.samples] for f in frames), dtype="<i2"
        )
    return _frames_pcm(frames)


def _run_decoder(ctx: av.AudioCodecContext, data: bytes) -> np.ndarray:
    return _plane_pcm([*ctx.decode(av.Packet(data)), *ctx.decode(None)])


def _decode_units(
    canon: str, fmt: PayloadFormat, units: _Units
) -> tuple[np.ndarray, list[int], list[int], set[int]]:
    """Decode every group of runs: in one call per group, or run by run once the decoder
    rejects anything (a rejected run is silence and its payload counted)."""
    chunks: list[np.ndarray] = []
    starts: list[int] = []
    lengths: list[int] = []
    bad: set[int] = set()
    collecting = gc.isenabled()
    gc.disable()  # decoders return one object per 10-30 ms frame: no cycles, only GC churn
    try:
        for group, runs in units.groups.items():
            expected = sum(r[2] for r in runs)
            pcm = None
            if not group.startswith("single"):  # runs that may be decoded as one
                try:
                    pcm = _run_decoder(_open_decoder(canon, group), b"".join(r[1] for r in runs))
                except av.FFmpegError:
                    pcm = None
                if pcm is not None and pcm.size != expected:
                    pcm = None
            if pcm is None:
                ctx = _open_decoder(canon, group)
                pieces = []
                for _start, data, samples, index in runs:
                    try:
                        piece = _plane_pcm(ctx.decode(av.Packet(data)))
                    except av.FFmpegError:
                        piece = np.zeros(0, np.int16)
                    if piece.size != samples:
                        bad.add(index)
                        piece = np.zeros(samples, np.int16)
                    pieces.append(piece)
                pcm = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
            chunks.append(pcm)
            starts += [r[0] for r in runs]
            lengths += [r[2] for r in runs]
    finally:
        if collecting:
            gc.enable()
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), starts, lengths, bad


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
