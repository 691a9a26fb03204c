"""Processes for the persistence fault tests: a restartable redis-server, a node on fixed ports
(so a restarted node gets the same SIP port, RTP range and working directory), a SIPp SRC run in
the background and released by a trigger, and readers of what the store holds.

``tests/integration/node_process.py`` starts a node on fresh ports each time; a restart must
come back on the same SIP port and RTP range, so the node is launched here from a config this
module writes, reusing ``NodeProcess`` for the log reader and the waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.integration.node_process import ROOT, SIPP_DIR, NodeProcess, free_port
from tests.redis_server import REDIS_SERVER, command

HASH_TAG = "siprec"
"""RedisSessionStore's default hash tag: keys are ``<prefix>{siprec}:…``."""


def _clean_env() -> dict[str, str]:
    """This environment without SIPREC_* overrides, with src/ importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPREC_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------------------------- redis


class RedisServer:
    """A redis-server on a fixed port that can be killed and started again on that port.

    ``persist=True`` runs it with an append-only file fsynced at every write (what a production
    store of live calls uses), so a restart reloads what it held; otherwise it keeps nothing.
    """

    def __init__(self, *, persist: bool = False) -> None:
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        for attempt in range(5):
            # Another process (a node's RTP range, a parallel test) may take the free port
            # between the probe and redis-server's bind: only the first start may move.
            self.port = free_port((socket.SOCK_STREAM,))
            self.dir = Path(tempfile.mkdtemp(prefix=f"persist-redis-{self.port}-"))
            try:
                self.start()
                return
            except RuntimeError as exc:
                shutil.rmtree(self.dir, ignore_errors=True)
                if "Address already in use" not in str(exc) or attempt == 4:
                    raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or start again) on ``self.port`` and wait for PONG."""
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persist
            else ["--appendonly", "no"]
        )
        argv = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server on {self.port} exited:\n{log[-2000:]}")
            with contextlib.suppress(OSError):
                if command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on {self.port} did not answer PING in {timeout}s")

    def kill(self) -> None:
        """SIGKILL: an outage, not a shutdown (nothing is flushed beyond what AOF already has)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        """Kill and remove the data directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=2
        )


# ---------------------------------------------------------------------------------- the node


def free_rtp_range(size: int = 40, *, avoid: tuple[int, int] | None = None) -> tuple[int, int]:
    """An even range of ``size`` ports free for UDP now, not overlapping ``avoid``."""
    for _ in range(100):
        base = free_port((socket.SOCK_DGRAM,))
        if base < 1024 or base + size > 65535:
            continue
        if avoid is not None and base <= avoid[1] and avoid[0] <= base + size - 1:
            continue
        held = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base, base + size - 1
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free RTP range")


@dataclass
class NodeSpec:
    """Everything that must stay the same across restarts of one node."""

    node_id: str
    redis_url: str
    prefix: str
    sip_port: int = field(default_factory=free_port)
    rtp: tuple[int, int] = field(default_factory=free_rtp_range)
    http_port: int | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="persist-node-")))
    heartbeat: str = "1s"
    node_ttl: str = "3s"
    cleanup: str = "1s"
    recording: str = ""
    """More ``[recording]`` keys, as TOML lines."""
    backend: str = "redis"

    @property
    def config(self) -> Path:
        return self.workdir / "node.toml"

    def write_config(self) -> Path:
        http = f"127.0.0.1:{self.http_port}" if self.http_port else ""
        self.config.write_text(
            f"""
[node]
id = "{self.node_id}"

[sip]
listen = ["udp:127.0.0.1:{self.sip_port}", "tcp:127.0.0.1:{self.sip_port}"]

[media]
host = "127.0.0.1"
port_min = {self.rtp[0]}
port_max = {self.rtp[1]}

[recording]
directory = "{self.workdir / "recordings"}"
finalise_workers = 1  # a spawned process takes a core for ~1 s as it starts: one per test node
{self.recording}

[store]
backend = "{self.backend}"
url = "{self.redis_url}"
prefix = "{self.prefix}"

[session]
heartbeat_interval = "{self.heartbeat}"
node_ttl = "{self.node_ttl}"
cleanup_interval = "{self.cleanup}"

[http]
listen = "{http}"

[log]
level = "debug"
format = "json"
"""
        )
        return self.config


def fleet_of_two(redis_url: str, name: str) -> tuple[NodeSpec, NodeSpec]:
    """Nodes rec-1 and rec-2 sharing one store prefix, with RTP ranges that do not overlap."""
    prefix = unique_prefix(name)
    first = NodeSpec(node_id="rec-1", redis_url=redis_url, prefix=prefix)
    second = NodeSpec(
        node_id="rec-2", redis_url=redis_url, prefix=prefix, rtp=free_rtp_range(avoid=first.rtp)
    )
    return first, second


def launch_node(spec: NodeSpec, *, wait_started: float = 20.0) -> NodeProcess:
    """Start ``python -m siprec_node run`` for ``spec`` (same ports and workdir every time)."""
    spec.write_config()
    proc = subprocess.Popen(
        [sys.executable, "-m", "siprec_node", "run", "-c", str(spec.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=spec.workdir,
        env=_clean_env(),
    )
    node = NodeProcess(proc=proc, sip_port=spec.sip_port, workdir=spec.workdir)
    node.start_reader()
    try:
        node.wait_for_event("node_started", timeout=wait_started)
    except BaseException:
        kill_node(node)
        raise
    return node


def kill_node(node: NodeProcess) -> None:
    """SIGKILL (a crash: no BYE, no final snapshot, no deregistration)."""
    if node.proc.poll() is None:
        node.proc.kill()
    node.proc.wait(5)
    if node._reader is not None:
        node._reader.join(2)


def log_tail(node: NodeProcess, lines: int = 40) -> str:
    return "\n".join(node.raw[-lines:])


# ---------------------------------------------------------------------------------- CLI, store


def cli_json(spec: NodeSpec, *args: str, timeout: float = 15.0) -> Any:
    """``python -m siprec_node <args> -c <spec's config> --json``, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "siprec_node", *args, "-c", str(spec.config), "--json"],
        capture_output=True,
        timeout=timeout,
        env=_clean_env(),
        cwd=spec.workdir,
        check=False,
    )
    assert out.returncode == 0, f"{args} exit {out.returncode}: {out.stderr.decode()[-2000:]}"
    return json.loads(out.stdout)


def cli_sessions(spec: NodeSpec, *, all_: bool = True) -> dict[str, dict[str, Any]]:
    """``sessions [--all] --json`` as a dict by session id."""
    rows = cli_json(spec, "sessions", *(["--all"] if all_ else []))
    return {row["id"]: row for row in rows}


def cli_nodes(spec: NodeSpec) -> dict[str, dict[str, Any]]:
    """``nodes --json`` as a dict by node id."""
    return {row["node_id"]: row for row in cli_json(spec, "nodes")}


@dataclass
class StoredSession:
    """A session record read straight from Redis (not through the node's store class)."""

    status: str
    node: str
    version: int
    body: dict[str, Any]
    in_active_index: bool
    owner_index: bool

    @property
    def call(self) -> dict[str, Any]:
        """``recovery_data["call"]``: the CallData snapshot."""
        return self.body["recovery_data"]["call"]


def read_session(client: redis.Redis, prefix: str, session_id: str) -> StoredSession | None:
    base = f"{prefix}{{{HASH_TAG}}}:"
    row = client.hgetall(f"{base}session:{session_id}")
    if not row:
        return None
    node = row.get("node", "")
    return StoredSession(
        status=row.get("status", ""),
        node=node,
        version=int(row.get("version", 0)),
        body=json.loads(row["data"]),
        in_active_index=client.zscore(f"{base}index:active", session_id) is not None,
        owner_index=client.zscore(f"{base}index:node:{node}", session_id) is not None,
    )


def wait_session(
    client: redis.Redis,
    prefix: str,
    session_id: str,
    *,
    timeout: float = 10.0,
    **expect: object,
) -> StoredSession:
    """Poll Redis until the record has every ``expect``ed attribute (status=…, node=…)."""
    deadline = time.monotonic() + timeout
    last: StoredSession | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            last = read_session(client, prefix, session_id)
            if last is not None and all(getattr(last, k) == v for k, v in expect.items()):
                return last
        time.sleep(0.05)
    raise AssertionError(f"session {session_id} never had {expect} in Redis; last: {last}")


def unique_prefix(name: str) -> str:
    return f"persist-{name}-{uuid.uuid4().hex[:8]}:"


# ---------------------------------------------------------------------------------- SIPp


@dataclass
class SippCall:
    """One SIPp SRC call running in the background from a ``tests/sipp`` scenario."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sipp still running after {timeout}s\n{self.explain()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def explain(self) -> str:
        parts = [f"sipp exit {self.proc.poll()}"]
        for name in ("errors.log", "messages.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        if self.proc.stderr is not None and self.proc.poll() is not None:
            parts.append(self.proc.stderr.read().decode(errors="replace")[-2000:])
        return "\n".join(parts)


def start_sipp(scenario: str, node_port: int, *, timeout_s: int = 40) -> SippCall:
    """Run one call of ``scenario`` against 127.0.0.1:``node_port`` from a known local port."""
    workdir = Path(tempfile.mkdtemp(prefix="persist-sipp-"))
    port = free_port()
    cmd = [
        "sipp",
        f"127.0.0.1:{node_port}",
        "-sf",
        str(SIPP_DIR / scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "u1",
        "-m",
        "1",
        "-s",
        "srs",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-trace_msg",
        "-message_file",
        str(workdir / "messages.log"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir)
    return SippCall(proc=proc, port=port, workdir=workdir)


def trigger_bye(sipp: SippCall, call_id: str, recorder_port: int) -> None:
    """Release a ``persist_bye_on_trigger.xml`` call: a NOTIFY in its Call-ID tells SIPp to send
    its BYE to the recorder on ``recorder_port`` (test control, not part of the recorder's SIP)."""
    notify = (
        f"NOTIFY sip:src@127.0.0.1:{sipp.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: <sip:test@127.0.0.1>;tag=trigger\r\n"
        f"To: <sip:src@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 NOTIFY\r\n"
        f"Event: persist-test\r\n"
        f"X-Recorder-Port: {recorder_port}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(notify, ("127.0.0.1", sipp.port))


# ---------------------------------------------------------------------------------- SIP, HTTP


def sip_options(port: int, timeout: float = 2.0) -> int | None:
    """Send OPTIONS over UDP; the status code of the answer, or None."""
    branch = f"z9hG4bK{uuid.uuid4().hex}"
    request = (
        f"OPTIONS sip:srs@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{{local}};branch={branch};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:srs@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@probe\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        sock.sendto(request.replace("{local}", str(local)).encode(), ("127.0.0.1", port))
        try:
            reply = sock.recv(65535)
        except TimeoutError:
            return None
    return int(reply.split(b" ", 2)[1])


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of GET http://127.0.0.1:<port><path>."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_http_status(
    port: int, path: str, status: int, timeout: float = 10.0
) -> tuple[float, dict[str, Any]]:
    """Poll until GET ``path`` answers ``status``; (seconds waited, body)."""
    start = time.monotonic()
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() - start < timeout:
        with contextlib.suppress(OSError):
            last = http_get(port, path)
            if last[0] == status:
                return time.monotonic() - start, last[1]
        time.sleep(0.1)
    raise AssertionError(f"GET {path} never answered {status} in {timeout}s; last: {last}")


def port_is_bound_udp(port: int) -> bool:
    """True if something holds UDP ``port`` on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def sigterm(node: NodeProcess, timeout: float = 15.0) -> int:
    return node.stop(signal.SIGTERM, timeout=timeout)


# ---------------------------------------------------------------------------------- raw BYE


def bye_from_dialog(dialog: dict[str, Any], *, local_port: int, branch: str, cseq: int) -> bytes:
    """The SRC's BYE in a dialog as the node stored it (``recovery_data["call"]["dialog"]``):
    the node's tag is the To tag, the SRC's the From tag."""
    target = dialog["local_contact"].split(">", 1)[0].lstrip("<")
    return (
        f"BYE {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
        f"From: <{dialog['remote_uri']}>;tag={dialog['remote_tag']}\r\n"
        f"To: <{dialog['local_uri']}>;tag={dialog['local_tag']}\r\n"
        f"Call-ID: {dialog['call_id']}\r\n"
        f"CSeq: {cseq} BYE\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class ByeOutcome:
    """Final responses an SRC got to its BYE, with seconds since it first sent it."""

    finals: list[tuple[float, int]] = field(default_factory=list)
    sent: int = 0

    @property
    def statuses(self) -> list[int]:
        return [status for _, status in self.finals]


def send_bye_until_final(
    port: int,
    dialog: dict[str, Any],
    *,
    interval: float,
    timeout: float,
    outcome: ByeOutcome | None = None,
) -> ByeOutcome:
    """Be an SRC ending its call: send the BYE to 127.0.0.1:``port`` every ``interval`` seconds
    (retransmissions of one transaction) until a final response. A 200 or 481 ends it; another
    final (e.g. 503 while the node cannot reach its store) starts a new BYE transaction after
    a second, as an SRC retrying would."""
    outcome = outcome if outcome is not None else ByeOutcome()
    cseq = int(dialog.get("remote_cseq") or 1) + 1
    branch = f"z9hG4bK{uuid.uuid4().hex}"
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(interval)
        local_port = sock.getsockname()[1]
        while time.monotonic() - start < timeout:
            data = bye_from_dialog(dialog, local_port=local_port, branch=branch, cseq=cseq)
            with contextlib.suppress(OSError):
                sock.sendto(data, ("127.0.0.1", port))
                outcome.sent += 1
            try:
                reply = sock.recv(65535)
            except OSError:  # timeout, or ICMP port unreachable while the node is down
                continue
            head = reply.split(b"\r\n", 1)[0].split(b" ", 2)
            if f"CSeq: {cseq} BYE".encode() not in reply:
                continue
            status = int(head[1])
            if status < 200:
                continue
            outcome.finals.append((round(time.monotonic() - start, 3), status))
            if status in (200, 481):
                return outcome
            time.sleep(1.0)
            branch, cseq = f"z9hG4bK{uuid.uuid4().hex}", cseq + 1
    return outcome


# ---------------------------------------------------------------------------------- scaffolding


class Processes:
    """Nodes and SIPp runs started by one test."""

    def __init__(self) -> None:
        self.nodes: list[NodeProcess] = []
        self.sipps: list[SippCall] = []

    def node(self, node: NodeProcess) -> NodeProcess:
        self.nodes.append(node)
        return node

    def sipp(self, sipp: SippCall) -> SippCall:
        self.sipps.append(sipp)
        return sipp

    def cleanup(self) -> None:
        for sipp in self.sipps:
            sipp.kill()
        for node in self.nodes:
            kill_node(node)
        # Failures carry the node log and SIPp trace in their message; the files can go.
        for path in {n.workdir for n in self.nodes} | {s.workdir for s in self.sipps}:
            shutil.rmtree(path, ignore_errors=True)


def call_up(
    spec: NodeSpec, redis_server: RedisServer, procs: Processes
) -> tuple[NodeProcess, SippCall, str, StoredSession]:
    """A node of ``spec`` with one active SIPREC call from SIPp, snapshot ``active`` in Redis."""
    node = procs.node(launch_node(spec))
    sipp = procs.sipp(start_sipp("persist_bye_on_trigger.xml", spec.sip_port))
    active = node.wait_for_event("call_active", timeout=10)
    session_id = str(active["session_id"])
    stored = wait_session(
        redis_server.client(), spec.prefix, session_id, status="active", node=spec.node_id
    )
    return node, sipp, session_id, stored
