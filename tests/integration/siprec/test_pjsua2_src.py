"""pjsua2 (pjproject's SIP stack, independent of ours) as the recording client (SRC).

It places a SIPREC call the way an SBC does: ``Require: siprec``, a Contact with ``+sip.src``, a
multipart body holding pjsua's own SDP (two audio streams, made sendonly and labelled) and RFC
7865 metadata; then pauses both streams (re-INVITE, ``a=inactive``), resumes, and hangs up.

What pjsua2 needed, and why:
- Two m-lines: ``CallSetting.audioCount = 2``; pjsua generates the SDP itself.
- sendonly / inactive: ``PJSUA_CALL_SET_MEDIA_DIR`` with ``CallSetting.mediaDir`` (one entry per
  audio stream, ``PJMEDIA_DIR_ENCODING`` = sendonly, ``PJMEDIA_DIR_NONE`` = inactive). The
  directions persist across offers, so every ``reinvite`` states them again (and the
  ``audioCount``: a CallSetting left at its default of one stream would drop the second).
- ``a=label``: pjsua has no setting for it. ``Call.onCallSdpCreated`` may rewrite
  ``prm.sdp.wholeSdp`` (pjsua2 re-parses it when it changed), but pjsua2 prints the SDP into a
  1024-byte buffer first and hands an EMPTY string when it does not fit: with pjsua's default
  codec list, two audio streams overflow it. So every codec but PCMU and PCMA is disabled
  (``codecSetPriority(id, 0)``), which keeps the SDP near 600 bytes.
- The body: ``SipTxOption.multipartContentType`` + ``multipartParts``; pjsua adds its SDP as a
  further part of that multipart body.
- Threads: ``uaConfig.threadCnt = 0`` and ``mainThreadOnly``: every callback runs in this thread,
  inside ``libHandleEvents``, which the test polls. ``setNullDev()``: no sound card.
- The node's 200 is not exposed by pjsua2's call API: ``onCallTsxState`` gives the received
  message text (``rdata.wholeMsg``) of each transaction's final response.
- Teardown order matters: a ``Call`` still alive at ``libDestroy`` aborts the process (its
  destructor asserts on the call id), so the call object is dropped first.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pjsua2 as pj  # pjsua2-python, installed by the test extras
import pytest

from tests.integration.node_process import free_port
from tests.integration.siprec.harness import Recorder, Sdp, SipMessage

pytestmark = pytest.mark.integration

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="pj-cs-1">
    <sipSessionID>pj-0c1e5a;remote=pj-9d22b7</sipSessionID>
  </session>
  <participant participant_id="pj-alice">
    <nameID aor="sip:alice@pj.example.com"><name xml:lang="en">Alice Pjsua</name></nameID>
  </participant>
  <participant participant_id="pj-bob">
    <nameID aor="sip:bob@pj.example.com"><name xml:lang="en">Bob Pjsua</name></nameID>
  </participant>
  <stream stream_id="pj-st-1" session_id="pj-cs-1"><label>1</label></stream>
  <stream stream_id="pj-st-2" session_id="pj-cs-1"><label>2</label></stream>
  <participantstreamassoc participant_id="pj-alice"><send>pj-st-1</send></participantstreamassoc>
  <participantstreamassoc participant_id="pj-bob"><send>pj-st-2</send></participantstreamassoc>
</recording>
"""


def label_streams(sdp: str) -> str:
    """Add ``a=label:N`` at the end of the N-th audio m-section (pjsua has no setting for it)."""
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            sections.append([])
        if line:
            sections[-1].append(line)
    audio = 0
    for section in sections[1:]:
        if section[0].startswith("m=audio"):
            audio += 1
            if not any(line.startswith("a=label:") for line in section):
                section.append(f"a=label:{audio}")
    return "".join(f"{line}\r\n" for section in sections for line in section)


class SrcCall(pj.Call):  # type: ignore[misc, name-defined]
    """A pjsua2 call that labels its streams and keeps what it saw."""

    def __init__(self, account: Any) -> None:
        super().__init__(account)
        self.states: list[str] = []
        self.offers: list[str] = []
        self.final_responses: list[SipMessage] = []

    def onCallState(self, prm: Any) -> None:
        self.states.append(self.getInfo().stateText)

    def onCallSdpCreated(self, prm: Any) -> None:
        original = prm.sdp.wholeSdp
        if not original:  # printing overflowed pjsua2's buffer: nothing we can edit
            self.offers.append("")
            return
        prm.sdp.wholeSdp = label_streams(original)
        self.offers.append(prm.sdp.wholeSdp)

    def onCallTsxState(self, prm: Any) -> None:
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = event.body.tsxState.tsx
        if event.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG or tsx.statusCode < 200:
            return
        text = event.body.tsxState.src.rdata.wholeMsg
        if text:
            self.final_responses.append(SipMessage.parse("received", text))


class PjsuaSrc:
    """One pjsua2 endpoint (UDP, null audio device) with an account that acts as the SRC."""

    def __init__(self) -> None:
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = True
        config.uaConfig.maxCalls = 4
        config.logConfig.level = 1
        config.logConfig.consoleLevel = 1
        self.ep.libInit(config)
        self.ep.audDevManager().setNullDev()
        transport = pj.TransportConfig()
        transport.port = free_port()
        transport.boundAddress = "127.0.0.1"
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        self.ep.libStart()
        for codec in self.ep.codecEnum2():
            keep = codec.codecId.startswith(("PCMU/", "PCMA/"))
            self.ep.codecSetPriority(codec.codecId, 200 if keep else 0)
        account = pj.AccountConfig()
        account.idUri = f"sip:pjsua-src@127.0.0.1:{transport.port}"
        account.sipConfig.contactParams = ";+sip.src"
        account.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        account.mediaConfig.transportConfig.port = free_port()
        self.account = pj.Account()
        self.account.create(account)
        self.call: SrcCall | None = None

    def poll_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("pjsua2: timed out waiting")
            self.ep.libHandleEvents(10)

    def close(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            if call.isActive():
                call.hangup(pj.CallOpParam())
                self.poll_until(lambda: "DISCONNECTED" in call.states, 3)
            gc.collect()
            if sys.getrefcount(call) > 2:
                # Still referenced (a failed test's traceback holds its frame): its C++
                # destructor would run after libDestroy and abort the process. Leak it instead.
                call.thisown = False
            del call
        gc.collect()
        self.account.shutdown()
        self.ep.libDestroy()


def call_setting(prm: Any, direction: int) -> None:
    """Two audio streams, both in ``direction`` (restated at every offer)."""
    prm.opt.audioCount = 2
    prm.opt.videoCount = 0
    prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
    prm.opt.mediaDir = pj.IntVector([direction, direction])


def siprec_invite_options(prm: Any) -> None:
    require = pj.SipHeader()
    require.hName, require.hValue = "Require", "siprec"
    prm.txOption.headers.append(require)
    multipart = pj.SipMediaType()
    multipart.type, multipart.subType = "multipart", "mixed"
    prm.txOption.multipartContentType = multipart
    part = pj.SipMultipartPart()
    part_type = pj.SipMediaType()
    part_type.type, part_type.subType = "application", "rs-metadata+xml"
    part.contentType = part_type
    disposition = pj.SipHeader()
    disposition.hName, disposition.hValue = "Content-Disposition", "recording-session"
    part.headers.append(disposition)
    part.body = METADATA
    prm.txOption.multipartParts.append(part)


@pytest.fixture
def src() -> Iterator[PjsuaSrc]:
    client = PjsuaSrc()
    try:
        yield client
    finally:
        client.close()


def test_pjsua2_records_pauses_resumes_and_hangs_up(recorder: Recorder, src: PjsuaSrc) -> None:
    call = src.call = SrcCall(src.account)
    prm = pj.CallOpParam(True)
    call_setting(prm, pj.PJMEDIA_DIR_ENCODING)
    siprec_invite_options(prm)
    call.makeCall(f"sip:srs@127.0.0.1:{recorder.sip_port}", prm)
    src.poll_until(lambda: "CONFIRMED" in call.states or "DISCONNECTED" in call.states)
    assert call.states[-1] == "CONFIRMED", (call.states, call.final_responses)
    call_id = call.getInfo().callIdString

    # what pjsua offered, after our edit
    offer = Sdp.parse(call.offers[0])
    assert [(m.label, m.direction) for m in offer.media] == [("1", "sendonly"), ("2", "sendonly")]

    # the node's 200: two recvonly m-lines, labels echoed
    ok = call.final_responses[0]
    assert ok.status == 200 and ok.method == "INVITE", ok.start_line
    assert "+sip.srs" in (ok.header("Contact") or "")
    answer = ok.sdp
    assert [(m.label, m.direction) for m in answer.media] == [("1", "recvonly"), ("2", "recvonly")]
    assert all(m.port > 0 for m in answer.media)
    ports = [m.port for m in answer.media]

    offered = recorder.wait_for_event("call_offered", call_id=call_id)
    assert offered["siprec"] is True
    assert [(s["label"], s["port"], s["direction"]) for s in offered["streams"]] == [
        ("1", ports[0], "recvonly"),
        ("2", ports[1], "recvonly"),
    ]
    recorder.wait_for_event("call_active", call_id=call_id)
    session = recorder.session(call_id)
    assert [(p["id"], p["name"], p["aor"]) for p in session["participants"]] == [
        ("pj-alice", "Alice Pjsua", "sip:alice@pj.example.com"),
        ("pj-bob", "Bob Pjsua", "sip:bob@pj.example.com"),
    ]
    # pjsua sends its RTP where the node said
    for index, port in enumerate(ports):
        assert call.getStreamInfo(index).remoteRtpAddress.endswith(f":{port}")

    # pause: re-INVITE with both streams inactive
    pause = pj.CallOpParam(True)
    call_setting(pause, pj.PJMEDIA_DIR_NONE)
    call.reinvite(pause)
    paused = recorder.wait_for_event("call_updated", call_id=call_id)
    assert sorted(paused["changes"]) == ["stream 1 paused", "stream 2 paused"]
    assert [s["direction"] for s in paused["streams"]] == ["inactive", "inactive"]
    assert [s["port"] for s in paused["streams"]] == ports
    src.poll_until(lambda: len(call.final_responses) >= 2)
    assert [(m.label, m.direction) for m in Sdp.parse(call.offers[1]).media] == [
        ("1", "inactive"),
        ("2", "inactive"),
    ]
    answer = call.final_responses[1].sdp
    assert [(m.label, m.direction, m.port) for m in answer.media] == [
        ("1", "inactive", ports[0]),
        ("2", "inactive", ports[1]),
    ]

    # resume: sendonly again
    resume = pj.CallOpParam(True)
    call_setting(resume, pj.PJMEDIA_DIR_ENCODING)
    call.reinvite(resume)
    resumed = recorder.wait_for_event("call_updated", call_id=call_id, skip=1)
    assert sorted(resumed["changes"]) == ["stream 1 resumed", "stream 2 resumed"]
    assert [s["direction"] for s in resumed["streams"]] == ["recvonly", "recvonly"]
    src.poll_until(lambda: len(call.final_responses) >= 3)
    answer = call.final_responses[2].sdp
    assert [(m.label, m.direction, m.port) for m in answer.media] == [
        ("1", "recvonly", ports[0]),
        ("2", "recvonly", ports[1]),
    ]

    # hang up: BYE, recording ended (pjsua2 forgets the call at DISCONNECTED, before the BYE's
    # 200 arrives: onCallTsxState never shows it, the node's log does)
    call.hangup(pj.CallOpParam())
    src.poll_until(lambda: "DISCONNECTED" in call.states)
    ended = recorder.wait_for_event("call_ended", call_id=call_id)
    assert ended["status"] == "ended"
    assert ended["reason"] == "BYE from SRC"
