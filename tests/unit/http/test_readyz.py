"""/readyz bounds the store check: a hung store answers 503 in time, probes never pile up."""

from __future__ import annotations

import asyncio
import json
import time

from siprec_node.http import HttpApi
from siprec_node.recorder import CallDriver


def _api(readiness, timeout: float = 0.2) -> HttpApi:  # type: ignore[no-untyped-def]
    handler = CallDriver()
    handler.set_listener("udp", "127.0.0.1", 5060)
    return HttpApi(handler, readiness=readiness, readiness_timeout=timeout)


def test_hung_store_gives_503_within_the_deadline_and_one_probe() -> None:
    calls = 0
    release = asyncio.Event()

    async def hung() -> bool:
        nonlocal calls
        calls += 1
        await release.wait()
        return True

    async def run() -> None:
        api = _api(hung)
        started = time.monotonic()
        probes = asyncio.gather(*(api.readyz(None) for _ in range(5)))  # type: ignore[arg-type]
        responses = await asyncio.wait_for(probes, 2.0)  # fails, not hangs, without a deadline
        assert time.monotonic() - started < 0.5
        again = await api.readyz(None)  # type: ignore[arg-type]
        for response in [*responses, again]:
            assert response.status == 503
            body = json.loads(response.body)  # type: ignore[arg-type]
            assert body["problems"] == ["store not answering"]
            assert body["store"] == "no answer within 0.2s"
        assert calls == 1  # later requests wait for the probe already running
        release.set()
        await asyncio.sleep(0)
        assert (await api.readyz(None)).status == 200  # type: ignore[arg-type]

    asyncio.run(run())


def test_failing_probe_is_a_503_with_its_reason() -> None:
    async def broken() -> bool:
        raise RuntimeError("boom")

    async def down() -> bool:
        return False

    async def run() -> None:
        response = await _api(broken).readyz(None)  # type: ignore[arg-type]
        assert response.status == 503
        assert json.loads(response.body)["store"].startswith("check failed: RuntimeError")  # type: ignore[arg-type]
        response = await _api(down).readyz(None)  # type: ignore[arg-type]
        body = json.loads(response.body)  # type: ignore[arg-type]
        assert body["problems"] == ["store not answering"] and "ping failed" in body["store"]

    asyncio.run(run())
