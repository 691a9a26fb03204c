"""Session refreshes of many live calls are kept in a heap: arming, firing and asking for the
next deadline never walk the registry of live calls."""

from __future__ import annotations

from siprec_node.sip.calls import Call

from .test_call_control import Core, requests
from .test_handler_harness import Dialogue


class NoScan(dict[str, Call]):
    """The registry of live calls, failing the test if anything walks it."""

    def _refuse(self, *args: object) -> None:
        raise AssertionError("the live calls were scanned")

    values = items = __iter__ = keys = _refuse  # type: ignore[assignment]


def _refreshed_call(c: Core, name: str, interval: int) -> Dialogue:
    dialogue = Dialogue(f"{name}@sbc")
    invite = dialogue.siprec_invite(headers=[("Session-Expires", f"{interval};refresher=uas")])
    effect = c.offered(dialogue, invite)
    ok = c.open_media(effect)
    dialogue.to_tag = ok[0].to.tag
    c.feed(dialogue.ack())
    return dialogue


def test_refreshes_fire_in_deadline_order_without_scanning_the_live_calls() -> None:
    c = Core()
    c.core.calls = NoScan()
    intervals = [300, 120, 200, 90]
    for n, interval in enumerate(intervals):
        _refreshed_call(c, f"r{n}-refresh", interval)
    c.effects.clear()
    first: dict[str, float] = {}  # Call-ID -> when its first UPDATE went (retransmissions too)
    while (deadline := c.core.next_timer()) is not None and deadline <= 5000.0 + 150:
        for update in requests(c.advance(deadline - c.now)):
            first.setdefault(update.call_id, c.now - 5000.0)
    # half of each interval, earliest first
    assert sorted(first.values()) == [45.0, 60.0, 100.0, 150.0]
    assert first["r1-refresh@sbc"] == 60.0 and first["r3-refresh@sbc"] == 45.0


def test_an_ended_call_leaves_no_refresh_behind() -> None:
    c = Core()
    dialogue = _refreshed_call(c, "ended", 120)
    (session_id,) = c.core.calls
    assert c.core.calls[session_id].refresh_at == 5060.0
    c.feed(dialogue.bye())
    assert c.core.calls == {}
    assert not [r for r in requests(c.advance(600.0)) if r.method == "UPDATE"]
    assert c.core.next_timer() is None  # the stale entry was dropped, not kept as a deadline
