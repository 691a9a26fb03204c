"""``siprec-node call``: place one SIPREC test call against a node, as an SRC would.

Two legs, each a tone of its own frequency (the caller on the first m-line, the callee on the
second), encoded by FFmpeg's encoders through PyAV, sent as paced RTP for the call's length; then
BYE. The INVITE is multipart (SDP + RFC 7865 metadata, or BroadWorks' dialect) or a plain SDP
offer as Cisco CUBE sends. While the call is up, the node's admin API (``--http``) says where
it records; after the BYE the command waits for the recording's sidecar when it can see the
node's files and prints its verdict.

The SIP side is written out literally here (requests are text, responses are read with the
node's own parser), so that the command can be pointed at any recorder, not only this one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp

from siprec_node.sip.message import SipParseError, SipResponse, parse_message
from siprec_node.siprec.sdp import parse_sdp

__all__ = [
    "CODECS",
    "DIALECTS",
    "CallOptions",
    "CallResult",
    "TestCallError",
    "parse_target",
    "place_call",
]

Dialect = Literal["rfc7865", "broadworks", "none"]
DIALECTS: tuple[Dialect, ...] = ("rfc7865", "broadworks", "none")


@dataclass(frozen=True)
class _Codec:
    payload_type: int
    rtpmap: str
    encoder: str
    rate: int  # audio sample rate fed to the encoder
    clock: int  # RTP clock
    frame_bytes: int | None = None  # constant-rate codecs: bytes per 20 ms


CODECS: dict[str, _Codec] = {
    "PCMU": _Codec(0, "PCMU/8000", "pcm_mulaw", 8000, 8000, 160),
    "PCMA": _Codec(8, "PCMA/8000", "pcm_alaw", 8000, 8000, 160),
    "G722": _Codec(9, "G722/8000", "g722", 16000, 8000, 160),
    "OPUS": _Codec(111, "opus/48000/2", "libopus", 48000, 48000),
}
FRAME_S = 0.02


class TestCallError(Exception):
    """The call could not be placed or did not end as it should (the message says where)."""

    __test__ = False  # not a pytest test class


CallTransport = Literal["udp", "tcp"]
CALL_TRANSPORTS: tuple[CallTransport, ...] = ("udp", "tcp")


@dataclass(frozen=True)
class CallOptions:
    """What to call and how."""

    host: str
    port: int = 5060
    transport: CallTransport = "udp"
    seconds: float = 5.0
    codec: str = "PCMU"
    dialect: Dialect = "rfc7865"
    tones: tuple[float, float] = (440.0, 1000.0)
    http: str | None = "http://127.0.0.1:8080"
    token: str | None = None
    wait_recording: float = 10.0


@dataclass
class CallResult:
    """What happened, for the command to print."""

    call_id: str
    answered_ms: float
    ports: list[int]
    packets_sent: list[int]
    session_id: str | None = None
    sidecar: str | None = None
    recording: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def parse_target(text: str) -> tuple[str, int, CallTransport | None]:
    """``sip:HOST[:PORT][;transport=tcp]`` (or ``HOST[:PORT]``) → host, port, transport."""
    rest = text[4:] if text.lower().startswith("sip:") else text
    rest, _, params = rest.partition(";")
    transport: CallTransport | None = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport" and value:
            value = value.strip().lower()
            if value not in CALL_TRANSPORTS:
                raise ValueError(f"transport={value} is not one a test call uses (udp, tcp)")
            transport = value
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.lstrip(":")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    return host, int(port_text) if port_text else 5060, transport


# -- the INVITE ---------------------------------------------------------------------------------


def _sdp(local: str, ports: tuple[int, int], codec: _Codec) -> str:
    family = "IP6" if ":" in local else "IP4"
    lines = [
        "v=0",
        f"o=src-test {secrets.randbelow(10**9)} 1 IN {family} {local}",
        "s=siprec-node test call",
        f"c=IN {family} {local}",
        "t=0 0",
    ]
    for label, port in enumerate(ports, start=1):
        lines += [
            f"m=audio {port} RTP/AVP {codec.payload_type} 101",
            f"a=rtpmap:{codec.payload_type} {codec.rtpmap}",
            "a=rtpmap:101 telephone-event/8000",
            f"a=label:{label}",
            "a=sendonly",
        ]
    return "\r\n".join(lines) + "\r\n"


def _metadata(dialect: Dialect, call_id: str) -> tuple[str, str] | None:
    """Content type and body of the metadata part, or None for a plain SDP call."""
    session = secrets.token_hex(8)
    if dialect == "rfc7865":
        body = f"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="{session}"><sipSessionID>{call_id}</sipSessionID></session>
  <participant participant_id="p-caller"><nameID aor="sip:caller@test.invalid">
    <name>Test Caller</name></nameID></participant>
  <participant participant_id="p-callee"><nameID aor="sip:callee@test.invalid">
    <name>Test Callee</name></nameID></participant>
  <stream stream_id="s-1" session_id="{session}"><label>1</label></stream>
  <stream stream_id="s-2" session_id="{session}"><label>2</label></stream>
  <participantstreamassoc participant_id="p-caller"><send>s-1</send><recv>s-2</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="p-callee"><send>s-2</send><recv>s-1</recv>
  </participantstreamassoc>
</recording>
"""
        return "application/rs-metadata+xml", body
    if dialect == "broadworks":
        body = f"""<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
  <dataMode>complete</dataMode>
  <session id="{session}"><sipSessionID>{call_id}</sipSessionID></session>
  <participant id="p-caller"><aor>sip:caller@test.invalid</aor><name>Test Caller</name>
    <send><id>s-1</id></send></participant>
  <participant id="p-callee"><aor>sip:callee@test.invalid</aor><name>Test Callee</name>
    <send><id>s-2</id></send></participant>
  <stream id="s-1" session="{session}"><label>1</label><mode>separate</mode></stream>
  <stream id="s-2" session="{session}"><label>2</label><mode>separate</mode></stream>
</recording_metadata>
"""
        return "application/rs-metadata+xml", body
    return None


@dataclass
class _Dialog:
    call_id: str
    local: str
    local_port: int
    transport: str
    target: str
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    to_tag: str | None = None
    cseq: int = 1
    remote_target: str | None = None

    def via(self, branch: str) -> str:
        host = f"[{self.local}]" if ":" in self.local else self.local
        return f"SIP/2.0/{self.transport.upper()} {host}:{self.local_port};branch={branch};rport"

    def contact(self, src: bool) -> str:
        host = f"[{self.local}]" if ":" in self.local else self.local
        suffix = ";+sip.src" if src else ""
        return f"<sip:src@{host}:{self.local_port};transport={self.transport}>{suffix}"

    def request(
        self, method: str, *, cseq: int, headers: Sequence[str] = (), body: bytes = b""
    ) -> tuple[bytes, str]:
        branch = "z9hG4bK" + secrets.token_hex(8)
        uri = self.remote_target if method != "INVITE" and self.remote_target else self.target
        to = f"<{self.target}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: {self.via(branch)}",
            "Max-Forwards: 70",
            f"From: <sip:src@test.invalid>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            *headers,
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body, branch


def _invite_body(sdp: str, metadata: tuple[str, str] | None) -> tuple[str, bytes]:
    if metadata is None:
        return "application/sdp", sdp.encode()
    boundary = "siprec-test-" + secrets.token_hex(6)
    kind, xml = metadata
    parts = [
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}",
        f"--{boundary}\r\nContent-Type: {kind}\r\nContent-Disposition: recording-session\r\n"
        f"\r\n{xml}",
        f"--{boundary}--\r\n",
    ]
    return f"multipart/mixed;boundary={boundary}", "\r\n".join(parts).encode()


# -- media --------------------------------------------------------------------------------------


def encode_tone(codec: _Codec, freq: float, seconds: float) -> list[bytes]:
    """A tone at -12 dBFS as 20 ms payloads of ``codec``, from FFmpeg's encoder."""
    import av  # here, not at the top: the CLI imports this module for every command
    import numpy as np

    ctx = cast("av.AudioCodecContext", av.CodecContext.create(codec.encoder, "w"))
    ctx.sample_rate = codec.rate
    ctx.layout = "stereo" if codec.encoder == "libopus" else "mono"
    ctx.format = "s16"
    if codec.encoder == "libopus":
        ctx.bit_rate = 64000
    frame_samples = int(codec.rate * FRAME_S)
    count = int(seconds / FRAME_S)
    t = np.arange(frame_samples * count) / codec.rate
    pcm = np.round(0.25 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    channels = 2 if codec.encoder == "libopus" else 1
    out = bytearray()
    payloads: list[bytes] = []
    for index in range(count):
        chunk = pcm[index * frame_samples : (index + 1) * frame_samples]
        frame = av.AudioFrame.from_ndarray(
            np.repeat(chunk, channels).reshape(1, -1), format="s16", layout=ctx.layout.name
        )
        frame.sample_rate = codec.rate
        frame.pts = index * frame_samples
        for packet in ctx.encode(frame):
            if codec.frame_bytes is None:
                payloads.append(bytes(packet))
            else:
                out += bytes(packet)
    for packet in ctx.encode(None):
        if codec.frame_bytes is None:
            payloads.append(bytes(packet))
        else:
            out += bytes(packet)
    if codec.frame_bytes is not None:
        size = codec.frame_bytes
        payloads = [bytes(out[i : i + size]) for i in range(0, len(out) - size + 1, size)]
    return payloads[:count]


async def _send_rtp(
    sock: socket.socket,
    destination: tuple[str, int],
    codec: _Codec,
    payloads: list[bytes],
    stop: asyncio.Event,
) -> int:
    """Send ``payloads`` paced at 20 ms (until ``stop``); returns the packets sent."""
    loop = asyncio.get_running_loop()
    ssrc = secrets.randbits(32)
    sequence = secrets.randbits(16)
    timestamp = secrets.randbits(32)
    step = int(codec.clock * FRAME_S)
    start = loop.time()
    sent = 0
    for index, payload in enumerate(payloads):
        if stop.is_set():
            break
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if index == 0 else 0) | codec.payload_type,
            (sequence + index) & 0xFFFF,
            (timestamp + index * step) & 0xFFFFFFFF,
            ssrc,
        )
        sock.sendto(header + payload, destination)
        sent += 1
        delay = start + (index + 1) * FRAME_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


# -- SIP transport ------------------------------------------------------------------------------


class _Channel:
    """One signalling flow to the node over UDP or TCP: send bytes, receive parsed responses."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.requests: list[bytes] = []
        self.send: Callable[[bytes], None] = lambda data: None
        self.close: Callable[[], None] = lambda: None
        self.local: tuple[str, int] = ("", 0)

    def feed(self, data: bytes) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if isinstance(message, SipResponse):
            self.responses.put_nowait(message)
        else:
            self.requests.append(data)
            self._answer_request(data)

    def _answer_request(self, data: bytes) -> None:
        """200 to in-dialog requests from the node (OPTIONS probes, BYE of a stop)."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        keep = ("via", "from", "to", "call-id", "cseq", "v", "f", "t", "i")
        copied = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in keep]
        self.send(("\r\n".join(["SIP/2.0 200 OK", *copied, "Content-Length: 0", "", ""])).encode())


async def _open_channel(options: CallOptions) -> _Channel:
    loop = asyncio.get_running_loop()
    channel = _Channel()
    if options.transport == "udp":

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                channel.feed(data)

        transport, _ = await loop.create_datagram_endpoint(
            Protocol, remote_addr=(options.host, options.port)
        )
        channel.send = transport.sendto
        channel.close = transport.close
        channel.local = transport.get_extra_info("sockname")[:2]
        return channel
    reader, writer = await asyncio.open_connection(options.host, options.port)
    channel.send = writer.write
    channel.close = writer.close
    channel.local = writer.get_extra_info("sockname")[:2]

    async def read() -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = 0
            for line in head.decode("utf-8", "replace").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() in ("content-length", "l"):
                    length = int(value.strip() or 0)
            body = await reader.readexactly(length) if length else b""
            channel.feed(head + body)

    task = loop.create_task(read())

    def close() -> None:
        writer.close()
        task.cancel()

    channel.close = close
    return channel


async def _transaction(
    channel: _Channel, message: bytes, branch: str, reliable: bool, timeout: float = 32.0
) -> SipResponse:
    """Send a request (retransmitted on UDP as timer A/E would) until its final response."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = 0.5
    channel.send(message)
    resend = loop.time() + interval
    while True:
        now = loop.time()
        if now >= deadline:
            raise TestCallError("no final response (timer B/F fired)")
        wait = min(deadline, resend if not reliable else deadline) - now
        try:
            response = await asyncio.wait_for(channel.responses.get(), timeout=max(wait, 0.001))
        except TimeoutError:
            if not reliable and loop.time() >= resend:
                channel.send(message)
                interval = min(interval * 2, 4.0)
                resend = loop.time() + interval
            continue
        via = response.headers.get("via") or ""
        if branch not in via:
            continue
        if response.status >= 200:
            return response


# -- the call -----------------------------------------------------------------------------------


async def place_call(options: CallOptions, say: Callable[[str], None] = print) -> CallResult:
    """Place the test call; ``say`` reports progress lines. Raises :class:`TestCallError`."""
    codec = CODECS.get(options.codec.upper())
    if codec is None:
        raise TestCallError(f"codec {options.codec!r}: not one of {', '.join(CODECS)}")
    if options.dialect not in DIALECTS:
        raise TestCallError(f"dialect {options.dialect!r}: not one of {', '.join(DIALECTS)}")
    channel = await _open_channel(options)
    rtp = [_rtp_socket(options.host) for _ in range(2)]
    try:
        return await _call(options, codec, channel, rtp, say)
    finally:
        channel.close()
        for sock in rtp:
            sock.close()


def _rtp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    sock.setblocking(False)
    return sock


async def _call(
    options: CallOptions,
    codec: _Codec,
    channel: _Channel,
    rtp: list[socket.socket],
    say: Callable[[str], None],
) -> CallResult:
    local_host, local_port = channel.local
    host_part = f"[{options.host}]" if ":" in options.host else options.host
    target = f"sip:srs@{host_part}:{options.port}"
    call_id = f"test-{secrets.token_hex(8)}@siprec-node-call"
    dialog = _Dialog(call_id, local_host, local_port, options.transport, target)
    ports = (rtp[0].getsockname()[1], rtp[1].getsockname()[1])
    content_type, body = _invite_body(
        _sdp(local_host, ports, codec), _metadata(options.dialect, call_id)
    )
    headers = [
        f"Contact: {dialog.contact(src=options.dialect != 'none')}",
        f"Content-Type: {content_type}",
        "Supported: siprec",
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE",
    ]
    if options.dialect != "none":
        headers.insert(1, "Require: siprec")
    reliable = options.transport != "udp"
    # Encoded before the INVITE, so that the legs start as soon as the call is answered.
    payloads = [encode_tone(codec, options.tones[i], options.seconds) for i in range(2)]
    invite, branch = dialog.request("INVITE", cseq=1, headers=headers, body=body)
    say(f"INVITE {target} over {options.transport} (call id {call_id}, codec {options.codec})")
    started = time.monotonic()
    response = await _transaction(channel, invite, branch, reliable)
    answered_ms = (time.monotonic() - started) * 1000
    if response.status != 200:
        raise TestCallError(f"INVITE answered {response.status} {response.reason}")
    dialog.to_tag = _tag(response.headers.get("to") or "")
    contact = response.headers.get("contact") or ""
    if "<" in contact:
        dialog.remote_target = contact.split("<", 1)[1].split(">", 1)[0]
    answer = parse_sdp(_sdp_part(response))
    destinations: list[tuple[str, int] | None] = []
    for media in answer.media[:2]:
        connection = answer.connection_for(media)
        address = connection.host if connection else options.host
        destinations.append((address, media.port) if media.port else None)
    say(f"200 OK in {answered_ms:.0f} ms; node's RTP ports {[d and d[1] for d in destinations]}")
    channel.send(dialog.request("ACK", cseq=1)[0])
    result = CallResult(call_id, answered_ms, [d[1] if d else 0 for d in destinations], [0, 0])
    lookup = asyncio.get_running_loop().create_task(_find_session(options, call_id))
    stop = asyncio.Event()
    senders = []
    for index, destination in enumerate(destinations):
        if destination is None:
            result.notes.append(f"m-line {index} refused by the node (port 0)")
            continue
        senders.append((index, _send_rtp(rtp[index], destination, codec, payloads[index], stop)))
    say(f"sending {options.seconds:g} s of {options.tones[0]:g} Hz / {options.tones[1]:g} Hz")
    counts = await asyncio.gather(*(job for _, job in senders))
    for (index, _), count in zip(senders, counts, strict=True):
        result.packets_sent[index] = count
    found = await lookup
    if found is not None:
        result.session_id, result.sidecar = found
    bye, bye_branch = dialog.request("BYE", cseq=2)
    response = await _transaction(channel, bye, bye_branch, reliable)
    if response.status != 200:
        raise TestCallError(f"BYE answered {response.status} {response.reason}")
    say(f"BYE answered 200; packets sent {result.packets_sent}")
    if result.sidecar is not None:
        result.recording = await _wait_for(Path(result.sidecar), options.wait_recording)
        if result.recording is None and not Path(result.sidecar).parent.exists():
            result.notes.append("the node's recording directory is not visible from here")
    return result


def _tag(header: str) -> str | None:
    for param in header.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "tag":
            return value.strip()
    return None


def _sdp_part(response: SipResponse) -> bytes:
    body = response.body
    kind = (response.headers.get("content-type") or "").lower()
    if "multipart" not in kind:
        return body
    start = body.find(b"v=0")
    end = body.find(b"\r\n--", start)
    return body[start : end + 2 if end >= 0 else len(body)]


async def _find_session(options: CallOptions, call_id: str) -> tuple[str, str | None] | None:
    """The node's session id and sidecar path for ``call_id``, from its admin API."""
    if not options.http:
        return None
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    url = options.http.rstrip("/") + "/sessions"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as client:
            for _ in range(10):
                async with client.get(url, headers=headers) as reply:
                    if reply.status != 200:
                        return None
                    calls = await reply.json()
                match = next((c for c in calls if c.get("call_id") == call_id), None)
                if match is not None:
                    return match["session_id"], (match.get("recording") or {}).get("sidecar")
                await asyncio.sleep(0.2)
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        return None
    return None


async def _wait_for(sidecar: Path, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sidecar.exists():
            try:
                data: dict[str, Any] = json.loads(sidecar.read_text())
                return data
            except (OSError, json.JSONDecodeError):
                pass  # being written
        await asyncio.sleep(0.2)
    return None
