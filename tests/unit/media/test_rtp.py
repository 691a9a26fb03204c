"""RTP header parsing and RTCP reading, on packets built by hand with struct."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_node.media.rtp import is_rtcp, ntp_to_unix, parse_rtcp, parse_rtp


def rtp(
    seq: int = 7,
    ts: int = 1234,
    ssrc: int = 0xDEADBEEF,
    pt: int = 0,
    payload: bytes = b"\x11" * 160,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    first = 0x80 | len(csrcs) | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


def test_plain_packet() -> None:
    data = rtp(seq=65535, ts=0xFFFFFFFF, pt=8, marker=True)
    h = parse_rtp(data)
    assert h is not None
    assert (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc) == (
        True,
        8,
        65535,
        0xFFFFFFFF,
        0xDEADBEEF,
    )
    assert (h.payload_offset, h.payload_length) == (12, 160)
    assert h.payload(data) == b"\x11" * 160


def test_csrcs_extension_and_padding_are_skipped() -> None:
    payload = bytes(range(20))
    data = rtp(payload=payload, csrcs=(1, 2, 3), extension=b"\x10\xaa\x00\x00" * 2, padding=4)
    h = parse_rtp(data)
    assert h is not None
    assert h.csrc_count == 3 and h.padding == 4 and h.extension_profile == 0xBEDE
    assert h.payload_offset == 12 + 12 + 4 + 8
    assert h.payload(data) == payload


def test_empty_payload_is_valid() -> None:
    h = parse_rtp(rtp(payload=b""))
    assert h is not None and h.payload_length == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",
        b"\x80" + b"\x00" * 10,  # 11 bytes
        b"\x40" + b"\x00" * 20,  # version 1
        b"\xc0" + b"\x00" * 20,  # version 3
        bytes([0x83]) + rtp()[1:12] + b"\x00" * 8,  # 3 CSRCs announced, 2 there
        bytes([0x90]) + rtp()[1:12] + b"\xbe\xde",  # extension header cut
        bytes([0x90]) + rtp()[1:12] + b"\xbe\xde\x00\x05" + b"\x00" * 8,  # extension overruns
        bytes([0xA0]) + rtp()[1:12] + b"\x01\x02\x00",  # padding 0
        bytes([0xA0]) + rtp()[1:12] + b"\x01\x02\x09",  # padding longer than the payload
    ],
)
def test_garbage_is_none(data: bytes) -> None:
    assert parse_rtp(data) is None


@given(st.binary(max_size=80))
def test_never_raises(data: bytes) -> None:
    h = parse_rtp(data)
    if h is not None:
        assert 12 <= h.payload_offset <= len(data)
        assert h.payload_offset + h.payload_length + h.padding == len(data)


def test_rtcp_mux_detection() -> None:
    assert is_rtcp(bytes([0x80, 200]) + b"\x00" * 6)  # SR
    assert is_rtcp(bytes([0x81, 201]) + b"\x00" * 6)  # RR
    assert is_rtcp(bytes([0x81, 204]))  # APP
    assert not is_rtcp(rtp(pt=0))
    assert not is_rtcp(rtp(pt=0, marker=True))  # 0x80: marker + PCMU
    assert not is_rtcp(rtp(pt=111, marker=True))  # 0xEF
    assert not is_rtcp(rtp(pt=101))
    assert not is_rtcp(b"\x80")


def _ntp(unix: float) -> int:
    seconds = int(unix) + 2_208_988_800
    fraction = round((unix - int(unix)) * 2**32)
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


def sender_report(ssrc: int, unix: float, rtp_ts: int, blocks: int = 0) -> bytes:
    body = struct.pack("!IQIII", ssrc, _ntp(unix), rtp_ts, 100, 16000)
    for i in range(blocks):
        body += struct.pack("!IB3sIIII", 0x1000 + i, 25, (3).to_bytes(3, "big"), 70000, 40, 7, 9)
    return struct.pack("!BBH", 0x80 | blocks, 200, len(body) // 4) + body


def test_sender_report_timing() -> None:
    report = parse_rtcp(sender_report(0xCAFE, 1_700_000_000.25, 0xFFFFFF00))
    assert report is not None
    (sr,) = report.sender_reports
    assert sr.ssrc == 0xCAFE and sr.rtp_timestamp == 0xFFFFFF00
    assert sr.ntp_time == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert (sr.packet_count, sr.octet_count) == (100, 16000)


def test_compound_sr_rr_sdes_bye() -> None:
    rr_body = struct.pack("!I", 0xAAAA) + struct.pack(
        "!IB3sIIII", 0xCAFE, 10, (5).to_bytes(3, "big"), 1000, 80, 0, 0
    )
    rr = struct.pack("!BBH", 0x81, 201, len(rr_body) // 4) + rr_body
    cname = b"\x01\x04abcd\x00\x00"
    sdes_body = struct.pack("!I", 0xCAFE) + cname
    sdes = struct.pack("!BBH", 0x81, 202, len(sdes_body) // 4) + sdes_body
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0xCAFE)
    report = parse_rtcp(sender_report(0xCAFE, 1_600_000_000.0, 5, blocks=1) + sdes + rr + bye)
    assert report is not None
    assert [sr.ssrc for sr in report.sender_reports] == [0xCAFE]
    assert [(r.reporter, r.source, r.packets_lost) for r in report.reception_reports] == [
        (0xCAFE, 0x1000, 3),
        (0xAAAA, 0xCAFE, 5),
    ]
    assert report.reception_reports[1].jitter == 80
    assert report.byes == [0xCAFE]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\xc8\x00",  # shorter than a header
        b"\x40\xc9\x00\x01\x00\x00\x00\x01",  # version 1
        b"\x80\xc8\x00\x06" + b"\x00" * 8,  # length beyond the data
        b"\x81\xc8\x00\x06" + b"\x00" * 24,  # SR with one block announced, none there
    ],
)
def test_malformed_rtcp_is_none(data: bytes) -> None:
    assert parse_rtcp(data) is None


def test_ntp_conversion_and_2036_rollover() -> None:
    assert ntp_to_unix(_ntp(0.5)) == pytest.approx(0.5)
    assert ntp_to_unix(2_208_988_800 << 32) == 0.0
    # 2036-02-07 06:28:16 UTC: NTP seconds wrap to 0 (era 1)
    assert ntp_to_unix(0) == 2**32 - 2_208_988_800
    assert ntp_to_unix(_ntp(2_100_000_000.0)) == pytest.approx(2_100_000_000.0)
