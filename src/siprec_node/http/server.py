"""The node's HTTP endpoints: health, readiness, Prometheus metrics and the admin API.

``GET /healthz`` (200 while the process runs), ``GET /readyz`` (200 when listening and the store
answers, 503 otherwise or while draining), ``GET /metrics``, ``GET /sessions``,
``GET /sessions/{id}``, ``POST /sessions/{id}/pause|resume|stop|metadata-request``. With
``http.token`` set, the ``/sessions`` endpoints require ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from siprec_node.sip.handler import Call, SipHandler

log = structlog.get_logger("siprec_node.http")

ReadinessProbe = Callable[[], Awaitable[bool]]
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HandlerCollector(Collector):
    """Reads the handler's counters and gauges at scrape time (nothing on the SIP path)."""

    def __init__(self, handler: SipHandler) -> None:
        self.handler = handler

    def collect(self) -> Iterator[Metric]:
        """Yield the node's metrics."""
        h = self.handler
        stats = h.stats
        counters = {
            "requests": "SIP requests received (retransmissions excluded)",
            "responses": "SIP responses received",
            "malformed": "SIP messages that did not parse",
            "rejected": "INVITEs refused by policy (capacity, ACL, options)",
            "too_many_streams": "Offers refused (488) for more audio m-lines than "
            "media.max_streams_per_call",
        }
        for key, text in counters.items():
            family = CounterMetricFamily(f"siprec_sip_{key}", text)
            family.add_metric([], stats.get(key, 0))
            yield family
        calls = CounterMetricFamily("siprec_calls", "Recorded calls by outcome", labels=["outcome"])
        calls.add_metric(["started"], stats.get("calls_started", 0))
        calls.add_metric(["ended"], stats.get("calls_ended", 0))
        calls.add_metric(["failed"], stats.get("calls_failed", 0))
        yield calls
        gauges: dict[str, tuple[str, float]] = {
            "siprec_active_calls": ("Calls being recorded now", len(h.calls)),
            "siprec_rtp_ports_in_use": ("RTP ports bound now", h.media.reserved),
            "siprec_sip_transactions": ("Live SIP transactions", len(h.transactions)),
            "siprec_draining": ("1 while the node drains", 1 if h.draining else 0),
            "siprec_snapshot_backlog": (
                "CallData snapshots waiting for the store",
                h.snapshots.backlog if h.snapshots else 0,
            ),
            "siprec_store_healthy": (
                "1 while snapshot writes succeed",
                1 if h.snapshots is None or h.snapshots.healthy else 0,
            ),
        }
        for name, (text, value) in gauges.items():
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge


def call_summary(call: Call) -> dict[str, Any]:
    """The public view of a live call for the admin API."""
    data = call.data
    session = call.recording.session
    return {
        "session_id": data.session_id,
        "call_id": data.call_id,
        "node_id": data.node_id,
        "status": data.status,
        "created_at": data.created_at.isoformat(),
        "started_at": data.started_at.isoformat() if data.started_at else None,
        "last_activity": data.last_activity.isoformat(),
        "siprec": call.recording.is_siprec,
        "operator_paused": call.recording.operator_paused,
        "participants": [
            {"id": p.id, "name": p.name, "aor": p.aor} for p in session.participants()
        ],
        "streams": call.recording.stream_summary(),
        "peer": f"{call.dialog.peer.transport}:{call.dialog.peer.host}:{call.dialog.peer.port}",
    }


class HttpApi:
    """An aiohttp application bound to one handler."""

    def __init__(
        self,
        handler: SipHandler,
        *,
        token: str | None = None,
        readiness: ReadinessProbe | None = None,
    ) -> None:
        self.handler = handler
        self.token = token
        self.readiness = readiness
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(HandlerCollector(handler))
        self.app = web.Application(middlewares=[self._auth])
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/sessions", self.sessions),
                web.get("/sessions/{session_id}", self.session),
                web.post("/sessions/{session_id}/pause", self.pause),
                web.post("/sessions/{session_id}/resume", self.resume),
                web.post("/sessions/{session_id}/stop", self.stop),
                web.post("/sessions/{session_id}/metadata-request", self.metadata_request),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.token is not None and request.path.startswith("/sessions"):
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {self.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.json_response(
                    {"error": "a bearer token is required"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="siprec-node"'},
                )
        return await handler(request)

    async def start(self, host: str, port: int) -> int:
        """Serve on ``host:port``; returns the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp keeps the asyncio server private
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("http_listening", address=f"{host}:{self.port}")
        return self.port

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- endpoints

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 200 while the process runs."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: listening, store answering, not draining."""
        problems = []
        if self.handler.draining:
            problems.append("draining")
        if not self.handler.listeners:
            problems.append("not listening")
        if self.handler.recovering:
            problems.append("recovering this node's calls")
        if self.handler.snapshots is not None and not self.handler.snapshots.healthy:
            problems.append("store writes failing")
        if self.readiness is not None and not await self.readiness():
            problems.append("store not answering")
        if problems:
            return web.json_response({"status": "unready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus exposition text."""
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def sessions(self, request: web.Request) -> web.Response:
        """Live calls of this node."""
        return web.json_response([call_summary(c) for c in self.handler.calls.values()])

    def _call(self, request: web.Request) -> Call:
        call = self.handler.calls.get(request.match_info["session_id"])
        if call is None:
            raise web.HTTPNotFound(
                text='{"error": "no such live session"}', content_type="application/json"
            )
        return call

    async def session(self, request: web.Request) -> web.Response:
        """One live call."""
        return web.json_response(call_summary(self._call(request)))

    async def pause(self, request: web.Request) -> web.Response:
        """Stop recording a live call until resumed (the call goes on)."""
        call = self.handler.set_operator_pause(self._call(request).data.session_id, True)
        return web.json_response(call_summary(call))

    async def resume(self, request: web.Request) -> web.Response:
        """Resume recording after an operator pause."""
        call = self.handler.set_operator_pause(self._call(request).data.session_id, False)
        return web.json_response(call_summary(call))

    async def metadata_request(self, request: web.Request) -> web.Response:
        """Ask the SRC for a fresh metadata snapshot (UPDATE with rs-metadata-request)."""
        session_id = self._call(request).data.session_id
        try:
            call = self.handler.request_metadata(session_id)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(call_summary(call), status=202)

    async def stop(self, request: web.Request) -> web.Response:
        """End the recording: BYE to the SRC, files finalised."""
        call = self.handler.stop_call(self._call(request).data.session_id)
        return web.json_response(call_summary(call))
