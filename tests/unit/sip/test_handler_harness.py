"""Shared harness of the SipHandler tests, plus checks that the harness builds what an SBC sends.

The handler runs without sockets for SIP: requests are bytes written here by hand (CRLF, with a
Content-Length counting the body), fed to ``on_message``; what the handler sends is collected with
the fake clock's time. Timers are fired by :meth:`Harness.advance`. The INVITE answer needs
opening the streams (real UDP sockets on 127.0.0.1 in a per-test port range), hence async tests.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from siprec_node.sip.call import CallData, CallStore, MemoryCallStore
from siprec_node.sip.errors import SipParseError
from siprec_node.sip.handler import HandlerConfig, SipHandler
from siprec_node.sip.message import SipRequest, SipResponse, parse_message
from siprec_node.sip.transaction import Address, TimerConfig

SBC = Address("udp", "127.0.0.1", 5099)
SBC_TCP = Address("tcp", "127.0.0.1", 40312, connection_id=7)
T1, T2 = 0.5, 4.0
START = 1000.0
BOUNDARY = "siprec-boundary-77"

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg==">
    <associate-time>2024-05-01T10:00:00Z</associate-time>
  </group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:alice@example.com"><name xml:lang="en">Alice</name></nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:bob@example.net"><name xml:lang="en">Bob</name></nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>1</label>
  </stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>2</label>
  </stream>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w=="
      session_id="hVpd7YQgRW2nD22h7q60JQ=="/>
  <participantsessionassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw=="
      session_id="hVpd7YQgRW2nD22h7q60JQ=="/>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
    <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
</recording>
"""

# A metadata-only update (Avaya style): Carol joins, Bob stops sending.
METADATA_PARTIAL = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>partial</datamode>
  <participant participant_id="Q2Fyb2wtcGFydGljaXBhbnQ=">
    <nameID aor="sip:carol@example.org"><name xml:lang="en">Carol</name></nameID>
  </participant>
  <participantsessionassoc participant_id="Q2Fyb2wtcGFydGljaXBhbnQ="
      session_id="hVpd7YQgRW2nD22h7q60JQ=="/>
  <participantstreamassoc participant_id="Q2Fyb2wtcGFydGljaXBhbnQ=">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
</recording>
"""


def audio_m_line(port: int, label: str | None, direction: str | None = "sendonly") -> str:
    """One offered audio stream (PCMU, PCMA, telephone-event)."""
    lines = [
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    ]
    if label is not None:
        lines.append(f"a=label:{label}")
    if direction is not None:
        lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def sdp(*media: str, version: int = 1, host: str = "127.0.0.1", session_id: int = 7368231) -> str:
    """An SRC's SDP offer with the given m-line blocks."""
    head = (
        "v=0\r\n"
        f"o=SBC {session_id} {version} IN IP4 {host}\r\n"
        "s=SIP Media Capabilities\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
    )
    return head + "".join(media)


def two_stream_sdp(
    *, directions: tuple[str | None, str | None] = ("sendonly", "sendonly"), version: int = 1
) -> str:
    """The usual SIPREC offer: one labelled stream per participant."""
    return sdp(
        audio_m_line(30000, "1", directions[0]),
        audio_m_line(30002, "2", directions[1]),
        version=version,
    )


def multipart(sdp_text: str, metadata: str = METADATA, boundary: str = BOUNDARY) -> bytes:
    """A SIPREC body: SDP part then the rs-metadata part."""
    sdp_text = sdp_text if sdp_text.endswith("\n") else sdp_text + "\r\n"
    metadata = metadata if metadata.endswith("\n") else metadata + "\r\n"
    return (
        f"--{boundary}\r\n"
        "Content-Type: application/sdp\r\n"
        "\r\n"
        f"{sdp_text}"
        f"--{boundary}\r\n"
        "Content-Type: application/rs-metadata+xml\r\n"
        "Content-Disposition: recording-session\r\n"
        "\r\n"
        f"{metadata}"
        f"--{boundary}--\r\n"
    ).encode()


MULTIPART_TYPE = f"multipart/mixed;boundary={BOUNDARY}"


@dataclass
class Dialogue:
    """One SRC-side call: Call-ID, tags, the next CSeq, and how it reaches the recorder."""

    call_id: str
    from_tag: str = "sbc-3f2a9c"
    to_tag: str | None = None
    cseq: int = 1
    source: Address = SBC
    contact: str = "<sip:sbc@127.0.0.1:5099>;+sip.src"
    branches: list[str] = field(default_factory=list)

    @property
    def via_transport(self) -> str:
        return self.source.transport.upper()

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
        cseq_method: str | None = None,
        branch: str | None = None,
        to_tag: str | bool | None = True,
        contact: str | bool | None = True,
        max_forwards: str = "70",
        content_length: str | None = None,
    ) -> bytes:
        """Request bytes as the SBC writes them.

        ``to_tag=True`` uses the dialog's To tag (if known), ``None``/``False`` sends none, a
        string sends that. ``contact=True`` uses the dialog's Contact.
        """
        if branch is None:
            branch = f"z9hG4bK-{self.call_id[:8]}-{method.lower()}-{len(self.branches)}"
        self.branches.append(branch)
        number = self.cseq if cseq is None else cseq
        tag = self.to_tag if to_tag is True else (to_tag or None)
        lines = [
            f"{method} sip:srs@127.0.0.1:5060 SIP/2.0",
            f"Via: SIP/2.0/{self.via_transport} {self.source.host}:{self.source.port}"
            f";branch={branch};rport",
            f"Max-Forwards: {max_forwards}",
            f'From: "Recording SBC" <sip:sbc@example.com>;tag={self.from_tag}',
            "To: <sip:srs@example.com>" + (f";tag={tag}" if tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {number} {cseq_method or method}",
        ]
        contact_value = self.contact if contact is True else (contact or None)
        if contact_value:
            lines.append(f"Contact: {contact_value}")
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("User-Agent: TestSBC/1.0")
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        length = str(len(body)) if content_length is None else content_length
        lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def next_cseq(self) -> int:
        """Advance to the next in-dialog CSeq number."""
        self.cseq += 1
        return self.cseq

    def siprec_invite(
        self,
        *,
        body: bytes | None = None,
        headers: Iterable[tuple[str, str]] = (),
        **kwargs: object,
    ) -> bytes:
        """The initial SIPREC INVITE (Require: siprec, multipart SDP + metadata)."""
        return self.request(
            "INVITE",
            body=multipart(two_stream_sdp()) if body is None else body,
            content_type=MULTIPART_TYPE,
            headers=[
                ("Require", "siprec"),
                ("Supported", "timer, replaces"),
                ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"),
                *headers,
            ],
            to_tag=None,
            **kwargs,  # type: ignore[arg-type]
        )

    def ack(self, **kwargs: object) -> bytes:
        """The ACK for a 2xx (new branch, the INVITE's CSeq number)."""
        kwargs.setdefault("cseq", 1)
        return self.request("ACK", contact=None, **kwargs)  # type: ignore[arg-type]

    def bye(self, **kwargs: object) -> bytes:
        """A BYE with the next CSeq."""
        kwargs.setdefault("cseq", self.next_cseq())
        return self.request("BYE", contact=None, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sent:
    """One message the handler put on the wire."""

    at: float
    message: SipResponse | SipRequest
    destination: Address
    data: bytes

    @property
    def response(self) -> SipResponse:
        assert isinstance(self.message, SipResponse), self.message
        return self.message


@dataclass
class SdpView:
    """A minimal, independent reading of an SDP body for assertions."""

    origin: list[str]
    connection: str | None
    media: list[dict[str, object]]

    @classmethod
    def parse(cls, body: bytes) -> SdpView:
        origin: list[str] = []
        connection = None
        media: list[dict[str, object]] = []
        for raw in body.decode().split("\r\n"):
            if not raw:
                continue
            kind, _, value = raw.partition("=")
            if kind == "o":
                origin = value.split()
            elif kind == "c" and not media:
                connection = value
            elif kind == "m":
                parts = value.split()
                media.append(
                    {
                        "media": parts[0],
                        "port": int(parts[1]),
                        "proto": parts[2],
                        "formats": parts[3:],
                        "attributes": [],
                    }
                )
            elif kind == "a" and media:
                attributes = media[-1]["attributes"]
                assert isinstance(attributes, list)
                attributes.append(value)
        return cls(origin, connection, media)

    def attributes(self, index: int) -> list[str]:
        found = self.media[index]["attributes"]
        assert isinstance(found, list)
        return found

    def port(self, index: int) -> int:
        port = self.media[index]["port"]
        assert isinstance(port, int)
        return port

    def label(self, index: int) -> str | None:
        return next(
            (a.split(":", 1)[1] for a in self.attributes(index) if a.startswith("label:")), None
        )

    def direction(self, index: int) -> str | None:
        directions = {"sendrecv", "sendonly", "recvonly", "inactive"}
        return next((a for a in self.attributes(index) if a in directions), None)

    @property
    def version(self) -> int:
        return int(self.origin[2])


class Harness:
    """A SipHandler on a fake clock with a collecting ``send``."""

    def __init__(self, **overrides: object) -> None:
        self.now = START
        self.sent: list[Sent] = []
        self.strict = True
        self.unparsed: list[bytes] = []
        self._seen = 0
        # Any CallStore may be given (another harness's, for restarts; a SharedCallStore).
        given = overrides.pop("call_store", None)
        self.store: CallStore = given if isinstance(given, CallStore) else MemoryCallStore()
        base = random.randrange(42000, 58000, 2)
        options: dict[str, object] = {
            "node_id": "test-node",
            "call_store": self.store,
            "advertise_host": "127.0.0.1",
            "media_host": "127.0.0.1",
            "media_advertise_host": "127.0.0.1",
            "port_min": base,
            "port_max": base + 199,
            "port_cooldown": 10.0,
            "timers": TimerConfig(t1=T1, t2=T2, t4=5.0),
            "recording_dir": tempfile.mkdtemp(prefix="handler-test-recordings-"),
        }
        options.update(overrides)
        self.config = HandlerConfig(**options)  # type: ignore[arg-type]
        self.handler = SipHandler(
            self.config,
            send=self._send,
            clock=lambda: self.now,
            local_address=lambda peer: "127.0.0.1",
        )
        self.handler.set_listener("udp", "127.0.0.1", 5060)
        self.handler.set_listener("tcp", "127.0.0.1", 5060)

    def _send(self, data: bytes, destination: Address) -> None:
        try:
            message = parse_message(data, stream=destination.reliable)
        except SipParseError:
            if self.strict:
                raise
            self.unparsed.append(data)  # e.g. a 400 to a request that had no From to copy
            return
        self.sent.append(Sent(self.now, message, destination, data))

    # ---- driving

    def feed(self, data: bytes, source: Address = SBC) -> list[Sent]:
        """Deliver bytes to the handler; returns what it sent in reaction (synchronously)."""
        self.handler.on_message(data, source)
        return self.take()

    async def feed_and_settle(self, data: bytes, source: Address = SBC) -> list[Sent]:
        """Deliver bytes and let the handler's tasks (the INVITE answer) finish."""
        self.handler.on_message(data, source)
        await self.handler.idle()
        return self.take()

    def take(self) -> list[Sent]:
        """What was sent since the last call."""
        new = self.sent[self._seen :]
        self._seen = len(self.sent)
        return new

    def advance(self, seconds: float) -> list[Sent]:
        """Move the clock forward, firing every timer due on the way at its deadline."""
        target = self.now + seconds
        while True:
            deadline = self.handler.transactions.next_timer()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.handler.on_timer()
        self.now = target
        return self.take()

    async def snapshot(self, session_id: str) -> CallData:
        """The CallData the store holds for ``session_id`` once pending work (media, the
        finalisation of an ended call) and writes are done."""
        assert self.handler.snapshots is not None
        await self.handler.idle()
        assert await self.handler.snapshots.flush(timeout=5)
        found = await self.store.load(session_id)
        assert found is not None
        return found

    # ---- a whole call

    async def answered_call(
        self, call_id: str = "call-0001@sbc.example.com", source: Address = SBC
    ) -> tuple[Dialogue, SipResponse]:
        """A SIPREC INVITE answered 200 (not yet acknowledged); the dialog learns the To tag."""
        dialogue = Dialogue(call_id, source=source)
        if source.reliable:
            dialogue.contact = "<sip:sbc@127.0.0.1:40312;transport=tcp>;+sip.src"
        sent = await self.feed_and_settle(dialogue.siprec_invite(), source)
        final = [s.response for s in sent if s.response.status >= 200]
        assert [r.status for r in final] == [200], [s.response.status for s in sent]
        dialogue.to_tag = final[0].to.tag
        return dialogue, final[0]

    async def confirmed_call(
        self, call_id: str = "call-0001@sbc.example.com", source: Address = SBC
    ) -> tuple[Dialogue, SipResponse]:
        """An answered and acknowledged SIPREC call."""
        dialogue, ok = await self.answered_call(call_id, source)
        assert self.feed(dialogue.ack(), source) == []
        return dialogue, ok

    def only_call(self) -> str:
        """The session id of the single live call."""
        assert len(self.handler.calls) == 1, list(self.handler.calls)
        return next(iter(self.handler.calls))

    async def __aenter__(self) -> Harness:
        await self.handler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.handler.close(timeout=2), 5)


def statuses(sent: Iterable[Sent]) -> list[int]:
    """The status codes of the responses in ``sent``, in order."""
    return [s.response.status for s in sent]


def final(sent: Iterable[Sent]) -> SipResponse:
    """The one final response in ``sent``."""
    finals = [s.response for s in sent if s.response.status >= 200]
    assert len(finals) == 1, [r.status for r in finals]
    return finals[0]


# ---------------------------------------------------------------------------------------------
# The harness itself: what it builds must be what an SBC would send.


def test_siprec_invite_parses_as_sent() -> None:
    dialogue = Dialogue("harness-1@sbc")
    data = dialogue.siprec_invite()
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.to.tag is None
    assert message.headers.get("Require") == "siprec"
    assert message.body.startswith(f"--{BOUNDARY}\r\n".encode())
    assert message.body.endswith(f"--{BOUNDARY}--\r\n".encode())
    assert b"a=label:1\r\n" in message.body and b"a=label:2\r\n" in message.body
    head, _, body = data.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head


def test_stream_request_parses_with_content_length() -> None:
    dialogue = Dialogue("harness-2@sbc", source=SBC_TCP)
    message = parse_message(dialogue.request("OPTIONS"), stream=True)
    assert isinstance(message, SipRequest)
    assert message.top_via.transport == "TCP"


def test_sdp_view_reads_our_offer() -> None:
    view = SdpView.parse(two_stream_sdp().encode())
    assert [view.port(0), view.port(1)] == [30000, 30002]
    assert [view.label(0), view.label(1)] == ["1", "2"]
    assert view.direction(0) == "sendonly"
    assert view.version == 1
