"""render_toml: the effective settings as TOML that loads back to the same settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from siprec_node.config import SECRET_MASK, Settings, dumps_toml, load_settings, render_toml

from .conftest import LoadText

FULL = """
[node]
id = "recorder-1"

[sip]
listen = ["udp:[::]:5060", "tls:0.0.0.0:5061"]
advertise_host = "sbc.example.com"
allow_sources = ["10.0.0.0/8", "2001:db8::/32"]
max_sessions = 50
max_message_size = 4096
max_headers = 64

[sip.tls]
cert_file = "/etc/siprec/cert.pem"
key_file = "/etc/siprec/key.pem"

[media]
host = "192.0.2.10"
port_min = 30000
port_max = 30999
workers = 4
rtp_timeout = "1m30s"
codecs = ["opus", "PCMA"]

[recording]
directory = "/var/lib/siprec \\"quoted\\""
format = "opus"
channels = "separate"

[store]
backend = "redis"
url = ["10.0.0.1:7000", "10.0.0.2:7000"]
prefix = "voice:sessions:"
ttl = 86400

[session]
heartbeat_interval = "1.5s"
node_ttl = "10s"
cleanup_interval = "5m"
session_timeout = "90m"

[http]
listen = ""
token = "t0ken"

[log]
level = "warning"
format = "console"
"""


def _reload(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "rendered.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={})


@pytest.mark.parametrize("text", ["", FULL, '[store]\nurl = "redis+sentinel://a:1,b:2/m"'])
def test_round_trip(load_text: LoadText, tmp_path: Path, text: str) -> None:
    settings = load_text(text)
    assert _reload(render_toml(settings, reveal_secrets=True), tmp_path) == settings


def test_round_trip_without_secrets(tmp_path: Path) -> None:
    settings = Settings()
    assert _reload(render_toml(settings), tmp_path) == settings


def test_output_is_toml_with_durations_as_strings(load_text: LoadText) -> None:
    data = tomllib.loads(render_toml(load_text(FULL)))
    assert data["session"] == {
        "heartbeat_interval": "1500ms",
        "node_ttl": "10s",
        "cleanup_interval": "5m",
        "session_timeout": "90m",
    }
    assert data["store"]["ttl"] == "24h"
    assert data["sip"]["allow_sources"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert data["sip"]["tls"] == {
        "cert_file": "/etc/siprec/cert.pem",
        "key_file": "/etc/siprec/key.pem",
    }
    assert data["recording"]["directory"] == '/var/lib/siprec "quoted"'


def test_unset_values_are_left_out() -> None:
    text = render_toml(Settings())
    data = tomllib.loads(text)
    assert "advertise_host" not in data["sip"]
    assert "tls" not in data["sip"]
    assert "token" not in data["http"]
    assert "[sip.tls]" not in text


def test_token_is_masked_unless_revealed(load_text: LoadText) -> None:
    settings = load_text('[http]\ntoken = "t0ken"')
    assert tomllib.loads(render_toml(settings))["http"]["token"] == SECRET_MASK
    assert "t0ken" not in render_toml(settings)
    assert tomllib.loads(render_toml(settings, reveal_secrets=True))["http"]["token"] == "t0ken"


def test_dumps_toml_escapes_and_nests() -> None:
    data = {
        "top": 1,
        "a": {
            "s": 'quote " back \\ tab \t nl \n bell \x07 é',
            "flag": True,
            "ratio": 0.25,
            "skip": None,
            "items": [1, "two", [3]],
            "inline": {"x": 1},
            "b": {"c": {"d": "deep"}},
        },
        "weird key": {"k": "v"},
    }
    text = dumps_toml(data)
    assert tomllib.loads(text) == {
        "top": 1,
        "a": {
            "s": 'quote " back \\ tab \t nl \n bell \x07 é',
            "flag": True,
            "ratio": 0.25,
            "items": [1, "two", [3]],
            "inline": {"x": 1},
            "b": {"c": {"d": "deep"}},
        },
        "weird key": {"k": "v"},
    }


def test_dumps_toml_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        dumps_toml({"a": {"b": object()}})
