"""A minimal recording client written for the tests: SIP over UDP by hand, RTP paced in real time.

Everything here is independent of the node's code: requests are literal text, RTP headers are
packed with ``struct``, and G.711 is encoded from the ITU-T G.711 formulas with numpy. G.722 and
Opus payloads come from FFmpeg's encoders through PyAV (imported only when used).

Network impairments (loss, duplication, adjacent swaps, a fixed delay) are applied per leg on
the way out by :class:`Impairment` objects given to :meth:`SrcCall.stream`.

RTCP: with ``rtcp_every``, :meth:`SrcCall.stream` sends each leg's sender reports (RFC 3550 §6.4.1,
packed with ``struct``) to the port after the leg's RTP port. Their NTP time is the sender's
clock of the reported RTP timestamp: the wall-clock time the packet with that timestamp was
due (the same for every leg at the same packet count, whatever an impairment does later).
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field

import numpy as np

RATE = 8000
FRAME = 160  # 20 ms


def tone(
    freq: float, seconds: float, amplitude: float = 0.5, *, rate: int = RATE, phase: float = 0.0
) -> np.ndarray:
    """A sine tone as float samples in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


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


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes to float samples (inverse formulas)."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(a & 0x80, magnitude, -magnitude) / 32768.0


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")


def g722_encode(x: np.ndarray) -> list[bytes]:
    """16 kHz float samples to G.722 (64 kbit/s, FFmpeg's encoder): 160-byte payloads of 20 ms."""
    import av

    ctx = av.CodecContext.create("g722", "w")
    ctx.sample_rate = 16000
    ctx.layout = "mono"
    ctx.format = "s16"
    pcm = _pcm16(x)
    out = bytearray()
    for start in range(0, pcm.size, 320):
        frame = av.AudioFrame.from_ndarray(
            pcm[start : start + 320].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        frame.pts = start
        for packet in ctx.encode(frame):
            out += bytes(packet)
    for packet in ctx.encode(None):
        out += bytes(packet)
    return [bytes(out[i : i + 160]) for i in range(0, len(out) - 159, 160)]


def opus_encode(x: np.ndarray, *, channels: int = 2, bit_rate: int = 64000) -> list[bytes]:
    """48 kHz float samples to Opus (libopus), one 20 ms packet per 960 samples; with
    ``channels=2`` the same signal is on both channels of the encoded stream."""
    import av

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    layout = "stereo" if channels == 2 else "mono"
    ctx.layout = layout
    ctx.format = "s16"
    ctx.bit_rate = bit_rate
    pcm = _pcm16(x)
    interleaved = np.repeat(pcm, channels)
    packets: list[bytes] = []
    count = pcm.size // 960
    for n in range(count):
        chunk = interleaved[n * 960 * channels : (n + 1) * 960 * channels]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = 48000
        frame.pts = n * 960
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets[:count]


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """The strongest frequency of a signal (Hann-windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def level_db(x: np.ndarray) -> float:
    """RMS level in dBFS (-200 for digital silence)."""
    value = rms(x)
    return 20 * float(np.log10(value)) if value > 0 else -200.0


def read_wav(path: str | os.PathLike[str]) -> tuple[int, np.ndarray]:
    """A PCM16 WAV file (Python's ``wave``) as (rate, float samples shaped (frames, channels))."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2, f"{path}: {w.getsampwidth() * 8}-bit, not PCM16"
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), frames.reshape(-1, w.getnchannels()) / 32768.0


def silent_runs(x: np.ndarray, *, threshold: float = 1e-3, min_length: int = 3) -> np.ndarray:
    """(start, end) sample index pairs of the runs of at least ``min_length`` samples whose
    magnitude is at most ``threshold`` (G.711 silence decodes to 0 or ±8/32768)."""
    quiet = np.abs(x) <= threshold
    edges = np.diff(np.concatenate(([0], quiet.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = (ends - starts) >= min_length
    return np.stack([starts[keep], ends[keep]], axis=1)


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


@dataclass(frozen=True)
class Codec:
    """A payload format offered on one m-line."""

    payload_type: int
    rtpmap: str
    fmtp: str | None = None


PCMU = Codec(0, "PCMU/8000")
PCMA = Codec(8, "PCMA/8000")
G722 = Codec(9, "G722/8000")
OPUS = Codec(111, "opus/48000/2", "minptime=10;useinbandfec=1")


@dataclass
class RtpLeg:
    """One stream we send: its payload type, encoded audio and RTP state.

    ``audio`` is G.711 bytes, sent ``FRAME`` bytes a packet and looped; or, with ``frames``,
    pre-encoded payloads (G.722, Opus) sent one a packet and looped, the RTP timestamp advancing
    ``step`` per packet (``clock`` ticks a second). ``payload_types``, beside ``frames``, gives
    each frame its own payload type: a codec switch on the same SSRC, sequence numbers and
    timestamps running on, without any signalling. ``log`` keeps (ssrc, seq, timestamp, payload)
    of every packet made, before any impairment, and ``made_at`` the wall-clock time (time.time())
    each was made (it is sent at once unless an impairment holds it).
    """

    payload_type: int
    audio: bytes
    ssrc: int
    seq: int = 1000
    timestamp: int = 123456
    sent: int = 0
    offset: int = 0
    frames: list[bytes] | None = None
    step: int = FRAME
    clock: int = RATE
    log: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    made_at: list[float] = field(default_factory=list)
    payload_types: list[int] | None = None

    def next_packet(self) -> bytes:
        payload_type = self.payload_type
        if self.frames is not None:
            if self.payload_types is not None:
                payload_type = self.payload_types[self.offset % len(self.frames)]
            chunk = self.frames[self.offset % len(self.frames)]
            self.offset += 1
        else:
            chunk = self.audio[self.offset : self.offset + FRAME]
            if len(chunk) < FRAME:
                self.offset = 0
                chunk = self.audio[:FRAME]
            self.offset += FRAME
        seq, timestamp = self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF
        header = struct.pack("!BBHII", 0x80, payload_type, seq, timestamp, self.ssrc)
        self.log.append((self.ssrc, seq, timestamp, chunk))
        self.made_at.append(time.time())
        self.seq += 1
        self.timestamp += self.step
        self.sent += 1
        return header + chunk


@dataclass
class Stretch:
    """``packets`` packets of one payload type: their payloads (pre-encoded, one a packet) and
    the RTP clock (ticks a second) their timestamps run at."""

    payload_type: int
    payloads: list[bytes]
    clock: int = RATE

    @property
    def packets(self) -> int:
        return len(self.payloads)


@dataclass
class SwitchingLeg(RtpLeg):
    """A leg that changes codec without signalling: its stretches one after the other (then the
    last one's payloads again), one SSRC, sequence numbers running on; the RTP timestamp runs on
    within a clock and starts from a new base when the clock changes (as RFC 7160 allows)."""

    stretches: list[Stretch] = field(default_factory=list)

    def next_packet(self) -> bytes:
        index, count = 0, self.sent
        while index + 1 < len(self.stretches) and count >= self.stretches[index].packets:
            count -= self.stretches[index].packets
            index += 1
        stretch = self.stretches[index]
        if count == 0 and index and stretch.clock != self.stretches[index - 1].clock:
            self.timestamp = 0x5A5A0000
        self.payload_type, self.clock = stretch.payload_type, stretch.clock
        self.step = stretch.clock // 50
        self.frames = stretch.payloads
        self.offset = count
        return super().next_packet()


def sent_samples(leg: RtpLeg, law: str, missing: set[int] | None = None) -> np.ndarray:
    """What a G.711 leg (``law`` "PCMU" or "PCMA") sent, decoded, in sending order; the packets
    whose sequence number is in ``missing`` as the law's silence (0xFF µ-law, 0xD5 A-law)."""
    decode, silence = (ulaw_decode, b"\xff") if law == "PCMU" else (alaw_decode, b"\xd5")
    missing = missing or set()
    quiet = float(decode(silence)[0])
    return np.concatenate(
        [
            np.full(len(payload), quiet) if seq in missing else decode(payload)
            for _, seq, _, payload in leg.log
        ]
    )


NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def sender_report(
    ssrc: int, ntp_time: float, rtp_timestamp: int, packets: int, octets: int
) -> bytes:
    """An RTCP SR without report blocks (RFC 3550 §6.4.1); ``ntp_time`` in Unix seconds."""
    seconds = int(ntp_time)
    fraction = int((ntp_time - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(
        "!BBHIIIIII",
        0x80,  # version 2, no padding, no report block
        200,  # SR
        6,  # length in 32-bit words minus one
        ssrc,
        (seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF,
        fraction,
        rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )


def delay_ms(reference: np.ndarray, other: np.ndarray, rate: int, within: float = 0.2) -> float:
    """How late ``other`` is against ``reference`` (ms, within ±``within`` s): the peak of
    their cross-correlation, interpolated between samples with a parabola."""
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)  # xc[k] = Σ b[t+k]a[t]
    m = round(within * rate)
    window = np.concatenate((xc[-m:], xc[: m + 1]))  # lags -m .. m
    k = int(np.argmax(window))
    shift = 0.0
    if 0 < k < window.size - 1:
        y0, y1, y2 = window[k - 1], window[k], window[k + 1]
        shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return float((k - m + shift) / rate * 1000)


def rtp_sequence(packet: bytes) -> int:
    """The sequence number of an RTP packet."""
    return int(struct.unpack_from("!H", packet, 2)[0])


class Impairment:
    """What the network does to one leg: called with each packet the sender makes (one per
    20 ms), returns the packets that go on the wire now; :meth:`drain` at the end of a burst.
    The base class passes everything through."""

    def __call__(self, packet: bytes) -> list[bytes]:
        return [packet]

    def drain(self) -> list[bytes]:
        return []


class Loss(Impairment):
    """Drops each packet with probability ``rate`` (seeded); ``dropped`` has their seqs."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.dropped: list[int] = []
        self.passed = 0

    def __call__(self, packet: bytes) -> list[bytes]:
        if self.rng.random() < self.rate:
            self.dropped.append(rtp_sequence(packet))
            return []
        self.passed += 1
        return [packet]


class Duplicate(Impairment):
    """Sends a packet twice with probability ``rate`` (seeded); ``doubled`` counts them."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.doubled = 0

    def __call__(self, packet: bytes) -> list[bytes]:
        if self.rng.random() < self.rate:
            self.doubled += 1
            return [packet, packet]
        return [packet]


class Swap(Impairment):
    """With probability ``rate`` (seeded) holds a packet back and sends it right after the
    next one: adjacent packets swapped, the later one 20 ms late. ``swapped`` counts swaps."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.held: bytes | None = None
        self.swapped = 0

    def __call__(self, packet: bytes) -> list[bytes]:
        if self.held is not None:
            held, self.held = self.held, None
            self.swapped += 1
            return [packet, held]
        if self.rng.random() < self.rate:
            self.held = packet
            return []
        return [packet]

    def drain(self) -> list[bytes]:
        held, self.held = self.held, None
        return [held] if held is not None else []


class Delay(Impairment):
    """Holds every packet back by ``packets`` packets (a leg whose path is ``packets`` times 20 ms
    longer than the other's)."""

    def __init__(self, packets: int) -> None:
        self.packets = packets
        self.held: list[bytes] = []

    def __call__(self, packet: bytes) -> list[bytes]:
        self.held.append(packet)
        if len(self.held) > self.packets:
            return [self.held.pop(0)]
        return []

    def drain(self) -> list[bytes]:
        held, self.held = self.held, []
        return held


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
    codecs: tuple[Codec | tuple[Codec, ...], ...] = (PCMU, PCMA)
    """What each m-line offers (a codec, or several in the offer's order; the m-lines are
    labelled 1, 2, ...)."""
    first_rtp: float | None = None
    """Wall-clock time (time.time()) the first RTP packet was sent."""

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
        sdp = "v=0\no=src 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        for label, offered in enumerate(self.codecs, 1):
            codecs = offered if isinstance(offered, tuple) else (offered,)
            pts = " ".join(str(c.payload_type) for c in codecs)
            sdp += f"m=audio {port} RTP/AVP {pts}\n"
            for codec in codecs:
                pt = codec.payload_type
                sdp += f"a=rtpmap:{pt} {codec.rtpmap}\n"
                if codec.fmtp:
                    sdp += f"a=fmtp:{pt} {codec.fmtp}\n"
            sdp += f"a=label:{label}\na={direction}\n"
        return sdp

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

    def stream(
        self,
        legs: list[RtpLeg],
        seconds: float,
        impairments: list[Impairment | None] | None = None,
        *,
        rtcp_every: int | None = None,
    ) -> None:
        """Send every leg to its port at 20 ms pace for ``seconds`` (timestamps continue),
        through the leg's impairment if one is given; with ``rtcp_every``, an SR of each leg
        every that many packets (from the first), to the port after its RTP port, at once."""
        start = time.monotonic()
        wall = time.time()  # the senders' clock at packet 0 (packet n is due n * 20 ms later)
        packets = round(seconds / 0.02)
        impaired = impairments or [None] * len(legs)
        for n in range(packets):
            if self.first_rtp is None:
                self.first_rtp = time.time()
            for leg, port, impairment in zip(legs, self.ports, impaired, strict=True):
                packet = leg.next_packet()
                for out in [packet] if impairment is None else impairment(packet):
                    self.rtp.sendto(out, ("127.0.0.1", port))
                if rtcp_every and n % rtcp_every == 0:
                    _, _, timestamp, _ = leg.log[-1]
                    octets = sum(len(p) for _, _, _, p in leg.log)
                    report = sender_report(
                        leg.ssrc, wall + 0.02 * n, timestamp, len(leg.log), octets
                    )
                    self.rtp.sendto(report, ("127.0.0.1", port + 1))
            delay = start + (n + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for port, impairment in zip(self.ports, impaired, strict=True):
            for out in impairment.drain() if impairment is not None else ():
                self.rtp.sendto(out, ("127.0.0.1", port))

    def skip(self, legs: list[RtpLeg], seconds: float) -> None:
        """Let RTP timestamps advance without sending (a pause on the SRC side)."""
        time.sleep(seconds)
        for leg in legs:
            leg.timestamp += int(seconds * leg.clock)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


class RtpSender(threading.Thread):
    """Sends ``packets`` packets of every leg to its port, one every ``ptime`` seconds, from a
    thread: the RTP of a call whose signalling another program (SIPp) drives. ``count`` is how
    many packets each leg has sent so far; ``first``/``last`` the wall-clock times of the first
    and last."""

    def __init__(
        self, legs: list[RtpLeg], ports: list[int], packets: int, *, ptime: float = 0.02
    ) -> None:
        super().__init__(daemon=True)
        assert len(legs) == len(ports) and all(ports), (legs, ports)
        self.legs, self.ports, self.packets, self.ptime = legs, ports, packets, ptime
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    def run(self) -> None:
        start = time.monotonic()
        try:
            for n in range(self.packets):
                if n == 0:
                    self.first = time.time()
                for leg, port in zip(self.legs, self.ports, strict=True):
                    self.sock.sendto(leg.next_packet(), ("127.0.0.1", port))
                self.count = n + 1
                if self.count == self.packets:
                    self.last = time.time()
                    break
                delay = start + (n + 1) * self.ptime - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            self.sock.close()


def stream_in_background(call: SrcCall, legs: list[RtpLeg], seconds: float) -> threading.Thread:
    thread = threading.Thread(target=call.stream, args=(legs, seconds), daemon=True)
    thread.start()
    return thread
