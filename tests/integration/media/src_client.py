"""A minimal recording client written for the tests: SIP over UDP by hand, RTP paced in real time.

Everything here is independent of the node's code: requests are literal text, RTP headers are
packed with ``struct``, and G.711 is encoded from the ITU-T G.711 formulas with numpy.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

RATE = 8000
FRAME = 160  # 20 ms


def tone(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone as float samples in [-1, 1]."""
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * freq * t)


def ulaw_encode(x: np.ndarray) -> bytes:
    """ITU-T G.711 µ-law (the segment/quantisation formulation, bias 0x84)."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def alaw_encode(x: np.ndarray) -> bytes:
    """ITU-T G.711 A-law."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int32) >> 3
    sign = np.where(pcm >= 0, 0x80, 0)
    magnitude = np.minimum(np.where(pcm < 0, -pcm - 1, pcm), 0xFFF)
    exponent = np.where(magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))) - 4)
    exponent = exponent.astype(np.int32)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """µ-law bytes to float samples (inverse formulas)."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = ((mantissa << 3) + 0x84 << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude) / 32768.0


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """The strongest frequency of a signal (Hann-windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="c2Vzc2lvbg=="/>
  <participant participant_id="YWxpY2U=">
    <nameID aor="sip:alice@example.com"><name xml:lang="en">Alice</name></nameID>
  </participant>
  <participant participant_id="Ym9i">
    <nameID aor="sip:bob@example.com"><name xml:lang="en">Bob</name></nameID>
  </participant>
  <stream stream_id="c3RyZWFtMQ==" session_id="c2Vzc2lvbg=="><label>1</label></stream>
  <stream stream_id="c3RyZWFtMg==" session_id="c2Vzc2lvbg=="><label>2</label></stream>
  <participantstreamassoc participant_id="YWxpY2U=">
    <send>c3RyZWFtMQ==</send>
  </participantstreamassoc>
  <participantstreamassoc participant_id="Ym9i">
    <send>c3RyZWFtMg==</send>
  </participantstreamassoc>
</recording>
"""


@dataclass
class RtpLeg:
    """One stream we send: its payload type, encoded audio and RTP state."""

    payload_type: int
    audio: bytes
    ssrc: int
    seq: int = 1000
    timestamp: int = 123456
    sent: int = 0
    offset: int = 0

    def next_packet(self) -> bytes:
        chunk = self.audio[self.offset : self.offset + FRAME]
        if len(chunk) < FRAME:
            self.offset = 0
            chunk = self.audio[:FRAME]
        self.offset += FRAME
        header = struct.pack(
            "!BBHII",
            0x80,
            self.payload_type,
            self.seq & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc,
        )
        self.seq += 1
        self.timestamp += FRAME
        self.sent += 1
        return header + chunk


@dataclass
class SrcCall:
    """One SIPREC call placed on a node over UDP."""

    node_port: int
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@src.test")
    from_tag: str = "src-tag-1"
    cseq: int = 1
    to_tag: str | None = None
    ports: list[int] = field(default_factory=list)
    answer: str = ""

    def __post_init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(5)
        self.local_port = self.sip.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))

    def _request(
        self,
        method: str,
        body: str = "",
        content_type: str | None = None,
        cseq: int | None = None,
        extra: str = "",
    ) -> bytes:
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        to = f"<sip:srs@127.0.0.1:{self.node_port}>" + (
            f";tag={self.to_tag}" if self.to_tag else ""
        )
        lines = [
            f"{method} sip:srs@127.0.0.1:{self.node_port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={branch};rport",
            f"From: <sip:src@127.0.0.1:{self.local_port}>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq if cseq is not None else self.cseq} {method}",
            f"Contact: <sip:src@127.0.0.1:{self.local_port}>;+sip.src",
            "Max-Forwards: 70",
        ]
        if extra:
            lines.append(extra)
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        payload = body.replace("\n", "\r\n").encode()
        lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    def _final(self, data: bytes) -> tuple[int, str]:
        self.sip.sendto(data, ("127.0.0.1", self.node_port))
        while True:
            reply = self.sip.recv(65535).decode()
            status = int(reply.split(" ", 2)[1])
            if status >= 200:
                return status, reply

    def sdp(self, direction: str = "sendonly") -> str:
        port = self.rtp.getsockname()[1]
        return (
            "v=0\no=src 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
            f"m=audio {port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=label:1\na={direction}\n"
            f"m=audio {port} RTP/AVP 8\na=rtpmap:8 PCMA/8000\na=label:2\na={direction}\n"
        )

    def invite(self) -> None:
        body = (
            "--b1\nContent-Type: application/sdp\n\n"
            + self.sdp()
            + "\n--b1\nContent-Type: application/rs-metadata+xml\n"
            "Content-Disposition: recording-session\n\n" + METADATA + "\n--b1--\n"
        )
        status, reply = self._final(
            self._request("INVITE", body, "multipart/mixed;boundary=b1", extra="Require: siprec")
        )
        assert status == 200, reply
        self.to_tag = re.search(r"^To:.*;tag=([^;\r\n]+)", reply, re.M).group(1)  # type: ignore[union-attr]
        self.answer = reply.split("\r\n\r\n", 1)[1]
        self.ports = [int(p) for p in re.findall(r"^m=audio (\d+)", self.answer, re.M)]
        self.sip.sendto(self._request("ACK", cseq=1), ("127.0.0.1", self.node_port))

    def reinvite(self, direction: str) -> str:
        self.cseq += 1
        status, reply = self._final(self._request("INVITE", self.sdp(direction), "application/sdp"))
        assert status == 200, reply
        self.sip.sendto(self._request("ACK", cseq=self.cseq), ("127.0.0.1", self.node_port))
        return reply

    def bye(self) -> int:
        self.cseq += 1
        status, _ = self._final(self._request("BYE"))
        return status

    def stream(self, legs: list[RtpLeg], seconds: float) -> None:
        """Send every leg to its port at 20 ms pace for ``seconds`` (timestamps continue)."""
        start = time.monotonic()
        packets = int(seconds / 0.02)
        for n in range(packets):
            for leg, port in zip(legs, self.ports, strict=True):
                self.rtp.sendto(leg.next_packet(), ("127.0.0.1", port))
            delay = start + (n + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def skip(self, legs: list[RtpLeg], seconds: float) -> None:
        """Let RTP timestamps advance without sending (a pause on the SRC side)."""
        time.sleep(seconds)
        for leg in legs:
            leg.timestamp += int(seconds * RATE)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


def stream_in_background(call: SrcCall, legs: list[RtpLeg], seconds: float) -> threading.Thread:
    thread = threading.Thread(target=call.stream, args=(legs, seconds), daemon=True)
    thread.start()
    return thread
