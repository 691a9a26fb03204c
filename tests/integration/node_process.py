"""Start the real node (`python -m siprec_node run`) as a subprocess, and run SIPp against it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIPP_DIR = ROOT / "tests" / "sipp"


def free_port(kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """A port number free for every socket kind in ``kinds`` on 127.0.0.1 (even, for RTP use)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Linux hands out odd ports for bind(0); the even neighbour is as likely to be free.
        port -= port % 2
        sockets = []
        try:
            for kind in kinds:
                s = socket.socket(socket.AF_INET, kind)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port")


@dataclass
class NodeProcess:
    """A running node; its stderr JSON log lines are collected in ``lines``."""

    proc: subprocess.Popen[bytes]
    sip_port: int
    workdir: Path
    lines: list[dict[str, object]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stderr is not None
            for line in iter(self.proc.stderr.readline, b""):
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.raw.append(text)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(text))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for_event(
        self,
        event: str,
        timeout: float = 10.0,
        *,
        skip: int = 0,
        after_exit: bool = False,
        **match: object,
    ) -> dict[str, object]:
        """Wait for a log line with ``event`` (and the given fields), past the first ``skip``;
        ``after_exit``: keep waiting once the node has exited (its workers write to the same
        log and may outlive it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [
                line
                for line in list(self.lines)
                if line.get("event") == event and all(line.get(k) == v for k, v in match.items())
            ]
            if len(found) > skip:
                return found[skip]
            if not after_exit and self.proc.poll() is not None and not any(
                ln.get("event") == event for ln in self.lines
            ):
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no {event!r} {match} in node log (exit={self.proc.poll()}):\n"
            + "\n".join(self.raw[-40:])
        )

    def events(self, event: str) -> list[dict[str, object]]:
        """Every log line with ``event`` so far."""
        return [ln for ln in self.lines if ln.get("event") == event]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the node and wait for its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # every thread's stack into the log (faulthandler on SIGUSR1), to see what it waits for
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.proc.kill()
            code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(2)
        return code


def start_node(
    config: str = "",
    *,
    env: dict[str, str] | None = None,
    http_port: int | None = None,
    http_token: str | None = None,
    start_new_session: bool = False,
) -> NodeProcess:
    """Start a node on 127.0.0.1 with a free SIP port (UDP and TCP) and free RTP ports.

    ``config`` is extra TOML appended to the generated file (sections must not repeat the
    generated ``[sip]``, ``[media]``, ``[recording]``, ``[http]`` and ``[log]`` ones).
    ``start_new_session`` runs the node (and the workers it starts) in a process group of its
    own, for tests that signal the whole group.
    """
    workdir = Path(tempfile.mkdtemp(prefix="siprec-node-"))
    sip_port = free_port()
    rtp = free_port((socket.SOCK_DGRAM,))
    rtp_min = max(1024, rtp - rtp % 2)
    cfg = workdir / "node.toml"
    cfg.write_text(
        f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]

[media]
host = "127.0.0.1"
port_min = {rtp_min}
port_max = {min(65535, rtp_min + 199)}

[recording]
directory = "{workdir / "recordings"}"
finalise_workers = 1  # a spawned process takes a core for ~1 s as it starts: one per test node

[http]
listen = "{f"127.0.0.1:{http_port}" if http_port else ""}"
{f'token = "{http_token}"' if http_token else ""}

[log]
level = "debug"
format = "json"
{config}
"""
    )
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "siprec_node", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=full_env,
        start_new_session=start_new_session,
    )
    node = NodeProcess(proc=proc, sip_port=sip_port, workdir=workdir)
    node.start_reader()
    node.wait_for_event("node_started", timeout=20)
    return node


@dataclass
class SippResult:
    """What a SIPp run produced."""

    returncode: int
    stdout: str
    stderr: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_sipp(
    scenario: str,
    port: int,
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: int = 10,
    timeout: float = 30.0,
    extra: tuple[str, ...] = (),
) -> SippResult:
    """Run one SIPp client scenario from tests/sipp against 127.0.0.1:``port``."""
    workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
    err_file = workdir / "errors.log"
    cmd = [
        "sipp",
        f"127.0.0.1:{port}",
        "-sf",
        str(SIPP_DIR / scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-t",
        transport,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-s",
        "srs",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-max_recv_loops",
        "1000",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(err_file),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout + 15, cwd=workdir, check=False)
    errors = err_file.read_text(errors="replace") if err_file.exists() else ""
    return SippResult(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
        errors,
    )


def start_sipp(scenario: str, port: int, *, timeout: int = 20) -> subprocess.Popen[bytes]:
    """One call of a tests/sipp scenario against 127.0.0.1:``port``, running in the background
    (for scenarios that wait for the node to act: its BYE, its re-INVITE...)."""
    return subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{port}",
            "-sf",
            str(SIPP_DIR / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "1",
            "-s",
            "srs",
            "-timeout",
            f"{timeout}s",
            "-timeout_error",
            "-nostdin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tempfile.mkdtemp(prefix="sipp-"),
    )


def node_fixture(config: str = "") -> Iterator[NodeProcess]:
    """Generator for a pytest fixture: a node started before and stopped (SIGTERM) after."""
    node = start_node(config)
    try:
        yield node
    finally:
        code = node.stop()
        assert code == 0, "\n".join(node.raw[-40:])
