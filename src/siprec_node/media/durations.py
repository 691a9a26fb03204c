"""How long an RTP payload lasts, in RTP clock ticks, per codec, from the payload alone.

The stream timeline needs it to know where a packet's audio ends: to emit packets that continue
each other without waiting out the reorder window, and to start the next stretch of a stream
that changes codec exactly where this one's audio ends (``media/timeline.py``).
"""

from __future__ import annotations

from collections.abc import Callable


def opus_duration(payload: bytes) -> int:
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 §3.1); 0 if unknown."""
    if not payload:
        return 0
    toc = payload[0]
    config = toc >> 3
    if config < 12:
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:
        frame = (480, 960)[config & 1]
    else:
        frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        return frame
    if code < 3:
        return 2 * frame
    if len(payload) < 2:
        return 0
    return frame * (payload[1] & 0x3F)


def _one_tick(payload: bytes) -> int:
    """Duration of a payload of a codec whose frames we cannot size: one clock tick."""
    return 1


def _g729(payload: bytes) -> int:
    # 10-byte frames of 10 ms; a 2-byte SID frame (Annex B) at the end stands for 10 ms
    n = len(payload)
    return 80 * (n // 10) + (80 if n % 10 >= 2 else 0)


def _g723(payload: bytes) -> int:
    # 30 ms frames; the low 2 bits of a frame's first byte give its size (24, 20, 4 or 1)
    sizes = (24, 20, 4, 1)
    count = pos = 0
    while pos < len(payload):
        pos += sizes[payload[pos] & 3]
        count += 1
    return 240 * count


def _gsm(payload: bytes) -> int:
    return 160 * max(1, len(payload) // 33)


def _ilbc(payload: bytes) -> int:
    n = len(payload)
    if n and n % 50 == 0:
        return 240 * (n // 50)
    return 160 * max(1, n // 38)


def _amr_frames(payload: bytes, octet_aligned: bool) -> int:
    """Frames in an RFC 4867 payload: the entries of its table of contents."""
    if octet_aligned:
        count = 0
        for byte in payload[1:]:
            count += 1
            if not byte & 0x80:
                return count
        return max(count, 1)
    bits = int.from_bytes(payload, "big") if payload else 0
    total = 8 * len(payload)
    pos, count = 4, 0
    while pos + 6 <= total:
        count += 1
        if not (bits >> (total - pos - 1)) & 1:
            return count
        pos += 6
    return max(count, 1)


def frame_duration(codec: str, fmtp: str | None = None) -> Callable[[bytes], int] | None:
    """How many RTP clock ticks a payload of ``codec`` lasts (None: one per byte, as G.711 and
    G.722 on its 8000 Hz clock); a codec it cannot size counts one tick."""
    name = codec.replace(".", "").strip().upper()
    if name in ("PCMU", "PCMA", "G722"):
        return None
    if name == "OPUS":
        return opus_duration
    if name == "G729":
        return _g729
    if name == "G723":
        return _g723
    if name == "GSM":
        return _gsm
    if name == "ILBC":
        return _ilbc
    if name.startswith(("G726-", "AAL2-G726-")):
        bits = int(name.rsplit("-", 1)[1]) // 8
        return lambda payload: len(payload) * 8 // bits if bits else 1
    if name in ("AMR", "AMR-WB"):
        octet = "octet-align=1" in (fmtp or "").replace(" ", "")
        samples = 160 if name == "AMR" else 320
        return lambda payload: samples * _amr_frames(payload, octet)
    return _one_tick
