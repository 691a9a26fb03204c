"""The node's settings as typed, immutable pydantic models, one per TOML section.

Every key is optional and defaults to the value in SPEC's configuration table. Unknown keys are
errors. Rules that involve two keys (``media.port_min`` below ``media.port_max``) are checked
once both keys are valid and are reported against the key to change.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from siprec_node.config.addresses import (
    HostPort,
    ListenAddress,
    parse_host,
    parse_host_port,
    parse_listen_address,
)
from siprec_node.config.durations import format_duration, parse_duration
from siprec_node.config.fields import Duration, Int, lower
from siprec_node.config.sizes import format_size, parse_size
from siprec_node.config.transcription import TranscriptionSettings
from siprec_node.media import fastpath

__all__ = [
    "CROSS_FIELD_ERROR",
    "KNOWN_CODECS",
    "HttpSettings",
    "LogSettings",
    "MediaSettings",
    "NodeSettings",
    "RecordingSettings",
    "SessionSettings",
    "Settings",
    "SipSettings",
    "StoreSettings",
    "TlsSettings",
    "TranscriptionSettings",
]

KNOWN_CODECS: tuple[str, ...] = (
    "PCMU",
    "PCMA",
    "G722",
    "opus",
    "G729",
    "G723",
    "G726-16",
    "G726-24",
    "G726-32",
    "G726-40",
    "AAL2-G726-16",
    "AAL2-G726-24",
    "AAL2-G726-32",
    "AAL2-G726-40",
    "AMR",
    "AMR-WB",
    "iLBC",
    "GSM",
)
"""Codec names accepted in ``media.codecs``, in their canonical spelling: every codec the
recorder decodes (``siprec.codecs.DECODABLE``; a unit test keeps the two equal)."""

CROSS_FIELD_ERROR = "config_rules"
"""pydantic error type of a model-level check; ``ctx["problems"]`` lists (key, value, why)."""

_STORE_URL_SCHEMES = ("redis", "rediss", "redis+sentinel", "unix")
_CLUSTER_NODE_SCHEMES = ("redis", "rediss")


# --- field types -------------------------------------------------------------------------------


def _optional_host(value: Any) -> str | None:
    return None if value is None else parse_host(value)


def _path(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


def _listen_text(value: str) -> str:
    parse_listen_address(value)
    return value.strip()


def _network(value: Any) -> Any:
    if not isinstance(value, str):
        if isinstance(value, IPv4Network | IPv6Network):
            return value
        raise ValueError("must be a string")
    try:
        return ip_network(value.strip())
    except ValueError as exc:
        if "host bits" in str(exc):
            raise ValueError("has host bits set; use the network, like 10.0.0.0/8") from None
        raise ValueError("must be a CIDR like 10.0.0.0/8 or 2001:db8::/32") from None


def _codec(value: str) -> str:
    canonical = {name.lower(): name for name in KNOWN_CODECS}
    name = canonical.get(value.replace(".", "").strip().lower())
    if name is None:
        raise ValueError(f"must be one of: {', '.join(KNOWN_CODECS)}")
    return name


NonNegativeDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration that may be zero (``"0s"``)."""
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str, when_used="json"),
]
"""A number of bytes, written ``"500MB"`` or ``"2GiB"`` in files (or a number of bytes)."""
Host = Annotated[str, BeforeValidator(parse_host)]
OptionalHost = Annotated[str | None, BeforeValidator(_optional_host)]
FilePath = Annotated[Path, BeforeValidator(_path)]
ListenText = Annotated[str, AfterValidator(_listen_text)]
Network = Annotated[
    IPv4Network | IPv6Network,
    BeforeValidator(_network),
    PlainSerializer(str, return_type=str, when_used="json"),
]
Codec = Annotated[str, AfterValidator(_codec)]


class _Section(BaseModel):
    """Base of every section: immutable, unknown keys rejected."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=False, use_attribute_docstrings=True
    )


def _problems(*problems: tuple[str, Any, str]) -> PydanticCustomError:
    """One error carrying several (key, value, why) findings of a model-level check."""
    summary = "; ".join(f"{key}: {why}" for key, _, why in problems)
    return PydanticCustomError(
        CROSS_FIELD_ERROR, "{summary}", {"summary": summary, "problems": list(problems)}
    )


# --- sections ----------------------------------------------------------------------------------


class NodeSettings(_Section):
    """``[node]``: who this node is."""

    id: str = Field(default_factory=socket.gethostname)
    """Stable identity of this node; recovery after a restart relies on it. Default: host name."""

    drain_grace: NonNegativeDuration = timedelta(seconds=10)
    """On SIGTERM/SIGINT or ``POST /drain``: how long live calls may end on their own (new
    INVITEs get 503 meanwhile) before the node sends BYE to those left."""
    drain_deadline: NonNegativeDuration = timedelta(seconds=25)
    """Counted from the start of the drain: how long the node waits at most for the calls it
    ended to be finalised and for its BYEs to be answered (4*T1 at most each) before it goes
    on with the shutdown; a finalisation still running then is completed (and logged as
    ``drain_deadline_passed``), never cut. A service manager's stop timeout must exceed it."""

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @model_validator(mode="after")
    def _check_drain(self) -> NodeSettings:
        if self.drain_deadline < self.drain_grace:
            grace = format_duration(self.drain_grace)
            why = f"drain_deadline must not be shorter than drain_grace ({grace})"
            raise _problems(("drain_deadline", format_duration(self.drain_deadline), why))
        return self


class TlsSettings(_Section):
    """``[sip.tls]``: certificate and key of ``tls:`` listeners; a CA file demands client certs."""

    cert_file: FilePath | None = None
    """PEM certificate (chain) of the node's ``tls:`` listeners."""
    key_file: FilePath | None = None
    """PEM private key of ``cert_file``."""
    ca_file: FilePath | None = None
    """PEM CA bundle; when set, TLS clients must present a certificate it signed."""

    @model_validator(mode="after")
    def _check_pair(self) -> TlsSettings:
        if self.cert_file is not None and self.key_file is None:
            raise _problems(("key_file", None, "must be set together with cert_file"))
        if self.key_file is not None and self.cert_file is None:
            raise _problems(("cert_file", None, "must be set together with key_file"))
        return self


class SipSettings(_Section):
    """``[sip]``: listeners, admission and parser limits."""

    listen: list[ListenText] = Field(
        default_factory=lambda: ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    )
    """``udp:``/``tcp:``/``tls:`` + host:port; port 0 picks a free one."""
    advertise_host: OptionalHost = None
    """Host written into Contact headers; derived from the listener when unset."""
    tls: TlsSettings = Field(default_factory=TlsSettings)
    allow_sources: list[Network] = Field(default_factory=list)
    """CIDRs allowed to start recordings (empty: all); others get 403."""
    max_sessions: Int = Field(default=2000, ge=1)
    """Concurrent recordings; beyond it, 503 + Retry-After."""
    max_message_size: Int = Field(default=65535, ge=1024, le=16 * 1024 * 1024)
    """Largest SIP message accepted, in bytes."""
    max_headers: Int = Field(default=256, ge=1)
    """Most header fields accepted in one SIP message."""
    max_metadata_elements: Int = Field(default=1000, ge=10, le=1_000_000)
    """Most XML elements (stream ids in ``<send>``/``<recv>`` texts counted) accepted in one
    recording metadata document; beyond it the request gets 400."""
    tcp_max_connections: Int = Field(default=1024, ge=1, le=1_000_000)
    """Open TCP/TLS connections in total (never more than half the descriptor limit); when
    full, the longest idle connection is evicted for a new one, or the new one is closed."""
    tcp_max_connections_per_source: Int = Field(default=256, ge=1, le=1_000_000)
    """Open TCP/TLS connections from one IP address; beyond it new ones are closed at once."""
    tcp_message_timeout: Duration = timedelta(seconds=10)
    """A message on TCP/TLS (header and body) must be complete this long after its first byte;
    trickling cannot extend it. Also bounds the TLS handshake."""
    tcp_idle_timeout: Duration = timedelta(seconds=600)
    """A TCP/TLS connection with no complete message (or CRLF keep-alive) this long is closed;
    partial messages do not count as activity."""
    invite_rate_per_source: float = Field(default=50.0, ge=0, le=1_000_000)
    """New INVITEs per second accepted from one IP address (token bucket); beyond it 503 with
    Retry-After. 0 disables the limit."""
    invite_burst_per_source: Int = Field(default=100, ge=1, le=1_000_000)
    """INVITEs one IP address may send at once above ``invite_rate_per_source``."""
    max_answer_delay: NonNegativeDuration = timedelta(seconds=1)
    """New INVITEs get 503 (``Overloaded``, with Retry-After) while a call the node accepted
    has waited longer than this for its media to open: the node is behind (its media workers
    short of CPU) and would answer late and record what arrives meanwhile badly; an SRC with
    another recorder fails over to it. Calls already accepted are answered as their media
    opens. ``0`` disables the check. 0 to 30s."""
    udp_receive_buffer: Size = Field(default=4 * 1024 * 1024, ge=4096, le=1 << 30)
    """Receive buffer (SO_RCVBUF) of each UDP listener: datagrams wait there while the node is
    busy, and beyond it the kernel drops them (``siprec_sip_datagrams_dropped_total``). Linux
    caps it at ``net.core.rmem_max`` unless the node runs with CAP_NET_ADMIN; the size granted
    is logged at start (``sip_udp_receive_buffer``, or a warning when capped)."""

    timer_t1: Duration = timedelta(milliseconds=500)
    """RFC 3261's T1, the round-trip estimate: on UDP the node's requests and 2xx answers are
    sent again after T1, 2*T1, ... (capped at ``timer_t2``), and a request or 2xx never answered
    or acknowledged is given up after 64*T1 (Timers B, F, H, L: 32 s by default). Larger on
    links slower than 500 ms; smaller only where every SRC is near. 10ms to 10s."""
    timer_t2: Duration = timedelta(seconds=4)
    """RFC 3261's T2: the longest wait between two sends of a request or a 2xx answer."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one address")
        return value

    @field_validator("timer_t1")
    @classmethod
    def _check_t1(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=10) <= value <= timedelta(seconds=10):
            raise ValueError("must be between 10ms and 10s")
        return value

    @model_validator(mode="after")
    def _check_t2(self) -> SipSettings:
        if self.timer_t2 < self.timer_t1:
            why = f"must not be shorter than timer_t1 ({format_duration(self.timer_t1)})"
            raise _problems(("timer_t2", format_duration(self.timer_t2), why))
        return self

    @field_validator("max_answer_delay")
    @classmethod
    def _check_max_answer_delay(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(seconds=30):
            raise ValueError("must be between 0s and 30s")
        return value

    @field_validator("invite_rate_per_source", mode="before")
    @classmethod
    def _check_rate(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value

    @model_validator(mode="after")
    def _check_connection_caps(self) -> SipSettings:
        if self.tcp_max_connections_per_source > self.tcp_max_connections:
            why = (
                "tcp_max_connections_per_source must not exceed tcp_max_connections"
                f" ({self.tcp_max_connections})"
            )
            raise _problems(
                ("tcp_max_connections_per_source", self.tcp_max_connections_per_source, why)
            )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> SipSettings:
        if any(address.transport == "tls" for address in self.listen_addresses):
            missing = [
                (f"tls.{key}", None, "must be set when sip.listen has a tls: address")
                for key in ("cert_file", "key_file")
                if getattr(self.tls, key) is None
            ]
            if missing:
                raise _problems(*missing)
        return self

    @property
    def listen_addresses(self) -> tuple[ListenAddress, ...]:
        """``listen`` parsed into transport, host and port."""
        return tuple(parse_listen_address(text) for text in self.listen)


class MediaSettings(_Section):
    """``[media]``: RTP sockets, workers and codecs."""

    host: Host = "0.0.0.0"
    """RTP bind address."""
    advertise_host: OptionalHost = None
    """Address put in SDP answers; derived when unset."""
    port_min: Int = Field(default=20000, ge=1024, le=65535)
    """Lowest RTP port (even); RTCP takes the port above each RTP port."""
    port_max: Int = Field(default=39999, ge=1024, le=65535)
    """Highest port of the RTP/RTCP range; open the whole range to the SRCs in the firewall."""
    workers: Int = Field(default=1, ge=0, le=1024)
    """Media worker processes; 0 runs media inside the SIP process."""
    rtp_timeout: Duration = timedelta(seconds=60)
    """Silence (no RTP) of every non-paused stream of a call this long triggers
    ``rtp_timeout_action``."""
    rtp_timeout_action: Annotated[Literal["probe", "end", "none"], BeforeValidator(lower)] = "probe"
    """``probe``: an in-dialog OPTIONS to the SRC (481, 408 or no answer end the call; 200 keeps
    it, marked stalled, probed again after another ``rtp_timeout``); ``end``: BYE; ``none``."""
    codecs: list[Codec] = Field(default_factory=lambda: list(KNOWN_CODECS))
    """Codecs the node may accept (an allow-list, default all it decodes). The SDP answer keeps
    the offer's order and lists every offered codec on this list whose decoder the installed
    FFmpeg has; this order only orders the node's own offer (INVITEs without SDP)."""
    max_streams_per_call: Int = Field(default=8, ge=1, le=256)
    """Audio m-lines one call may offer; an INVITE, re-INVITE or UPDATE offering more gets 488
    with a Warning, and nothing is allocated for it."""
    source_check: Annotated[Literal["strict", "signalling", "any"], BeforeValidator(lower)] = (
        "signalling"
    )
    """Whose RTP a stream records: ``strict`` only the address its SDP names (c=),
    ``signalling`` that or the SIP peer's address, ``any`` every sender (no check). Packets
    from other addresses are dropped and counted as ``foreign_packets``."""
    receive_path: Annotated[Literal["auto", "c", "python"], BeforeValidator(lower)] = "auto"
    """How workers read RTP: the built C extension (``auto`` when present, ``c`` required) or
    the event loop in Python (``python``)."""
    receive_interval: NonNegativeDuration = timedelta(milliseconds=20)
    """With the C receive path: after reading its sockets a worker waits this long before it
    watches them again, so that one read takes a packet from most streams instead of waking
    for every few packets (at 200,000 packets/s: ~400 reads instead of ~1,000,000 in 20 s, and
    a fifth to a quarter less CPU per packet, bench/media). Packets wait in the kernel's socket
    buffers meanwhile, stamped with their arrival times; a close or a pause reads what waits
    first. A worker killed loses what waited, as it loses what comes while it restarts (the
    gap is the downtime). ``0``: read as soon as a packet arrives. 0 to 100ms."""

    @field_validator("receive_path")
    @classmethod
    def _check_receive_path(cls, value: str) -> str:
        if value == "c" and not fastpath.available():
            raise ValueError(
                "the C receive path (siprec_node.media._rtprecv) was not built on this install; "
                "use 'auto' or 'python', or reinstall with a C compiler on Linux"
            )
        return value

    @field_validator("receive_interval")
    @classmethod
    def _check_receive_interval(cls, value: timedelta) -> timedelta:
        if value > timedelta(milliseconds=100):
            raise ValueError("must be between 0 and 100ms")
        return value

    @field_validator("port_min")
    @classmethod
    def _check_even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (RTP uses even ports, RTCP the next one)")
        return value

    @field_validator("codecs")
    @classmethod
    def _check_codecs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one codec")
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once")
        return value

    @model_validator(mode="after")
    def _check_range(self) -> MediaSettings:
        if self.port_min >= self.port_max:
            why = f"port_min must be lower than port_max ({self.port_max})"
            raise _problems(("port_min", self.port_min, why))
        return self


class RecordingSettings(_Section):
    """``[recording]``: where and how recordings are written."""

    directory: FilePath = Path("recordings")
    """Where recordings go, as ``YYYY/MM/DD/<stem>.<ext>`` with a ``<stem>.json`` sidecar."""
    format: Annotated[Literal["wav", "wav-g711", "flac", "opus"], BeforeValidator(lower)] = "wav"
    """``wav`` (PCM16), ``wav-g711`` (G.711 as received, no transcoding), ``flac`` or ``opus``."""
    channels: Annotated[Literal["stereo", "separate", "both"], BeforeValidator(lower)] = "stereo"
    """``stereo`` (one participant per channel), ``separate`` (a file per stream), ``both``."""
    keep_parts: bool = False
    """Keep a recording's ``<stem>.parts/`` folder (per-stream files) once its final files are
    written; by default it is removed then (it takes about 1.5 times the recording's size)."""
    min_free: Size = 0
    """Free space the recording directory's filesystem must keep: below it new INVITEs get 503
    (``Low Disk Space``) and ``/readyz`` 503 saying so, while live calls keep recording as long
    as the disk takes their writes. ``0``: no minimum."""
    finalise_workers: Int = Field(default=2, ge=0, le=256)
    """Processes that finalise recordings (decode, voice activity, encode, sidecar, fsync),
    apart from the SIP process and the media workers; a call's recording is finalised by one
    of them after its BYE. A finalisation mostly waits for its fsyncs: one process kept up
    with 10 calls a second but not 30 on bench/e2e's machine, two did (BYE→finalised p99
    0.6 s, each 11 % busy); give more where calls end faster. ``0`` finalises in threads of
    the SIP process, where it competes with SIP for the interpreter (embedding and tests
    only)."""
    finalise_queue: Int = Field(default=1000, ge=1, le=1_000_000)
    """Finalisations waiting for a process, at most (``siprec_finalisation_queue_depth``).
    Beyond it an ended call waits ``finalising`` in the node and the store
    (``siprec_finalisations_pending``) and joins the queue as it empties; a node stopped or
    dead meanwhile leaves it to its next start or to the node that takes its calls over."""
    finalise_retry: Duration = timedelta(seconds=2)
    """A failed finalisation (disk full) is tried again after this, then after twice as long
    each time up to ``finalise_retry_max``, and at once when free space is back above
    ``min_free``; the call stays ``finalising`` in the store meanwhile."""
    finalise_retry_max: Duration = timedelta(seconds=60)
    """The longest wait between two attempts of a failed finalisation."""

    @model_validator(mode="after")
    def _check_retry(self) -> RecordingSettings:
        if self.finalise_retry_max < self.finalise_retry:
            raise _problems(
                (
                    "finalise_retry_max",
                    format_duration(self.finalise_retry_max),
                    "must not be shorter than recording.finalise_retry "
                    f"({format_duration(self.finalise_retry)})",
                )
            )
        return self


class StoreSettings(_Section):
    """``[store]``: where session state is shared."""

    backend: Annotated[Literal["memory", "redis"], BeforeValidator(lower)] = "memory"
    """``memory`` (this process only: nothing survives it, other processes cannot see it) or
    ``redis`` (shared by a fleet)."""
    url: str | list[str] = "redis://127.0.0.1:6379/0"
    """A ``redis://``, ``rediss://``, ``redis+sentinel://`` or ``unix://`` URL, or a list of
    cluster nodes (``host:port`` or ``redis://host:port``)."""
    prefix: str = "siprec:"
    """Prefix of every key the node writes."""
    ttl: Duration = timedelta(hours=24)
    """Lifetime of a session record after its last update."""
    memory_max_finished: Int = Field(default=1000, ge=0, le=10_000_000)
    """``memory`` backend only: finished sessions (ended or failed) kept in the node's process,
    the oldest forgotten first (each at ``ttl`` at the latest), so that its memory grows with
    its live calls, not with the calls it has done (a record takes ~8 KB). One waiting for its
    transcription is kept until the transcript is written into it."""

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            scheme = urlsplit(value.strip()).scheme.lower()
            if scheme not in _STORE_URL_SCHEMES:
                raise ValueError(
                    "must start with redis://, rediss://, redis+sentinel:// or unix://,"
                    " or be a list of cluster nodes"
                )
            return value.strip()
        if isinstance(value, list):
            if not value:
                raise ValueError("must name at least one cluster node")
            for item in value:
                _check_cluster_node(item)
            return [item.strip() for item in value]
        raise ValueError("must be a URL string or a list of cluster nodes")


def _check_cluster_node(item: Any) -> None:
    if not isinstance(item, str):
        raise ValueError("cluster nodes must be strings")
    text = item.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() not in _CLUSTER_NODE_SCHEMES or not parts.hostname:
            raise ValueError(f"cluster node {item!r} must be host:port or redis://host:port")
        return
    try:
        parse_host_port(text)
    except ValueError:
        raise ValueError(f"cluster node {item!r} must be host:port or redis://host:port") from None


class SessionSettings(_Section):
    """``[session]``: liveness and clean-up timing."""

    heartbeat_interval: Duration = timedelta(seconds=5)
    """How often the node proves it is alive."""
    node_ttl: Duration = timedelta(seconds=15)
    """A node silent this long is dead; its sessions are taken over."""
    cleanup_interval: Duration = timedelta(seconds=30)
    """Sweep for stale sessions this often."""
    session_timeout: Duration = timedelta(hours=1)
    """A session with no SIP and no RTP activity this long is ended."""

    @model_validator(mode="after")
    def _check_liveness(self) -> SessionSettings:
        if self.node_ttl <= self.heartbeat_interval:
            raise _problems(
                (
                    "node_ttl",
                    format_duration(self.node_ttl),
                    "node_ttl must be longer than heartbeat_interval"
                    f" ({format_duration(self.heartbeat_interval)})",
                )
            )
        return self


class HttpSettings(_Section):
    """``[http]``: health, metrics and admin API."""

    listen: str = "127.0.0.1:8080"
    """``host:port``; an empty string disables the HTTP server."""
    token: SecretStr | None = None
    """Bearer token the admin API requires when set."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_host_port(value)
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it unset to disable)")
        return value

    @property
    def address(self) -> HostPort | None:
        """``listen`` parsed, or ``None`` when the HTTP server is disabled."""
        return parse_host_port(self.listen) if self.listen else None


class LogSettings(_Section):
    """``[log]``: level and output format."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(lower)] = "info"
    """Lowest level logged."""
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(lower)] = "auto"
    """``json`` lines, a ``console`` renderer, or ``auto``: JSON unless stderr is a terminal."""


class Settings(_Section):
    """All settings of a node; ``Settings()`` is the embedded defaults."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    sip: SipSettings = Field(default_factory=SipSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    transcription: TranscriptionSettings = Field(default_factory=TranscriptionSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="after")
    def _check_transcription_workers(self) -> Settings:
        if (
            self.transcription.engine != "none"
            and self.transcription.workers == 0
            and self.store.backend == "memory"
        ):
            why = (
                "with store.backend memory the queue lives in the node, so no transcribe-worker "
                "can take its jobs: set workers to 1 or more, or use the redis store"
            )
            raise _problems(("transcription.workers", 0, why))
        return self
