"""Settings models: SPEC's defaults and every validation rule."""

from __future__ import annotations

import socket
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from siprec_node.config import HostPort, ListenAddress, Settings, load_settings

from .conftest import LoadText, ProblemsOf

SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "node": {
        "id": socket.gethostname(),
        "drain_grace": timedelta(seconds=10),
        "drain_deadline": timedelta(seconds=25),
    },
    "sip": {
        "listen": ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"],
        "advertise_host": None,
        "tls": {"cert_file": None, "key_file": None, "ca_file": None},
        "allow_sources": [],
        "max_sessions": 2000,
        "max_message_size": 65535,
        "max_headers": 256,
        "max_metadata_elements": 1000,
        "tcp_max_connections": 1024,
        "tcp_max_connections_per_source": 256,
        "tcp_message_timeout": timedelta(seconds=10),
        "tcp_idle_timeout": timedelta(seconds=600),
        "invite_rate_per_source": 50.0,
        "invite_burst_per_source": 100,
        "max_answer_delay": timedelta(seconds=1),
        "udp_receive_buffer": 4 * 1024 * 1024,
        "timer_t1": timedelta(milliseconds=500),
        "timer_t2": timedelta(seconds=4),
    },
    "media": {
        "host": "0.0.0.0",
        "advertise_host": None,
        "port_min": 20000,
        "port_max": 39999,
        "workers": 1,
        "rtp_timeout": timedelta(seconds=60),
        "rtp_timeout_action": "probe",
        "codecs": [
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
        ],
        "max_streams_per_call": 8,
        "source_check": "signalling",
        "receive_path": "auto",
        "receive_interval": timedelta(milliseconds=20),
    },
    "recording": {
        "directory": Path("recordings"),
        "format": "wav",
        "channels": "stereo",
        "keep_parts": False,
        "min_free": 0,
        "finalise_workers": 2,
        "finalise_queue": 1000,
        "finalise_retry": timedelta(seconds=2),
        "finalise_retry_max": timedelta(seconds=60),
    },
    "store": {
        "backend": "memory",
        "url": "redis://127.0.0.1:6379/0",
        "prefix": "siprec:",
        "ttl": timedelta(hours=24),
        "memory_max_finished": 1000,
    },
    "session": {
        "heartbeat_interval": timedelta(seconds=5),
        "node_ttl": timedelta(seconds=15),
        "cleanup_interval": timedelta(seconds=30),
        "session_timeout": timedelta(hours=1),
    },
    "http": {"listen": "127.0.0.1:8080", "token": None},
    "transcription": {
        "engine": "none",
        "language": "en",
        "model": "tiny.en",
        "threads": 1,
        "workers": 1,
        "max_attempts": 3,
        "reclaim_after": timedelta(seconds=60),
        "http_url": "",
        "http_model": "whisper-1",
        "http_token": None,
        "http_timeout": timedelta(seconds=60),
    },
    "log": {"level": "info", "format": "auto"},
}


def test_defaults_are_specs_table() -> None:
    assert Settings().model_dump() == SPEC_DEFAULTS


def test_no_file_and_no_environment_gives_defaults() -> None:
    assert load_settings(None, environ={}) == Settings()


def test_empty_file_gives_defaults(load_text: LoadText) -> None:
    assert load_text("") == Settings()


def test_parsed_forms() -> None:
    settings = Settings()
    assert settings.sip.listen_addresses == (
        ListenAddress("udp", "0.0.0.0", 5060),
        ListenAddress("tcp", "0.0.0.0", 5060),
    )
    assert settings.http.address == HostPort("127.0.0.1", 8080)


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.store.backend = "redis"  # type: ignore[misc]


def test_full_file(load_text: LoadText) -> None:
    settings = load_text(
        """
[node]
id = "recorder-1"

[sip]
listen = ["udp:[::]:5060", "tls:0.0.0.0:5061"]
advertise_host = "sbc.example.com"
allow_sources = ["10.0.0.0/8", "2001:db8::/32"]
max_sessions = 50

[sip.tls]
cert_file = "/etc/siprec/cert.pem"
key_file = "/etc/siprec/key.pem"
ca_file = "/etc/siprec/ca.pem"

[media]
host = "192.0.2.10"
advertise_host = "[2001:db8::10]"
port_min = 30000
port_max = 30999
workers = 0
rtp_timeout = "90s"
codecs = ["pcma", "Opus"]

[recording]
directory = "/var/lib/siprec"
format = "FLAC"
channels = "both"

[store]
backend = "redis"
url = ["10.0.0.1:7000", "redis://10.0.0.2:7000"]
prefix = "voice:sessions:"
ttl = "12h"

[session]
heartbeat_interval = "500ms"
node_ttl = 3
cleanup_interval = "1m"
session_timeout = "1h30m"

[http]
listen = "[::1]:9090"
token = "s3cret"

[log]
level = "DEBUG"
format = "json"
"""
    )
    assert settings.node.id == "recorder-1"
    assert settings.sip.listen_addresses[0] == ListenAddress("udp", "::", 5060)
    assert settings.sip.advertise_host == "sbc.example.com"
    assert settings.sip.allow_sources == [ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")]
    assert settings.sip.tls.ca_file == Path("/etc/siprec/ca.pem")
    assert settings.media.advertise_host == "2001:db8::10"
    assert settings.media.workers == 0
    assert settings.media.codecs == ["PCMA", "opus"]
    assert settings.recording.format == "flac"
    assert settings.store.url == ["10.0.0.1:7000", "redis://10.0.0.2:7000"]
    assert settings.store.ttl == timedelta(hours=12)
    assert settings.session.heartbeat_interval == timedelta(milliseconds=500)
    assert settings.session.node_ttl == timedelta(seconds=3)
    assert settings.session.session_timeout == timedelta(minutes=90)
    assert settings.http.address == HostPort("::1", 9090)
    assert settings.http.token is not None
    assert settings.http.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.log.level == "debug"


def test_http_can_be_disabled(load_text: LoadText) -> None:
    settings = load_text('[http]\nlisten = ""')
    assert settings.http.address is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:pw@redis.example.com:6380/1",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
        "unix:///run/redis.sock",
    ],
)
def test_store_url_schemes(load_text: LoadText, url: str) -> None:
    assert load_text(f'[store]\nurl = "{url}"').store.url == url


# (TOML, key, value as reported, part of why)
RULES: list[tuple[str, str, Any, str]] = [
    ('[node]\nid = ""', "node.id", "", "must not be empty"),
    ('[node]\nid = "a b"', "node.id", "a b", "must not contain spaces"),
    ("[node]\nid = 7", "node.id", 7, "must be a string"),
    ('[sip]\nlisten = "udp:0.0.0.0:5060"', "sip.listen", "udp:0.0.0.0:5060", "must be a list"),
    ("[sip]\nlisten = []", "sip.listen", [], "at least one"),
    ('[sip]\nlisten = ["sctp:0.0.0.0:1"]', "sip.listen[0]", "sctp:0.0.0.0:1", "udp:, tcp: or tls:"),
    ('[sip]\nlisten = ["udp:0.0.0.0:70000"]', "sip.listen[0]", "udp:0.0.0.0:70000", "0..65535"),
    ('[sip]\nlisten = ["udp:::1:5060"]', "sip.listen[0]", "udp:::1:5060", "brackets"),
    ('[sip]\nadvertise_host = "not a host"', "sip.advertise_host", "not a host", "host name"),
    ('[sip.tls]\ncert_file = "c.pem"', "sip.tls.key_file", None, "together with cert_file"),
    ('[sip.tls]\nkey_file = "k.pem"', "sip.tls.cert_file", None, "together with key_file"),
    ('[sip.tls]\ncert_file = ""\nkey_file = "k"', "sip.tls.cert_file", "", "must not be empty"),
    ('[sip.tls]\ncert_file = "c"\nkey_file = "k"\nca = "x"', "sip.tls.ca", "x", "unknown key"),
    ('[sip]\nallow_sources = ["10.0.0.1/8"]', "sip.allow_sources[0]", "10.0.0.1/8", "host bits"),
    ('[sip]\nallow_sources = ["nope"]', "sip.allow_sources[0]", "nope", "must be a CIDR"),
    ("[sip]\nallow_sources = [10]", "sip.allow_sources[0]", 10, "must be a string"),
    ('[sip]\nmax_sessions = "lots"', "sip.max_sessions", "lots", "must be an integer"),
    ("[sip]\nmax_sessions = 0", "sip.max_sessions", 0, "must be at least 1"),
    ("[sip]\nmax_sessions = 2.5", "sip.max_sessions", 2.5, "must be an integer"),
    ("[sip]\nmax_sessions = true", "sip.max_sessions", True, "must be an integer"),
    ("[sip]\nmax_message_size = 100", "sip.max_message_size", 100, "at least 1024"),
    ("[sip]\nmax_headers = 0", "sip.max_headers", 0, "at least 1"),
    ("[sip]\nmax_metadata_elements = 5", "sip.max_metadata_elements", 5, "at least 10"),
    ("[sip]\ntcp_max_connections = 0", "sip.tcp_max_connections", 0, "at least 1"),
    (
        "[sip]\ntcp_max_connections = 10\ntcp_max_connections_per_source = 20",
        "sip.tcp_max_connections_per_source",
        20,
        "must not exceed tcp_max_connections (10)",
    ),
    ('[sip]\ntcp_message_timeout = "0s"', "sip.tcp_message_timeout", "0s", "longer than zero"),
    ('[sip]\ntcp_idle_timeout = "x"', "sip.tcp_idle_timeout", "x", "duration"),
    ("[sip]\ninvite_rate_per_source = -1", "sip.invite_rate_per_source", -1, "at least 0"),
    ("[sip]\ninvite_rate_per_source = true", "sip.invite_rate_per_source", True, "a number"),
    ("[sip]\ninvite_burst_per_source = 0", "sip.invite_burst_per_source", 0, "at least 1"),
    ('[media]\nhost = "::1::2"', "media.host", "::1::2", "not a valid IPv6"),
    ("[media]\nport_min = 80", "media.port_min", 80, "at least 1024"),
    ("[media]\nport_max = 70000", "media.port_max", 70000, "at most 65535"),
    ("[media]\nport_min = 20001", "media.port_min", 20001, "must be even"),
    (
        "[media]\nport_min = 40000\nport_max = 30000",
        "media.port_min",
        40000,
        "port_min must be lower than port_max",
    ),
    (
        "[media]\nport_min = 30000\nport_max = 30000",
        "media.port_min",
        30000,
        "port_min must be lower than port_max",
    ),
    ("[media]\nworkers = -1", "media.workers", -1, "at least 0"),
    ('[media]\nrtp_timeout = "soon"', "media.rtp_timeout", "soon", "must be a duration like"),
    ('[media]\nrtp_timeout = "0s"', "media.rtp_timeout", "0s", "longer than zero"),
    (
        '[media]\nrtp_timeout_action = "hangup"',
        "media.rtp_timeout_action",
        "hangup",
        "probe, end, none",
    ),
    ('[node]\ndrain_grace = "-1s"', "node.drain_grace", "-1s", "must not be negative"),
    ('[sip]\ntimer_t1 = "5ms"', "sip.timer_t1", "5ms", "between 10ms and 10s"),
    ('[sip]\ntimer_t1 = "1m"', "sip.timer_t1", "1m", "between 10ms and 10s"),
    (
        '[sip]\ntimer_t1 = "5s"',
        "sip.timer_t2",
        "4s",
        "must not be shorter than timer_t1 (5s)",
    ),
    (
        '[node]\ndrain_grace = "30s"\ndrain_deadline = "10s"',
        "node.drain_deadline",
        "10s",
        "must not be shorter than drain_grace",
    ),
    ('[media]\ncodecs = ["G728"]', "media.codecs[0]", "G728", "must be one of: PCMU, PCMA"),
    ('[media]\ncodecs = ["PCMU", "pcmu"]', "media.codecs", ["PCMU", "pcmu"], "more than once"),
    ("[media]\ncodecs = []", "media.codecs", [], "at least one codec"),
    ('[media]\nreceive_path = "fast"', "media.receive_path", "fast", "auto, c, python"),
    ('[sip]\nmax_answer_delay = "31s"', "sip.max_answer_delay", "31s", "between 0s and 30s"),
    ('[sip]\nmax_answer_delay = "-1s"', "sip.max_answer_delay", "-1s", "not be negative"),
    ('[media]\nreceive_interval = "1s"', "media.receive_interval", "1s", "between 0 and 100ms"),
    ('[media]\nreceive_interval = "-5ms"', "media.receive_interval", "-5ms", "not be negative"),
    ("[media]\nmax_streams_per_call = 0", "media.max_streams_per_call", 0, "at least 1"),
    ("[media]\nmax_streams_per_call = 1000", "media.max_streams_per_call", 1000, "at most 256"),
    (
        '[media]\nsource_check = "none"',
        "media.source_check",
        "none",
        "strict, signalling, any",
    ),
    ('[recording]\nformat = "mp3"', "recording.format", "mp3", "wav, wav-g711, flac, opus"),
    ('[recording]\nchannels = "mono"', "recording.channels", "mono", "stereo, separate, both"),
    ('[recording]\ndirectory = ""', "recording.directory", "", "must not be empty"),
    ('[store]\nbackend = "etcd"', "store.backend", "etcd", "must be one of: memory, redis"),
    ('[store]\nurl = "http://x"', "store.url", "http://x", "must start with redis://"),
    ("[store]\nurl = []", "store.url", [], "at least one cluster node"),
    ('[store]\nurl = ["nohost"]', "store.url", ["nohost"], "host:port or redis://host:port"),
    ("[store]\nurl = 6379", "store.url", 6379, "URL string or a list"),
    ("[store]\nttl = -5", "store.ttl", -5, "must not be negative"),
    ('[session]\nnode_ttl = "5s"', "session.node_ttl", "5s", "longer than heartbeat_interval"),
    ('[session]\ncleanup_interval = "x"', "session.cleanup_interval", "x", "duration"),
    ('[http]\nlisten = "localhost"', "http.listen", "localhost", "must be host:port"),
    ('[http]\ntoken = ""', "http.token", "", "must not be empty"),
    ('[log]\nlevel = "trace"', "log.level", "trace", "debug, info, warning, error"),
    ('[log]\nformat = "xml"', "log.format", "xml", "must be one of: auto, json, console"),
    ('[store]\nbakend = "redis"', "store.bakend", "redis", "unknown key"),
    ("[cache]\nsize = 1", "cache", {"size": 1}, "unknown key"),
    ("sip = 5", "sip", 5, "must be a table"),
]


@pytest.mark.parametrize(("text", "key", "value", "why"), RULES, ids=[r[1] for r in RULES])
def test_validation_rules(
    problems_of: ProblemsOf, text: str, key: str, value: Any, why: str
) -> None:
    problems = problems_of(text)
    assert [(p.key, p.value) for p in problems] == [(key, value)], problems
    assert why in problems[0].why


def test_receive_path_c_needs_the_built_extension(
    problems_of: ProblemsOf, load_text: LoadText, monkeypatch: pytest.MonkeyPatch
) -> None:
    from siprec_node.media import fastpath

    monkeypatch.setattr(fastpath, "_built", None)
    problems = problems_of('[media]\nreceive_path = "C"')
    assert [(p.key, p.value) for p in problems] == [("media.receive_path", "C")]
    assert "was not built" in problems[0].why
    assert load_text('[media]\nreceive_path = "auto"').media.receive_path == "auto"


def test_tls_listener_needs_certificate_and_key(problems_of: ProblemsOf) -> None:
    problems = problems_of('[sip]\nlisten = ["udp:0.0.0.0:5060", "tls:0.0.0.0:5061"]')
    assert [(p.key, p.value, p.why) for p in problems] == [
        ("sip.tls.cert_file", None, "must be set when sip.listen has a tls: address"),
        ("sip.tls.key_file", None, "must be set when sip.listen has a tls: address"),
    ]
    assert str(problems[0]) == (
        "sip.tls.cert_file: <unset>: must be set when sip.listen has a tls: address"
    )


def test_all_problems_are_reported_together(problems_of: ProblemsOf) -> None:
    problems = problems_of(
        """
[sip]
max_sessions = "lots"
listen = ["udp:0.0.0.0:5060", "smtp:x:25"]

[media]
port_min = 40000
port_max = 30000

[store]
bakend = "redis"
backend = "etcd"

[log]
level = "LOUD"
""",
        environ={"SIPREC_SESSION__NODE_TTL": "1s"},
    )
    assert [(p.key, p.value) for p in problems] == [
        ("sip.listen[1]", "smtp:x:25"),
        ("sip.max_sessions", "lots"),
        ("media.port_min", 40000),
        ("store.backend", "etcd"),
        ("store.bakend", "redis"),
        ("session.node_ttl", "1s"),
        ("log.level", "LOUD"),
    ]
    assert str(problems[1]) == 'sip.max_sessions: "lots": must be an integer'
    assert str(problems[4]) == 'store.bakend: "redis": unknown key'
    assert problems[5].why.endswith("(from SIPREC_SESSION__NODE_TTL)")


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({"media": {"port_min": 30000, "port_max": 20000}})


def test_rtp_timeout_and_drain_keys(load_text: LoadText) -> None:
    settings = load_text(
        '[node]\ndrain_grace = "0s"\ndrain_deadline = "5s"\n'
        '[media]\nrtp_timeout = "2s"\nrtp_timeout_action = "END"'
    )
    assert settings.node.drain_grace == timedelta(0)
    assert settings.node.drain_deadline == timedelta(seconds=5)
    assert settings.media.rtp_timeout == timedelta(seconds=2)
    assert settings.media.rtp_timeout_action == "end"


@pytest.mark.parametrize(("text", "seconds"), [('"0"', 0.0), ('"0s"', 0.0), ('"5ms"', 0.005)])
def test_receive_interval_reaches_the_media_engine_config(
    load_text: LoadText, text: str, seconds: float
) -> None:
    from siprec_node.app import handler_config

    settings = load_text(f"[media]\nreceive_interval = {text}")
    assert handler_config(settings).media_receive_interval == seconds


@pytest.mark.parametrize(("text", "seconds"), [('"0"', 0.0), ('"250ms"', 0.25), ('"30s"', 30.0)])
def test_max_answer_delay_reaches_the_call_control_core(
    load_text: LoadText, text: str, seconds: float
) -> None:
    from siprec_node.app import handler_config

    settings = load_text(f"[sip]\nmax_answer_delay = {text}")
    assert handler_config(settings).call_control().max_answer_delay == seconds


def test_codec_names_are_the_decodable_ones(load_text: LoadText) -> None:
    from siprec_node.config.settings import KNOWN_CODECS
    from siprec_node.siprec.codecs import DECODABLE, canonical_name

    assert [canonical_name(name) for name in KNOWN_CODECS] == list(DECODABLE)
    settings = load_text('[media]\ncodecs = ["g.729", "amr-wb", "ILBC", "aal2-g726-32"]')
    assert settings.media.codecs == ["G729", "AMR-WB", "iLBC", "AAL2-G726-32"]
