"""Writers of the final audio files: WAV (PCM16 or G.711), FLAC and Ogg Opus.

Every writer takes the whole recording as one numpy array, shape `(n,)` for mono or
`(n, channels)`, and writes `path` atomically: the data goes to a hidden temporary file in the
same folder, which is flushed, fsynced (unless `durable=False`) and renamed over `path`. A
crash while writing therefore leaves the previous file or none, never half a file, and writing
again is always safe.

Opus: every channel is coded at `OPUS_BITRATE_PER_CHANNEL` (32 kbps, 64 kbps for a stereo
file). Below 24 kbps per channel libopus's stereo coding merges the two parties into both
channels; at 12 kbps per channel a tone on one side comes out on the other 26 dB down, at
32 kbps per channel more than 40 dB down across the speech band (measured in the tests).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

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


def _channels(samples: np.ndarray) -> int:
    if samples.ndim == 1:
        return 1
    if samples.ndim == 2 and samples.shape[1] >= 1:
        return samples.shape[1]
    raise ValueError(f"expected (n,) or (n, channels) samples, got shape {samples.shape}")


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


def write_wav(
    path: str | os.PathLike[str], samples: np.ndarray, rate: int, *, durable: bool = True
) -> None:
    """PCM16 WAV from int16 samples, mono `(n,)` or interleaved `(n, channels)`."""
    data = np.ascontiguousarray(samples, dtype="<i2")
    channels = _channels(data)
    with atomic_file(path, durable=durable) as out:
        out.write(_wav_header(WAVE_FORMAT_PCM, channels, rate, 2, data.shape[0]))
        out.write(memoryview(data).cast("B"))


def write_wav_g711(
    path: str | os.PathLike[str], codes: np.ndarray, codec: str, *, durable: bool = True
) -> None:
    """G.711 WAV (format tag 7 µ-law or 6 A-law, 8 kHz) from code bytes, mono or interleaved."""
    tag = _G711_TAGS.get(codec.upper())
    if tag is None:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    data = np.ascontiguousarray(codes, dtype=np.uint8)
    channels = _channels(data)
    with atomic_file(path, durable=durable) as out:
        out.write(_wav_header(tag, channels, 8000, 1, data.shape[0]))
        out.write(memoryview(data).cast("B"))
        if data.size & 1:
            out.write(b"\x00")  # RIFF chunks are padded to an even size


def _layout(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise ValueError(f"FLAC and Opus files here are mono or stereo, not {channels} channels")


def _encode(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    rate: int,
    *,
    container: str,
    codec: str,
    bit_rate: int | None,
    durable: bool,
) -> None:
    data = np.ascontiguousarray(samples, dtype=np.int16)
    channels = _channels(data)
    layout = _layout(channels)
    with atomic_file(path, durable=durable) as out, av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate, layout=layout)
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        if data.shape[0]:
            # one frame for the whole call: PyAV cuts it to the encoder's frame size
            frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = 0
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)


def write_flac(
    path: str | os.PathLike[str], samples: np.ndarray, rate: int, *, durable: bool = True
) -> None:
    """FLAC (16 bits, lossless) from int16 samples, mono or stereo."""
    _encode(path, samples, rate, container="flac", codec="flac", bit_rate=None, durable=durable)


def write_opus(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    rate: int,
    *,
    bitrate_per_channel: int = OPUS_BITRATE_PER_CHANNEL,
    durable: bool = True,
) -> None:
    """Ogg Opus from int16 samples at 8, 12, 16, 24 or 48 kHz, mono or stereo."""
    if rate not in OPUS_RATES:
        raise ValueError(f"Opus takes {sorted(OPUS_RATES)} Hz, not {rate}")
    channels = _channels(samples)
    if channels > 1 and bitrate_per_channel < 24_000:
        raise ValueError("below 24 kbps per channel libopus blends the channels of a stereo file")
    bit_rate = bitrate_per_channel * channels
    _encode(
        path, samples, rate, container="ogg", codec="libopus", bit_rate=bit_rate, durable=durable
    )
