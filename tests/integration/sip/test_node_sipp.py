"""The real node process against SIPp, a SIP tool we did not write."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.node_process import (
    ROOT,
    NodeProcess,
    SippResult,
    node_fixture,
    run_sipp,
    start_node,
    start_sipp,
)

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    yield from node_fixture()


def _explain(result: SippResult) -> str:
    return f"sipp exit {result.returncode}\n{result.errors[-3000:]}\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options(node: NodeProcess, transport: str) -> None:
    result = run_sipp("options.xml", node.sip_port, transport=transport)
    assert result.ok, _explain(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_siprec_call_two_streams(node: NodeProcess, transport: str) -> None:
    before = len(node.events("call_ended"))
    result = run_sipp("siprec_two_streams.xml", node.sip_port, transport=transport)
    assert result.ok, _explain(result)
    ended = node.wait_for_event("call_ended", skip=before)
    assert ended["status"] == "ended"
    assert len(node.events("call_ended")) == before + 1
    assert ended["reason"] == "BYE from SRC"
    # every line about the call carries its identifiers
    offered = [e for e in node.events("call_offered") if e["call_id"] == ended["call_id"]]
    assert offered and offered[0]["session_id"] == ended["session_id"]
    assert offered[0]["transport"] == {"u1": "udp", "t1": "tcp"}[transport]
    labels = [s["label"] for s in offered[0]["streams"]]  # type: ignore[index, union-attr]
    assert labels == ["1", "2"]


def test_concurrent_calls_udp(node: NodeProcess) -> None:
    """Twenty calls at 20 calls/s, each with its own dialog, ports and BYE."""
    before = len(node.events("call_ended"))
    result = run_sipp("siprec_two_streams.xml", node.sip_port, calls=20, rate=20)
    assert result.ok, _explain(result)
    deadline = time.monotonic() + 10
    while len(node.events("call_ended")) < before + 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(node.events("call_ended")) == before + 20


@pytest.mark.parametrize("scenario", ["cancel_unknown.xml", "bye_unknown_dialog.xml"])
def test_481_for_unknown_transactions(node: NodeProcess, scenario: str) -> None:
    result = run_sipp(scenario, node.sip_port)
    assert result.ok, _explain(result)


def _udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_garbage_burst_then_options(node: NodeProcess) -> None:
    """Random bytes, truncated and corrupted SIP: the node answers what it can and lives on."""
    rng = random.Random(7)
    valid = (
        b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: g\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(2000):
            kind = i % 4
            if kind == 0:
                data = rng.randbytes(rng.randint(1, 1500))
            elif kind == 1:
                data = valid[: rng.randint(1, len(valid))]
            elif kind == 2:
                raw = bytearray(valid)
                for _ in range(5):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                data = bytes(raw)
            else:
                data = b"\x00" * rng.randint(1, 64) + b"\r\n\r\n"
            sock.sendto(data, ("127.0.0.1", node.sip_port))
    result = run_sipp("options.xml", node.sip_port)
    assert result.ok, _explain(result)
    assert node.proc.poll() is None
    assert node.events("sip_malformed"), "garbage was not reported as malformed"


def test_malformed_request_gets_400(node: NodeProcess) -> None:
    bad = (
        b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: bad-cl\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 500\r\n\r\nshort body"
    )
    reply = _udp_exchange(node.sip_port, bad)
    assert reply is not None and reply.startswith(b"SIP/2.0 400 "), reply
    assert b"Call-ID: bad-cl" in reply


def test_tcp_keepalive_ping_answered(node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", node.sip_port), timeout=2) as sock:
        sock.sendall(b"\r\n\r\n")
        assert sock.recv(16) == b"\r\n"


def test_sigterm_ends_live_calls_with_bye() -> None:
    node = start_node()
    sipp = start_sipp("siprec_drain.xml", node.sip_port)
    try:
        node.wait_for_event("call_active", timeout=10)
        assert node.stop(signal.SIGTERM) == 0, "\n".join(node.raw[-30:])
        assert sipp.wait(15) == 0, sipp.stderr.read().decode() if sipp.stderr else ""
    finally:
        if sipp.poll() is None:
            sipp.kill()
    ended = node.wait_for_event("call_ended")
    assert ended["reason"] == "recorder shutting down"
    node.wait_for_event("node_stopped")


def test_run_with_no_arguments_uses_embedded_defaults() -> None:
    """`siprec-node run` alone: UDP and TCP 5060 on all interfaces, memory store, exit 0."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("0.0.0.0", 5060))
            except OSError as exc:
                pytest.fail(f"port 5060 is taken on this machine, cannot test defaults: {exc}")
    workdir = Path(tempfile.mkdtemp())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPREC_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.Popen(
        [sys.executable, "-m", "siprec_node", "run"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = NodeProcess(proc=proc, sip_port=5060, workdir=workdir)
    node.start_reader()
    try:
        started = node.wait_for_event("node_started", timeout=20)
        assert started["listeners"] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
        assert started["store"] == "memory"
        assert started["rtp_ports"] == "20000-39999"
        result = run_sipp("options.xml", 5060)
        assert result.ok, _explain(result)
        result = run_sipp("options.xml", 5060, transport="t1")
        assert result.ok, _explain(result)
    finally:
        code = node.stop()
    assert code == 0, "\n".join(node.raw[-30:])
