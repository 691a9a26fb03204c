"""UAS dialogs: creation from an INVITE, CSeq rules, in-dialog requests, snapshots, lookup."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_node.sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogMatch,
    DialogState,
    DialogTable,
    RequestCheck,
)
from siprec_node.sip.message import Headers, SipRequest, parse_message
from siprec_node.sip.transaction import Address, new_branch

UDP = Address("udp", "192.0.2.10", 5060)
TLS = Address("tls", "192.0.2.10", 41000, connection_id=3)
LOCAL_CONTACT = "<sip:srs@198.51.100.1:5060>"
VIA = "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKout1;rport"


def request(
    method: str = "INVITE",
    *,
    cseq: int = 1,
    call_id: str = "call-1",
    from_tag: str | None = "src-tag",
    to_tag: str | None = None,
    from_display: str | None = None,
    uri: str = "sip:srs@198.51.100.1",
    contact: str | None = "<sip:src@192.0.2.10:5060;transport=udp>",
    record_route: tuple[str, ...] = (),
) -> SipRequest:
    display = f'"{from_display}" ' if from_display else ""
    fields = [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={new_branch()}"),
        ("Max-Forwards", "70"),
        ("From", f"{display}<sip:src@pbx.example>" + (f";tag={from_tag}" if from_tag else "")),
        ("To", "<sip:srs@198.51.100.1>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    fields += [("Record-Route", rr) for rr in record_route]
    if contact is not None:
        fields.append(("Contact", contact))
    return SipRequest(method, uri, Headers.of(fields))


def dialog(**kwargs: object) -> Dialog:
    source = kwargs.pop("source", UDP)
    return Dialog.from_invite(request(**kwargs), "srs-tag", LOCAL_CONTACT, source)  # type: ignore[arg-type]


def in_dialog(method: str, cseq: int, **kwargs: object) -> SipRequest:
    kwargs.setdefault("to_tag", "srs-tag")
    return request(method, cseq=cseq, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- creation


def test_from_invite() -> None:
    d = dialog(cseq=101, record_route=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    assert d.id == DialogId("call-1", "srs-tag", "src-tag")
    assert d.local_uri == "sip:srs@198.51.100.1"
    assert d.remote_uri == "sip:src@pbx.example"
    assert d.remote_target == "sip:src@192.0.2.10:5060;transport=udp"
    assert d.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert d.remote_cseq == 101 and d.local_cseq == 0
    assert d.state is DialogState.EARLY
    assert d.peer == UDP and d.transport == "udp"
    assert not d.secure


def test_route_set_keeps_record_route_order_across_header_lines() -> None:
    d = dialog(record_route=("<sip:p1;lr>, <sip:p2;lr>", "<sip:p3;lr;ftag=x>"))
    assert d.route_set == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr;ftag=x>"]


def test_contact_without_closing_bracket_is_the_remote_target() -> None:
    d = dialog(contact="<sip:src@192.0.2.10:5060;+sip.src")
    assert d.remote_target == "sip:src@192.0.2.10:5060;+sip.src"


def test_no_contact_falls_back_to_the_source_address() -> None:
    assert dialog(contact=None).remote_target == "sip:192.0.2.10:5060"
    assert dialog(contact=None, source=TLS).remote_target == "sip:192.0.2.10:41000;transport=tls"


def test_secure_needs_tls_and_a_sips_request_uri() -> None:
    assert dialog(source=TLS, uri="sips:srs@198.51.100.1").secure
    assert not dialog(source=TLS).secure
    assert not dialog(uri="sips:srs@198.51.100.1").secure


def test_only_invite_creates_a_dialog() -> None:
    with pytest.raises(DialogError):
        Dialog.from_invite(request("OPTIONS"), "t", LOCAL_CONTACT, UDP)


def test_state_transitions() -> None:
    d = dialog()
    d.confirm()
    assert d.state is DialogState.CONFIRMED
    d.terminate()
    d.terminate()  # idempotent
    assert d.state is DialogState.TERMINATED
    with pytest.raises(DialogError, match="confirm"):
        d.confirm()


# ---------------------------------------------------------------- CSeq rules (§12.2.2)


def test_higher_cseq_is_accepted_and_recorded() -> None:
    d = dialog(cseq=10)
    assert d.check_request(in_dialog("UPDATE", 11)) == RequestCheck()
    assert d.remote_cseq == 11
    assert d.check_request(in_dialog("INFO", 11)).ok  # equal is not lower
    assert d.check_request(in_dialog("INVITE", 20)).ok
    assert d.remote_cseq == 20


def test_lower_cseq_is_500() -> None:
    d = dialog(cseq=10)
    check = d.check_request(in_dialog("UPDATE", 9))
    assert check.status == 500 and not check.ok and "9" in check.reason
    assert d.remote_cseq == 10


def test_bye_with_lower_cseq_is_accepted_leniently() -> None:
    d = dialog(cseq=10)
    check = d.check_request(in_dialog("BYE", 3))
    assert check.ok and check.lenient and "lower" in check.reason
    assert d.remote_cseq == 10


def test_ack_and_cancel_are_not_cseq_checked() -> None:
    d = dialog(cseq=10)
    assert d.check_request(in_dialog("ACK", 2)) == RequestCheck()
    assert d.check_request(in_dialog("CANCEL", 10)) == RequestCheck()
    assert d.remote_cseq == 10


def test_terminated_dialog_answers_481() -> None:
    d = dialog()
    d.terminate()
    assert d.check_request(in_dialog("BYE", 5)).status == 481
    assert d.check_request(in_dialog("ACK", 1)).ok


def test_refresh_target_on_reinvite_and_update_only() -> None:
    d = dialog()
    d.refresh_target(in_dialog("INFO", 2, contact="<sip:elsewhere@192.0.2.99>"))
    assert d.remote_target == "sip:src@192.0.2.10:5060;transport=udp"
    d.refresh_target(in_dialog("INVITE", 3, contact="<sip:src@192.0.2.20:5062>"))
    assert d.remote_target == "sip:src@192.0.2.20:5062"
    d.refresh_target(in_dialog("UPDATE", 4, contact=None))
    assert d.remote_target == "sip:src@192.0.2.20:5062"


# ---------------------------------------------------------------- requests the node sends


def test_create_bye_without_route_set() -> None:
    d = dialog()
    d.confirm()
    bye = d.create_request("BYE", VIA)
    assert bye.method == "BYE"
    assert bye.uri == "sip:src@192.0.2.10:5060;transport=udp"
    assert bye.headers.get_all("Route") == []
    assert bye.headers.get("Via") == VIA
    assert bye.headers.get("Max-Forwards") == "70"
    assert bye.from_.uri == "sip:srs@198.51.100.1" and bye.from_.tag == "srs-tag"
    assert bye.to.uri == "sip:src@pbx.example" and bye.to.tag == "src-tag"
    assert bye.call_id == "call-1"
    assert str(bye.cseq) == "1 BYE"
    assert "Contact" not in bye.headers
    # it is a valid message on the wire
    parsed = parse_message(bye.serialize())
    assert isinstance(parsed, SipRequest) and parsed.cseq.number == 1


def test_local_cseq_increments_and_is_independent_of_the_remote_one() -> None:
    d = dialog(cseq=500)
    assert d.create_request("UPDATE", VIA).cseq.number == 1
    assert d.create_request("INVITE", VIA).cseq.number == 2
    assert d.local_cseq == 2 and d.remote_cseq == 500


def test_target_refresh_requests_carry_our_contact() -> None:
    d = dialog()
    for method in ("INVITE", "UPDATE"):
        assert d.create_request(method, VIA).headers.get("Contact") == LOCAL_CONTACT


def test_loose_routing_uses_the_route_set_in_order() -> None:
    d = dialog(record_route=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    bye = d.create_request("BYE", VIA)
    assert bye.uri == d.remote_target
    assert bye.headers.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]


def test_strict_routing_puts_the_first_hop_in_the_request_uri() -> None:
    d = dialog(record_route=("<sip:p1.example>", "<sip:p2.example;lr>"))
    bye = d.create_request("BYE", VIA)
    assert bye.uri == "sip:p1.example"
    assert bye.headers.get_all("Route") == [
        "<sip:p2.example;lr>",
        "<sip:src@192.0.2.10:5060;transport=udp>",
    ]


def test_extra_headers_and_body() -> None:
    d = dialog()
    req = d.create_request(
        "INFO", VIA, headers=[("Content-Type", "application/rs-metadata+xml")], body=b"<x/>"
    )
    assert req.content_type == "application/rs-metadata+xml" and req.body == b"<x/>"


def test_remote_without_tag() -> None:
    d = dialog(from_tag=None)
    assert d.remote_tag is None
    assert d.create_request("BYE", VIA).to.tag is None


def test_create_request_refuses_ack_cancel_and_terminated() -> None:
    d = dialog()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(DialogError):
            d.create_request(method, VIA)
    d.terminate()
    with pytest.raises(DialogError, match="terminated"):
        d.create_request("BYE", VIA)
    assert d.local_cseq == 0


# ---------------------------------------------------------------- snapshots


def test_to_dict_round_trips_through_json() -> None:
    d = dialog(cseq=7, source=TLS, uri="sips:srs@198.51.100.1", record_route=("<sip:p1;lr>",))
    d.confirm()
    d.create_request("UPDATE", VIA)
    restored = Dialog.from_dict(json.loads(json.dumps(d.to_dict())))
    assert restored == d
    assert restored.peer == TLS and restored.secure
    assert restored.state is DialogState.CONFIRMED


@given(
    remote_tag=st.none() | st.text(min_size=1, max_size=20),
    remote_cseq=st.integers(0, 2**31 - 1),
    local_cseq=st.integers(0, 2**31 - 1),
    routes=st.lists(st.text(max_size=30), max_size=4),
    state=st.sampled_from(list(DialogState)),
    connection_id=st.none() | st.integers(0, 2**40),
    call_id=st.text(min_size=1, max_size=40),
)
def test_to_dict_round_trip_property(
    remote_tag: str | None,
    remote_cseq: int,
    local_cseq: int,
    routes: list[str],
    state: DialogState,
    connection_id: int | None,
    call_id: str,
) -> None:
    d = Dialog(
        call_id=call_id,
        local_tag="l",
        remote_tag=remote_tag,
        local_uri="sip:srs@h",
        remote_uri="sip:src@h",
        remote_target="sip:src@1.2.3.4",
        local_contact=LOCAL_CONTACT,
        peer=Address("tcp", "1.2.3.4", 5060, connection_id),
        route_set=routes,
        remote_cseq=remote_cseq,
        local_cseq=local_cseq,
        state=state,
    )
    assert Dialog.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_from_dict_rejects_malformed_snapshots() -> None:
    good = dialog().to_dict()
    for broken in (
        {k: v for k, v in good.items() if k != "call_id"},
        {**good, "state": "ringing"},
        {**good, "remote_cseq": "ten"},
        {**good, "peer": {**good["peer"], "transport": "sctp"}},
        {**good, "version": 99},
    ):
        with pytest.raises(DialogError):
            Dialog.from_dict(broken)


# ---------------------------------------------------------------- the table


def test_table_exact_lookup_ignores_display_name_and_cseq() -> None:
    table = DialogTable()
    d = dialog()
    table.add(d)
    assert len(table) == 1 and d.id in table and table.get(d.id) is d
    bye = in_dialog("BYE", 99, from_display="Someone Else")
    assert table.match(bye) == DialogMatch(d, lenient=False)
    assert table.lookup(bye) is d


def test_table_no_to_tag_matches_by_call_id_and_from_tag_when_unambiguous() -> None:
    table = DialogTable()
    d = dialog()
    table.add(d)
    bye = in_dialog("BYE", 2, to_tag=None)
    assert table.match(bye) == DialogMatch(d, lenient=True)
    # a second dialog with the same Call-ID and From tag (another local tag) makes it ambiguous
    twin = Dialog.from_invite(request(), "other-local-tag", LOCAL_CONTACT, UDP)
    table.add(twin)
    assert table.lookup(bye) is None
    assert table.lookup(in_dialog("BYE", 2, to_tag="other-local-tag")) is twin


def test_table_misses() -> None:
    table = DialogTable()
    table.add(dialog())
    assert table.lookup(in_dialog("BYE", 2, to_tag="wrong")) is None
    assert table.lookup(in_dialog("BYE", 2, call_id="other")) is None
    assert table.lookup(in_dialog("BYE", 2, from_tag="other", to_tag=None)) is None


def test_table_add_remove() -> None:
    table = DialogTable()
    d = dialog()
    table.add(d)
    with pytest.raises(DialogError, match="already"):
        table.add(dialog())
    assert list(table) == [d]
    assert table.remove(d) is d
    assert table.remove(d.id) is None
    assert len(table) == 0
    assert table.lookup(in_dialog("BYE", 2, to_tag=None)) is None
    assert table._by_remote == {}


def test_table_dialog_with_untagged_remote() -> None:
    table = DialogTable()
    d = dialog(from_tag=None)
    table.add(d)
    assert table.lookup(in_dialog("BYE", 2, from_tag=None)) is d
    assert table.lookup(in_dialog("BYE", 2, from_tag=None, to_tag=None)) is d
