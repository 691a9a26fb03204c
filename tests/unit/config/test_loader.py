"""Loading: file, SIPREC_<SECTION>__<KEY> environment overrides, file errors."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path

import pytest

from siprec_node.config import ConfigError, ListenAddress, Settings, load_settings

from .conftest import LoadText, ProblemsOf


def test_environment_overrides_defaults() -> None:
    settings = load_settings(
        environ={
            "SIPREC_STORE__BACKEND": "redis",
            "SIPREC_STORE__TTL": "2h",
            "SIPREC_SIP__MAX_SESSIONS": "10",
            "SIPREC_NODE__ID": "rec-7",
            "SIPREC_LOG__FORMAT": "JSON",
        }
    )
    assert settings.store.backend == "redis"
    assert settings.store.ttl == timedelta(hours=2)
    assert settings.sip.max_sessions == 10
    assert settings.node.id == "rec-7"
    assert settings.log.format == "json"


def test_environment_wins_over_file(load_text: LoadText) -> None:
    settings = load_text(
        '[store]\nbackend = "memory"\nprefix = "file:"\n',
        environ={"SIPREC_STORE__BACKEND": "redis"},
    )
    assert settings.store.backend == "redis"
    assert settings.store.prefix == "file:"


def test_nested_tls_from_environment(load_text: LoadText) -> None:
    settings = load_text(
        '[sip]\nlisten = ["tls:0.0.0.0:5061"]\n',
        environ={
            "SIPREC_SIP__TLS__CERT_FILE": "/etc/siprec/cert.pem",
            "SIPREC_SIP__TLS__KEY_FILE": "/etc/siprec/key.pem",
        },
    )
    assert settings.sip.tls.cert_file == Path("/etc/siprec/cert.pem")
    assert settings.sip.tls.key_file == Path("/etc/siprec/key.pem")
    assert settings.sip.tls.ca_file is None


def test_environment_merges_into_a_file_table(load_text: LoadText) -> None:
    settings = load_text(
        '[sip.tls]\ncert_file = "c.pem"\n', environ={"SIPREC_SIP__TLS__KEY_FILE": "k.pem"}
    )
    assert (settings.sip.tls.cert_file, settings.sip.tls.key_file) == (Path("c.pem"), Path("k.pem"))


@pytest.mark.parametrize(
    "text",
    [
        '["udp:127.0.0.1:5070", "tls:[::1]:5071"]',
        "udp:127.0.0.1:5070, tls:[::1]:5071",
        "udp:127.0.0.1:5070,tls:[::1]:5071,",
    ],
)
def test_lists_from_environment(text: str) -> None:
    settings = load_settings(
        environ={
            "SIPREC_SIP__LISTEN": text,
            "SIPREC_SIP__TLS__CERT_FILE": "c.pem",
            "SIPREC_SIP__TLS__KEY_FILE": "k.pem",
        }
    )
    assert settings.sip.listen_addresses == (
        ListenAddress("udp", "127.0.0.1", 5070),
        ListenAddress("tls", "::1", 5071),
    )


def test_comma_separated_networks_and_codecs() -> None:
    settings = load_settings(
        environ={
            "SIPREC_SIP__ALLOW_SOURCES": "10.0.0.0/8,192.168.0.0/16",
            "SIPREC_MEDIA__CODECS": "opus,pcmu",
        }
    )
    assert settings.sip.allow_sources == [ip_network("10.0.0.0/8"), ip_network("192.168.0.0/16")]
    assert settings.media.codecs == ["opus", "PCMU"]


def test_empty_list_from_environment(load_text: LoadText) -> None:
    settings = load_text(
        '[sip]\nallow_sources = ["10.0.0.0/8"]', environ={"SIPREC_SIP__ALLOW_SOURCES": ""}
    )
    assert settings.sip.allow_sources == []


def test_store_url_is_a_list_only_as_json() -> None:
    sentinel = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster"
    assert load_settings(environ={"SIPREC_STORE__URL": sentinel}).store.url == sentinel
    cluster = load_settings(environ={"SIPREC_STORE__URL": '["10.0.0.1:7000", "10.0.0.2:7000"]'})
    assert cluster.store.url == ["10.0.0.1:7000", "10.0.0.2:7000"]


def test_empty_value_unsets_an_optional_key(load_text: LoadText) -> None:
    settings = load_text(
        '[http]\ntoken = "abc"\n[sip]\nadvertise_host = "a.example"',
        environ={"SIPREC_HTTP__TOKEN": "", "SIPREC_SIP__ADVERTISE_HOST": ""},
    )
    assert settings.http.token is None
    assert settings.sip.advertise_host is None


def test_empty_value_disables_http() -> None:
    assert load_settings(environ={"SIPREC_HTTP__LISTEN": ""}).http.address is None


def test_a_section_as_a_json_object() -> None:
    settings = load_settings(environ={"SIPREC_SIP__TLS": '{"cert_file": "c", "key_file": "k"}'})
    assert settings.sip.tls.key_file == Path("k")


def test_other_variables_are_ignored() -> None:
    environ = {"SIPREC_CONFIG": "/x.toml", "SIPRECX__Y": "1", "PATH": "/bin", "siprec_a__b": "1"}
    assert load_settings(environ=environ) == Settings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPREC_STORE__PREFIX", "from-env:")
    assert load_settings().store.prefix == "from-env:"


def test_environment_problems(problems_of: ProblemsOf) -> None:
    problems = problems_of(
        environ={
            "SIPREC_STOR__BACKEND": "redis",
            "SIPREC_STORE__BACKEND__X": "1",
            "SIPREC_SIP____MAX": "1",
            "SIPREC_SIP__LISTEN": "[not json",
            "SIPREC_SIP__TLS": "{nope",
            "SIPREC_SIP__MAX_SESSIONS": "many",
        }
    )
    assert [(p.key, p.value, p.why) for p in problems] == [
        (
            "sip.listen",
            "[not json",
            "must be a JSON list or comma-separated values (from SIPREC_SIP__LISTEN)",
        ),
        ("sip.tls", "{nope", "must be a JSON object (from SIPREC_SIP__TLS)"),
        ("sip..max", "1", "malformed variable name SIPREC_SIP____MAX; use SIPREC_<SECTION>__<KEY>"),
        ("store.backend.x", "1", "unknown key (from SIPREC_STORE__BACKEND__X)"),
        ("stor.backend", "redis", "unknown key (from SIPREC_STOR__BACKEND)"),
        ("sip.max_sessions", "many", "must be an integer (from SIPREC_SIP__MAX_SESSIONS)"),
    ]


def test_environment_problem_in_a_list_item(problems_of: ProblemsOf) -> None:
    problems = problems_of(environ={"SIPREC_SIP__LISTEN": "udp:0.0.0.0:5060,foo"})
    assert [(p.key, p.value) for p in problems] == [("sip.listen[1]", "foo")]
    assert problems[0].why.endswith("(from SIPREC_SIP__LISTEN)")


def test_a_section_that_is_not_a_table_is_reported(problems_of: ProblemsOf) -> None:
    problems = problems_of("store = 1", environ={"SIPREC_STORE__BACKEND": "redis"})
    assert [(p.key, p.value, p.why) for p in problems] == [("store", 1, "must be a table")]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert [(p.key, p.value, p.why) for p in caught.value.problems] == [
        ("<file>", str(path), "no such file")
    ]


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip\nmax_sessions = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    (problem,) = caught.value.problems
    assert (problem.key, problem.value) == ("<file>", str(path))
    assert problem.why.startswith("is not valid TOML: ")
    assert "line 1" in problem.why


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[node]\nid = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(path, environ={})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path, environ={})


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"SIPREC_SIP__MAX_SESSIONS": "x", "SIPREC_LOG__LEVEL": "loud"})
    lines = str(caught.value).splitlines()
    assert lines == [
        'sip.max_sessions: "x": must be an integer (from SIPREC_SIP__MAX_SESSIONS)',
        'log.level: "loud": must be one of: debug, info, warning, error (from SIPREC_LOG__LEVEL)',
    ]
