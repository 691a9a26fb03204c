"""``siprec-node transcribe-worker -c FILE``: drain the fleet's transcription queue here.

Runs `transcription.workers` worker processes (at least one) against the store of FILE (it
must be Redis: a memory store is private to its node), until SIGTERM or SIGINT; jobs running
then are finished first. ``--metrics HOST:PORT`` serves Prometheus metrics at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..config import Settings
from ..config.addresses import parse_host_port

log = structlog.get_logger("siprec_node.transcription")


async def _serve_metrics(registry: CollectorRegistry, address: str) -> web.AppRunner:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    where = parse_host_port(address)
    await web.TCPSite(runner, where.host, where.port).start()
    return runner


async def _main(settings: Settings, workers: int, metrics: str | None) -> int:
    from ..app import session_store
    from . import build_transcriber

    store = session_store(settings)
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    service = build_transcriber(settings, store, consumer, workers)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(service.collector())
    runner = await _serve_metrics(registry, metrics) if metrics else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    log.info("transcribe_worker_stopping", consumer=consumer)
    await service.stop()
    if runner is not None:
        await runner.cleanup()
    await store.close()
    return 0


def run_worker(settings: Settings, *, workers: int | None = None, metrics: str | None) -> int:
    count = workers if workers is not None else max(settings.transcription.workers, 1)
    return asyncio.run(_main(settings, count, metrics))
