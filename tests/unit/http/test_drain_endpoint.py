"""``POST /drain`` and the RTP-timeout metrics of the HTTP API, on a handler without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from siprec_node.http import HttpApi
from siprec_node.recorder import CallDriver, HandlerConfig

TOKEN = "t0ken"


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    handler = CallDriver(HandlerConfig(node_id="http-test"), send=lambda data, to: None)
    handler.set_listener("udp", "127.0.0.1", 5060)
    api = HttpApi(handler, token=TOKEN)
    async with TestClient(TestServer(api.app)) as made:
        made.handler = handler  # type: ignore[attr-defined]
        yield made


async def test_drain_needs_the_token_then_refuses_calls_and_unreadies(client: TestClient) -> None:
    handler: CallDriver = client.handler  # type: ignore[attr-defined]
    assert (await client.get("/readyz")).status == 200
    assert (await client.post("/drain")).status == 401
    assert not handler.draining
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.post("/drain", headers=auth)
    assert response.status == 202
    assert await response.json() == {"draining": True, "live_calls": 0}
    await asyncio.sleep(0.05)  # the drain task starts
    assert handler.draining
    ready = await client.get("/readyz")
    assert ready.status == 503 and "draining" in (await ready.json())["problems"]
    assert (await client.post("/drain", headers=auth)).status == 202  # idempotent
    text = await (await client.get("/metrics")).text()
    assert "siprec_draining 1.0" in text
    for name in (
        "siprec_rtp_timeouts_total",
        "siprec_rtp_timeout_probes_total",
        "siprec_rtp_timeout_ended_total",
        "siprec_calls_stalled_total",
    ):
        assert f"{name} 0.0" in text, name
