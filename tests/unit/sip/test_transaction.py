"""Transaction layer: server INVITE / non-INVITE, client non-INVITE, timers on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_node.sip.message import Headers, SipRequest, SipResponse, Via, make_response
from siprec_node.sip.transaction import (
    AckReceived,
    AckTimeout,
    Address,
    CancelReceived,
    ClientTimeout,
    Event,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionError,
    TransactionKey,
    TransactionLayer,
    TransactionState,
    TransactionTimeout,
    UnknownTransaction,
    new_branch,
    new_call_id,
    new_tag,
    response_destination,
    stamp_via,
    transaction_key,
)

UDP = Address("udp", "192.0.2.10", 5060)
TCP = Address("tcp", "192.0.2.10", 40312, connection_id=7)
SRS = Address("udp", "198.51.100.1", 5060)
T1, T2, T4 = 0.5, 4.0, 5.0
TAG = "srs-tag"


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKinv1",
    cseq: int = 1,
    call_id: str = "call-1",
    from_tag: str | None = "src-tag",
    to_tag: str | None = None,
    from_display: str | None = None,
    via: str = "192.0.2.10:5060",
    via_transport: str = "UDP",
    uri: str = "sip:srs@198.51.100.1",
) -> SipRequest:
    """A minimal request as an SRC would send it."""
    via_value = f"SIP/2.0/{via_transport} {via}" + (f";branch={branch}" if branch else "")
    display = f'"{from_display}" ' if from_display else ""
    from_value = f"{display}<sip:src@192.0.2.10>" + (f";tag={from_tag}" if from_tag else "")
    to_value = "<sip:srs@198.51.100.1>" + (f";tag={to_tag}" if to_tag else "")
    headers = Headers.of(
        [
            ("Via", via_value),
            ("Max-Forwards", "70"),
            ("From", from_value),
            ("To", to_value),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", "<sip:src@192.0.2.10:5060>"),
        ]
    )
    return SipRequest(method, uri, headers)


def ack_for(invite: SipRequest, response: SipResponse, **kwargs: object) -> SipRequest:
    """The ACK a UAC sends: same branch for a non-2xx, a new one for a 2xx."""
    params: dict[str, object] = {
        "branch": invite.top_via.branch if response.status >= 300 else new_branch(),
        "cseq": invite.cseq.number,
        "call_id": invite.call_id,
        "from_tag": invite.from_.tag,
        "to_tag": response.to.tag,
    }
    params.update(kwargs)
    return request("ACK", **params)  # type: ignore[arg-type]


class Clock:
    """Drives a layer's timers like an event loop would, recording what is sent when."""

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.now = 0.0
        self.sent: list[tuple[float, Outgoing]] = []
        self.events: list[Event] = []

    def drain(self) -> list[Outgoing]:
        out = self.layer.datagrams_to_send()
        self.sent.extend((self.now, o) for o in out)
        return out

    def advance(self, until: float) -> list[Event]:
        """Fire every timer up to ``until`` at its exact deadline."""
        events: list[Event] = []
        while (deadline := self.layer.next_timer()) is not None and deadline <= until:
            self.now = deadline
            events.extend(self.layer.handle_timer(deadline))
            self.drain()
        self.now = until
        self.events.extend(events)
        return events

    def times(self) -> list[float]:
        return [t for t, _ in self.sent]


def new_layer(**kwargs: object) -> tuple[TransactionLayer, Clock]:
    layer = TransactionLayer(TimerConfig(T1, T2, T4), **kwargs)  # type: ignore[arg-type]
    return layer, Clock(layer)


def receive_invite(
    layer: TransactionLayer, source: Address = UDP, now: float = 0.0, **kwargs: object
) -> RequestReceived:
    [event] = layer.receive_request(request("INVITE", **kwargs), source, now)  # type: ignore[arg-type]
    assert isinstance(event, RequestReceived)
    return event


def answer(layer: TransactionLayer, event: RequestReceived, status: int, now: float) -> SipResponse:
    response = make_response(event.request, status, to_tag=TAG)
    layer.send_response(event.key, response, now)
    return response


# ---------------------------------------------------------------- INVITE server, 2xx / Accepted


def test_new_invite_is_reported_once_with_its_key() -> None:
    layer, _ = new_layer()
    event = receive_invite(layer)
    assert event.source == UDP
    assert event.key == TransactionKey("INVITE", "z9hG4bKinv1", "192.0.2.10:5060")
    assert layer.get_state(event.key) is TransactionState.PROCEEDING
    assert layer.get_request(event.key).call_id == "call-1"
    assert event.key in layer
    assert len(layer) == 1


def test_2xx_retransmitted_at_t1_doubling_capped_at_t2_until_ack() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    response = answer(layer, event, 200, 0.0)
    clock.drain()
    assert layer.get_state(event.key) is TransactionState.ACCEPTED
    clock.advance(20.0)
    assert clock.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
    assert {o.data for _, o in clock.sent} == {response.serialize()}
    assert {o.destination for _, o in clock.sent} == {UDP}

    ack = ack_for(event.request, response)
    events = layer.receive_request(ack, UDP, 20.0)
    assert events == [AckReceived(ack, UDP, event.key, lenient=False)]
    clock.sent.clear()
    assert clock.advance(100.0) == []
    assert clock.sent == []  # no more retransmissions; Timer L removed it silently
    assert len(layer) == 0
    assert layer.next_timer() is None


def test_2xx_without_ack_ends_with_ack_timeout_at_64_t1() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    response = answer(layer, event, 200, 0.0)
    clock.drain()
    events = clock.advance(100.0)
    assert events == [AckTimeout(event.key, response)]
    assert clock.now == 100.0
    retransmissions = clock.times()[1:]
    assert retransmissions == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(layer) == 0
    assert layer.get_state(event.key) is None


def test_ack_timeout_fires_at_timer_l_exactly() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    answer(layer, event, 200, 1.0)
    assert clock.advance(32.99) == []
    assert [type(e) for e in clock.advance(33.0)] == [AckTimeout]


def test_2xx_over_tcp_is_not_retransmitted_but_still_times_out() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer, TCP, via_transport="TCP")
    response = answer(layer, event, 200, 0.0)
    [out] = clock.drain()
    assert out.destination == TCP  # same connection
    assert clock.advance(31.9) == []
    assert clock.sent == [(0.0, out)]
    assert clock.advance(40.0) == [AckTimeout(event.key, response)]
    assert len(layer) == 0


def test_2xx_over_tcp_acked() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer, TCP, via_transport="TCP")
    response = answer(layer, event, 200, 0.0)
    [ack_event] = layer.receive_request(ack_for(event.request, response), TCP, 0.1)
    assert isinstance(ack_event, AckReceived) and ack_event.key == event.key
    assert clock.advance(100.0) == []
    assert len(layer) == 0


def test_invite_retransmission_answered_from_the_transaction() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    invite = request("INVITE")
    ringing = answer(layer, event, 180, 0.0)
    clock.drain()
    assert layer.receive_request(invite, UDP, 0.4) == []
    assert [o.data for o in clock.drain()] == [ringing.serialize()]

    ok = answer(layer, event, 200, 1.0)
    clock.drain()
    assert layer.receive_request(invite, UDP, 1.1) == []  # absorbed in Accepted, 2xx re-sent
    assert [o.data for o in clock.drain()] == [ok.serialize()]

    layer.receive_request(ack_for(invite, ok), UDP, 1.2)
    assert layer.receive_request(invite, UDP, 1.3) == []  # acknowledged: just absorbed
    assert clock.drain() == []


def test_retransmission_before_any_response_is_absorbed() -> None:
    layer, clock = new_layer(trying_delay=None)
    receive_invite(layer)
    assert layer.receive_request(request("INVITE"), UDP, 0.1) == []
    assert layer.receive_request(request("INVITE"), UDP, 0.6) == []
    assert clock.drain() == []
    assert len(layer) == 1


def test_automatic_100_trying_after_200_ms() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    assert layer.next_timer() == pytest.approx(0.2)
    assert clock.advance(0.2) == []
    [(sent_at, out)] = clock.sent
    assert sent_at == pytest.approx(0.2)
    assert out.data.startswith(b"SIP/2.0 100 Trying\r\n")
    assert layer.get_state(event.key) is TransactionState.PROCEEDING
    # a retransmission is answered with the 100; the TU can still answer normally
    layer.receive_request(request("INVITE"), UDP, 0.5)
    assert clock.drain()[0].data == out.data
    answer(layer, event, 200, 0.6)


def test_no_automatic_100_when_the_tu_answers_first() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    layer.send_response(event.key, make_response(event.request, 100), 0.01)
    clock.drain()
    clock.advance(0.3)
    assert len(clock.sent) == 1


def test_no_automatic_100_when_disabled() -> None:
    layer, clock = new_layer(trying_delay=None)
    receive_invite(layer)
    assert layer.next_timer() is None
    clock.advance(1.0)
    assert clock.sent == []


# ---------------------------------------------------------------- INVITE server, non-2xx


def test_non_2xx_retransmitted_on_timer_g_and_ack_absorbed_then_timer_i() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    busy = answer(layer, event, 486, 0.0)
    clock.drain()
    assert layer.get_state(event.key) is TransactionState.COMPLETED
    clock.advance(4.0)
    assert clock.times() == [0.0, 0.5, 1.5, 3.5]

    assert layer.receive_request(ack_for(event.request, busy), UDP, 4.0) == []
    assert layer.get_state(event.key) is TransactionState.CONFIRMED
    # retransmitted ACKs and INVITEs are absorbed in Confirmed
    assert layer.receive_request(ack_for(event.request, busy), UDP, 4.1) == []
    assert layer.receive_request(event.request, UDP, 4.2) == []
    assert clock.drain() == []
    assert layer.next_timer() == pytest.approx(4.0 + T4)  # Timer I
    assert clock.advance(100.0) == []
    assert clock.times() == [0.0, 0.5, 1.5, 3.5]
    assert len(layer) == 0


def test_non_2xx_ack_over_tcp_terminates_at_once() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer, TCP, via_transport="TCP")
    busy = answer(layer, event, 486, 0.0)
    clock.drain()
    clock.advance(10.0)
    assert clock.times() == [0.0]  # no Timer G on reliable transports
    layer.receive_request(ack_for(event.request, busy), TCP, 10.0)
    assert len(layer) == 0  # Timer I = 0 on reliable transports


def test_non_2xx_without_ack_times_out_on_timer_h() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    busy = answer(layer, event, 486, 0.0)
    assert clock.advance(100.0) == [TransactionTimeout(event.key, busy)]
    assert len(layer) == 0


def test_non_2xx_retransmission_answered() -> None:
    layer, clock = new_layer()
    event = receive_invite(layer)
    busy = answer(layer, event, 486, 0.0)
    clock.drain()
    layer.receive_request(request("INVITE"), UDP, 0.2)
    assert [o.data for o in clock.drain()] == [busy.serialize()]


# ---------------------------------------------------------------- non-INVITE server


def test_non_invite_completed_then_timer_j() -> None:
    layer, clock = new_layer()
    [event] = layer.receive_request(request("BYE", to_tag=TAG, cseq=2), UDP, 0.0)
    assert isinstance(event, RequestReceived)
    assert layer.get_state(event.key) is TransactionState.TRYING
    # a retransmission in Trying is absorbed
    assert layer.receive_request(request("BYE", to_tag=TAG, cseq=2), UDP, 0.1) == []
    assert clock.drain() == []
    ok = make_response(event.request, 200)
    layer.send_response(event.key, ok, 0.2)
    assert layer.get_state(event.key) is TransactionState.COMPLETED
    clock.drain()
    # a retransmission in Completed is answered with the last response; no timer retransmits
    assert layer.receive_request(request("BYE", to_tag=TAG, cseq=2), UDP, 1.0) == []
    assert [o.data for o in clock.drain()] == [ok.serialize()]
    assert layer.next_timer() == pytest.approx(0.2 + 64 * T1)
    clock.advance(100.0)
    assert len(clock.sent) == 2  # the 200 and its copy for the retransmitted BYE
    assert len(layer) == 0


def test_non_invite_proceeding_answers_retransmissions_with_the_provisional() -> None:
    layer, clock = new_layer()
    [event] = layer.receive_request(request("INFO", to_tag=TAG, cseq=2), UDP, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.key, make_response(event.request, 100), 0.0)
    assert layer.get_state(event.key) is TransactionState.PROCEEDING
    layer.receive_request(request("INFO", to_tag=TAG, cseq=2), UDP, 0.5)
    assert len(clock.drain()) == 2
    layer.send_response(event.key, make_response(event.request, 200), 1.0)
    clock.advance(100.0)
    assert len(layer) == 0


def test_non_invite_timer_j_is_zero_on_reliable_transports() -> None:
    layer, clock = new_layer()
    [event] = layer.receive_request(request("OPTIONS", via_transport="TCP"), TCP, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.key, make_response(event.request, 200), 0.0)
    [out] = clock.drain()
    assert out.destination == TCP
    assert len(layer) == 0
    assert layer.next_timer() is None


# ---------------------------------------------------------------- CANCEL


def test_cancel_matches_the_invite_and_the_tu_answers_both() -> None:
    layer, clock = new_layer()
    invite_event = receive_invite(layer)
    [event] = layer.receive_request(request("CANCEL"), UDP, 0.1)
    assert isinstance(event, CancelReceived)
    assert event.invite_key == invite_event.key
    assert event.key.method == "CANCEL" and event.key != invite_event.key
    assert layer.get_state(invite_event.key) is TransactionState.PROCEEDING
    layer.send_response(event.key, make_response(event.cancel, 200), 0.1)
    terminated = answer(layer, invite_event, 487, 0.1)
    # a retransmitted CANCEL is answered with the 200, not reported again
    clock.drain()
    assert layer.receive_request(request("CANCEL"), UDP, 0.2) == []
    assert clock.drain()[0].data.startswith(b"SIP/2.0 200 OK")
    layer.receive_request(ack_for(invite_event.request, terminated), UDP, 0.3)
    clock.advance(100.0)
    assert clock.events == []
    assert len(layer) == 0


def test_cancel_without_invite_has_no_invite_key() -> None:
    layer, clock = new_layer()
    [event] = layer.receive_request(request("CANCEL", branch="z9hG4bKother"), UDP, 0.0)
    assert isinstance(event, CancelReceived) and event.invite_key is None
    layer.send_response(event.key, make_response(event.cancel, 481), 0.0)
    clock.advance(100.0)
    assert len(layer) == 0


def test_cancel_from_another_sent_by_does_not_match() -> None:
    layer, _ = new_layer()
    receive_invite(layer)
    [event] = layer.receive_request(request("CANCEL", via="192.0.2.99:5060"), UDP, 0.0)
    assert isinstance(event, CancelReceived) and event.invite_key is None


@pytest.mark.parametrize("status", [200, 486])
def test_cancel_after_the_final_response_still_matches(status: int) -> None:
    layer, _ = new_layer()
    invite_event = receive_invite(layer)
    answer(layer, invite_event, status, 0.0)
    [event] = layer.receive_request(request("CANCEL"), UDP, 0.1)
    assert isinstance(event, CancelReceived)
    assert event.invite_key == invite_event.key
    # the TU sees the INVITE is already answered: 200 to the CANCEL, no 487
    assert layer.get_state(invite_event.key) in (
        TransactionState.ACCEPTED,
        TransactionState.COMPLETED,
    )
    with pytest.raises(TransactionError):
        answer(layer, invite_event, 487, 0.1)


# ---------------------------------------------------------------- ACK matching


def test_ack_matching_nothing_goes_to_the_tu() -> None:
    layer, _ = new_layer()
    ack = request("ACK", branch="z9hG4bKlost", to_tag=TAG)
    assert layer.receive_request(ack, UDP, 0.0) == [AckReceived(ack, UDP)]
    assert len(layer) == 0


def accepted(layer: TransactionLayer, **kwargs: object) -> tuple[RequestReceived, SipResponse]:
    event = receive_invite(layer, **kwargs)
    return event, answer(layer, event, 200, 0.0)


def test_ack_with_another_cseq_number_matches_leniently() -> None:
    layer, clock = new_layer()
    event, ok = accepted(layer)
    layer.datagrams_to_send()
    ack = ack_for(event.request, ok, cseq=7)
    [got] = layer.receive_request(ack, UDP, 0.2)
    assert got == AckReceived(ack, UDP, event.key, lenient=True)
    clock.advance(10.0)
    assert clock.sent == []  # retransmission stopped


def test_ack_without_to_tag_matches_leniently() -> None:
    layer, _ = new_layer()
    event, ok = accepted(layer)
    ack = ack_for(event.request, ok, to_tag=None)
    [got] = layer.receive_request(ack, UDP, 0.2)
    assert isinstance(got, AckReceived) and got.key == event.key and got.lenient


def test_ack_with_another_from_display_name_matches_leniently() -> None:
    layer, _ = new_layer()
    event, ok = accepted(layer, from_display="Alice")
    ack = ack_for(event.request, ok, from_display="alice@pbx")
    [got] = layer.receive_request(ack, UDP, 0.2)
    assert isinstance(got, AckReceived) and got.key == event.key and got.lenient


def test_ack_with_another_to_tag_does_not_match() -> None:
    layer, _ = new_layer()
    _, ok = accepted(layer)
    ack = ack_for(request(), ok, to_tag="someone-else")
    [got] = layer.receive_request(ack, UDP, 0.2)
    assert isinstance(got, AckReceived) and got.key is None


def test_ack_with_the_invite_branch_for_a_2xx_is_accepted() -> None:
    layer, _ = new_layer()
    event, ok = accepted(layer)
    ack = ack_for(event.request, ok, branch=event.request.top_via.branch)
    [got] = layer.receive_request(ack, UDP, 0.2)
    assert got == AckReceived(ack, UDP, event.key, lenient=False)


def test_ambiguous_lenient_ack_matches_nothing() -> None:
    layer, _ = new_layer()
    first, ok1 = accepted(layer, branch="z9hG4bKa", cseq=1)
    second = receive_invite(layer, branch="z9hG4bKb", cseq=2)
    layer.send_response(second.key, make_response(second.request, 200, to_tag=TAG), 0.0)
    ack = ack_for(first.request, ok1, cseq=9)
    [got] = layer.receive_request(ack, UDP, 0.2)
    assert isinstance(got, AckReceived) and got.key is None
    # an exact CSeq still picks the right one among several
    [got] = layer.receive_request(ack_for(first.request, ok1), UDP, 0.3)
    assert isinstance(got, AckReceived) and got.key == first.key and not got.lenient


def test_duplicate_ack_is_absorbed_while_accepted() -> None:
    layer, clock = new_layer()
    event, ok = accepted(layer)
    ack = ack_for(event.request, ok)
    assert len(layer.receive_request(ack, UDP, 0.1)) == 1
    assert layer.receive_request(ack, UDP, 0.6) == []
    clock.advance(100.0)
    assert layer.receive_request(ack, UDP, 100.0) == [AckReceived(ack, UDP)]  # gone by now


def test_ack_before_any_final_response_is_absorbed() -> None:
    layer, _ = new_layer()
    event = receive_invite(layer)
    assert layer.receive_request(request("ACK"), UDP, 0.1) == []
    assert layer.get_state(event.key) is TransactionState.PROCEEDING


def test_ack_received_by_the_tu_stops_retransmission() -> None:
    layer, clock = new_layer()
    event, _ = accepted(layer)
    layer.datagrams_to_send()
    layer.ack_received(event.key, 0.1)
    assert clock.advance(100.0) == []
    assert clock.sent == []
    assert len(layer) == 0


# ---------------------------------------------------------------- RFC 2543 matching


def test_rfc2543_invite_without_cookie() -> None:
    layer, clock = new_layer()
    [event] = layer.receive_request(request("INVITE", branch=None), UDP, 0.0)
    assert isinstance(event, RequestReceived)
    assert event.key.branch.startswith("rfc2543-")
    assert layer.receive_request(request("INVITE", branch=None), UDP, 0.1) == []
    [cancel] = layer.receive_request(request("CANCEL", branch=None), UDP, 0.2)
    assert isinstance(cancel, CancelReceived) and cancel.invite_key == event.key
    busy = answer(layer, event, 486, 0.3)
    ack = ack_for(event.request, busy, branch=None)
    assert layer.receive_request(ack, UDP, 0.4) == []
    assert layer.get_state(event.key) is TransactionState.CONFIRMED
    layer.send_response(cancel.key, make_response(cancel.cancel, 200), 0.5)
    clock.advance(100.0)
    assert len(layer) == 0


def test_rfc2543_matching_from_behind_a_nat() -> None:
    """Via stamping (received/rport) must not change what 2543 matching compares."""
    layer, clock = new_layer()
    natted = Address("udp", "203.0.113.7", 61000)
    kwargs: dict[str, object] = {"branch": None, "via": "10.0.0.5:5060;rport"}
    [event] = layer.receive_request(request("INVITE", **kwargs), natted, 0.0)  # type: ignore[arg-type]
    assert isinstance(event, RequestReceived)
    assert layer.receive_request(request("INVITE", **kwargs), natted, 0.1) == []
    busy = answer(layer, event, 486, 0.2)
    ack = ack_for(request("INVITE", **kwargs), busy, **kwargs)  # type: ignore[arg-type]
    assert layer.receive_request(ack, natted, 0.3) == []
    assert layer.get_state(event.key) is TransactionState.CONFIRMED
    assert all(o.destination == natted for o in clock.drain())


def test_rfc2543_different_cseq_is_another_transaction() -> None:
    layer, _ = new_layer()
    layer.receive_request(request("INVITE", branch="old-branch-1"), UDP, 0.0)
    [event] = layer.receive_request(request("INVITE", branch="old-branch-1", cseq=2), UDP, 0.0)
    assert isinstance(event, RequestReceived)


def test_rfc2543_2xx_ack_matched_by_dialog_fields() -> None:
    layer, _ = new_layer()
    [event] = layer.receive_request(request("INVITE", branch=None), UDP, 0.0)
    assert isinstance(event, RequestReceived)
    ok = answer(layer, event, 200, 0.0)
    ack = ack_for(event.request, ok, branch=None, to_tag=TAG)
    [got] = layer.receive_request(ack, UDP, 0.1)
    assert isinstance(got, AckReceived) and got.key == event.key


def test_late_handle_timer_retransmits_once_not_in_a_burst() -> None:
    layer, _ = new_layer()
    event = receive_invite(layer)
    answer(layer, event, 200, 0.0)
    layer.datagrams_to_send()
    assert layer.handle_timer(10.0) == []
    assert len(layer.datagrams_to_send()) == 1
    assert layer.next_timer() == pytest.approx(11.0)  # rescheduled from now, interval 2*T1


# ---------------------------------------------------------------- illegal TU actions


def test_second_final_response_is_an_error() -> None:
    layer, _ = new_layer()
    event = receive_invite(layer)
    answer(layer, event, 200, 0.0)
    with pytest.raises(TransactionError, match="final response already sent"):
        answer(layer, event, 500, 0.1)
    with pytest.raises(TransactionError):
        answer(layer, event, 180, 0.1)


def test_second_final_response_to_non_invite_is_an_error() -> None:
    layer, _ = new_layer()
    [event] = layer.receive_request(request("OPTIONS"), UDP, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.key, make_response(event.request, 200), 0.0)
    with pytest.raises(TransactionError):
        layer.send_response(event.key, make_response(event.request, 200), 0.0)


def test_response_on_unknown_or_terminated_transaction() -> None:
    layer, _ = new_layer()
    [event] = layer.receive_request(request("OPTIONS", via_transport="TCP"), TCP, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.key, make_response(event.request, 200), 0.0)
    with pytest.raises(UnknownTransaction):
        layer.send_response(event.key, make_response(event.request, 200), 0.0)
    with pytest.raises(UnknownTransaction):
        layer.get_request(event.key)
    with pytest.raises(UnknownTransaction):
        layer.ack_received(event.key, 0.0)


def test_response_for_another_method_is_an_error() -> None:
    layer, _ = new_layer()
    event = receive_invite(layer)
    bye = request("BYE")
    with pytest.raises(TransactionError, match="BYE"):
        layer.send_response(event.key, make_response(bye, 200), 0.0)


def test_ack_received_outside_accepted_is_an_error() -> None:
    layer, _ = new_layer()
    event = receive_invite(layer)
    with pytest.raises(TransactionError):
        layer.ack_received(event.key, 0.0)


# ---------------------------------------------------------------- client non-INVITE


def bye(branch: str = "z9hG4bKbye1", transport: str = "UDP") -> SipRequest:
    return request(
        "BYE",
        branch=branch,
        via="198.51.100.1:5060",
        via_transport=transport,
        from_tag=TAG,
        to_tag="src-tag",
        cseq=1,
        uri="sip:src@192.0.2.10:5060",
    )


def test_client_timer_e_doubles_to_t2_and_timer_f_times_out() -> None:
    layer, clock = new_layer()
    req = bye()
    key = layer.send_request(req, UDP, 0.0)
    clock.drain()
    assert layer.get_state(key) is TransactionState.TRYING
    events = clock.advance(100.0)
    assert events == [ClientTimeout(key, req)]
    assert clock.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert {o.data for _, o in clock.sent} == {req.serialize()}
    assert len(layer) == 0


def test_client_final_response_then_timer_k() -> None:
    layer, clock = new_layer()
    req = bye()
    key = layer.send_request(req, UDP, 0.0)
    clock.drain()
    clock.advance(1.0)
    ok = make_response(req, 200)
    assert layer.receive_response(ok, 1.0) == [ResponseReceived(key, ok)]
    assert layer.get_state(key) is TransactionState.COMPLETED
    assert layer.receive_response(ok, 1.1) == []  # duplicate absorbed
    assert layer.next_timer() == pytest.approx(1.0 + T4)
    assert clock.advance(100.0) == []
    assert clock.times() == [0.0, 0.5]  # no retransmission after the response
    assert len(layer) == 0


def test_client_proceeding_retransmits_every_t2() -> None:
    layer, clock = new_layer()
    req = bye()
    key = layer.send_request(req, UDP, 0.0)
    clock.drain()
    trying = make_response(req, 100)
    assert layer.receive_response(trying, 0.1) == [ResponseReceived(key, trying)]
    assert layer.get_state(key) is TransactionState.PROCEEDING
    clock.advance(12.0)
    assert clock.times() == [0.0, 0.5, 4.5, 8.5]
    final = make_response(req, 481)
    assert layer.receive_response(final, 12.0) == [ResponseReceived(key, final)]


def test_client_over_tcp_no_retransmission_and_no_timer_k() -> None:
    layer, clock = new_layer()
    req = bye(transport="TCP")
    key = layer.send_request(req, TCP, 0.0)
    clock.drain()
    clock.advance(10.0)
    assert clock.times() == [0.0]  # no Timer E on reliable transports
    [event] = layer.receive_response(make_response(req, 200), 10.0)
    assert isinstance(event, ResponseReceived) and event.key == key
    assert len(layer) == 0


def test_client_response_matching_by_branch_and_method() -> None:
    layer, _ = new_layer()
    req = bye()
    key = layer.send_request(req, UDP, 0.0)
    other_branch = make_response(bye(branch="z9hG4bKother"), 200)
    assert layer.receive_response(other_branch, 0.1) == []
    # same branch, another CSeq method (a CANCEL's response): no match
    cancel = request("CANCEL", branch="z9hG4bKbye1", via="198.51.100.1:5060")
    assert layer.receive_response(make_response(cancel, 200), 0.1) == []
    assert layer.get_state(key) is TransactionState.TRYING


def test_client_rejects_invite_ack_and_non_rfc3261_branches() -> None:
    layer, _ = new_layer()
    with pytest.raises(TransactionError):
        layer.send_request(request("INVITE"), UDP, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request("ACK"), UDP, 0.0)
    with pytest.raises(TransactionError, match="z9hG4bK"):
        layer.send_request(bye(branch="1234"), UDP, 0.0)
    layer.send_request(bye(), UDP, 0.0)
    with pytest.raises(TransactionError, match="already used"):
        layer.send_request(bye(), UDP, 0.0)


def test_client_and_server_on_one_layer() -> None:
    layer, clock = new_layer()
    event, ok = accepted(layer)
    layer.receive_request(ack_for(event.request, ok), UDP, 0.1)
    key = layer.send_request(bye(), UDP, 1.0)
    assert len(layer) == 2
    layer.receive_response(make_response(bye(), 200), 1.2)
    clock.advance(100.0)
    assert len(layer) == 0
    assert layer.get_state(key) is None


# ---------------------------------------------------------------- serialization once


def test_responses_are_serialized_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = SipResponse.serialize

    def counting(self: SipResponse) -> bytes:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(SipResponse, "serialize", counting)
    layer, clock = new_layer()
    event = receive_invite(layer)
    answer(layer, event, 200, 0.0)
    for t in (0.1, 0.2, 0.3):
        layer.receive_request(request("INVITE"), UDP, t)
    clock.advance(20.0)
    assert len(clock.sent) + len(clock.drain()) > 5
    assert calls == 1


# ---------------------------------------------------------------- destinations and Via stamping


def via(text: str) -> Via:
    return Via.parse(text)


@pytest.mark.parametrize(
    ("via_text", "expected"),
    [
        ("SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKx", Address("udp", "192.0.2.10", 5070)),
        ("SIP/2.0/UDP pbx.example.com;branch=z9hG4bKx", Address("udp", "pbx.example.com", 5060)),
        (
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKx;received=203.0.113.7",
            Address("udp", "203.0.113.7", 5070),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKx;rport=61000;received=203.0.113.7",
            Address("udp", "203.0.113.7", 61000),
        ),
        # rport requested but not filled in: the source address
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKx;rport", Address("udp", "203.0.113.7", 40000)),
        (
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKx;maddr=239.255.255.1;received=203.0.113.7",
            Address("udp", "239.255.255.1", 5060),
        ),
    ],
)
def test_response_destination_udp(via_text: str, expected: Address) -> None:
    source = Address("udp", "203.0.113.7", 40000)
    assert response_destination(via(via_text), source) == expected


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_response_destination_stream_uses_the_same_connection(transport: str) -> None:
    source = Address(transport, "203.0.113.7", 52000, connection_id=42)  # type: ignore[arg-type]
    top = via("SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKx;received=1.2.3.4;rport=9")
    assert response_destination(top, source) == source


def test_stamp_via_adds_received_when_sent_by_differs() -> None:
    req = request("OPTIONS", via="10.0.0.5:5060")
    stamped = stamp_via(req, Address("udp", "203.0.113.7", 5060))
    assert stamped.top_via.params["received"] == "203.0.113.7"
    assert stamped.top_via.branch == "z9hG4bKinv1"
    assert stamp_via(req, Address("udp", "10.0.0.5", 5060)) is req


def test_stamp_via_fills_rport_and_keeps_lower_vias() -> None:
    headers = request("OPTIONS").headers.replace(
        "Via", "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKa, SIP/2.0/UDP proxy;branch=z9hG4bKb"
    )
    req = SipRequest("OPTIONS", "sip:srs@198.51.100.1", headers)
    stamped = stamp_via(req, Address("udp", "203.0.113.7", 61000))
    top, lower = stamped.vias
    assert top.params["rport"] == "61000" and top.params["received"] == "203.0.113.7"
    assert lower.host == "proxy"


def test_responses_go_to_the_natted_source_through_the_layer() -> None:
    layer, clock = new_layer()
    source = Address("udp", "203.0.113.7", 61000)
    req = request("OPTIONS", via="10.0.0.5:5060;rport")
    [event] = layer.receive_request(req, source, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.key, make_response(event.request, 200), 0.0)
    [out] = clock.drain()
    assert out.destination == source
    assert b"rport=61000" in out.data and b"received=203.0.113.7" in out.data


def test_ipv6_sent_by_and_source() -> None:
    source = Address("udp", "2001:db8::1", 5060)
    req = request("OPTIONS", via="[2001:DB8::1]:5060")
    assert stamp_via(req, source) is req  # same address, other spelling
    assert transaction_key(req).sent_by == "[2001:db8::1]:5060"


def test_sent_by_default_ports() -> None:
    assert transaction_key(request(via="pbx.example.com")).sent_by == "pbx.example.com:5060"
    tls = request(via="PBX.example.com", via_transport="TLS")
    assert transaction_key(tls).sent_by == "pbx.example.com:5061"


def test_address_rejects_unknown_transport() -> None:
    with pytest.raises(ValueError, match="sctp"):
        Address("sctp", "h", 1)  # type: ignore[arg-type]


def test_identifier_helpers() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") for b in branches)
    assert len({new_tag() for _ in range(100)}) == 100
    assert new_call_id("srs.example").endswith("@srs.example")
    assert "@" not in new_call_id()


# ---------------------------------------------------------------- property: random interleavings

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("retransmit"), st.floats(0.0, 3.0)),
        st.tuples(st.just("respond"), st.sampled_from([100, 180, 200, 486])),
        st.tuples(st.just("ack"), st.floats(0.0, 3.0)),
        st.tuples(st.just("cancel"), st.floats(0.0, 3.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 20.0)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=OPS,
    method=st.sampled_from(["INVITE", "BYE", "OPTIONS"]),
    reliable=st.booleans(),
)
def test_random_interleavings_never_report_a_request_twice(
    ops: list[tuple[str, float]], method: str, reliable: bool
) -> None:
    source = TCP if reliable else UDP
    vt = "TCP" if reliable else "UDP"
    layer, clock = new_layer()
    req = request(method, via_transport=vt)
    events = layer.receive_request(req, source, 0.0)
    [first] = events
    assert isinstance(first, RequestReceived)
    key = first.key
    final: SipResponse | None = None
    for op, arg in ops:
        if op == "retransmit":
            clock.advance(clock.now + arg)
            if key in layer:  # a copy arriving after termination is a new request (RFC 3261)
                events += layer.receive_request(req, source, clock.now)
        elif op == "respond":
            status = int(arg)
            state = layer.get_state(key)
            if state in (TransactionState.TRYING, TransactionState.PROCEEDING):
                response = make_response(first.request, status, to_tag=TAG)
                layer.send_response(key, response, clock.now)
                if status >= 200:
                    final = response
        elif op == "ack" and final is not None and method == "INVITE":
            clock.advance(clock.now + arg)
            events += layer.receive_request(ack_for(req, final), source, clock.now)
        elif op == "cancel":
            clock.advance(clock.now + arg)
            new = layer.receive_request(request("CANCEL", via_transport=vt), source, clock.now)
            for event in new:
                assert isinstance(event, CancelReceived)
                layer.send_response(event.key, make_response(event.cancel, 200), clock.now)
            events += new
        else:
            clock.advance(clock.now + arg)
        clock.drain()
    received = [e for e in events if isinstance(e, RequestReceived)]
    assert received == [first]
    acks = [e for e in events if isinstance(e, AckReceived) and e.key is not None]
    assert len(acks) <= 1
    # every response the layer sent is a response to this request or to a CANCEL
    for _, out in clock.sent:
        assert out.destination == source
        assert out.data.startswith(b"SIP/2.0 ")
    # once the TU has answered, everything terminates and nothing leaks
    if layer.get_state(key) in (TransactionState.TRYING, TransactionState.PROCEEDING):
        layer.send_response(key, make_response(first.request, 500), clock.now)
    clock.advance(clock.now + 1000.0)
    assert len(layer) == 0
    assert layer.next_timer() is None
    assert layer._accepted == {}
