"""The siprec-node command line: check-config as a subprocess, dispatch of the other commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

from siprec_node import __version__, cli
from siprec_node.config import Settings

SRC = Path(__file__).resolve().parents[3] / "src"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m siprec_node ARGS`` with this checkout's sources and no SIPREC_ variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIPREC_")}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SRC), os.environ.get("PYTHONPATH", "")])
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "siprec_node", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_check_config_prints_effective_settings(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nid = "rec-1"\n\n[store]\nttl = "12h"\n')
    result = run_cli("check-config", "-c", str(config), env={"SIPREC_STORE__BACKEND": "redis"})
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert data["node"]["id"] == "rec-1"
    assert data["store"]["backend"] == "redis"
    assert data["store"]["ttl"] == "12h"
    assert data["sip"]["listen"] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]


def test_check_config_without_file_prints_defaults() -> None:
    result = run_cli("check-config")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["session"]["node_ttl"] == "15s"


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[sip]\nmax_sessions = "lots"\n\n[store]\nbakend = "redis"\n')
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'sip.max_sessions: "lots": must be an integer',
        'store.bakend: "redis": unknown key',
    ]


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", "-c", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f'<file>: "{tmp_path / "absent.toml"}": no such file'


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"siprec-node {__version__}"


# --- in-process: argument handling and dispatch to siprec_node.app ------------------------------


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, dict[str, Any]]]:
    """Replace siprec_node.app and the logging set-up with recorders."""
    calls: list[tuple[str, Any, dict[str, Any]]] = []
    module = types.ModuleType("siprec_node.app")

    def run_node(settings: Settings) -> int:
        calls.append(("run_node", settings, {}))
        return 0

    def list_sessions(settings: Settings, *, all_: bool, as_json: bool) -> int:
        calls.append(("list_sessions", settings, {"all_": all_, "as_json": as_json}))
        return 0

    def list_nodes(settings: Settings, *, as_json: bool) -> int:
        calls.append(("list_nodes", settings, {"as_json": as_json}))
        return 3

    module.run_node = run_node  # type: ignore[attr-defined]
    module.list_sessions = list_sessions  # type: ignore[attr-defined]
    module.list_nodes = list_nodes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "siprec_node.app", module)
    monkeypatch.setattr(
        cli,
        "configure_logging",
        lambda level, fmt: calls.append(("configure_logging", None, {"level": level, "fmt": fmt})),
    )
    for name in [n for n in os.environ if n.startswith("SIPREC_")]:
        monkeypatch.delenv(name)
    return calls


def test_run_loads_settings_configures_logging_and_runs(
    fake_app: list[tuple[str, Any, dict[str, Any]]], tmp_path: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[log]\nlevel = "debug"\nformat = "json"\n')
    assert cli.main(["run", "-c", str(config)]) == 0
    assert fake_app[0] == ("configure_logging", None, {"level": "debug", "fmt": "json"})
    name, settings, _ = fake_app[1]
    assert name == "run_node"
    assert isinstance(settings, Settings)
    assert settings.log.level == "debug"


def test_run_with_bad_config_exits_2_without_starting(
    fake_app: list[tuple[str, Any, dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[media]\nport_min = 20001\n")
    assert cli.main(["run", "--config", str(config)]) == 2
    assert fake_app == []
    assert capsys.readouterr().err.startswith("media.port_min: 20001: must be even")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sessions"], {"all_": False, "as_json": False}),
        (["sessions", "--all", "--json"], {"all_": True, "as_json": True}),
    ],
)
def test_sessions_dispatch(
    fake_app: list[tuple[str, Any, dict[str, Any]]], argv: list[str], expected: dict[str, Any]
) -> None:
    assert cli.main(argv) == 0
    assert [(name, kwargs) for name, _, kwargs in fake_app][-1] == ("list_sessions", expected)


def test_nodes_dispatch_returns_the_apps_status(
    fake_app: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    assert cli.main(["nodes", "--json"]) == 3
    assert [(name, kwargs) for name, _, kwargs in fake_app][-1] == (
        "list_nodes",
        {"as_json": True},
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["nodes", "--all"]) == 2
    assert "usage: siprec-node" in capsys.readouterr().err


def test_check_config_in_process_masks_token_unless_asked(
    fake_app: list[tuple[str, Any, dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[http]\ntoken = "t0ken"\n')
    assert cli.main(["check-config", "-c", str(config)]) == 0
    assert "t0ken" not in capsys.readouterr().out
    assert cli.main(["check-config", "-c", str(config), "--show-secrets"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["http"]["token"] == "t0ken"


def test_recordings_on_a_memory_store_says_it_cannot_see_a_node() -> None:
    result = run_cli("recordings", "--problems", "--since", "24h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SESSION", "CALL-ID", "ENDED", "DURATION", "VERDICT"]
    assert 'store.backend is "memory"' in result.stderr
    assert "never the calls of a running node" in result.stderr
    assert json.loads(run_cli("recordings", "--json").stdout) == []
    bad = run_cli("recordings", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
