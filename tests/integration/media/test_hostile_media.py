"""Hostile input on the node's SIP and RTP ports, through the real node and its media worker.

Shaped as the attacks of issue 13: an INVITE with 1,000 audio m-lines (and nine of them in a
row), opens that fail half-way in the worker, CANCELs racing the media opening, a third party
sending RTP into a leg first and during a pause, a sender whose timestamps leap 0.9 s a packet.
Leaks are counted where they would be: the descriptors of the node and of its worker
(``/proc/<pid>/fd``) and the files under the recording directory, before and after.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import struct
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import skip_unless_c_receive_path
from tests.integration.media.src_client import (
    RATE,
    RtpLeg,
    SrcCall,
    read_wav,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import NodeProcess, free_port, start_node

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"  # another sender on the loopback network; traffic still goes to 127.0.0.1


# ------------------------------------------------------------------------------------ helpers


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _worker_pid(node: NodeProcess) -> int:
    return int(node.events("media_worker_started")[-1]["pid"])  # type: ignore[arg-type]


def _settled(read: Any, want: Any, timeout: float = 10.0) -> Any:
    """``read()`` once it returns ``want`` (or its last value after ``timeout``)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


class RawSrc(SrcCall):
    """A SrcCall that can send any offer and see any final response."""

    def offer(self, count: int, *, compact: bool = False) -> str:
        port = self.rtp.getsockname()[1]
        sdp = "v=0\no=src 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        for n in range(count):
            if compact:  # as an attacker packs them into one datagram
                sdp += f"m=audio {port} RTP/AVP 0\n"
            else:
                sdp += f"m=audio {port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=label:{n + 1}\n"
        return sdp

    def invite_raw(self, sdp: str) -> tuple[int, str]:
        return self._final(self._request("INVITE", sdp, "application/sdp"))

    def send_invite(self, sdp: str) -> bytes:
        data = self._request("INVITE", sdp, "application/sdp")
        self.sip.sendto(data, ("127.0.0.1", self.node_port))
        return data

    def cancel(self, invite: bytes) -> None:
        branch = re.search(rb"branch=([^;\r\n]+)", invite).group(1).decode()  # type: ignore[union-attr]
        lines = [
            f"CANCEL sip:srs@127.0.0.1:{self.node_port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={branch};rport",
            f"From: <sip:src@127.0.0.1:{self.local_port}>;tag={self.from_tag}",
            f"To: <sip:srs@127.0.0.1:{self.node_port}>",
            f"Call-ID: {self.call_id}",
            "CSeq: 1 CANCEL",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), ("127.0.0.1", self.node_port))

    def finals(self, timeout: float = 5.0) -> list[int]:
        """Final statuses received until ``timeout`` passes without any message."""
        out: list[int] = []
        self.sip.settimeout(timeout)
        try:
            while True:
                reply = self.sip.recv(65535).decode()
                status = int(reply.split(" ", 2)[1])
                if status >= 200 and "CSeq: 1 INVITE" in reply:
                    out.append(status)
                    break
        except TimeoutError:
            pass
        return out


def _ack_final(call: RawSrc, status: int, reply: str) -> None:
    tag = re.search(r"^To:.*;tag=([^;\r\n]+)", reply, re.M)
    call.to_tag = tag.group(1) if tag else None
    if status >= 300:  # the ACK of a non-2xx final response goes in the INVITE's transaction
        call.sip.sendto(call._request("ACK", cseq=1), ("127.0.0.1", call.node_port))


def _baseline(node: NodeProcess) -> tuple[int, int, list[str]]:
    return _fds(node.proc.pid), _fds(_worker_pid(node)), _files(node.workdir / "recordings")


def _assert_back_to(node: NodeProcess, baseline: tuple[int, int, list[str]]) -> None:
    node_fds, worker_fds, files = baseline
    assert _settled(lambda: _fds(node.proc.pid), node_fds) == node_fds
    assert _settled(lambda: _fds(_worker_pid(node)), worker_fds) == worker_fds
    assert _settled(lambda: _files(node.workdir / "recordings"), files) == files


# ----------------------------------------------------------------------- too many m-lines


def test_1000_m_line_invites_get_488_and_leave_nothing_behind() -> None:
    http = free_port((socket.SOCK_STREAM,))
    node = start_node(http_port=http)
    try:
        baseline = _baseline(node)
        for n in range(10):  # one, then nine in a row
            call = RawSrc(node.sip_port)
            sdp = call.offer(1000, compact=True)
            assert len(sdp.encode()) < 63_000
            status, reply = call.invite_raw(sdp)
            assert status == 488, reply
            warning = re.search(r"^Warning: (.*)$", reply, re.M)
            assert warning and "1000 offered, at most 8" in warning.group(1), reply
            _ack_final(call, status, reply)
            call.close()
            if n == 0:
                _assert_back_to(node, baseline)
        _assert_back_to(node, baseline)
        assert _metric(http, "siprec_sip_too_many_streams") == 10
        assert _metric(http, "siprec_rtp_ports_in_use") == 0
        assert len(node.events("too_many_streams")) == 10
        # and the node still records
        good = SrcCall(node.sip_port)
        good.invite()
        assert good.bye() == 200
        node.wait_for_event("recording_finalised", call_id=good.call_id, timeout=20)
        good.close()
    finally:
        assert node.stop() == 0


# ----------------------------------------------------------------- failures while opening


def test_opens_failing_half_way_in_the_worker_release_everything() -> None:
    """The worker runs out of descriptors half-way through a call's 32 streams: the INVITE
    gets 503, and every socket, stream and file taken for the call is released in the node
    and in the worker."""
    node = start_node(env={"SIPREC_MEDIA__MAX_STREAMS_PER_CALL": "32"})
    try:
        baseline = _baseline(node)
        worker = _worker_pid(node)
        soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        # room for about 13 streams (2 sockets and the .wav each, the sidecar while written)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (baseline[1] + 40, hard))
        try:
            for _ in range(3):
                call = RawSrc(node.sip_port)
                status, reply = call.invite_raw(call.offer(32))
                assert status == 503, reply
                _ack_final(call, status, reply)
                call.close()
            assert node.events("media_open_failed")
            assert not node.events("media_worker_died")
            _assert_back_to(node, baseline)
        finally:
            resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        good = SrcCall(node.sip_port)  # the node records again (the ports of the failed
        good.invite()  # calls are cooling down: two streams)
        assert good.bye() == 200
        node.wait_for_event("recording_finalised", call_id=good.call_id, timeout=30)
        good.close()
    finally:
        assert node.stop() == 0


def test_cancel_racing_the_media_opening_leaves_nothing_open() -> None:
    """CANCELs sent at once and a little later than the INVITE: whichever wins (487, or a 200
    that crossed the CANCEL and is then ended with BYE), nothing of the call stays open and a
    cancelled call leaves no files."""
    node = start_node()
    try:
        node_fds, worker_fds, files = _baseline(node)
        outcomes: list[int] = []
        answered: list[str] = []
        for delay in (0.0, 0.0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15):
            call = RawSrc(node.sip_port)
            invite = call.send_invite(call.offer(8))
            time.sleep(delay)
            call.cancel(invite)
            finals = call.finals(timeout=3.0)
            assert len(finals) == 1, finals
            outcomes += finals
            if finals == [200]:  # the 200 crossed the CANCEL: the SRC ends the call with BYE
                answered.append(call.call_id)
                call.sip.sendto(call._request("ACK", cseq=1), ("127.0.0.1", node.sip_port))
            call.close()
        assert 487 in outcomes, outcomes
        for call_id in answered:
            node.wait_for_event("call_answered", call_id=call_id)
        held = worker_fds + 8 * 3 * len(answered)  # 2 sockets and the open .wav a stream
        assert _settled(lambda: _fds(_worker_pid(node)), held) == held
        cancelled = outcomes.count(487)
        # the cancelled calls whose opens were in flight had them closed and their parts removed
        assert 0 < len(node.events("media_discarded")) <= cancelled
        if not answered:
            assert _settled(lambda: _fds(node.proc.pid), node_fds) == node_fds
            assert _settled(lambda: _files(node.workdir / "recordings"), files) == files
        assert not node.events("handler_task_failed")
    finally:
        assert node.stop() == 0
    leftovers = [p for p in (node.workdir / "recordings").rglob("*.parts") if p.is_dir()]
    assert len(leftovers) <= len(
        answered
    )  # only answered calls have parts (kept as FORMAT.md says)


def test_worker_killed_while_opening_leaves_nothing_open() -> None:
    node = start_node(env={"SIPREC_MEDIA__MAX_STREAMS_PER_CALL": "64"})
    try:
        node_fds, _, files = _baseline(node)
        first_worker = _worker_pid(node)
        worker_fds = _fds(first_worker)
        call = RawSrc(node.sip_port)
        # the worker is stopped while the call's 64 opens are sent (a few are in its socket,
        # the rest wait in the node with their descriptors), then dies
        os.kill(first_worker, signal.SIGSTOP)
        call.send_invite(call.offer(64))
        node.wait_for_event("call_offered", call_id=call.call_id)
        time.sleep(0.5)
        os.kill(first_worker, signal.SIGKILL)
        finals = call.finals(timeout=15.0)
        node.wait_for_event("media_worker_ready", skip=1, timeout=20)
        call.close()
        assert finals == [503], finals
        node.wait_for_event("call_ended", call_id=call.call_id, timeout=10)
        assert node.events("media_worker_died")
        assert _worker_pid(node) != first_worker
        assert _settled(lambda: _fds(node.proc.pid), node_fds) == node_fds
        assert _settled(lambda: _fds(_worker_pid(node)), worker_fds) == worker_fds
        assert _settled(lambda: _files(node.workdir / "recordings"), files) == files
    finally:
        assert node.stop() == 0


# --------------------------------------------------------------------------- third-party RTP


def _spectrum_share(x: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = spectrum[(freqs >= low) & (freqs <= high)].sum()
    return float(band / spectrum.sum())


@pytest.mark.parametrize("receive_path", ["c", "python"])
def test_third_party_rtp_first_and_during_a_pause_is_not_recorded(receive_path: str) -> None:
    if receive_path == "c":
        skip_unless_c_receive_path()
    node = start_node(env={"SIPREC_MEDIA__RECEIVE_PATH": receive_path})
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind((ATTACKER, 0))
    try:
        call = SrcCall(node.sip_port)
        call.invite()
        src = [
            RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x5EC0001),
            RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x5EC0002),
        ]
        noise = RtpLeg(0, ulaw_encode(tone(3000, 1.0)), ssrc=0xBAD)
        sent_foreign = 0

        def attack(packets: int) -> None:
            nonlocal sent_foreign
            for _ in range(packets):
                attacker.sendto(noise.next_packet(), ("127.0.0.1", call.ports[0]))
                attacker.sendto(noise.next_packet(), ("127.0.0.1", call.ports[0] + 1))  # RTCP
                sent_foreign += 2
                time.sleep(0.02)

        attack(25)  # the third party sends first (0.5 s)
        call.stream(src, 1.0)
        attack(25)  # into a 0.5 s pause of the SRC
        for leg in src:
            leg.timestamp += int(0.5 * RATE)
        call.stream(src, 1.0)
        assert call.bye() == 200
        done = node.wait_for_event("recording_finalised", call_id=call.call_id, timeout=20)
        sidecar = json.loads(Path(str(done["sidecar"])).read_text())
        leg = next(s for s in sidecar["streams"] if s["index"] == 0)
        assert leg["foreign_packets"] == sent_foreign
        assert leg["ssrcs"] == [0x5EC0001]
        assert leg["packets"] == 100
        other = next(s for s in sidecar["streams"] if s["index"] == 1)
        assert other["foreign_packets"] == 0
        # the verdict names them, on the stream and for the call
        assert {"kind": "foreign_packets", "packets": sent_foreign} in leg["verdict"]["problems"]
        (named,) = [p for p in sidecar["verdict"]["problems"] if p["kind"] == "foreign_packets"]
        assert named == {"kind": "foreign_packets", "streams": [0], "packets": sent_foreign}
        rate, audio = read_wav(Path(str(done["files"][0])))
        left = audio[:, 0]
        assert _spectrum_share(left, rate, 400, 480) > 0.5
        assert _spectrum_share(left, rate, 2900, 3100) < 1e-4
        call.close()
    finally:
        attacker.close()
        assert node.stop() == 0


@pytest.mark.parametrize("policy", ["strict", "signalling"])
def test_the_srcs_media_address_and_the_sip_peer(policy: str) -> None:
    """``strict`` takes only the SDP's address; ``signalling`` also the SIP peer's: an SDP
    naming another host (a NAT'd or split media interface) is recorded from the SIP peer then."""
    node = start_node(env={"SIPREC_MEDIA__SOURCE_CHECK": policy})
    try:
        call = RawSrc(node.sip_port)
        port = call.rtp.getsockname()[1]
        sdp = (
            "v=0\no=src 1 1 IN IP4 127.0.0.9\ns=-\nc=IN IP4 127.0.0.9\nt=0 0\n"
            f"m=audio {port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=label:1\na=sendonly\n"
        )
        status, reply = call.invite_raw(sdp)
        assert status == 200, reply
        _ack_final(call, status, reply)
        call.sip.sendto(call._request("ACK", cseq=1), ("127.0.0.1", node.sip_port))
        call.ports = [int(p) for p in re.findall(r"^m=audio (\d+)", reply, re.M)]
        call.stream([RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=7)], 0.5)  # from 127.0.0.1
        assert call.bye() == 200
        done = node.wait_for_event("recording_finalised", call_id=call.call_id, timeout=20)
        leg = json.loads(Path(str(done["sidecar"])).read_text())["streams"][0]
        if policy == "strict":
            assert (leg["packets"], leg["foreign_packets"]) == (0, 25)
        else:
            assert (leg["packets"], leg["foreign_packets"]) == (25, 0)
        call.close()
    finally:
        assert node.stop() == 0


# ------------------------------------------------------------------------- timestamp leaps


def test_timestamps_leaping_ahead_do_not_inflate_the_recording() -> None:
    node = start_node()
    try:
        call = SrcCall(node.sip_port)
        call.invite()
        leaping = RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x1EAF, step=int(0.9 * RATE))
        steady = RtpLeg(0, ulaw_encode(tone(1000, 1.0)), ssrc=0x57EAD)
        call.stream([leaping, steady], 10.0)
        assert call.bye() == 200
        done = node.wait_for_event("recording_finalised", call_id=call.call_id, timeout=30)
        sidecar = json.loads(Path(str(done["sidecar"])).read_text())
        path = Path(str(done["files"][0]))
        rate, audio = read_wav(path)
        seconds = len(audio) / rate
        assert seconds == pytest.approx(sidecar["duration_s"], rel=0.1)
        assert seconds == pytest.approx(10.0, rel=0.1), seconds
        bitrate = rate * 2 * audio.shape[1]  # PCM16
        assert path.stat().st_size == pytest.approx(10.0 * bitrate, rel=0.1)
        call.close()
    finally:
        assert node.stop() == 0


# ------------------------------------------------------------------ a burst of call endings


def test_a_drain_of_300_live_calls_closes_every_recording_with_its_statistics() -> None:
    low = free_port((socket.SOCK_DGRAM,)) // 2 * 2
    low = min(low, 65535 - 2000)
    node = start_node(
        env={
            "SIPREC_MEDIA__PORT_MIN": str(low),
            "SIPREC_MEDIA__PORT_MAX": str(low + 1999),
            # one SRC sets up all 300 calls as fast as the node answers (an SBC's burst)
            "SIPREC_SIP__INVITE_RATE_PER_SOURCE": "0",
        }
    )
    calls: list[SrcCall] = []
    try:
        for _ in range(300):
            call = SrcCall(node.sip_port, call_id=f"{uuid.uuid4().hex}@drain.test")
            call.invite()
            call.sip.settimeout(0.001)
            calls.append(call)
        # a packet on every stream, so that each close has statistics to return
        for call in calls:
            for port, n in zip(call.ports, (1, 2), strict=True):
                header = struct.pack("!BBHII", 0x80, 0, 1, 160, 0xD0 + n)
                call.rtp.sendto(header + b"\xff" * 160, ("127.0.0.1", port))
        time.sleep(1.5)
        assert node.stop(timeout=240) == 0
        closed = node.events("media_closed")
        assert not node.events("media_close_failed")
        assert not node.events("media_worker_died")
        assert len(closed) == 300
        for line in closed:
            streams = line["streams"]
            assert sorted(streams) == ["0", "1"], line  # type: ignore[arg-type]
            assert all(s["packets"] == 1 for s in streams.values()), line  # type: ignore[union-attr]
        sidecars = list((node.workdir / "recordings").rglob("*.json"))
        sidecars = [p for p in sidecars if ".parts" not in str(p)]
        assert len(sidecars) == 300
        for path in sidecars:
            assert [s["packets"] for s in json.loads(path.read_text())["streams"]] == [1, 1]
    finally:
        for call in calls:
            call.close()
        node.stop()
