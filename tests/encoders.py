"""Independent encoders for test media, and RTP packetisation as the RFCs say.

None of these is the code under test: G.729 comes from Belledonne's bcg729 (Debian's
``libbcg729-dev``), GSM from libgsm (``libgsm1-dev``), AMR-WB from VisualOn's encoder
(``libvo-amrwbenc-dev``), all through ctypes; G.722, G.723.1, G.726, AMR-NB (OpenCORE) and Opus
from the encoders of the FFmpeg that PyAV bundles. ``.ci/run`` installs the Debian libraries;
:func:`require` skips a test where one is missing (outside CI) and fails it under CI.

Each ``*_frames`` function returns the codec's frames as the encoder emits them; the
``packetise_*`` functions build RTP payloads (RFC 3551, RFC 4867) from them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from fractions import Fraction
from functools import cache

import av
import numpy as np
import pytest

# -- signals ---------------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, level: float = 0.3) -> np.ndarray:
    """A sine at ``freq`` Hz, ``level`` of full scale, as int16."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def dominant(x: np.ndarray, rate: int) -> float:
    """The frequency of the strongest spectral peak of ``x``."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def tone_snr(x: np.ndarray, freq: float, rate: int) -> float:
    """dB of the energy within ±50 Hz of ``freq`` over the rest of the spectrum."""
    power = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size))) ** 2
    bins = np.fft.rfftfreq(x.size, 1 / rate)
    near = np.abs(bins - freq) <= 50
    return float(10 * np.log10(power[near].sum() / max(power[~near].sum(), 1e-9)))


# -- libraries -------------------------------------------------------------------------------


@cache
def _library(name: str) -> ctypes.CDLL | None:
    path = ctypes.util.find_library(name)
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def require(name: str) -> ctypes.CDLL:
    """The shared library ``lib<name>``: skips the test when absent, fails it under CI."""
    lib = _library(name)
    if lib is None:
        message = f"lib{name} is not installed (.ci/run installs it from Debian)"
        if os.environ.get("CI") or os.environ.get("REQUIRE_RTPRECV") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return lib


def _int16(pcm: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pcm, dtype=np.int16)


# -- bcg729 (G.729 Annex A, Annex B with VAD) ------------------------------------------------


def g729_frames(pcm: np.ndarray, *, vad: bool = False) -> list[bytes]:
    """One G.729 frame per 10 ms (80 samples at 8 kHz): 10 bytes of speech, with ``vad`` also
    2-byte SID frames and empty (untransmitted) ones, from bcg729."""
    lib = require("bcg729")
    lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
    lib.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]
    lib.bcg729Encoder.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_uint8),
        ctypes.POINTER(ctypes.c_uint8),
    ]
    lib.closeBcg729EncoderChannel.argtypes = [ctypes.c_void_p]
    state = lib.initBcg729EncoderChannel(1 if vad else 0)
    pcm = _int16(pcm)
    out = (ctypes.c_uint8 * 10)()
    size = ctypes.c_uint8()
    frames: list[bytes] = []
    try:
        for i in range(0, pcm.size - 79, 80):
            block = pcm[i : i + 80]
            lib.bcg729Encoder(
                state, block.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), out, ctypes.byref(size)
            )
            frames.append(bytes(out[: size.value]))
    finally:
        lib.closeBcg729EncoderChannel(state)
    return frames


# -- libgsm (GSM 06.10 full rate) ------------------------------------------------------------


def gsm_frames(pcm: np.ndarray) -> list[bytes]:
    """33-byte GSM full-rate frames, one per 20 ms (160 samples at 8 kHz), from libgsm."""
    lib = require("gsm")
    lib.gsm_create.restype = ctypes.c_void_p
    lib.gsm_encode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_char_p]
    lib.gsm_destroy.argtypes = [ctypes.c_void_p]
    state = lib.gsm_create()
    pcm = _int16(pcm)
    out = ctypes.create_string_buffer(33)
    frames: list[bytes] = []
    try:
        for i in range(0, pcm.size - 159, 160):
            block = np.ascontiguousarray(pcm[i : i + 160])
            lib.gsm_encode(state, block.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), out)
            frames.append(out.raw[:33])
    finally:
        lib.gsm_destroy(state)
    return frames


# -- VisualOn AMR-WB -------------------------------------------------------------------------


def amrwb_frames(pcm: np.ndarray, mode: int = 8, *, dtx: bool = False) -> list[bytes]:
    """AMR-WB frames in the storage format (a ToC byte, then the frame's bits), one per 20 ms
    (320 samples at 16 kHz), from vo-amrwbenc; ``mode`` 0-8 (6.6 to 23.85 kbit/s)."""
    lib = require("vo-amrwbenc")
    lib.E_IF_init.restype = ctypes.c_void_p
    lib.E_IF_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.E_IF_exit.argtypes = [ctypes.c_void_p]
    state = lib.E_IF_init()
    pcm = _int16(pcm)
    out = ctypes.create_string_buffer(64)
    frames: list[bytes] = []
    try:
        for i in range(0, pcm.size - 319, 320):
            block = np.ascontiguousarray(pcm[i : i + 320])
            n = lib.E_IF_encode(
                state, mode, block.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), out, int(dtx)
            )
            frames.append(out.raw[:n])
    finally:
        lib.E_IF_exit(state)
    return frames


# -- FFmpeg's encoders (PyAV) ----------------------------------------------------------------


def ffmpeg_frames(
    codec: str,
    pcm: np.ndarray,
    rate: int,
    *,
    frame: int | None = None,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
) -> list[bytes]:
    """The packets FFmpeg's encoder ``codec`` makes of mono ``pcm`` (``frame`` samples per
    input frame, else the encoder's frame size, else all at once)."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    if bit_rate:
        ctx.bit_rate = bit_rate
    if options:
        ctx.options = options
    ctx.open()
    size = frame or ctx.frame_size or pcm.size
    pcm = _int16(pcm)
    packets: list[bytes] = []
    for i in range(0, pcm.size - size + 1, size):
        f = av.AudioFrame.from_ndarray(
            pcm[i : i + size].reshape(1, -1), format="s16", layout="mono"
        )
        f.sample_rate = rate
        f.pts = i
        f.time_base = Fraction(1, rate)
        packets += [bytes(p) for p in ctx.encode(f)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


def amrnb_frames(pcm: np.ndarray, bit_rate: int = 12200) -> list[bytes]:
    """AMR-NB storage-format frames (ToC byte + bits), one per 20 ms, from OpenCORE's encoder
    in PyAV's FFmpeg."""
    return ffmpeg_frames("libopencore_amrnb", pcm, 8000, frame=160, bit_rate=bit_rate)


def g726_bytes(pcm: np.ndarray, bits: int, *, little_endian: bool) -> bytes:
    """G.726 at ``bits`` per sample (2-5): RFC 3551 packing (first code word in the low bits)
    when ``little_endian``, else the AAL2 / I.366.2 packing."""
    name = "g726le" if little_endian else "g726"
    return b"".join(ffmpeg_frames(name, pcm, 8000, frame=160, bit_rate=8000 * bits))


def g723_frames(pcm: np.ndarray, bit_rate: int = 6300) -> list[bytes]:
    """G.723.1 frames (24 bytes at 6.3 kbit/s), one per 30 ms, from FFmpeg's encoder."""
    return ffmpeg_frames("g723_1", pcm, 8000, frame=240, bit_rate=bit_rate)


# -- RTP payloads ----------------------------------------------------------------------------


def packetise(
    frames: Sequence[bytes], per_packet: int, frame_ticks: int
) -> list[tuple[int, bytes]]:
    """(RTP timestamp offset, payload) of frames concatenated ``per_packet`` at a time (RFC 3551
    for G.729, G.723.1, GSM, iLBC: frames follow each other, a SID frame last)."""
    out = []
    for i in range(0, len(frames), per_packet):
        payload = b"".join(frames[i : i + per_packet])
        if payload:
            out.append((i * frame_ticks, payload))
    return out


AMR_NB_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)
AMR_WB_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477, 40)


def amr_payload(
    frames: Sequence[bytes], *, wideband: bool, octet_aligned: bool, cmr: int = 15
) -> bytes:
    """An RFC 4867 payload (section 4.3 bandwidth-efficient or 4.4 octet-aligned) carrying
    storage-format ``frames`` (ToC byte + the frame's bits, as the encoders emit them)."""
    bits_of = AMR_WB_BITS if wideband else AMR_NB_BITS
    tocs = []
    bodies = []
    for index, frame in enumerate(frames):
        ft = (frame[0] >> 3) & 0x0F
        quality = (frame[0] >> 2) & 1
        follow = 1 if index < len(frames) - 1 else 0
        tocs.append((follow, ft, quality))
        nbits = bits_of[ft] if ft < len(bits_of) else 0
        bits = np.unpackbits(np.frombuffer(frame[1:], np.uint8))[:nbits]
        bodies.append(bits)
    if octet_aligned:
        out = bytearray([cmr << 4])
        out += bytes((f << 7) | (ft << 3) | (q << 2) for f, ft, q in tocs)
        for bits in bodies:
            out += np.packbits(bits).tobytes()
        return bytes(out)
    stream: list[int] = [(cmr >> (3 - i)) & 1 for i in range(4)]
    for f, ft, q in tocs:
        stream += [f, *((ft >> (3 - i)) & 1 for i in range(4)), q]
    bitarray = np.concatenate([np.asarray(stream, np.uint8), *bodies]).astype(np.uint8)
    return np.packbits(bitarray).tobytes()  # zero-padded to a whole octet
