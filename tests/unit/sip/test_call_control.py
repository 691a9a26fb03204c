"""The call-control core on its own: no event loop, no sockets, no files, a fake clock.

The SRC is scripted in memory (``Dialogue`` of the driver tests' harness writes its requests);
the core is fed bytes, the clock and the outcome of the effects it asked for, as the driver
(``recorder.driver``) would feed it, and everything it sends and asks for is read back here.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from siprec_node.media.port_allocator import PortsExhausted
from siprec_node.sip.call import CallData, CallSnapshot, CallStatus
from siprec_node.sip.call_control import CallControl
from siprec_node.sip.calls import CallControlConfig, CallPhase, IllegalTransition
from siprec_node.sip.effects import (
    CallEnded,
    CloseMedia,
    DiscardMedia,
    Effect,
    Finalise,
    OpenMedia,
    ReopenMedia,
    SaveSnapshot,
    UpdateMedia,
)
from siprec_node.sip.message import SipRequest, SipResponse, parse_message
from siprec_node.sip.transaction import TimerConfig

from .test_handler_dialog import cancel_for
from .test_handler_harness import (
    SBC,
    T1,
    T2,
    Dialogue,
    SdpView,
    audio_m_line,
    multipart,
    sdp,
    two_stream_sdp,
)

START = 5000.0


class FakePorts:
    """The core's ``PortPool`` as numbers only (the driver's binds sockets)."""

    def __init__(self, first: int = 31000, count: int = 40) -> None:
        self.free = list(range(first, first + 2 * count, 2))
        self.held: set[int] = set()
        self.reclaimed: list[int] = []

    def reserve(self, now: float) -> int:
        if not self.free:
            raise PortsExhausted("no port left")
        port = self.free.pop(0)
        self.held.add(port)
        return port

    def release(self, ports: list[int], now: float) -> None:
        for port in ports:
            if port in self.held:
                self.held.discard(port)
                self.free.append(port)

    def reclaim(self, port: int) -> bool:
        self.reclaimed.append(port)
        self.held.add(port)
        return True


class Core:
    """A CallControl with a fake clock, collecting what it sends and the effects it asks for."""

    def __init__(self, **overrides: object) -> None:
        self.now = START
        self.ports = FakePorts()
        options: dict[str, object] = {
            "node_id": "core-test",
            "advertise_host": "127.0.0.1",
            "media_advertise_host": "127.0.0.1",
            "timers": TimerConfig(t1=T1, t2=T2, t4=5.0),
            "recording_dir": "/nonexistent/recordings",  # nothing is ever written by the core
        }
        options.update(overrides)
        self.core = CallControl(
            CallControlConfig(**options),  # type: ignore[arg-type]
            self.ports,
            local_address=lambda peer: "127.0.0.1",
        )
        self.core.addressing.set_listener("udp", "127.0.0.1", 5060)
        self.effects: list[Effect] = []

    def take(self) -> list[SipResponse | SipRequest]:
        """What the core sent since the last call; its effects go to ``self.effects``."""
        sent = [parse_message(data) for data, _ in self.core.datagrams_to_send()]
        while (effect := self.core.next_effect()) is not None:
            self.effects.append(effect)
        return sent

    def feed(self, data: bytes) -> list[SipResponse | SipRequest]:
        self.core.receive(data, SBC, self.now)
        return self.take()

    def advance(self, seconds: float) -> list[SipResponse | SipRequest]:
        """Move the clock, firing every timer due on the way at its deadline."""
        target = self.now + seconds
        sent: list[SipResponse | SipRequest] = []
        while (deadline := self.core.next_timer()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
            sent += self.take()
        self.now = target
        return sent

    def effects_of(self, kind: type[Effect]) -> list[Effect]:
        found = [e for e in self.effects if isinstance(e, kind)]
        self.effects = [e for e in self.effects if not isinstance(e, kind)]
        return found

    def open_media(self, effect: OpenMedia) -> list[SipResponse | SipRequest]:
        """What the driver does with an OpenMedia that works: streams open, result fed back."""
        effect.state.engaged = True
        for stream in effect.streams:
            effect.state.open[stream.index] = False
        self.core.media_opened(effect.session_id, self.now)
        return self.take()

    def offered(self, dialogue: Dialogue, invite: bytes | None = None) -> OpenMedia:
        sent = self.feed(invite or dialogue.siprec_invite())
        assert statuses(sent) == [100]
        (effect,) = self.effects_of(OpenMedia)
        return effect  # type: ignore[return-value]

    def confirmed(self, call_id: str = "core-call@sbc") -> tuple[Dialogue, str]:
        """A call answered and acknowledged; its session id."""
        dialogue = Dialogue(call_id)
        effect = self.offered(dialogue)
        ok = self.open_media(effect)
        assert statuses(ok) == [200]
        dialogue.to_tag = ok[0].to.tag
        assert self.feed(dialogue.ack()) == []
        return dialogue, effect.session_id

    def snapshots(self, session_id: str) -> list[CallSnapshot]:
        return [
            e.data
            for e in self.effects_of(SaveSnapshot)
            if isinstance(e, SaveSnapshot) and e.data.session_id == session_id
        ]


def statuses(sent: list[SipResponse | SipRequest]) -> list[int]:
    return [m.status for m in sent if isinstance(m, SipResponse)]


def requests(sent: list[SipResponse | SipRequest]) -> list[SipRequest]:
    return [m for m in sent if isinstance(m, SipRequest)]


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The core opens no socket: any attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the call-control core opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    yield


# ---------------------------------------------------------------------------------------------
# INVITE → answer → ACK → BYE


def test_invite_is_answered_once_its_media_is_open() -> None:
    c = Core()
    dialogue = Dialogue("answer@sbc")
    effect = c.offered(dialogue)
    call = c.core.calls[effect.session_id]
    assert call.phase is CallPhase.OPENING_MEDIA
    assert [s.port for s in effect.streams] == sorted(c.ports.held)
    assert c.snapshots(effect.session_id)[-1].status == CallStatus.CONNECTING
    assert c.advance(0.2) == []  # no 200 until the driver says the streams are open
    ok = c.open_media(effect)
    assert statuses(ok) == [200]
    answer = SdpView.parse(ok[0].body)
    assert {answer.port(0), answer.port(1)} == c.ports.held
    assert call.phase is CallPhase.ANSWERED
    dialogue.to_tag = ok[0].to.tag
    assert c.feed(dialogue.ack()) == []
    assert call.phase is CallPhase.CONFIRMED
    assert c.snapshots(effect.session_id)[-1].status == CallStatus.ACTIVE


def test_bye_closes_the_media_then_finalises_then_stores_the_final_snapshot() -> None:
    c = Core()
    dialogue, session_id = c.confirmed("bye@sbc")
    c.effects.clear()
    assert statuses(c.feed(dialogue.bye())) == [200]
    assert c.core.calls == {} and c.ports.held == set()
    (ended,) = c.effects_of(CallEnded)
    assert isinstance(ended, CallEnded) and ended.status == CallStatus.ENDED
    (close,) = c.effects_of(CloseMedia)
    ending = c.snapshots(session_id)[-1]  # `finalising` until the recording is final
    assert (ending.status, ending.outcome) == (CallStatus.FINALISING, CallStatus.ENDED)
    c.core.media_closed(close.session_id)
    c.take()
    (finalise,) = c.effects_of(Finalise)
    assert isinstance(finalise, Finalise) and finalise.data.outcome == CallStatus.ENDED
    # what the driver's finalisation writes into the call's data when it succeeds
    finalise.data.verdict = {"status": "ok", "problems": []}
    finalise.data.status, finalise.data.outcome = CallStatus.ENDED, None
    c.core.finalised(session_id)
    c.take()
    (last,) = c.snapshots(session_id)
    assert last.status == CallStatus.ENDED
    assert last.verdict == {"status": "ok", "problems": []}
    assert c.effects == []


def test_media_failing_to_open_answers_503_and_fails_the_call() -> None:
    c = Core()
    effect = c.offered(Dialogue("fail@sbc"))
    c.core.media_failed(effect.session_id, OSError("no sockets"), c.now)
    sent = c.take()
    assert statuses(sent) == [503] and sent[0].reason == "Media Unavailable"
    assert c.core.calls == {} and c.ports.held == set()
    assert c.snapshots(effect.session_id)[-1].status == CallStatus.FAILED
    assert c.core.stats["calls_failed"] == 1


# ---------------------------------------------------------------------------------------------
# CANCEL racing the media opening


def test_cancel_while_the_media_opens_gets_487_and_the_late_open_changes_nothing() -> None:
    c = Core()
    dialogue = Dialogue("cancel@sbc")
    effect = c.offered(dialogue)
    assert statuses(c.feed(cancel_for(dialogue, dialogue.branches[0]))) == [200, 487]
    assert c.core.calls == {} and c.ports.held == set()
    assert effect.state.closed  # an open not yet started must not start
    assert c.effects_of(CloseMedia) == []  # the engine was never asked for anything
    c.core.media_opened(effect.session_id, c.now)  # the open finishing after the CANCEL
    assert c.take() == []
    assert c.snapshots(effect.session_id)[-1].end_reason == "cancelled before answer"


def test_cancel_after_the_engine_was_engaged_closes_and_discards_the_parts() -> None:
    c = Core()
    dialogue = Dialogue("cancel-engaged@sbc")
    effect = c.offered(dialogue)
    effect.state.engaged = True  # the driver started opening
    assert statuses(c.feed(cancel_for(dialogue, dialogue.branches[0]))) == [200, 487]
    (close,) = c.effects_of(CloseMedia)
    c.core.media_closed(close.session_id)
    c.take()
    assert [type(e) for e in c.effects_of(DiscardMedia)] == [DiscardMedia]
    assert c.effects_of(Finalise) == []  # never answered: nothing to finalise


# ---------------------------------------------------------------------------------------------
# re-INVITE, session timer


def test_reinvite_pausing_a_stream_is_answered_and_asks_for_a_media_update() -> None:
    c = Core()
    dialogue, session_id = c.confirmed("reinvite@sbc")
    ports = set(c.ports.held)
    c.effects.clear()
    held = sdp(audio_m_line(30000, "1", "inactive"), audio_m_line(30002, "2"), version=2)
    reinvite = dialogue.request(
        "INVITE",
        cseq=dialogue.next_cseq(),
        body=multipart(held),
        content_type=f"multipart/mixed;boundary={'siprec-boundary-77'}",
    )
    sent = c.feed(reinvite)
    assert statuses(sent) == [200]
    answer = SdpView.parse(sent[0].body)
    assert {answer.port(0), answer.port(1)} == ports  # same ports
    assert answer.direction(0) == "inactive"
    (update,) = c.effects_of(UpdateMedia)
    assert isinstance(update, UpdateMedia)
    assert [s.paused for s in update.streams] == [True, False]
    assert c.core.calls[session_id].phase is CallPhase.CONFIRMED


def test_session_refresh_we_were_asked_to_do_goes_at_half_the_interval() -> None:
    c = Core()
    dialogue = Dialogue("timer@sbc")
    invite = dialogue.siprec_invite(headers=[("Session-Expires", "120;refresher=uas")])
    effect = c.offered(dialogue, invite)
    ok = c.open_media(effect)
    assert ok[0].headers.get("Session-Expires") == "120;refresher=uas"
    dialogue.to_tag = ok[0].to.tag
    c.feed(dialogue.ack())
    assert c.advance(59.0) == []
    updates = requests(c.advance(1.0))
    assert [u.method for u in updates] == ["UPDATE"]
    assert updates[0].headers.get("Session-Expires") == "120;refresher=uas"
    assert c.core.next_timer() is not None and c.core.next_timer() <= c.now + 60.0  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# 2xx retransmission and ACK timeout


def test_unacknowledged_200_is_retransmitted_then_the_call_ends_with_a_bye() -> None:
    c = Core()
    dialogue = Dialogue("noack@sbc")
    effect = c.offered(dialogue)
    ok = c.open_media(effect)
    dialogue.to_tag = ok[0].to.tag
    sent = c.advance(T1)
    assert statuses(sent) == [200]  # Timer G: the 2xx again at T1
    sent = c.advance(2 * T1)
    assert statuses(sent) == [200]  # then at 2*T1
    sent = c.advance(64 * T1)  # Timer H: no ACK; the BYE goes (and is retransmitted)
    byes = requests(sent)
    assert {r.method for r in byes} == {"BYE"}
    assert len({r.headers.get("Via") for r in byes}) == 1  # one transaction
    assert c.core.calls == {}
    assert c.snapshots(effect.session_id)[-1].end_reason == "no ACK for the 200 OK"


# ---------------------------------------------------------------------------------------------
# drain


def test_drain_refuses_new_calls_and_ends_live_ones_each_as_its_state_allows() -> None:
    c = Core()
    c.confirmed("live@sbc")
    opening = c.offered(Dialogue("opening@sbc"))
    c.core.draining = True
    refused = c.feed(Dialogue("new@sbc").siprec_invite())
    assert statuses(refused) == [100, 503] and refused[1].reason == "Draining"
    assert c.core.end_all("recorder shutting down", c.now) == 2
    sent = c.take()
    assert [r.method for r in requests(sent)] == ["BYE"]  # the confirmed call
    assert statuses(sent) == [480]  # the call whose media was opening
    assert c.core.calls == {} and c.ports.held == set()
    c.core.media_opened(opening.session_id, c.now)
    assert c.take() == []


# ---------------------------------------------------------------------------------------------
# overload: sip.max_answer_delay


def test_invites_get_503_overloaded_while_an_accepted_call_waits_too_long_for_its_media() -> None:
    c = Core(max_answer_delay=1.0)
    slow = c.offered(Dialogue("slow@sbc"))
    c.advance(0.9)
    assert c.core.opening.oldest_wait(c.now) == pytest.approx(0.9)
    quick = c.offered(Dialogue("within@sbc"))  # the oldest has waited 0.9 s: still accepted
    c.advance(0.2)
    with capture_logs() as logs:
        refused = [c.feed(Dialogue(f"{i}-refused@sbc").siprec_invite()) for i in range(3)]
        finals = [sent[-1] for sent in refused]
        assert [(m.status, m.reason) for m in finals] == [(503, "Overloaded")] * 3
        assert {m.headers.get("Retry-After") for m in finals} == {"2"}  # 1.1 s waited
        assert c.effects_of(OpenMedia) == []  # nothing bound, nothing asked of the engine
        assert c.core.stats["refused_overloaded"] == 3
        assert len(c.core.calls) == 2
        assert statuses(c.open_media(slow)) == [200]  # the accepted calls are still answered
        assert c.core.opening.oldest_wait(c.now) == pytest.approx(0.2)  # now `quick` is oldest
        c.offered(Dialogue("after@sbc"))
    events = [(line["event"], line["log_level"]) for line in logs if "overload" in line["event"]]
    assert events == [("overloaded", "warning"), ("overload_ended", "info")]
    started, ended = (line for line in logs if "overload" in line["event"])
    assert started["waited_s"] == pytest.approx(1.1) and started["waiting"] == 2
    assert started["setting"] == "sip.max_answer_delay"
    assert ended["refused"] == 3
    assert statuses(c.open_media(quick)) == [200]


def test_a_call_that_ends_before_its_media_opens_leaves_the_backlog() -> None:
    c = Core(max_answer_delay=1.0)
    cancelled = Dialogue("cancelled@sbc")
    c.offered(cancelled)
    failed = c.offered(Dialogue("failed@sbc"))
    c.advance(5.0)
    assert statuses(c.feed(cancel_for(cancelled, cancelled.branches[0]))) == [200, 487]
    c.core.media_failed(failed.session_id, OSError("no sockets"), c.now)
    assert statuses(c.take()) == [503]
    assert len(c.core.opening) == 0 and c.core.opening.oldest_wait(c.now) == 0.0
    c.offered(Dialogue("next@sbc"))  # accepted: nothing is waiting any more
    assert c.core.stats["refused_overloaded"] == 0


def test_max_answer_delay_zero_never_refuses() -> None:
    c = Core(max_answer_delay=0.0)
    c.offered(Dialogue("waiting@sbc"))
    c.advance(60.0)
    c.offered(Dialogue("still-accepted@sbc"))
    assert c.core.stats["refused_overloaded"] == 0


# ---------------------------------------------------------------------------------------------
# restart recovery from a snapshot


def test_a_restarted_core_takes_a_confirmed_call_back_from_its_snapshot() -> None:
    first = Core()
    dialogue, session_id = first.confirmed("restart@sbc")
    stored = CallData.from_snapshot(first.snapshots(session_id)[-1])  # as the store gives it
    ports = sorted(first.ports.held)
    second = Core()
    call = second.core.restore(stored, second.now)
    assert call is not None and call.phase is CallPhase.CONFIRMED
    assert sorted(second.ports.reclaimed) == ports
    second.take()
    (reopen,) = second.effects_of(ReopenMedia)
    assert isinstance(reopen, ReopenMedia) and reopen.session_id == session_id
    assert second.snapshots(session_id)[-1].recoveries == 1
    assert statuses(second.feed(dialogue.bye())) == [200]  # answered from the restored dialog
    assert second.core.calls == {}


def test_a_snapshot_taken_before_the_answer_is_closed_as_failed() -> None:
    first = Core()
    effect = first.offered(Dialogue("early@sbc"))
    stored = CallData.from_snapshot(first.snapshots(effect.session_id)[-1])
    second = Core()
    assert second.core.restore(stored, second.now) is None
    second.take()
    assert len(second.effects_of(DiscardMedia)) == 1
    assert second.snapshots(effect.session_id)[-1].status == CallStatus.FAILED
    assert second.core.calls == {}


def test_unknown_dialogs_get_503_while_recovering_and_481_after() -> None:
    c = Core()
    stray = Dialogue("stray@sbc", to_tag="not-ours")
    c.core.recovering = True
    assert statuses(c.feed(stray.bye())) == [503]
    c.core.recovering = False
    assert statuses(c.feed(stray.bye())) == [481]


# ---------------------------------------------------------------------------------------------
# the lifecycle table


def test_the_lifecycle_table_refuses_moves_it_does_not_list() -> None:
    c = Core()
    _, session_id = c.confirmed("table@sbc")
    call = c.core.calls[session_id]
    with pytest.raises(IllegalTransition):
        call.advance(CallPhase.OPENING_MEDIA)
    call.advance(CallPhase.ENDED)
    with pytest.raises(IllegalTransition):
        call.advance(CallPhase.FAILED)


def test_two_calls_from_one_src_get_their_own_ports_and_dialogs() -> None:
    c = Core()
    first, one = c.confirmed("one@sbc")
    second, two = c.confirmed("two@sbc")
    assert first.to_tag != second.to_tag
    assert not set(c.core.calls[one].ports) & set(c.core.calls[two].ports)
    assert statuses(c.feed(first.bye())) == [200]
    assert list(c.core.calls) == [two]


def test_out_of_ports_is_503_with_nothing_left_taken() -> None:
    c = Core()
    c.ports.free = []
    sent = c.feed(Dialogue("ports@sbc").siprec_invite(body=multipart(two_stream_sdp())))
    assert statuses(sent) == [100, 503] and sent[1].reason == "No Media Ports"
    assert c.ports.held == set() and c.core.calls == {}
