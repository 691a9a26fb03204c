"""Assembles a node from settings: store, SIP handler, transports; runs it until a signal.

SIGTERM / SIGINT drain the node: new INVITEs get 503 with Retry-After, live calls are finalised
(BYE to the SRC, snapshot written), the store is flushed, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from dataclasses import dataclass, field

import structlog

from siprec_node import __version__
from siprec_node.config import Settings
from siprec_node.http import HttpApi
from siprec_node.sip.call import CallStore, MemoryCallStore
from siprec_node.sip.handler import HandlerConfig, SipHandler
from siprec_node.sip.transaction import TimerConfig
from siprec_node.sip.transport import BoundListener, SipTransports

log = structlog.get_logger("siprec_node.app")

DRAIN_GRACE = 0.0
"""Seconds live calls get to end by themselves after SIGTERM before the node ends them."""


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
        allow_sources=tuple(settings.sip.allow_sources),
        codecs=tuple(settings.media.codecs),
        timers=TimerConfig(),
        max_message_size=settings.sip.max_message_size,
        max_headers=settings.sip.max_headers,
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


@dataclass
class Node:
    """One recorder node: a handler behind its transports, fed by one settings object."""

    settings: Settings
    handler: SipHandler = field(init=False)
    transports: SipTransports = field(init=False)
    listeners: list[BoundListener] = field(default_factory=list)
    http: HttpApi | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        store: CallStore = MemoryCallStore()
        self.handler = SipHandler(handler_config(self.settings, store))
        server_tls, client_tls = tls_contexts(self.settings)
        self.transports = SipTransports(
            self.handler.on_message,
            max_message_size=self.settings.sip.max_message_size,
            tls_server=server_tls,
            tls_client=client_tls,
            on_framing_error=self.handler.on_malformed,
        )
        self.handler.attach(self.transports.send)
        if self.settings.http.address is not None:
            token = self.settings.http.token
            self.http = HttpApi(
                self.handler, token=token.get_secret_value() if token is not None else None
            )

    async def start(self) -> None:
        """Bind every listener and start the handler."""
        await self.handler.start()
        for address in self.settings.sip.listen_addresses:
            bound = await self.transports.listen(address.transport, address.host, address.port)
            self.handler.set_listener(bound.transport, bound.host, bound.port)
            self.listeners.append(bound)
        http_port = None
        if self.http is not None and self.settings.http.address is not None:
            address = self.settings.http.address
            http_port = await self.http.start(address.host, address.port)
        log.info(
            "node_started",
            node_id=self.handler.node_id,
            version=__version__,
            listeners=[str(b) for b in self.listeners],
            rtp_ports=f"{self.settings.media.port_min}-{self.settings.media.port_max}",
            store=self.settings.store.backend,
            http_port=http_port,
        )

    async def stop(self, grace: float = DRAIN_GRACE) -> None:
        """Drain and shut down: 503 to new calls, BYE and finalise live ones, flush the store."""
        await self.handler.drain(grace)
        if self.http is not None:
            await self.http.close()
        # Give the BYEs a moment on the wire before the sockets close.
        await asyncio.sleep(0.2)
        await self.handler.close()
        await self.transports.close()
        log.info("node_stopped", node_id=self.handler.node_id, stats=self.handler.stats)

    async def run_until_signalled(self) -> None:
        """Start, wait for SIGTERM or SIGINT, then stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("signal_received", node_id=self.handler.node_id)
        await self.stop()


def run_node(settings: Settings) -> int:
    """Run a node until SIGTERM/SIGINT; the exit code of ``siprec-node run``."""
    try:
        asyncio.run(Node(settings).run_until_signalled())
    except OSError as exc:
        log.error("node_failed", error=str(exc))
        return 1
    return 0
