"""Payload durations per codec: where a packet's audio ends on the timeline (a switch of codec
starts the next stretch there)."""

from __future__ import annotations

import pytest

from siprec_node.media.durations import frame_duration


def _bits(text: str) -> bytes:
    text = text.replace(" ", "")
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big")


@pytest.mark.parametrize(
    ("codec", "fmtp", "payload", "ticks"),
    [
        ("G729", None, bytes(20), 160),  # two 10 ms frames
        ("G.729", None, bytes(22), 240),  # and an Annex B SID frame
        ("G729", None, bytes(2), 80),  # a SID frame alone
        ("G723", None, bytes([0]) + bytes(23), 240),  # 6.3 kbit/s frame
        ("G723", None, bytes([1]) + bytes(19) + bytes([2]) + bytes(3), 480),  # 5.3 + SID
        ("GSM", None, bytes(66), 320),
        ("iLBC", None, bytes(38), 160),
        ("iLBC", None, bytes(50), 240),
        ("iLBC", None, bytes(76), 320),
        ("G726-32", None, bytes(80), 160),
        ("G726-24", None, bytes(60), 160),
        ("G726-40", None, bytes(100), 160),
        ("AAL2-G726-16", None, bytes(40), 160),
        ("AMR", "octet-align=1", bytes([0xF0, 0xBC, 0x3C]) + bytes(62), 320),
        ("AMR", "mode-set=7", _bits("1111 0 0111 1") + bytes(31), 160),
        ("AMR", None, _bits("1111 1 0111 1 0 0111 1") + bytes(61), 320),
        ("AMR-WB", "octet-align=1", bytes([0xF0, 0x44]) + bytes(60), 320),
        ("opus", None, bytes([0x08, 1, 2]), 960),
        ("X-UNKNOWN", None, bytes(10), 1),
    ],
)
def test_frame_durations(codec: str, fmtp: str | None, payload: bytes, ticks: int) -> None:
    duration = frame_duration(codec, fmtp)
    assert duration is not None and duration(payload) == ticks


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722", "g.722"])
def test_one_byte_a_tick(codec: str) -> None:
    assert frame_duration(codec) is None
