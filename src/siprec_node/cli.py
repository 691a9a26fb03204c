"""The ``siprec-node`` command: ``run``, ``check-config``, ``sessions``, ``recordings``, ``nodes``.

Exit codes: 0 success, 2 for a bad command line or configuration (each problem printed to
stderr as ``KEY: VALUE: why``); ``run``, ``sessions``, ``recordings`` and ``nodes`` otherwise
return what the application returns.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from siprec_node import __version__
from siprec_node.config import ConfigError, Settings, load_settings, render_toml
from siprec_node.config.durations import parse_duration
from siprec_node.log import configure_logging

__all__ = ["EXIT_CONFIG", "build_parser", "main"]

EXIT_CONFIG = 2
"""Exit status for an unusable command line or configuration."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    command: Callable[[argparse.Namespace], int] = args.handler
    return command(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``siprec-node``, one sub-command per action."""
    parser = argparse.ArgumentParser(
        prog="siprec-node",
        description="SIPREC session recording server (RFC 7866).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    run = commands.add_parser("run", help="run a recording node")
    _add_config_option(run)
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check-config",
        help="print the effective settings as TOML, or the problems found",
        description="Print the effective settings (file + environment + defaults) as TOML and "
        "exit 0, or print each problem as KEY: VALUE: why and exit 2.",
    )
    _add_config_option(check)
    check.add_argument(
        "--show-secrets",
        action="store_true",
        help="print http.token as it is instead of masked",
    )
    check.set_defaults(handler=_check_config)

    sessions = commands.add_parser("sessions", help="list the sessions in the configured store")
    _add_config_option(sessions)
    sessions.add_argument(
        "--all", action="store_true", help="include ended and failed sessions, not only live ones"
    )
    sessions.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sessions.set_defaults(handler=_sessions)

    recordings = commands.add_parser(
        "recordings",
        help="list finished recordings in the configured store and their verdicts",
        description="Recordings that ended or failed, as long as the store keeps them "
        "(store.ttl): session id, call id, end, duration and verdict (ok, or the problems: "
        "no_rtp, silent, unexpected_payload, undecodable, short, gaps, metadata_unparsed, "
        "stalled).",
    )
    _add_config_option(recordings)
    recordings.add_argument(
        "--problems", action="store_true", help="only recordings whose verdict names problems"
    )
    recordings.add_argument(
        "--since",
        metavar="DURATION",
        type=_duration,
        default=None,
        help='only recordings that ended within this long, e.g. "24h", "15m"',
    )
    recordings.add_argument("--json", action="store_true", help="print JSON instead of a table")
    recordings.set_defaults(handler=_recordings)

    nodes = commands.add_parser("nodes", help="list the nodes known to the store")
    _add_config_option(nodes)
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    nodes.set_defaults(handler=_nodes)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML settings file (default: built-in defaults); "
        "SIPREC_<SECTION>__<KEY> environment variables override it",
    )


def _settings(args: argparse.Namespace) -> Settings | None:
    """Load settings, or print every problem to stderr and return ``None``."""
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.app import run_node

    return run_node(settings)


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    sys.stdout.write(render_toml(settings, reveal_secrets=args.show_secrets))
    return 0


def _sessions(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.app import list_sessions

    return list_sessions(settings, all_=args.all, as_json=args.json)


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _recordings(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.recordings import list_recordings

    return list_recordings(settings, problems=args.problems, since=args.since, as_json=args.json)


def _nodes(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.app import list_nodes

    return list_nodes(settings, as_json=args.json)
