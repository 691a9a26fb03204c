"""The ``siprec-node`` command: ``run``, ``check-config``, ``sessions``, ``recordings``, ``nodes``,
``transcribe-worker``.

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
from siprec_node.config import ConfigError, Problem, Settings, load_settings, render_toml
from siprec_node.config.durations import parse_duration
from siprec_node.config.preflight import preflight, start_problems
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
        "exit 0, or print each problem as KEY: VALUE: why and exit 2. Besides the settings "
        "themselves it checks what run will need: TLS files present and usable, the recording "
        "directory writable, an RTP range that holds sip.max_sessions two-stream calls.",
    )
    _add_config_option(check)
    check.add_argument(
        "--bind-test",
        action="store_true",
        help="also bind every SIP listener and the HTTP address for a moment",
    )
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

    worker = commands.add_parser(
        "transcribe-worker",
        help="transcribe finished recordings from the fleet's queue (store.backend = redis)",
        description="Take transcription jobs from the Redis store of FILE and transcribe them "
        "with [transcription] (engine whisper or http), writing each turn's text into the "
        "session history, the sidecar and <stem>.vtt. The recordings must be visible here at "
        "the paths the recorders wrote. Runs until SIGTERM or SIGINT.",
    )
    _add_config_option(worker)
    worker.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: transcription.workers, at least 1)",
    )
    worker.add_argument(
        "--metrics", metavar="HOST:PORT", default=None, help="serve Prometheus /metrics there"
    )
    worker.set_defaults(handler=_transcribe_worker)

    call = commands.add_parser(
        "call",
        help="place a SIPREC test call with two tone legs and show where it was recorded",
        description="Place one SIPREC call as an SRC would (two m-lines, a tone on each), "
        "hang up after --seconds, then print the node's session, the recording's sidecar and "
        "its verdict when the node's files are visible from here. Exit 0 when the call was "
        "answered and ended normally, 1 otherwise.",
    )
    call.add_argument("target", help="sip:HOST[:PORT][;transport=tcp] of the node")
    call.add_argument("--seconds", type=float, default=5.0, help="length of the call (5)")
    call.add_argument("--codec", default="PCMU", help="PCMU, PCMA, G722 or OPUS (PCMU)")
    call.add_argument("--transport", choices=["udp", "tcp"], default=None, help="(udp)")
    call.add_argument(
        "--dialect",
        choices=["rfc7865", "broadworks", "none"],
        default="rfc7865",
        help="metadata dialect, or none for a plain SDP offer (rfc7865)",
    )
    call.add_argument(
        "--http",
        default="http://127.0.0.1:8080",
        help="the node's admin API, to find the recording ('' to skip)",
    )
    call.add_argument("--token", default=None, help="bearer token of the admin API")
    call.add_argument("--json", action="store_true", help="print the result as JSON")
    call.set_defaults(handler=_call)
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


def _print_problems(problems: list[Problem]) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_CONFIG


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    problems = start_problems(settings)
    if problems:
        return _print_problems(problems)
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.app import run_node

    return run_node(settings)


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    problems = preflight(settings, bind_test=args.bind_test)
    if problems:
        return _print_problems(problems)
    sys.stdout.write(render_toml(settings, reveal_secrets=args.show_secrets))
    return 0


def _sessions(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.app import list_sessions

    return list_sessions(settings, all_=args.all, as_json=args.json)


def _transcribe_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    problems = []
    if settings.transcription.engine == "none":
        why = "transcribe-worker needs engine whisper or http"
        problems.append(Problem("transcription.engine", "none", why))
    if settings.store.backend != "redis":
        why = "transcribe-worker needs the shared store (a memory store is private to its node)"
        problems.append(Problem("store.backend", settings.store.backend, why))
    if args.workers is not None and not 1 <= args.workers <= 64:
        problems.append(Problem("--workers", str(args.workers), "must be 1 to 64"))
    if problems:
        return _print_problems(problems)
    configure_logging(settings.log.level, settings.log.format)
    from siprec_node.transcription.worker_command import run_worker

    return run_worker(settings, workers=args.workers, metrics=args.metrics)


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


def _call(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from siprec_node.testcall import CallOptions, TestCallError, parse_target, place_call

    try:
        host, port, transport = parse_target(args.target)
    except ValueError as exc:
        print(f"target: {args.target!r}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    options = CallOptions(
        host=host,
        port=port,
        transport=args.transport or transport or "udp",
        seconds=args.seconds,
        codec=args.codec,
        dialect=args.dialect,
        http=args.http or None,
        token=args.token,
    )
    say = (lambda line: None) if args.json else print
    try:
        result = asyncio.run(place_call(options, say))
    except (TestCallError, OSError) as exc:
        print(f"call failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(vars(result), indent=2, default=str))
        return 0
    print(f"session {result.session_id or '? (admin API not reachable)'}")
    if result.sidecar:
        print(f"recording sidecar: {result.sidecar}")
    if result.recording is not None:
        files = ", ".join(result.recording.get("files") or [])
        verdict = result.recording.get("verdict")
        print(f"files: {files}")
        print(f"verdict: {json.dumps(verdict) if verdict is not None else 'n/a'}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
