"""RFC 4867 payloads of AMR and AMR-WB depacketised into the storage format (RFC 4867 §5.3: a
ToC octet, then the frame's bits padded to octets) that FFmpeg's AMR decoders take.

Pure parsing, no decoder: :mod:`siprec_node.media.decode` frames a stretch's payloads with these
and decodes the frames. Each reader returns ``(frame type, storage frame)`` per frame of a
payload, or None for a payload that does not parse (counted as undecodable by the caller).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AMR_NB_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)
"""Class A+B+C bits of each AMR frame type (RFC 4867 §3.6; 8 is the SID frame)."""
AMR_WB_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477, 40)
"""The same for AMR-WB (9 is the SID frame)."""
_NO_DATA = 15
_WB_SPEECH_LOST = 14


def _storage_frame(ft: int, quality: int, body: int, nbits: int) -> bytes:
    """A storage-format frame: ToC octet, then ``nbits`` bits of ``body`` padded to octets."""
    nbytes = (nbits + 7) // 8
    return bytes([(ft << 3) | (quality << 2)]) + (body << (nbytes * 8 - nbits)).to_bytes(
        nbytes, "big"
    )


def _valid(ft: int, bits_of: tuple[int, ...]) -> bool:
    wideband = bits_of is AMR_WB_BITS
    return ft < len(bits_of) or ft == _NO_DATA or (wideband and ft == _WB_SPEECH_LOST)


def octet_aligned(
    payload: bytes, bits_of: tuple[int, ...], crc: bool
) -> list[tuple[int, bytes]] | None:
    """The frames of an octet-aligned payload (§4.4; ``crc``: it carries CRC octets)."""
    if len(payload) < 2:
        return None
    tocs: list[tuple[int, int]] = []
    at = 1  # after the CMR octet
    while True:
        if at >= len(payload):
            return None
        toc = payload[at]
        at += 1
        ft, quality = (toc >> 3) & 0x0F, (toc >> 2) & 1
        if not _valid(ft, bits_of):
            return None
        tocs.append((ft, quality))
        if not toc & 0x80:
            break
    if crc:
        at += sum(1 for ft, _ in tocs if ft < len(bits_of))
    frames: list[tuple[int, bytes]] = []
    for ft, quality in tocs:
        nbits = bits_of[ft] if ft < len(bits_of) else 0
        nbytes = (nbits + 7) // 8
        if at + nbytes > len(payload):
            return None
        frames.append((ft, bytes([(ft << 3) | (quality << 2)]) + payload[at : at + nbytes]))
        at += nbytes
    return frames


def bandwidth_efficient(
    payload: bytes, bits_of: tuple[int, ...], crc: bool
) -> list[tuple[int, bytes]] | None:
    """The frames of a bandwidth-efficient payload (§4.3), read bit by bit (``crc`` is
    unused: the bandwidth-efficient mode has no CRC)."""
    total = len(payload) * 8
    value = int.from_bytes(payload, "big")

    def take(at: int, count: int) -> int:
        return (value >> (total - at - count)) & ((1 << count) - 1)

    at = 4  # after the CMR
    tocs: list[tuple[int, int]] = []
    while True:
        if at + 6 > total:
            return None
        toc = take(at, 6)
        at += 6
        ft, quality = (toc >> 1) & 0x0F, toc & 1
        if not _valid(ft, bits_of):
            return None
        tocs.append((ft, quality))
        if not toc & 0x20:
            break
    frames: list[tuple[int, bytes]] = []
    for ft, quality in tocs:
        nbits = bits_of[ft] if ft < len(bits_of) else 0
        if at + nbits > total:
            return None
        frames.append((ft, _storage_frame(ft, quality, take(at, nbits), nbits)))
        at += nbits
    if total - at >= 8:  # more than the padding to an octet
        return None
    return frames


def efficient_single(
    payloads: Sequence[bytes], bits_of: tuple[int, ...]
) -> dict[int, tuple[int, bytes]]:
    """Bandwidth-efficient payloads carrying exactly one speech or SID frame (what SRCs send
    most), depacketised in bulk, by payload size: index -> (frame type, storage frame). Other
    payloads are left to :func:`bandwidth_efficient`."""
    by_size: dict[int, list[int]] = {}
    for index, payload in enumerate(payloads):
        by_size.setdefault(len(payload), []).append(index)
    out: dict[int, tuple[int, bytes]] = {}
    for size, indexes in by_size.items():
        if size < 2 or len(indexes) < 8:
            continue
        rows = np.frombuffer(b"".join(payloads[i] for i in indexes), np.uint8).reshape(-1, size)
        bits = np.unpackbits(rows, axis=1)
        follow, quality = bits[:, 4], bits[:, 9].astype(np.uint8)
        types = (bits[:, 5] << 3) | (bits[:, 6] << 2) | (bits[:, 7] << 1) | bits[:, 8]
        where = np.asarray(indexes)
        for ft, nbits in enumerate(bits_of):
            spare = size * 8 - 10 - nbits
            if not 0 <= spare < 8:  # not one frame of this type in a payload of this size
                continue
            chosen = (types == ft) & (follow == 0)
            if not chosen.any():
                continue
            nbytes = (nbits + 7) // 8
            body = np.zeros((int(chosen.sum()), nbytes * 8), np.uint8)
            body[:, :nbits] = bits[chosen, 10 : 10 + nbits]
            toc = ((ft << 3) | (quality[chosen] << 2)).astype(np.uint8)
            frames = np.concatenate([toc[:, np.newaxis], np.packbits(body, axis=1)], axis=1)
            for index, frame in zip(where[chosen].tolist(), frames, strict=True):
                out[index] = (ft, frame.tobytes())
    return out
