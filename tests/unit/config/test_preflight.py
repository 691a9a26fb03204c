"""check-config checks what run will need from the machine; run names the file or listener."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from siprec_node.config import Settings
from siprec_node.config.preflight import preflight, start_problems
from tests.unit.config.test_cli import run_cli


def _cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    sections.setdefault("recording", {"directory": str(tmp_path / "recordings")})
    return Settings.model_validate(sections)


def _keys(problems: list) -> list[str]:
    return [p.key for p in problems]


@pytest.fixture
def busy_tcp_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_defaults_pass(tmp_path: Path) -> None:
    assert preflight(_settings(tmp_path)) == []


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        sip={
            "listen": ["tls:127.0.0.1:5061"],
            "tls": {"cert_file": "/etc/siprec/node.crt", "key_file": "/etc/siprec/node.key"},
        },
    )
    problems = start_problems(settings)
    assert _keys(problems) == ["sip.tls.cert_file", "sip.tls.key_file"]
    assert all(p.why == "no such file" for p in problems)


def test_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = _cert(tmp_path, "node")
    _, other_key = _cert(tmp_path, "other")
    tls = {"cert_file": str(cert), "key_file": str(other_key)}
    settings = _settings(tmp_path, sip={"tls": tls})
    (problem,) = start_problems(settings)
    assert problem.key == "sip.tls.cert_file"
    assert "cannot be used together" in problem.why


def test_matching_pair_and_ca_pass(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path, "node")
    tls = {"cert_file": str(cert), "key_file": str(key), "ca_file": str(cert)}
    assert start_problems(_settings(tmp_path, sip={"tls": tls})) == []


def test_recording_directory_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = _settings(tmp_path, recording={"directory": str(blocker / "recordings")})
    (problem,) = start_problems(settings)
    assert problem.key == "recording.directory"
    assert "is not a directory" in problem.why


def test_directory_that_does_not_exist_yet_but_can_be_created(tmp_path: Path) -> None:
    settings = _settings(tmp_path, recording={"directory": str(tmp_path / "x" / "y" / "z")})
    assert start_problems(settings) == []


def test_rtp_range_too_small_for_max_sessions(tmp_path: Path) -> None:
    settings = _settings(tmp_path, media={"port_min": 20000, "port_max": 20399})
    (problem,) = preflight(settings)
    assert problem.key == "media.port_max"
    assert "200 RTP/RTCP port pairs" in problem.why and "4000 pairs" in problem.why
    smaller = _settings(
        tmp_path, media={"port_min": 20000, "port_max": 20399}, sip={"max_sessions": 100}
    )
    assert preflight(smaller) == []


def test_bind_test_names_the_busy_listener(tmp_path: Path, busy_tcp_port: int) -> None:
    settings = _settings(
        tmp_path,
        sip={"listen": ["udp:127.0.0.1:0", f"tcp:127.0.0.1:{busy_tcp_port}"]},
        http={"listen": f"127.0.0.1:{busy_tcp_port}"},
    )
    assert preflight(settings) == []
    problems = preflight(settings, bind_test=True)
    assert _keys(problems) == ["sip.listen[1]", "http.listen"]
    assert all("cannot bind" in p.why for p in problems)


def test_check_config_exits_2_naming_the_missing_cert(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        '[sip]\nlisten = ["tls:127.0.0.1:5061"]\n[sip.tls]\n'
        'cert_file = "/etc/siprec/node.crt"\nkey_file = "/etc/siprec/node.key"\n'
        f'[recording]\ndirectory = "{tmp_path / "rec"}"\n'
    )
    for command in ("check-config", "run"):
        result = run_cli(command, "-c", str(config))
        assert result.returncode == 2, result
        assert 'sip.tls.cert_file: "/etc/siprec/node.crt": no such file' in result.stderr


def test_run_names_the_listener_it_cannot_bind(tmp_path: Path, busy_tcp_port: int) -> None:
    result = run_cli(
        "run",
        env={
            "SIPREC_SIP__LISTEN": f'["tcp:127.0.0.1:{busy_tcp_port}"]',
            "SIPREC_HTTP__LISTEN": "",
            "SIPREC_MEDIA__WORKERS": "0",
            "SIPREC_RECORDING__DIRECTORY": str(tmp_path / "rec"),
        },
    )
    assert result.returncode == 1
    assert f"sip.listen tcp:127.0.0.1:{busy_tcp_port}" in result.stderr
