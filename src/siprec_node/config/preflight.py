"""What the settings need from the machine: files that exist, a directory that takes writes, ports.

`load_settings` checks that the settings make sense; `preflight` checks that this machine can run
them, so that `check-config` does not pass what `run` cannot start. Every problem comes back as
a `Problem` (key, value, why) like a validation error.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from siprec_node.config.addresses import ListenAddress
from siprec_node.config.errors import Problem
from siprec_node.config.settings import Settings

__all__ = ["STREAMS_PER_CALL", "bind_problems", "preflight", "start_problems"]

STREAMS_PER_CALL = 2
"""Streams of a typical SIPREC call (one per participant): what the RTP range is sized for."""


def preflight(settings: Settings, *, bind_test: bool = False) -> list[Problem]:
    """Every reason this machine cannot run ``settings`` (empty when it can).

    Checks the TLS files (present, readable, a key that matches its certificate), that the
    recording directory exists or can be created and takes writes, and that the RTP range
    holds ``sip.max_sessions`` calls of two streams; with ``bind_test`` it also binds every SIP
    listener and the HTTP address for a moment.
    """
    problems = start_problems(settings)
    problems += _rtp_range_problems(settings)
    if bind_test:
        problems += bind_problems(settings)
    return problems


def start_problems(settings: Settings) -> list[Problem]:
    """What would stop ``run`` at start-up: TLS files and the recording directory."""
    return _tls_problems(settings) + _directory_problems(settings.recording.directory)


def _readable(key: str, path: Path | None) -> list[Problem]:
    if path is None:
        return []
    if not path.exists():
        return [Problem(key, str(path), "no such file")]
    if not path.is_file():
        return [Problem(key, str(path), "is not a regular file")]
    if not os.access(path, os.R_OK):
        return [Problem(key, str(path), "is not readable by this user")]
    return []


def _tls_problems(settings: Settings) -> list[Problem]:
    tls = settings.sip.tls
    problems: list[Problem] = []
    for name in ("cert_file", "key_file", "ca_file"):
        problems += _readable(f"sip.tls.{name}", getattr(tls, name))
    if problems or tls.cert_file is None or tls.key_file is None:
        return problems
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as exc:
        why = f"certificate and key cannot be used together: {exc}"
        problems.append(Problem("sip.tls.cert_file", str(tls.cert_file), why))
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(str(tls.ca_file))
        except (ssl.SSLError, OSError) as exc:
            problems.append(Problem("sip.tls.ca_file", str(tls.ca_file), f"unusable: {exc}"))
    return problems


def _directory_problems(directory: Path) -> list[Problem]:
    key = "recording.directory"
    existing = directory
    while not existing.exists():  # the nearest existing ancestor is where it would be created
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return [Problem(key, str(directory), f"{existing} is not a directory")]
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == directory else f"cannot be created in {existing}"
        return [Problem(key, str(directory), f"{what} by this user")]
    return []


def _rtp_range_problems(settings: Settings) -> list[Problem]:
    media = settings.media
    pairs = (media.port_max - media.port_min + 1) // 2
    needed = settings.sip.max_sessions * STREAMS_PER_CALL
    if pairs >= needed:
        return []
    why = (
        f"{pairs} RTP/RTCP port pairs cannot hold sip.max_sessions = "
        f"{settings.sip.max_sessions} calls of {STREAMS_PER_CALL} streams ({needed} pairs): "
        "widen the range or lower sip.max_sessions"
    )
    return [Problem("media.port_max", media.port_max, why)]


def bind_problems(settings: Settings) -> list[Problem]:
    """Bind each SIP listener and the HTTP address for a moment; a problem for each that fails."""
    problems: list[Problem] = []
    for index, address in enumerate(settings.sip.listen_addresses):
        error = _try_bind(address)
        if error is not None:
            problems.append(Problem(f"sip.listen[{index}]", str(address), error))
    http = settings.http.address
    if http is not None:
        error = _try_bind(ListenAddress("tcp", http.host, http.port))
        if error is not None:
            problems.append(Problem("http.listen", settings.http.listen, error))
    return problems


def _try_bind(address: ListenAddress) -> str | None:
    kind = socket.SOCK_DGRAM if address.transport == "udp" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=kind)
    except socket.gaierror as exc:
        return f"cannot resolve {address.host}: {exc.strerror}"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return f"cannot bind: {exc.strerror or exc}"
    return None
