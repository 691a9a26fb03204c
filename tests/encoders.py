"""Independent encoders for the tests: RTP payloads made by code the node does not use to decode.

G.729 comes from Belledonne's bcg729 (Debian ``libbcg729-0``/``libbcg729-dev``) through ctypes;
G.726, G.723.1 and AMR-NB from FFmpeg's encoders through PyAV (``adpcm_g726le``/``adpcm_g726``,
``g723_1``, ``libopencore_amrnb``). Each function takes float samples in [-1, 1] at 8 kHz and
returns one RTP payload per packet, packed as RFC 3551 / RFC 4867 say SRCs put them on the wire.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import numpy as np

RATE = 8000


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 32767), -32768, 32767).astype("<i2")


# ------------------------------------------------------------------------------------ G.729


@cache
def _bcg729() -> ctypes.CDLL:
    name = ctypes.util.find_library("bcg729") or "libbcg729.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise RuntimeError(
            "bcg729 is not installed (Debian: apt-get install libbcg729-dev)"
        ) from exc
    lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
    lib.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]
    lib.closeBcg729EncoderChannel.argtypes = [ctypes.c_void_p]
    lib.bcg729Encoder.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_uint8),
        ctypes.POINTER(ctypes.c_uint8),
    ]
    return lib


def g729_encode(x: np.ndarray, *, ptime_ms: int = 20, vad: bool = False) -> list[bytes]:
    """G.729 (Annex A bit stream, bcg729): 10 bytes per 10 ms frame, ``ptime_ms`` per payload.

    With ``vad`` the encoder may emit 2-byte SID frames (Annex B) and empty ones (no payload).
    """
    lib = _bcg729()
    pcm = _pcm16(x)
    pcm = np.concatenate([pcm, np.zeros(-pcm.size % 80, "<i2")])
    context = lib.initBcg729EncoderChannel(1 if vad else 0)
    frames: list[bytes] = []
    out = (ctypes.c_uint8 * 10)()
    length = ctypes.c_uint8()
    try:
        for start in range(0, pcm.size, 80):
            chunk = np.ascontiguousarray(pcm[start : start + 80])
            lib.bcg729Encoder(
                context,
                chunk.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)),
                out,
                ctypes.byref(length),
            )
            frames.append(bytes(out[: length.value]))
    finally:
        lib.closeBcg729EncoderChannel(context)
    per = ptime_ms // 10
    return [b"".join(frames[i : i + per]) for i in range(0, len(frames) - per + 1, per)]


# ------------------------------------------------------------------------------ PyAV helpers


def _ffmpeg_encode(name: str, x: np.ndarray, *, bit_rate: int | None = None) -> list[bytes]:
    """Encode 8 kHz mono with an FFmpeg encoder; the packets as it made them (flushed)."""
    import av

    ctx = av.CodecContext.create(name, "w")
    ctx.sample_rate = RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    if bit_rate is not None:
        ctx.bit_rate = bit_rate
    ctx.open()
    size = ctx.frame_size or 160
    pcm = _pcm16(x)
    pcm = np.concatenate([pcm, np.zeros(-pcm.size % size, "<i2")])
    packets: list[bytes] = []
    for start in range(0, pcm.size, size):
        frame = av.AudioFrame.from_ndarray(
            pcm[start : start + size].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = start
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


# ------------------------------------------------------------------------------------ G.726


def g726_encode(
    x: np.ndarray, *, bit_rate: int = 32000, packing: str = "rfc3551", ptime_ms: int = 20
) -> list[bytes]:
    """G.726 at ``bit_rate`` (16000, 24000, 32000 or 40000), ``ptime_ms`` per payload.

    ``packing="rfc3551"``: the first code word in the least significant bits of the first
    octet (RTP ``G726-32``; FFmpeg's ``adpcm_g726le``). ``"aal2"``: the first code word in the
    most significant bits (ITU-T I.366.2, ``AAL2-G726-32``; FFmpeg's ``adpcm_g726``).
    """
    if bit_rate not in (16000, 24000, 32000, 40000):
        raise ValueError(f"G.726 has no {bit_rate} bit/s mode")
    name = {"rfc3551": "adpcm_g726le", "aal2": "adpcm_g726"}[packing]
    data = b"".join(_ffmpeg_encode(name, x, bit_rate=bit_rate))
    per = bit_rate * ptime_ms // 8000  # bytes per payload
    wanted = int(np.asarray(x).size * bit_rate / 8 / RATE)
    data = data[:wanted]
    return [data[i : i + per] for i in range(0, len(data) - per + 1, per)]


# ---------------------------------------------------------------------------------- G.723.1


def g723_encode(x: np.ndarray, *, bit_rate: int = 6300) -> list[bytes]:
    """G.723.1 (FFmpeg's encoder, 6.3 kbit/s): one 24-byte 30 ms frame per payload."""
    packets = _ffmpeg_encode("g723_1", x, bit_rate=bit_rate)
    return packets[: np.asarray(x).size // 240]


# ----------------------------------------------------------------------------------- AMR-NB

# Speech bits per AMR-NB frame type 0..7 (3GPP TS 26.101 table 2; 8 = SID, 39 bits).
AMR_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)
AMR_MODES = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)


def amr_encode(x: np.ndarray, *, bit_rate: int = 12200, octet_aligned: bool = True) -> list[bytes]:
    """AMR-NB (OpenCORE through FFmpeg) as RFC 4867 RTP payloads, one 20 ms frame each.

    Octet-aligned: CMR octet (no request), ToC octet (F=0, FT, Q=1), speech bits padded to an
    octet. Bandwidth-efficient: CMR (4 bits), ToC (6 bits) and the speech bits packed without
    padding, the payload padded to an octet at its end.
    """
    if bit_rate not in AMR_MODES:
        raise ValueError(f"AMR-NB has no {bit_rate} bit/s mode")
    frames = _ffmpeg_encode("libopencore_amrnb", x, bit_rate=bit_rate)
    payloads = []
    for frame in frames[: np.asarray(x).size // 160]:
        # The encoder writes the storage format (RFC 4867 §5.3): a header octet, then speech.
        frame_type = (frame[0] >> 3) & 0x0F
        speech = frame[1:]
        if octet_aligned:
            payloads.append(bytes([0xF0, (frame_type << 3) | 0x04]) + speech)
            continue
        bits = np.unpackbits(np.frombuffer(speech, np.uint8))[: AMR_BITS[frame_type]]
        head = [1, 1, 1, 1, 0, *((frame_type >> s) & 1 for s in (3, 2, 1, 0)), 1]
        packed = np.concatenate([np.array(head, np.uint8), bits])
        payloads.append(np.packbits(packed).tobytes())
    return payloads


def amr_storage_frame(payload: bytes, *, octet_aligned: bool = True) -> bytes:
    """One RFC 4867 RTP payload of a single frame back to the storage format (test checks)."""
    if octet_aligned:
        return payload[1:]
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))
    frame_type = int("".join(str(b) for b in bits[5:9]), 2)
    speech = bits[10 : 10 + AMR_BITS[frame_type]]
    return bytes([(frame_type << 3) | 0x04]) + np.packbits(speech).tobytes()
