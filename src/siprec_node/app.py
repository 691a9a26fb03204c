"""Assembles a node from settings: store, SIP handler, transports; runs it until a signal.

SIGTERM / SIGINT drain the node: new INVITEs get 503 with Retry-After and ``/readyz`` says 503,
live calls get ``node.drain_grace`` to end on their own, then a BYE; the node waits until
``node.drain_deadline`` at most for the BYEs' answers and the recordings' finalisation, flushes
the store, marks itself stopped there, and exits 0. ``POST /drain`` runs the same drain without
exiting (the node keeps refusing calls until it is stopped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import gc
import json
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from siprec_node import __version__, event_loop
from siprec_node.adapters import SharedCallStore, to_call_data
from siprec_node.config import Settings
from siprec_node.gc_watch import GcWatch, freeze_startup
from siprec_node.http import HttpApi
from siprec_node.log import wants_json
from siprec_node.media.disk import ext4_without_journal
from siprec_node.recorder import CallDriver, HandlerConfig
from siprec_node.session import (
    ManagerConfig,
    MemorySessionStore,
    RecordingVerdict,
    RedisSessionStore,
    SessionManager,
    SessionState,
    SessionStatus,
    SessionStore,
    StoreError,
    TranscriptionStatus,
)
from siprec_node.sip.call import CallStore
from siprec_node.sip.transaction import TimerConfig
from siprec_node.sip.transport import BoundListener, SipTransports, StreamLimits

log = structlog.get_logger("siprec_node.app")

STORE_STOP_TIMEOUT = 5.0
"""Seconds a stopping node waits for the store to mark it stopped, then to close."""

STORE_RETRY = 2.0
"""Seconds between attempts to reach a store that was down when the node started."""


def session_store(settings: Settings) -> SessionStore:
    """The SessionStore ``store.backend`` names."""
    if settings.store.backend == "redis":
        return RedisSessionStore(
            settings.store.url, prefix=settings.store.prefix, ttl=settings.store.ttl
        )
    return MemorySessionStore(
        ttl=settings.store.ttl, max_finished=settings.store.memory_max_finished
    )


def manager_config(settings: Settings) -> ManagerConfig:
    """The SessionManager's configuration derived from the node's settings."""
    return ManagerConfig(
        node_id=settings.node.id,
        heartbeat_interval=settings.session.heartbeat_interval,
        cleanup_interval=settings.session.cleanup_interval,
        session_timeout=settings.session.session_timeout,
        node_ttl=settings.session.node_ttl,
    )


def handler_config(settings: Settings, call_store: CallStore | None = None) -> HandlerConfig:
    """The handler's configuration derived from the node's settings."""
    media_host = settings.media.advertise_host
    if media_host is None and settings.media.host not in ("0.0.0.0", "::"):
        media_host = settings.media.host
    return HandlerConfig(
        node_id=settings.node.id,
        call_store=call_store,
        advertise_host=settings.sip.advertise_host,
        media_host=settings.media.host,
        media_advertise_host=media_host,
        port_min=settings.media.port_min,
        port_max=settings.media.port_max,
        max_sessions=settings.sip.max_sessions,
        max_streams_per_call=settings.media.max_streams_per_call,
        source_check=settings.media.source_check,
        allow_sources=tuple(settings.sip.allow_sources),
        codecs=tuple(settings.media.codecs),
        timers=TimerConfig(
            t1=settings.sip.timer_t1.total_seconds(), t2=settings.sip.timer_t2.total_seconds()
        ),
        max_message_size=settings.sip.max_message_size,
        max_headers=settings.sip.max_headers,
        max_metadata_elements=settings.sip.max_metadata_elements,
        invite_rate_per_source=settings.sip.invite_rate_per_source,
        invite_burst_per_source=settings.sip.invite_burst_per_source,
        max_answer_delay=settings.sip.max_answer_delay.total_seconds(),
        recording_dir=str(settings.recording.directory),
        recording_format=settings.recording.format,
        recording_channels=settings.recording.channels,
        keep_parts=settings.recording.keep_parts,
        finalise_workers=settings.recording.finalise_workers,
        finalise_queue=settings.recording.finalise_queue,
        min_free=settings.recording.min_free,
        finalise_retry=(
            settings.recording.finalise_retry.total_seconds(),
            settings.recording.finalise_retry_max.total_seconds(),
        ),
        media_workers=settings.media.workers,
        media_receive_path=settings.media.receive_path,
        media_receive_interval=settings.media.receive_interval.total_seconds(),
        rtp_timeout=settings.media.rtp_timeout.total_seconds(),
        rtp_timeout_action=settings.media.rtp_timeout_action,
        log_level=settings.log.level,
        log_format="json" if wants_json(settings.log.format, sys.stderr) else "console",
    )


def stream_limits(settings: Settings) -> StreamLimits:
    """Bounds on TCP/TLS connections from ``sip.tcp_*``."""
    return StreamLimits(
        max_connections=settings.sip.tcp_max_connections,
        max_connections_per_source=settings.sip.tcp_max_connections_per_source,
        message_timeout=settings.sip.tcp_message_timeout.total_seconds(),
        idle_timeout=settings.sip.tcp_idle_timeout.total_seconds(),
    )


def tls_contexts(settings: Settings) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """Server and client TLS contexts from ``sip.tls`` (None when no certificate is set)."""
    tls = settings.sip.tls
    if tls.cert_file is None or tls.key_file is None:
        return None, None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file is not None:
        server.load_verify_locations(str(tls.ca_file))
        server.verify_mode = ssl.CERT_REQUIRED
        client.load_verify_locations(str(tls.ca_file))
    client.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return server, client


class StartupError(OSError):
    """The node cannot start; the message names the listener or file at fault."""


@dataclass
class Node:
    """One recorder node: a handler behind its transports, fed by one settings object."""

    settings: Settings
    handler: CallDriver = field(init=False)
    transports: SipTransports = field(init=False)
    listeners: list[BoundListener] = field(default_factory=list)
    http: HttpApi | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.store = session_store(self.settings)
        call_store: CallStore = SharedCallStore(self.store, self.settings.node.id)
        self.transcriber = self._transcriber()
        config = handler_config(self.settings, call_store)
        if self.transcriber is not None:
            config = dataclasses.replace(config, on_finalised=self.transcriber.submit)
        self.handler = CallDriver(config)
        self.manager = SessionManager(
            self.store,
            manager_config(self.settings),
            on_timeout=self._on_timeout,
            on_takeover=self._on_takeover,
            on_presumed_dead=self._on_presumed_dead,
        )
        self._store_task: asyncio.Task[None] | None = None
        server_tls, client_tls = tls_contexts(self.settings)
        self.transports = SipTransports(
            self.handler.on_message,
            max_message_size=self.settings.sip.max_message_size,
            tls_server=server_tls,
            tls_client=client_tls,
            on_framing_error=self.handler.on_malformed,
            limits=stream_limits(self.settings),
            udp_receive_buffer=self.settings.sip.udp_receive_buffer,
        )
        self.handler.attach(self.transports.send)
        if self.settings.http.address is not None:
            token = self.settings.http.token
            self.http = HttpApi(
                self.handler,
                token=token.get_secret_value() if token is not None else None,
                readiness=self._store_ready,
                drain=self.drain,
                transports=self.transports,
            )
            if self.transcriber is not None:
                self.http.registry.register(self.transcriber.collector())
        self.gc_watch = GcWatch()
        if self.http is not None:
            self.http.registry.register(self.gc_watch)
        self._drain_task: asyncio.Task[None] | None = None

    def _transcriber(self) -> Any:
        """The node's transcription queue and its worker processes (``transcription.workers``;
        with none, jobs are only queued, for ``transcribe-worker`` elsewhere)."""
        if self.settings.transcription.engine == "none":
            return None
        from siprec_node.transcription import build_transcriber

        return build_transcriber(
            self.settings, self.store, self.settings.node.id, self.settings.transcription.workers
        )

    async def _on_timeout(self, state: SessionState) -> None:
        self.handler.expire(state.id)

    async def _on_presumed_dead(self) -> None:
        lost = await self.handler.verify_ownership()
        if lost:
            log.warning("calls_lost_after_stall", sessions=lost)

    async def _on_takeover(self, state: SessionState) -> None:
        data = to_call_data(state)
        dead = (state.call.node_id if state.call is not None else "") or "?"
        reason = f"node {dead} died"
        self.handler.adopt_finished(data, reason)
        result = await self.handler.finalise_orphan(data, reason)
        if result is not None:
            result.record_turns(state)  # saved by the manager with the failed status
            state.verdict = RecordingVerdict.from_dict(result.verdict.call.to_dict())
            if data.transcription is not None:  # queued by the transcription hook
                state.transcription = TranscriptionStatus.from_dict(data.transcription)
            if state.status is SessionStatus.FINALISING and data.is_terminal:
                # The call had ended before its node died (only its finalisation was cut): it
                # keeps the status and reason it ended with; the manager sees it terminal and
                # does not make it "failed, node died".
                state.transition(SessionStatus(data.status), reason=data.end_reason)
                await self.store.save(state, expected_version=state.version)

    async def _store_ready(self) -> bool:
        try:
            return await self.store.ping() and self.manager.running
        except StoreError:
            return False

    async def _attach_store(self) -> None:
        """Recover this node's calls and start the session manager, retrying while the store
        is down: SIP is served meanwhile and /readyz says 503."""
        while True:
            try:
                await self.handler.recover()
                await self.manager.start()
                return
            except StoreError as exc:
                log.warning("store_unavailable", error=str(exc), retry_s=STORE_RETRY)
                await asyncio.sleep(STORE_RETRY)

    async def start(self) -> None:
        """Recover this node's calls, bind every listener, start the session manager.

        Recovery comes first so that the SRCs' in-dialog requests find their dialogs; if the
        store does not answer in time the node listens anyway, answers requests for unknown
        dialogs 503 (not 481) and keeps trying to recover in the background.
        """
        await self.handler.start()
        self.handler.recovering = True
        self._store_task = asyncio.get_running_loop().create_task(self._attach_store())
        await asyncio.wait({self._store_task}, timeout=STORE_RETRY)
        for address in self.settings.sip.listen_addresses:
            try:
                bound = await self.transports.listen(address.transport, address.host, address.port)
            except OSError as exc:
                raise StartupError(f"sip.listen {address}: {exc.strerror or exc}") from exc
            self.handler.set_listener(bound.transport, bound.host, bound.port)
            self.listeners.append(bound)
        http_port = None
        if self.http is not None and self.settings.http.address is not None:
            http_address = self.settings.http.address
            try:
                http_port = await self.http.start(http_address.host, http_address.port)
            except OSError as exc:
                raise StartupError(f"http.listen {http_address}: {exc.strerror or exc}") from exc
        frozen = freeze_startup()  # out of every later collection (gc_watch.py)
        self.gc_watch.frozen = frozen
        self.gc_watch.install()
        self.gc_watch.start_reporting()
        log.info(
            "node_started",
            gc_frozen_objects=frozen,
            node_id=self.handler.node_id,
            version=__version__,
            listeners=[str(b) for b in self.listeners],
            rtp_ports=f"{self.settings.media.port_min}-{self.settings.media.port_max}",
            store=self.settings.store.backend,
            http_port=http_port,
        )
        self._warn_about_the_filesystem()
        if self.transcriber is not None and self.settings.transcription.workers > 0:
            await self.transcriber.start()

    def _warn_about_the_filesystem(self) -> None:
        directory = self.settings.recording.directory
        device = ext4_without_journal(directory)
        if device is not None:
            log.warning(
                "recording_filesystem_without_journal",
                directory=str(directory),
                device=device,
                why="ext4 without a journal checks every file deleted in the last minutes "
                "before it creates one: each call's files cost more the more calls ended lately",
                fix="record on ext4 with its journal (the default) or XFS",
            )

    def drain(self) -> asyncio.Task[None]:
        """Start draining (once; later calls return the same drain): new INVITEs get 503, live
        calls get ``node.drain_grace`` to end on their own, then BYE; the task ends once their
        finalisation is done or ``node.drain_deadline`` has passed."""
        if self._drain_task is None:
            node = self.settings.node
            self._drain_task = asyncio.get_running_loop().create_task(
                self.handler.drain(
                    node.drain_grace.total_seconds(), node.drain_deadline.total_seconds()
                )
            )
        return self._drain_task

    async def stop(self) -> None:
        """Drain and shut down: 503 to new calls, BYE and finalise live ones, flush the store,
        and mark this node stopped in it."""
        self.handler.engine.begin_stop()  # a worker exiting now is not restarted
        loop = asyncio.get_running_loop()
        began = mark = loop.time()
        phases: dict[str, float] = {}

        def done(phase: str) -> None:  # how long each step took, for a stop that hangs
            nonlocal mark
            now = loop.time()
            phases[phase] = round(now - mark, 3)
            mark = now
            log.debug("stop_phase_done", phase=phase, s=phases[phase])

        try:
            await self.drain()
        except Exception:  # whatever happened, the shutdown goes on
            log.exception("drain_failed")
        done("drain")
        if self.http is not None:
            await self.http.close()
        done("http")
        await self.handler.close()
        done("handler")
        if self.transcriber is not None:
            await self.transcriber.stop()
            done("transcriber")
        if self._store_task is not None:
            self._store_task.cancel()
        await self.manager.stop()
        try:
            # bounded: a store that stopped answering must not keep the node from exiting
            await asyncio.wait_for(self.manager.leave(), STORE_STOP_TIMEOUT)
        except (StoreError, TimeoutError) as exc:
            log.warning("node_not_marked_stopped", error=str(exc) or "store did not answer")
        done("manager")
        try:
            await asyncio.wait_for(self.store.close(), STORE_STOP_TIMEOUT)
        except TimeoutError:
            log.warning("store_close_timed_out", waited_s=STORE_STOP_TIMEOUT)
        await self.transports.close()
        done("store_and_transports")
        self.gc_watch.uninstall()
        self.gc_watch.report()
        gc.unfreeze()  # an embedding process collects what the node left as usual again
        log.info(
            "node_stopped",
            node_id=self.handler.node_id,
            stats=self.handler.stats,
            stop_s=round(loop.time() - began, 3),
            phases_s=phases,
        )

    async def run_until_signalled(self) -> None:
        """Start, wait for SIGTERM, SIGINT or SIGHUP, then stop (a second signal changes
        nothing: the drain runs to its deadline)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        received: list[str] = []

        def on_signal(sig: signal.Signals) -> None:
            received.append(sig.name)
            self.handler.engine.begin_stop()  # from now on no worker is restarted
            if stop.is_set():
                log.info("signal_ignored_while_stopping", signal=sig.name)
            stop.set()

        # SIGHUP too: a closed terminal or ssh session hangs up the whole process group, and
        # the default action would kill the node without a drain while its workers live on.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, on_signal, sig)
        await self.start()
        await stop.wait()
        log.info("signal_received", node_id=self.handler.node_id, signal=received[0])
        await self.stop()


def run_node(settings: Settings) -> int:
    """Run a node until SIGTERM/SIGINT; the exit code of ``siprec-node run``."""
    # ``kill -USR1`` prints every thread's stack to stderr: what a stop or a call that hangs
    # is waiting for, without stopping the node.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        event_loop.run(Node(settings).run_until_signalled())
    except OSError as exc:
        # An OSError from a file names it in ``filename``, which str() leaves out.
        named = exc.filename and not isinstance(exc, StartupError)
        log.error("node_failed", error=f"{exc.filename}: {exc.strerror}" if named else str(exc))
        return 1
    return 0


async def _with_store(settings: Settings, work: Callable[[SessionStore], Awaitable[int]]) -> int:
    store = session_store(settings)
    try:
        return await work(store)
    except StoreError as exc:
        print(f"store unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def _age(moment: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - moment).total_seconds())
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def list_sessions(settings: Settings, *, all_: bool = False, as_json: bool = False) -> int:
    """``siprec-node sessions``: the sessions in the configured store."""

    async def work(store: SessionStore) -> int:
        states = await (store.list_all() if all_ else store.list_active())
        nodes = {n.node_id: n for n in await store.list_nodes(settings.session.node_ttl)}
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []  # JSON objects, printed as they are or as a table
        for state in sorted(states, key=lambda s: s.created_at):
            node = nodes.get(state.node_id)
            rows.append(
                {
                    "id": state.id,
                    "call_id": state.call_id,
                    "status": state.status.value,
                    "node_id": state.node_id,
                    "started_at": state.created_at.isoformat(),
                    "last_activity": state.last_activity.isoformat(),
                    "end_reason": state.end_reason,
                    "heartbeat_age_s": (
                        round((now - node.last_heartbeat).total_seconds(), 1) if node else None
                    ),
                    "node_alive": node.alive if node else False,
                    "node_status": node.status if node else "unknown",
                    "transcription": (
                        str(state.transcription) if state.transcription is not None else None
                    ),
                }
            )
        if as_json:
            print(json.dumps(rows, indent=2))
            return 0
        table = [("SESSION", "CALL-ID", "STATUS", "NODE", "STARTED", "HEARTBEAT", "TRANSCRIPTION")]
        for row in rows:
            age = row["heartbeat_age_s"]
            table.append(
                (
                    row["id"],
                    row["call_id"],
                    row["status"],
                    row["node_id"] + ("" if row["node_alive"] else f" ({row['node_status']})"),
                    row["started_at"][:19].replace("T", " "),
                    "never" if age is None else f"{age:.0f}s",
                    row["transcription"] or "-",
                )
            )
        _print_table(table)
        return 0

    return asyncio.run(_with_store(settings, work))


def list_nodes(settings: Settings, *, as_json: bool = False) -> int:
    """``siprec-node nodes``: the nodes known to the store and whether each is alive."""

    async def work(store: SessionStore) -> int:
        now = datetime.now(UTC)
        nodes = await store.list_nodes(settings.session.node_ttl)
        if as_json:
            print(
                json.dumps(
                    [
                        {
                            "node_id": n.node_id,
                            "last_heartbeat": n.last_heartbeat.isoformat(),
                            "alive": n.alive,
                            "status": n.status,
                            "stopped_at": n.stopped_at.isoformat() if n.stopped_at else None,
                        }
                        for n in nodes
                    ],
                    indent=2,
                )
            )
            return 0
        table = [("NODE", "ALIVE", "STATUS", "LAST HEARTBEAT")]
        table += [
            (
                n.node_id,
                "yes" if n.alive else "no",
                n.status + (f" {_age(n.stopped_at, now)} ago" if n.stopped_at is not None else ""),
                f"{_age(n.last_heartbeat, now)} ago",
            )
            for n in nodes
        ]
        _print_table(table)
        return 0

    return asyncio.run(_with_store(settings, work))


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
