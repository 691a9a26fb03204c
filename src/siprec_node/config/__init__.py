"""Typed settings: TOML file, SIPREC_<SECTION>__<KEY> environment overrides, defaults.

settings = load_settings(Path("siprec.toml"))   # raises ConfigError listing every problem
settings.store.ttl                              # timedelta(hours=24)
settings.sip.listen_addresses                   # (ListenAddress("udp", "0.0.0.0", 5060), ...)
print(render_toml(settings))                    # the effective settings as TOML
"""

from siprec_node.config.addresses import (
    HostPort,
    ListenAddress,
    Transport,
    parse_host,
    parse_host_port,
    parse_listen_address,
)
from siprec_node.config.durations import DurationError, format_duration, parse_duration
from siprec_node.config.errors import ConfigError, Problem
from siprec_node.config.loader import ENV_PREFIX, load_settings
from siprec_node.config.render import SECRET_MASK, dumps_toml, render_toml
from siprec_node.config.settings import (
    KNOWN_CODECS,
    HttpSettings,
    LogSettings,
    MediaSettings,
    NodeSettings,
    RecordingSettings,
    SessionSettings,
    Settings,
    SipSettings,
    StoreSettings,
    TlsSettings,
)

__all__ = [
    "ENV_PREFIX",
    "KNOWN_CODECS",
    "SECRET_MASK",
    "ConfigError",
    "DurationError",
    "HostPort",
    "HttpSettings",
    "ListenAddress",
    "LogSettings",
    "MediaSettings",
    "NodeSettings",
    "Problem",
    "RecordingSettings",
    "SessionSettings",
    "Settings",
    "SipSettings",
    "StoreSettings",
    "TlsSettings",
    "Transport",
    "dumps_toml",
    "format_duration",
    "load_settings",
    "parse_duration",
    "parse_host",
    "parse_host_port",
    "parse_listen_address",
    "render_toml",
]
