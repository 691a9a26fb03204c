"""What the SIPREC integration tests share: a node with its HTTP API, SIPp runs read back.

A :class:`SippRun` starts one SIPp client call with a message trace, so that a test can assert on
every response the node sent (status, headers, the SDP answer) in Python, beside the checks the
scenario itself makes. Scenarios may stop at a *checkpoint*: a ``<recv request="NOTIFY"/>`` that
only the test sends (:meth:`SippRun.release`), straight to SIPp and never through the node. The
test looks at the node (its log, ``GET /sessions``) while SIPp waits, so nothing races.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.integration.node_process import SIPP_DIR, NodeProcess, free_port, start_node

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "c": "content-type",
            "l": "content-length", "k": "supported", "x": "session-expires"}  # fmt: skip
_TRACE_ENTRY = re.compile(
    r"^-{47} ([0-9-]+ [0-9:.]+)\n(?:UDP|TCP|TLS) message (sent|received)[^\n]*:\n\n",
    re.MULTILINE,
)
_barrier_cseq = itertools.count(1)


@dataclass
class Recorder:
    """A running node with its HTTP API on ``http_port``."""

    process: NodeProcess
    http_port: int

    @property
    def sip_port(self) -> int:
        return self.process.sip_port

    def wait_for_event(
        self, event: str, timeout: float = 10.0, *, skip: int = 0, **match: object
    ) -> dict[str, Any]:
        return self.process.wait_for_event(event, timeout, skip=skip, **match)

    def events(self, event: str, **match: object) -> list[dict[str, Any]]:
        return [
            e
            for e in self.process.events(event)
            if all(e.get(key) == value for key, value in match.items())
        ]

    def sessions(self) -> list[dict[str, Any]]:
        """``GET /sessions``: the node's live calls."""
        url = f"http://127.0.0.1:{self.http_port}/sessions"
        with urllib.request.urlopen(url, timeout=5) as response:
            return list(json.loads(response.read()))

    def post(self, path: str) -> int:
        """POST to the admin API; returns the status."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)

    def session(self, call_id: str) -> dict[str, Any]:
        """The live call with this SIP Call-ID in ``GET /sessions``."""
        found = [s for s in self.sessions() if s["call_id"] == call_id]
        assert len(found) == 1, f"{call_id} in /sessions: {found}"
        return found[0]


def start_recorder(config: str = "") -> Recorder:
    http_port = free_port((socket.SOCK_STREAM,))
    return Recorder(start_node(config, http_port=http_port), http_port)


# ---------------------------------------------------------------------------------- messages


@dataclass
class SipMessage:
    """A SIP message as SIPp's trace shows it (``direction`` is SIPp's: sent or received)."""

    direction: str
    start_line: str
    headers: list[tuple[str, str]]
    body: str
    at: datetime | None = None

    @classmethod
    def parse(cls, direction: str, text: str, at: datetime | None = None) -> SipMessage:
        text = text.replace("\r\n", "\n")
        head, _, body = text.partition("\n\n")
        lines = head.split("\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return cls(direction, lines[0], headers, body, at)

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for n, v in self.headers if _COMPACT.get(n.lower(), n.lower()) == wanted]

    @property
    def status(self) -> int | None:
        if not self.start_line.startswith("SIP/2.0 "):
            return None
        return int(self.start_line.split()[1])

    @property
    def method(self) -> str:
        """The request's method, or for a response the method of its CSeq."""
        if self.status is None:
            return self.start_line.split()[0]
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def cseq(self) -> int:
        return int((self.header("CSeq") or "0").split()[0])

    @property
    def sdp(self) -> Sdp:
        assert (self.header("Content-Type") or "").startswith("application/sdp"), self.headers
        return Sdp.parse(self.body)


def parse_trace(text: str) -> list[SipMessage]:
    """Every message of a SIPp ``-trace_msg`` file, in order."""
    matches = list(_TRACE_ENTRY.finditer(text))
    messages = []
    for match, following in itertools.zip_longest(matches, matches[1:]):
        end = following.start() if following is not None else len(text)
        content = text[match.end() : end]
        # SIPp ends each entry with a blank line of its own.
        if content.endswith("\n\n"):
            content = content[:-1]
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
        messages.append(SipMessage.parse(match.group(2), content, at))
    return messages


# --------------------------------------------------------------------------------------- SDP


@dataclass
class Media:
    """One m-line of an SDP and its attributes."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    attributes: list[str] = field(default_factory=list)
    connection: str | None = None

    def attribute(self, name: str) -> str | None:
        for attribute in self.attributes:
            key, _, value = attribute.partition(":")
            if key == name:
                return value
        return None

    @property
    def label(self) -> str | None:
        return self.attribute("label")

    @property
    def direction(self) -> str | None:
        found = [
            a for a in self.attributes if a in ("sendrecv", "sendonly", "recvonly", "inactive")
        ]
        assert len(found) <= 1, self.attributes
        return found[0] if found else None

    @property
    def codecs(self) -> list[str]:
        """``rtpmap`` encodings in payload order, e.g. ``["PCMU/8000", "telephone-event/8000"]``."""
        rtpmaps = {}
        for attribute in self.attributes:
            if attribute.startswith("rtpmap:"):
                pt, _, encoding = attribute[len("rtpmap:") :].partition(" ")
                rtpmaps[pt] = encoding
        return [rtpmaps.get(pt, pt) for pt in self.formats]


@dataclass
class Sdp:
    """An SDP body, parsed just enough to check an answer."""

    origin: list[str]
    connection: str | None
    media: list[Media]
    session_attributes: list[str]

    @property
    def version(self) -> int:
        return int(self.origin[2])

    @property
    def session_id(self) -> str:
        return self.origin[1]

    @property
    def ports(self) -> dict[str | None, int]:
        return {m.label: m.port for m in self.media}

    @classmethod
    def parse(cls, text: str) -> Sdp:
        origin: list[str] = []
        connection = None
        media: list[Media] = []
        session_attributes: list[str] = []
        for raw in text.replace("\r\n", "\n").split("\n"):
            line = raw.strip()
            if len(line) < 2 or line[1] != "=":
                continue
            kind, value = line[0], line[2:]
            if kind == "o":
                origin = value.split()
            elif kind == "c":
                if media:
                    media[-1].connection = value
                else:
                    connection = value
            elif kind == "m":
                parts = value.split()
                media.append(Media(parts[0], int(parts[1]), parts[2], parts[3:]))
            elif kind == "a":
                (media[-1].attributes if media else session_attributes).append(value)
        return cls(origin, connection, media, session_attributes)


# -------------------------------------------------------------------------------------- SIPp


@dataclass
class SippOutcome:
    returncode: int
    stderr: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self) -> str:
        return f"sipp exit {self.returncode}\n{self.errors[-3000:]}\n{self.stderr[-2000:]}"


class SippRun:
    """One SIPp client call of a scenario in ``tests/sipp``, against a recorder.

    Use as a context manager (SIPp is killed on the way out if still running); ``finish()``
    waits for the end and returns the outcome; ``messages`` is the trace afterwards.
    """

    def __init__(
        self,
        scenario: str,
        recorder: Recorder,
        *,
        transport: str = "u1",
        timeout: float = 20.0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.scenario = scenario
        self.transport = transport
        self.timeout = timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="sipp-siprec-"))
        self.port = free_port()
        self.trace_file = self.workdir / "messages.log"
        self.error_file = self.workdir / "errors.log"
        self.proc = subprocess.Popen(
            [
                "sipp",
                f"127.0.0.1:{recorder.sip_port}",
                "-sf",
                str(SIPP_DIR / scenario),
                "-i",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-t",
                transport,
                "-m",
                "1",
                "-s",
                "srs",
                "-timeout",
                f"{int(timeout)}s",
                "-timeout_error",
                "-max_recv_loops",
                "1000",
                "-nostdin",
                "-trace_msg",
                "-message_file",
                str(self.trace_file),
                "-trace_err",
                "-error_file",
                str(self.error_file),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
        )
        self.outcome: SippOutcome | None = None

    @property
    def call_id(self) -> str:
        """The Call-ID SIPp gives its first call (``[call_id]``)."""
        return f"1-{self.proc.pid}@127.0.0.1"

    def release(self) -> None:
        """Let SIPp past its next checkpoint (``<recv request="NOTIFY"/>``)."""
        number = next(_barrier_cseq)
        proto = "UDP" if self.transport.startswith("u") else "TCP"
        message = (
            f"NOTIFY sip:src@127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto} 127.0.0.1:9;branch=z9hG4bK-checkpoint-{number}\r\n"
            "From: <sip:test@127.0.0.1>;tag=checkpoint\r\n"
            "To: <sip:src@127.0.0.1>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {number} NOTIFY\r\n"
            "Event: checkpoint\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        if proto == "UDP":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, ("127.0.0.1", self.port))
        else:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(message)
                time.sleep(0.05)  # let SIPp read it before the connection closes

    def finish(self) -> SippOutcome:
        """Wait for SIPp to end."""
        if self.outcome is None:
            try:
                self.proc.wait(self.timeout + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            errors = self.error_file.read_text(errors="replace") if self.error_file.exists() else ""
            self.outcome = SippOutcome(self.proc.returncode, stderr, errors)
        return self.outcome

    @property
    def messages(self) -> list[SipMessage]:
        text = self.trace_file.read_text(errors="replace") if self.trace_file.exists() else ""
        return parse_trace(text)

    def responses(self, method: str | None = None, status: int | None = None) -> list[SipMessage]:
        """Responses to this call SIPp received (retransmissions removed), in order."""
        seen: set[tuple[int, str, int | None]] = set()
        found = []
        for message in self.messages:
            if message.direction != "received" or message.status is None:
                continue
            if message.header("Call-ID") != self.call_id:
                continue  # a stray (an earlier call's retransmission to a reused port)
            if message.status == 100:
                continue
            key = (message.cseq, message.method, message.status)
            if key in seen:
                continue
            seen.add(key)
            if (method is None or message.method == method) and (
                status is None or message.status == status
            ):
                found.append(message)
        return found

    def answers(self) -> list[Sdp]:
        """The SDP of every 200 to an INVITE or UPDATE that carried one, in order."""
        return [
            r.sdp
            for r in self.responses(status=200)
            if r.method in ("INVITE", "UPDATE") and r.body.strip()
        ]

    def __enter__(self) -> SippRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


def run_scenario(scenario: str, recorder: Recorder, transport: str = "u1") -> SippRun:
    """Run a scenario without checkpoints to its end; assert SIPp passed."""
    with SippRun(scenario, recorder, transport=transport) as run:
        outcome = run.finish()
    assert outcome.ok, outcome.explain()
    return run
