"""The driver's pump on the event loop's own clock: datagrams out, effects started, one timer."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import tempfile

from siprec_node.recorder import CallDriver, HandlerConfig
from siprec_node.sip.message import SipResponse, parse_message
from siprec_node.sip.transaction import Address, TimerConfig
from tests.unit.sip.test_handler_harness import SBC, Dialogue


def _driver(timers: TimerConfig | None = None) -> CallDriver:
    """A driver on loopback with ports of its own and a temporary recording folder."""
    base = random.randrange(42000, 58000, 2)
    config = HandlerConfig(
        node_id="driver-test",
        advertise_host="127.0.0.1",
        media_host="127.0.0.1",
        media_advertise_host="127.0.0.1",
        port_min=base,
        port_max=base + 99,
        recording_dir=tempfile.mkdtemp(prefix="driver-test-recordings-"),
    )
    if timers is not None:
        config = dataclasses.replace(config, timers=timers)
    return CallDriver(config, local_address=lambda peer: "127.0.0.1")


async def test_one_loop_timer_retransmits_the_200_until_the_ack() -> None:
    sent: list[tuple[float, SipResponse]] = []
    driver = _driver(TimerConfig(t1=0.05, t2=0.4, t4=0.5))

    def send(data: bytes, destination: Address) -> None:
        message = parse_message(data)
        assert isinstance(message, SipResponse)
        sent.append((driver.now(), message))

    driver.attach(send)
    await driver.start()
    try:
        dialogue = Dialogue("driver@sbc")
        driver.on_message(dialogue.siprec_invite(), SBC)
        await driver.idle()  # the OpenMedia effect's task: media opened, 200 sent
        oks = [m for _, m in sent if m.status == 200]
        assert len(oks) == 1
        dialogue.to_tag = oks[0].to.tag
        # Timer G at T1, then at 2*T1 after that, on the loop's clock (never early; late under
        # load, so only waited for)
        for _ in range(200):
            times = [t for t, m in sent if m.status == 200]
            if len(times) >= 3:
                break
            await asyncio.sleep(0.01)
        assert len(times) == 3, times
        assert times[1] - times[0] >= 0.045 and times[2] - times[1] >= 0.095, times
        driver.on_message(dialogue.ack(), SBC)
        await asyncio.sleep(0.3)
        assert len([m for _, m in sent if m.status == 200]) == 3  # the ACK stopped them
        call = driver.calls[next(iter(driver.calls))]
        assert call.confirmed
    finally:
        await driver.close(timeout=2)


async def test_answering_a_call_warms_the_finalisation_pool() -> None:
    """The finalisation processes start with the first answered call (FinalisePool.warm), so
    their imports are done before the first call ends."""
    driver = _driver()
    warmed: list[float] = []
    driver.finalise_pool.warm = lambda: warmed.append(driver.now())  # type: ignore[method-assign]
    driver.attach(lambda data, destination: None)
    await driver.start()
    try:
        assert warmed == []
        driver.on_message(Dialogue("warm@sbc").siprec_invite(), SBC)
        await driver.idle()
        assert len(warmed) == 1
    finally:
        await driver.close(timeout=2)
