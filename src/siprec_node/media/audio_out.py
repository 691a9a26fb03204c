"""Writers of the final audio files: WAV (PCM16 or G.711), FLAC and Ogg Opus.

Every writer takes the recording as one numpy array or as consecutive blocks (`Audio`), shape
`(n,)` for mono or `(n, channels)`, and writes `path` atomically: the data goes to a hidden
temporary file in the same folder, which is flushed, fsynced (unless `durable=False`) and
renamed over `path`. A crash while writing therefore leaves the previous file or none, never
half a file, and writing again is always safe.

Opus: every channel is coded at `OPUS_BITRATE_PER_CHANNEL` (32 kbps, 64 kbps for a stereo
file). Below 24 kbps per channel libopus's stereo coding merges the two parties into both
channels; at 12 kbps per channel a tone on one side comes out on the other 26 dB down, at
32 kbps per channel more than 40 dB down across the speech band (measured in the tests).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import av
import numpy as np
from av.audio.stream import AudioStream

OPUS_BITRATE_PER_CHANNEL = 32_000
OPUS_RATES = frozenset({8000, 12000, 16000, 24000, 48000})
"""Input rates libopus takes; the call rates (8, 16, 48 kHz) all are."""

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
_G711_TAGS = {"PCMU": WAVE_FORMAT_MULAW, "PCMA": WAVE_FORMAT_ALAW}

TEMP_PREFIX = "."
TEMP_SUFFIX = ".partial"
"""Temporary files are `.<name>.partial` beside their final name."""


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """An open binary file that replaces `path` only once closed without error."""
    final = Path(path)
    temp = temporary_path(final)
    try:
        with open(temp, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


Audio = np.ndarray | Iterable[np.ndarray]
"""One array for the whole recording, or consecutive blocks of it (written as they come, so a
long call never needs its whole file in memory). Shape `(n,)` mono or `(n, channels)`."""


def _blocks(audio: Audio, dtype: str) -> Iterator[np.ndarray]:
    """The blocks of `audio` as C-contiguous arrays of `dtype`, all with the same channels."""
    channels = None
    for block in [audio] if isinstance(audio, np.ndarray) else audio:
        block = np.ascontiguousarray(block, dtype=dtype)
        if block.ndim not in (1, 2) or (block.ndim == 2 and block.shape[1] < 1):
            raise ValueError(f"expected (n,) or (n, channels) samples, got shape {block.shape}")
        count = 1 if block.ndim == 1 else block.shape[1]
        if channels is not None and count != channels:
            raise ValueError(f"a block of {count} channels after blocks of {channels}")
        channels = count
        yield block


def _peek(blocks: Iterator[np.ndarray]) -> tuple[int, Iterator[np.ndarray]]:
    """The channel count of the first block (1 if none), and all the blocks."""
    first = next(blocks, None)
    if first is None:
        return 1, iter(())
    channels = 1 if first.ndim == 1 else first.shape[1]
    return channels, itertools.chain([first], blocks)


def _wav_header(tag: int, channels: int, rate: int, sample_bytes: int, frames: int) -> bytes:
    """RIFF/WAVE header up to the `data` chunk's size; non-PCM formats get a `fact` chunk."""
    data_size = frames * channels * sample_bytes
    block = channels * sample_bytes
    if tag == WAVE_FORMAT_PCM:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 8 * sample_bytes)
        extra = b""
    else:
        fmt = struct.pack("<HHIIHHH", tag, channels, rate, rate * block, block, 8 * sample_bytes, 0)
        extra = b"fact" + struct.pack("<II", 4, frames)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    body += b"data" + struct.pack("<I", min(data_size, 0xFFFFFFFF))
    riff_size = len(body) + data_size + (data_size & 1)
    if riff_size > 0xFFFFFFFF:
        raise ValueError("recording too large for a WAV file (4 GiB)")
    return b"RIFF" + struct.pack("<I", riff_size) + body


def _write_wav(
    path: str | os.PathLike[str], audio: Audio, tag: int, rate: int, dtype: str, durable: bool
) -> None:
    sample_bytes = np.dtype(dtype).itemsize
    channels, blocks = _peek(_blocks(audio, dtype))
    with atomic_file(path, durable=durable) as out:
        out.write(_wav_header(tag, channels, rate, sample_bytes, 0))  # sizes filled in below
        frames = 0
        for block in blocks:
            out.write(block.data.cast("B"))
            frames += block.shape[0]
        if (frames * channels * sample_bytes) & 1:
            out.write(b"\x00")  # RIFF chunks are padded to an even size
        out.seek(0)
        out.write(_wav_header(tag, channels, rate, sample_bytes, frames))


def write_wav(
    path: str | os.PathLike[str], audio: Audio, rate: int, *, durable: bool = True
) -> None:
    """PCM16 WAV from int16 samples, mono `(n,)` or interleaved `(n, channels)`."""
    _write_wav(path, audio, WAVE_FORMAT_PCM, rate, "<i2", durable)


def write_wav_g711(
    path: str | os.PathLike[str], codes: Audio, codec: str, *, durable: bool = True
) -> None:
    """G.711 WAV (format tag 7 µ-law or 6 A-law, 8 kHz) from code bytes, mono or interleaved."""
    tag = _G711_TAGS.get(codec.upper())
    if tag is None:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    _write_wav(path, codes, tag, 8000, "u1", durable)


def _layout(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise ValueError(f"FLAC and Opus files here are mono or stereo, not {channels} channels")


def _encode(
    path: str | os.PathLike[str],
    audio: Audio,
    rate: int,
    *,
    container: str,
    codec: str,
    bit_rate: int | None,
    durable: bool,
) -> None:
    channels, blocks = _peek(_blocks(audio, "<i2"))
    layout = _layout(channels)
    with atomic_file(path, durable=durable) as out, av.open(out, "w", format=container) as muxer:
        stream = cast(AudioStream, muxer.add_stream(codec, rate=rate, layout=layout))
        if bit_rate is not None:
            stream.bit_rate = bit_rate * channels
        pts = 0
        for block in blocks:
            if not block.shape[0]:
                continue
            # PyAV cuts each block to the encoder's frame size
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            pts += block.shape[0]
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)


def write_flac(
    path: str | os.PathLike[str], audio: Audio, rate: int, *, durable: bool = True
) -> None:
    """FLAC (16 bits, lossless) from int16 samples, mono or stereo."""
    _encode(path, audio, rate, container="flac", codec="flac", bit_rate=None, durable=durable)


def write_opus(
    path: str | os.PathLike[str],
    audio: Audio,
    rate: int,
    *,
    bitrate_per_channel: int = OPUS_BITRATE_PER_CHANNEL,
    durable: bool = True,
) -> None:
    """Ogg Opus from int16 samples at 8, 12, 16, 24 or 48 kHz, mono or stereo."""
    if rate not in OPUS_RATES:
        raise ValueError(f"Opus takes {sorted(OPUS_RATES)} Hz, not {rate}")
    if bitrate_per_channel < 24_000:
        raise ValueError("below 24 kbps per channel libopus blends the channels of a stereo file")
    _encode(
        path,
        audio,
        rate,
        container="ogg",
        codec="libopus",
        bit_rate=bitrate_per_channel,
        durable=durable,
    )
