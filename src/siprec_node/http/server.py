"""The node's HTTP endpoints: health, readiness, Prometheus metrics and the admin API.

``GET /healthz`` (200 while the process runs), ``GET /readyz`` (200 when listening and the store
answers, 503 otherwise, while draining, or while the recording disk has less free space than
``recording.min_free``; the body's ``problems`` say which), ``GET /metrics``, ``GET /sessions``,
``GET /sessions/{id}``, ``POST /sessions/{id}/pause|resume|stop|metadata-request``, and
``POST /drain`` (refuse new calls, let live ones end within ``node.drain_grace``, then BYE them;
the process keeps running). With ``http.token`` set, the ``/sessions`` endpoints and ``/drain``
require ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from siprec_node.recorder import CallDriver
from siprec_node.sip.calls import Call
from siprec_node.sip.transport import LIMIT_NAMES, SipTransports

log = structlog.get_logger("siprec_node.http")

ReadinessProbe = Callable[[], Awaitable[bool]]
DrainStarter = Callable[[], object]
"""Starts the node's drain (idempotent); what it returns is ignored."""
ADMIN_PREFIXES = ("/sessions", "/drain")
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
READINESS_TIMEOUT = 1.0
"""Seconds /readyz waits for the store before answering 503 (a hung store must not hang it)."""


class HandlerCollector(Collector):
    """Reads the handler's counters and gauges at scrape time (nothing on the SIP path)."""

    def __init__(self, handler: CallDriver) -> None:
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
            "forbidden": "SIP requests refused because sip.allow_sources excludes their source",
            "metadata_limit_exceeded": "Requests refused for sip.max_metadata_elements (400)",
            "internal_errors": "Requests that met a bug of the node (500, logged with traceback)",
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
        watch = h.rtp_timeout
        for name, text, value in (
            (
                "siprec_rtp_timeouts",
                "Calls found with every stream silent for rtp_timeout",
                watch.timeouts,
            ),
            (
                "siprec_rtp_timeout_probes",
                "In-dialog OPTIONS sent after an RTP timeout",
                watch.probes,
            ),
            ("siprec_rtp_timeout_ended", "Calls ended after an RTP timeout", watch.ended),
            ("siprec_calls_stalled", "Calls kept after their SRC answered a probe", watch.stalled),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], value)
            yield counter
        recordings = CounterMetricFamily(
            "siprec_recordings",
            "Recordings finalised by this node, by verdict (ok, or problems)",
            labels=["verdict"],
        )
        for status, count in h.recordings.items():
            recordings.add_metric([status], count)
        yield recordings
        problems = CounterMetricFamily(
            "siprec_recording_problems",
            "Recordings finalised by this node with each problem (one recording may have several)",
            labels=["problem"],
        )
        for kind, count in h.recording_problems.items():
            problems.add_metric([kind], count)
        yield problems
        yield from _disk_metrics(h)
        gauges: dict[str, tuple[str, float]] = {
            "siprec_active_calls": ("Calls being recorded now", len(h.calls)),
            "siprec_rtp_ports_in_use": ("RTP ports bound now", h.media.reserved),
            "siprec_sip_transactions": ("Live SIP transactions", len(h.transactions)),
            "siprec_draining": ("1 while the node drains", 1 if h.draining else 0),
            "siprec_media_opening": (
                "Calls accepted whose media is opening (not yet answered)",
                len(h.core.opening),
            ),
            "siprec_media_open_wait_seconds": (
                "How long the call waiting longest for its media to open has waited"
                " (new INVITEs get 503 beyond sip.max_answer_delay)",
                h.core.opening.oldest_wait(h.now()),
            ),
            "siprec_snapshot_backlog": (
                "CallData snapshots waiting for the store",
                h.snapshots.backlog if h.snapshots else 0,
            ),
            "siprec_store_healthy": (
                "1 while snapshot writes succeed",
                1 if h.snapshots is None or h.snapshots.healthy else 0,
            ),
        }
        for name, (text, level) in gauges.items():
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], level)
            yield gauge


def _disk_metrics(h: CallDriver) -> Iterator[Metric]:
    """The recording disk and the finalisations (``media/disk.py``,
    ``recorder/finalisations.py``)."""
    work = h.finalisations
    for name, text, value in (
        ("siprec_finalisation_failures", "Finalisation attempts that failed", work.failures),
        ("siprec_finalisation_retries", "Finalisations tried again after a failure", work.retries),
        (
            "siprec_finalisations_deferred",
            "Finalisations that found the finalisation queue full (recording.finalise_queue)",
            work.deferrals,
        ),
        (
            "siprec_finalisation_pool_restarts",
            "Times the finalisation processes were replaced after one of them died",
            h.finalise_pool.restarts,
        ),
        (
            "siprec_finalisations_recovered",
            "Recordings finalised at start-up (left finalising by a stopped node)",
            work.recovered,
        ),
        (
            "siprec_recording_write_errors",
            "Failed writes of stream files (disk full), as reported when the streams closed",
            work.write_errors,
        ),
        (
            "siprec_invites_refused_disk_low",
            "New INVITEs answered 503 because free space was below recording.min_free",
            h.stats.get("refused_disk_low", 0),
        ),
        (
            "siprec_invites_refused_overloaded",
            "New INVITEs answered 503 because an accepted call had waited longer than"
            " sip.max_answer_delay for its media to open",
            h.stats.get("refused_overloaded", 0),
        ),
    ):
        counter = CounterMetricFamily(name, text)
        counter.add_metric([], value)
        yield counter
    for name, text, gauge_value in (
        (
            "siprec_finalisations_pending",
            "Recordings waiting for a finalisation retry, or for room in the finalisation queue",
            work.backlog,
        ),
        (
            "siprec_finalisation_queue_depth",
            "Finalisations queued for a finalisation process, not yet running",
            h.finalise_pool.depth,
        ),
        (
            "siprec_finalisations_running",
            "Finalisations running in the finalisation processes",
            h.finalise_pool.running,
        ),
        (
            "siprec_recording_disk_free_bytes",
            "Free bytes on the recording directory's filesystem (last check)",
            h.disk.free if h.disk.free is not None else float("nan"),
        ),
        ("siprec_recording_disk_low", "1 while free space is below recording.min_free", h.disk.low),
    ):
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], float(gauge_value))
        yield gauge


class TransportCollector(Collector):
    """Stream connections and the limits hit, by the name of the setting that bounds them."""

    def __init__(self, handler: CallDriver, transports: SipTransports | None) -> None:
        self.handler = handler
        self.transports = transports

    def collect(self) -> Iterator[Metric]:
        """Yield the transport's metrics."""
        hits = CounterMetricFamily(
            "siprec_sip_limit_hits",
            "Times a SIP limit was hit, by setting (connections refused or evicted, connections"
            " closed by a timeout, accepts without a free descriptor, INVITEs over the rate)",
            labels=["limit"],
        )
        stats = self.transports.stats if self.transports is not None else {}
        for name in LIMIT_NAMES:
            hits.add_metric([name], stats.get(name, 0))
        hits.add_metric(
            ["invite_rate_per_source"], self.handler.stats.get("invite_rate_limited", 0)
        )
        yield hits
        if self.transports is None:
            return
        evicted = CounterMetricFamily(
            "siprec_sip_tcp_evicted",
            "Idle TCP/TLS connections closed to make room for a new one",
        )
        evicted.add_metric([], stats.get("tcp_evicted", 0))
        yield evicted
        dropped = CounterMetricFamily(
            "siprec_sip_datagrams_dropped",
            "SIP datagrams the kernel dropped on the UDP listeners (receive queue full)",
        )
        dropped.add_metric([], self.transports.check_udp_drops())
        yield dropped
        gauge = GaugeMetricFamily("siprec_sip_tcp_connections", "Open TCP/TLS connections")
        gauge.add_metric([], self.transports.connection_count)
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
        "flags": list(data.flags),
        "participants": [
            {"id": p.id, "name": p.name, "aor": p.aor} for p in session.participants()
        ],
        "streams": call.recording.stream_summary(),
        "peer": f"{call.dialog.peer.transport}:{call.dialog.peer.host}:{call.dialog.peer.port}",
        "recording": _recording_place(call),
    }


def _recording_place(call: Call) -> dict[str, str] | None:
    """Where the call's recording goes: its folder, file stem and the sidecar it will have."""
    state = call.media_state
    if state is None:
        return None
    directory = Path(state.directory).absolute()
    sidecar = str(directory / f"{state.stem}.json")
    return {"directory": str(directory), "stem": state.stem, "sidecar": sidecar}


class HttpApi:
    """An aiohttp application bound to one handler."""

    def __init__(
        self,
        handler: CallDriver,
        *,
        token: str | None = None,
        readiness: ReadinessProbe | None = None,
        drain: DrainStarter | None = None,
        transports: SipTransports | None = None,
        readiness_timeout: float = READINESS_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.token = token
        self.readiness = readiness
        self._drain = drain
        self._drain_task: Any = None
        self.readiness_timeout = readiness_timeout
        self._probe: asyncio.Task[bool] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(HandlerCollector(handler))
        self.registry.register(TransportCollector(handler, transports))
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
                web.post("/drain", self.drain),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.token is not None and request.path.startswith(ADMIN_PREFIXES):
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
        body: dict[str, Any] = {"status": "unready"}
        if self.handler.draining:
            problems.append("draining")
        if not self.handler.listeners:
            problems.append("not listening")
        if self.handler.recovering:
            problems.append("recovering this node's calls")
        if self.handler.snapshots is not None and not self.handler.snapshots.healthy:
            problems.append("store writes failing")
        if self.handler.disk.low:  # recording.min_free
            problems.append("recording disk low")
            body["disk"] = self.handler.disk.reason
        if self.readiness is not None:
            detail = await self._store_problem()
            if detail is not None:
                problems.append("store not answering")
                body["store"] = detail
        if problems:
            body["problems"] = problems
            return web.json_response(body, status=503)
        return web.json_response({"status": "ready"})

    async def _store_problem(self) -> str | None:
        """Why the store is not ready (``None`` when it is), waiting at most
        ``readiness_timeout``.

        A probe still running from an earlier request is awaited again rather than a new one
        started, so probes against a hung store never pile up (each ends at the store
        client's own socket timeout).
        """
        assert self.readiness is not None
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self.readiness())
            # Retrieved here even if every request waiting for it gave up first.
            self._probe.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            ok = await asyncio.wait_for(asyncio.shield(self._probe), self.readiness_timeout)
        except TimeoutError:
            return f"no answer within {self.readiness_timeout:g}s"
        except Exception as exc:  # the probe's own failure is a readiness answer, not a 500
            return f"check failed: {exc!r}"
        return None if ok else "ping failed or session manager not running"

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

    async def drain(self, request: web.Request) -> web.Response:
        """Drain the node: 503 to new INVITEs (and /readyz), live calls end on their own within
        ``node.drain_grace``, then get a BYE. Idempotent; 202 with the live calls left."""
        first = not self.handler.draining
        if self._drain is not None:
            self._drain()
        elif self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.handler.drain())
        if first:
            log.info("drain_requested", live_calls=len(self.handler.calls))
        return web.json_response(
            {"draining": True, "live_calls": len(self.handler.calls)}, status=202
        )

    async def stop(self, request: web.Request) -> web.Response:
        """End the recording: BYE to the SRC, files finalised."""
        call = self.handler.stop_call(self._call(request).data.session_id)
        return web.json_response(call_summary(call))
