"""Fuzz harness of the RTP, RTCP and SRTP parsing the recorder does on every datagram.

Seeds (``tests/data`` holds no packet captures, so they are built here): RTP with CSRCs, a header
extension and padding, telephone-event, a compound RTCP (SR with a report block, RR, SDES, BYE),
and SRTP/SRTCP protected with a known key. Whatever the bytes: ``parse_rtp`` returns None or a
header whose offsets lie inside the datagram, ``parse_rtcp`` returns None or a report, ``is_rtcp``
answers, and the SRTP receiver returns None (counted) or the inner packet, never raising.
"""

from __future__ import annotations

import base64
import struct

import pylibsrtp
from hypothesis import given

from siprec_node.media.rtp import is_rtcp, parse_rtcp, parse_rtp
from siprec_node.media.srtp import SdesKey, SrtpReceiver
from tests.fuzzing import fuzz_settings, mutated, with_examples

KEY = bytes(range(30))


def _rtp(pt: int, seq: int, *, csrc: int = 0, extension: bool = False, padding: int = 0) -> bytes:
    first = 0x80 | csrc | (0x10 if extension else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", first, pt, seq, seq * 160, 0x1234ABCD)
    data += b"".join(struct.pack("!I", 1000 + i) for i in range(csrc))
    if extension:
        data += struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00"
    data += bytes(160)
    if padding:
        data += bytes(padding - 1) + bytes([padding])
    return data


def _rtcp() -> bytes:
    ntp = (3_900_000_000 << 32) | 0x80000000
    sr = struct.pack("!BBHI", 0x81, 200, 12, 0x1234ABCD)
    sr += struct.pack("!QIII", ntp, 16000, 100, 16000)
    sr += struct.pack("!IIIIII", 0x5555, (3 << 24) | 7, 100, 20, 0, 0)
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x5555)
    cname = b"\x01\x07src@ex\x00\x00\x00"
    sdes = struct.pack("!BBHI", 0x81, 202, 1 + len(cname) // 4, 0x1234ABCD) + cname
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0x1234ABCD)
    return sr + rr + sdes + bye


def _protected(packets: list[bytes], rtcp: bytes) -> list[bytes]:
    policy = pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = pylibsrtp.Session(policy)
    return [session.protect(p) for p in packets] + [session.protect_rtcp(rtcp)]


PLAIN = [
    _rtp(0, 1),
    _rtp(8, 2, csrc=3),
    _rtp(111, 3, extension=True),
    _rtp(0, 4, padding=4),
    _rtp(101, 5, csrc=15, extension=True, padding=1),
]
SEEDS = [*PLAIN, _rtcp(), *_protected(PLAIN[:3], _rtcp())]


def _receiver() -> SrtpReceiver:
    inline = base64.b64encode(KEY).decode()
    return SrtpReceiver(SdesKey.parse("AES_CM_128_HMAC_SHA1_80", f"inline:{inline}"))


@fuzz_settings(600)
@given(mutated(SEEDS))
@with_examples(SEEDS)
def test_rtp_fuzz(data: bytes) -> None:
    header = parse_rtp(data)
    if header is not None:
        assert 12 <= header.payload_offset <= len(data)
        assert header.payload_offset + header.payload_length + header.padding == len(data)
        assert len(header.payload(data)) == header.payload_length
    is_rtcp(data)
    parse_rtcp(data)
    receiver = _receiver()
    inner = receiver.unprotect_rtp(data)
    assert inner is None or parse_rtp(inner) is not None or receiver.failures == 0
    report = receiver.unprotect_rtcp(data)
    if report is not None:
        parse_rtcp(report)
