"""RTP and RTCP packets as the receive path sees them.

``parse_rtp`` reads an RTP header (RFC 3550 §5.1) with :mod:`struct` alone: version 2, padding,
CSRCs and a header extension are accounted for, and the payload is located, not copied. It
returns None for anything that is not a well-formed RTP packet, never raises.

``parse_rtcp`` reads a (compound) RTCP packet with aiortc's RTCP classes and keeps what the
recorder uses: sender reports for timing (NTP wall clock against RTP timestamp), receiver reports
and BYEs. ``is_rtcp`` tells RTCP multiplexed on the RTP port (RFC 5761) from RTP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket

RTP_HEADER = struct.Struct("!BBHII")
RTP_HEADER_SIZE = 12
_EXTENSION = struct.Struct("!HH")

# Seconds between the NTP era 0 epoch (1900-01-01) and the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800


class RtpHeader(NamedTuple):
    """The fields of one RTP packet the recorder uses, and where its payload lies in the datagram.

    ``payload_offset``/``payload_length`` exclude CSRCs, the header extension and padding.
    """

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_length: int
    csrc_count: int = 0
    padding: int = 0
    extension_profile: int | None = None

    def payload(self, data: bytes) -> bytes:
        """The payload bytes of ``data``, the datagram this header was parsed from."""
        return data[self.payload_offset : self.payload_offset + self.payload_length]


def is_rtcp(data: bytes | memoryview) -> bool:
    """True when a datagram on an RTP port is RTCP (RFC 5761 §4: second octet 192-223).

    RTP payload types 64-95 are never used with multiplexing, so the marker bit plus payload
    type of RTP never fall in the range of RTCP packet types (SR 200 … PSFB 206).
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes | memoryview) -> RtpHeader | None:
    """Parse an RTP packet; None when it is not one (short, version, bad CSRC/extension/padding)."""
    size = len(data)
    if size < RTP_HEADER_SIZE:
        return None
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    if first >> 6 != 2:
        return None
    csrc_count = first & 0x0F
    offset = RTP_HEADER_SIZE + 4 * csrc_count
    profile = None
    if first & 0x10:
        if size < offset + 4:
            return None
        profile, words = _EXTENSION.unpack_from(data, offset)
        offset += 4 + 4 * words
    if offset > size:
        return None
    padding = 0
    if first & 0x20:
        padding = data[size - 1]
        if padding == 0 or offset + padding > size:
            return None
    return RtpHeader(
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload_offset=offset,
        payload_length=size - offset - padding,
        csrc_count=csrc_count,
        padding=padding,
        extension_profile=profile,
    )


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point since 1900) as Unix seconds.

    Era 0 ends in 2036; a seconds field below 2^31 is read as era 1 (RFC 4330 §3), so the
    conversion stays right across the 2036 rollover.
    """
    seconds = ntp >> 32
    if seconds < 0x80000000:
        seconds += 1 << 32
    return seconds - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 4294967296.0


@dataclass(frozen=True)
class SenderReport:
    """An RTCP SR's sender info: the sender's wall clock at one RTP timestamp."""

    ssrc: int
    ntp_time: float  # Unix seconds
    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass(frozen=True)
class ReceptionReport:
    """One report block of an SR or RR: what ``reporter`` says about receiving ``source``."""

    reporter: int
    source: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int


@dataclass(frozen=True)
class RtcpReport:
    """What a compound RTCP packet told us."""

    sender_reports: list[SenderReport] = field(default_factory=list)
    reception_reports: list[ReceptionReport] = field(default_factory=list)
    byes: list[int] = field(default_factory=list)


def parse_rtcp(data: bytes) -> RtcpReport | None:
    """Parse a compound RTCP packet with aiortc; None when it is malformed.

    SDES, feedback and unknown packet types (XR, APP) are skipped; only timing and reception
    statistics are kept.
    """
    try:
        packets = RtcpPacket.parse(bytes(data))
    except (ValueError, struct.error, IndexError):
        return None
    report = RtcpReport()
    for packet in packets:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            report.sender_reports.append(
                SenderReport(
                    ssrc=packet.ssrc,
                    ntp_time=ntp_to_unix(info.ntp_timestamp),
                    rtp_timestamp=info.rtp_timestamp,
                    packet_count=info.packet_count,
                    octet_count=info.octet_count,
                )
            )
            report.reception_reports.extend(_reception(packet.ssrc, packet.reports))
        elif isinstance(packet, RtcpRrPacket):
            report.reception_reports.extend(_reception(packet.ssrc, packet.reports))
        elif isinstance(packet, RtcpByePacket):
            report.byes.extend(packet.sources)
    return report


def _reception(reporter: int, blocks: list[RtcpReceiverInfo]) -> list[ReceptionReport]:
    return [
        ReceptionReport(
            reporter=reporter,
            source=b.ssrc,
            fraction_lost=b.fraction_lost,
            packets_lost=b.packets_lost,
            highest_sequence=b.highest_sequence,
            jitter=b.jitter,
            last_sr=b.lsr,
            delay_since_last_sr=b.dlsr,
        )
        for b in blocks
    ]
