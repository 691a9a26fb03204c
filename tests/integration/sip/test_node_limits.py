"""Attacks on the node's SIP ports and readiness, through the real node process.

Each test is shaped as the attack of issue 13: a TCP header trickled a byte at a time, a flood
of idle connections under a 1,024 descriptor limit (set with ``prlimit`` on the node), the
descriptor limit itself hit by the accept loop, one source over its connection cap, one
source over its INVITE rate, and ``/readyz`` while Redis is frozen with SIGSTOP. Timeouts come
from config and are short so that the tests take seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.node_process import NodeProcess, free_port, run_sipp, start_node
from tests.integration.sip.test_node_tls import _make_cert
from tests.redis_server import RedisProcess, redis_available

pytestmark = pytest.mark.integration


# ---- helpers


@contextlib.contextmanager
def running_node(config: str = "", **sip: str) -> Iterator[NodeProcess]:
    """A node with HTTP; ``sip`` keys are set through the environment (``SIPREC_SIP__KEY``),
    as start_node's file already has a [sip] section."""
    http_port = free_port((socket.SOCK_STREAM,))
    env = {f"SIPREC_SIP__{key.upper()}": value for key, value in sip.items()}
    node = start_node(config, http_port=http_port, env=env)
    node.http_port = http_port  # type: ignore[attr-defined]
    try:
        yield node
    finally:
        code = node.stop()
        assert code == 0, "\n".join(node.raw[-40:])


def http_get(node: NodeProcess, path: str, timeout: float = 10.0) -> tuple[int, str]:
    url = f"http://127.0.0.1:{node.http_port}{path}"  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(node: NodeProcess, sample: str) -> float:
    status, text = http_get(node, "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"no {sample} in /metrics:\n{text}")


def limit_hits(node: NodeProcess, limit: str) -> float:
    return metric(node, f'siprec_sip_limit_hits_total{{limit="{limit}"}}')


def options(transport: str, local: tuple[str, int], call_id: str) -> bytes:
    return (
        f"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: <sip:probe@{local[0]}>;tag=p1\r\n"
        f"To: <sip:srs@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def invite(local: tuple[str, int], call_id: str) -> bytes:
    sdp = (
        f"v=0\r\no=- 1 1 IN IP4 {local[0]}\r\ns=-\r\nc=IN IP4 {local[0]}\r\nt=0 0\r\n"
        f"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
    ).encode()
    head = (
        f"INVITE sip:srs@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: <sip:src@{local[0]}>;tag=f{uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:srs@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:src@{local[0]}:{local[1]}>\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    ).encode()
    return head + sdp


def final_status(sock: socket.socket, call_id: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """The first final response for ``call_id`` received on a UDP socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if f"Call-ID: {call_id}\r\n".encode() in data:
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                return status, data
    raise AssertionError(f"no final response for {call_id}")


def tcp_options(port: int, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(options("TCP", s.getsockname(), f"tcp-{uuid.uuid4().hex}"))
        return s.recv(65536)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes ``sock`` (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def limit_lines(node: NodeProcess, limit: str) -> list[dict[str, object]]:
    return [ln for ln in node.events("sip_limit_hit") if ln["limit"] == limit]


def error_lines(node: NodeProcess) -> list[dict[str, object]]:
    return [ln for ln in node.lines if ln.get("level") in ("error", "critical", "exception")]


def raise_own_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def prlimit_nofile(pid: int, soft: int, hard: int | None = None) -> None:
    """Set the descriptor limit of a running process (``hard`` unchanged when None: raising
    it back needs privileges)."""
    value = f"{soft}:{hard}" if hard is not None else f"{soft}:"
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={value}"], check=True)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- TCP deadlines


def test_trickled_header_closed_at_the_message_deadline() -> None:
    """One byte a second of a header that never ends: closed at tcp_message_timeout after the
    first byte, however long the idle timeout, although every second brings a byte."""
    with running_node(tcp_message_timeout="2s", tcp_idle_timeout="60s") as node:
        with socket.create_connection(("127.0.0.1", node.sip_port), timeout=5) as sock:
            header = options("TCP", sock.getsockname(), "trickle")
            started = time.monotonic()
            closed_at = None
            for byte in header[:20]:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic()
                    break
                if closed_by_peer(sock, 1.0):
                    closed_at = time.monotonic()
                    break
            assert closed_at is not None, "a trickled header kept the connection open"
            assert 1.5 <= closed_at - started <= 4.0, closed_at - started
        assert limit_hits(node, "tcp_message_timeout") == 1
        hit = node.wait_for_event("sip_limit_hit", limit="tcp_message_timeout")
        assert hit["source"] == "127.0.0.1"
        # the node serves the same client at once afterwards
        assert tcp_options(node.sip_port).startswith(b"SIP/2.0 200 ")


def test_idle_timeout_counts_complete_messages_and_pings_only() -> None:
    """A connection kept alive with CRLF pings stays; silence, or a message that never
    completes, ends it at tcp_idle_timeout."""
    with running_node(tcp_message_timeout="30s", tcp_idle_timeout="2s") as node:
        with socket.create_connection(("127.0.0.1", node.sip_port), timeout=5) as sock:
            sock.sendall(options("TCP", sock.getsockname(), "idle-1"))
            assert sock.recv(65536).startswith(b"SIP/2.0 200 ")
            for _ in range(6):  # 3 s of pings, longer than the idle timeout
                time.sleep(0.5)
                sock.sendall(b"\r\n\r\n")
                assert sock.recv(16) == b"\r\n"
            last_ping = time.monotonic()
            assert closed_by_peer(sock, 4.0), "an idle connection was not closed"
            assert 1.5 <= time.monotonic() - last_ping <= 3.5
        with socket.create_connection(("127.0.0.1", node.sip_port), timeout=5) as sock:
            header = options("TCP", sock.getsockname(), "idle-2")
            started = time.monotonic()
            closed = False
            for byte in header[:40]:  # partial bytes every 0.25 s do not count as activity
                with contextlib.suppress(OSError):
                    sock.sendall(bytes([byte]))
                if closed_by_peer(sock, 0.25):
                    closed = True
                    break
            assert closed, "partial bytes extended the idle timeout"
            assert 1.5 <= time.monotonic() - started <= 3.5
        assert limit_hits(node, "tcp_idle_timeout") == 2


def test_stalled_tls_handshake_closed_at_the_message_deadline() -> None:
    """A TLS client that connects and trickles its ClientHello: closed at
    tcp_message_timeout, not at asyncio's 60 s handshake timeout."""
    certs = Path(tempfile.mkdtemp())
    cert, key = _make_cert(certs, "node")
    port = free_port((socket.SOCK_STREAM,))
    config = f'[sip.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    with running_node(
        config,
        listen=f'["udp:127.0.0.1:0", "tls:127.0.0.1:{port}"]',
        tcp_message_timeout="2s",
    ) as node:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"\x16\x03\x01")  # the start of a TLS record, never finished
            assert closed_by_peer(sock, 5.0), "a stalled TLS handshake kept its connection"
            assert 1.5 <= time.monotonic() - started <= 3.5
        assert limit_hits(node, "tcp_message_timeout") == 1
        assert node.proc.poll() is None
        assert not error_lines(node), error_lines(node)[:5]


# ---- connection caps and descriptors


def test_per_source_connection_cap() -> None:
    """Over tcp_max_connections_per_source, a source's new connections are closed before a
    byte is read; its earlier connections and other sources are served."""
    with running_node(tcp_max_connections_per_source="5") as node:
        kept = [socket.create_connection(("127.0.0.1", node.sip_port), timeout=5) for _ in range(5)]
        try:
            time.sleep(0.2)
            refused = [
                socket.create_connection(("127.0.0.1", node.sip_port), timeout=5) for _ in range(3)
            ]
            for sock in refused:
                assert closed_by_peer(sock, 2.0), "a connection over the cap was kept"
                sock.close()
            for i, sock in enumerate(kept):
                sock.sendall(options("TCP", sock.getsockname(), f"kept-{i}"))
                assert sock.recv(65536).startswith(b"SIP/2.0 200 ")
            assert tcp_options(node.sip_port, source="127.0.0.2").startswith(b"SIP/2.0 200 ")
        finally:
            for sock in kept:
                sock.close()
        assert limit_hits(node, "tcp_max_connections_per_source") == 3
        lines = limit_lines(node, "tcp_max_connections_per_source")
        assert len(lines) == 1 and lines[0]["source"] == "127.0.0.1", lines


def test_idle_flood_under_1024_descriptors_new_clients_served() -> None:
    """1,100 idle connections from five addresses against a node limited to 1,024 descriptors:
    the node holds at most half its descriptors in connections (the oldest idle ones are
    evicted for newcomers), and a new client's OPTIONS and INVITE over UDP and TCP are served."""
    raise_own_fd_limit(4096)
    with running_node() as node:
        prlimit_nofile(node.proc.pid, 1024, 1024)
        # An SRC's connection in use before the flood: it has carried a message, so it is not
        # evicted for the flood's connections, which never carry one.
        src = socket.create_connection(("127.0.0.1", node.sip_port), timeout=5)
        src.sendall(options("TCP", src.getsockname(), "src-before"))
        assert src.recv(65536).startswith(b"SIP/2.0 200 ")
        flood: list[socket.socket] = []
        try:
            for i in range(1100):
                source = f"127.0.0.{2 + i % 5}"
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((source, 0))
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", node.sip_port))
                flood.append(sock)
            time.sleep(1.0)
            assert node.proc.poll() is None
            assert open_fds(node.proc.pid) < 1024 - 400, open_fds(node.proc.pid)
            assert metric(node, "siprec_sip_tcp_connections") <= 512
            for transport in ("u1", "t1"):
                result = run_sipp("options.xml", node.sip_port, transport=transport)
                assert result.ok, result.errors[-2000:]
                result = run_sipp("siprec_two_streams.xml", node.sip_port, transport=transport)
                assert result.ok, result.errors[-2000:]
            src.sendall(options("TCP", src.getsockname(), "src-after"))
            assert src.recv(65536).startswith(b"SIP/2.0 200 ")
        finally:
            src.close()
            for sock in flood:
                sock.close()
        assert limit_hits(node, "tcp_max_connections") >= 1100 - 512
        assert metric(node, "siprec_sip_tcp_evicted_total") >= 1100 - 512
        assert limit_hits(node, "accept_no_descriptors") == 0
        assert not error_lines(node), error_lines(node)[:5]
        # one line per evicted source per interval, not one per connection
        assert len(node.events("sip_limit_hit")) <= 10, node.events("sip_limit_hit")


def test_accept_loop_backs_off_when_descriptors_run_out() -> None:
    """With almost no descriptor left, connections pile up: the accept loop backs off instead
    of spinning, logs once per interval, counts, and serves again once descriptors free up."""
    raise_own_fd_limit(4096)
    with running_node() as node:
        pid = node.proc.pid
        prlimit_nofile(pid, open_fds(pid) + 8)
        clients: list[socket.socket] = []
        try:
            for _ in range(200):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", node.sip_port))
                clients.append(sock)
            time.sleep(3.0)
            assert node.proc.poll() is None
            # UDP needs no new descriptor: still answered meanwhile
            assert run_sipp("options.xml", node.sip_port, transport="u1").ok
        finally:
            for sock in clients:
                sock.close()
            prlimit_nofile(pid, 1024)
        time.sleep(1.5)  # the back-off is at most 1 s
        assert tcp_options(node.sip_port).startswith(b"SIP/2.0 200 ")
        hits = limit_hits(node, "accept_no_descriptors")
        assert 1 <= hits <= 3.0 / 0.05, hits  # backs off: at most one try per 50 ms
        lines = limit_lines(node, "accept_no_descriptors")
        assert 1 <= len(lines) <= 2, lines
        assert not [ln for ln in node.raw if "out of system resource" in ln]
        assert not error_lines(node), error_lines(node)[:5]


# ---- INVITE rate


def test_invite_rate_per_source_gets_503_while_another_source_is_served() -> None:
    with running_node(invite_rate_per_source="1", invite_burst_per_source="3") as node:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
        ):
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.2", 0))
            ids = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(10)]
            for call_id in ids:
                a.sendto(invite(a.getsockname(), call_id), ("127.0.0.1", node.sip_port))
            answers = [final_status(a, call_id) for call_id in ids]
            statuses = [status for status, _ in answers]
            assert statuses[:3] == [200, 200, 200], statuses
            assert statuses[3:] == [503] * 7, statuses
            for _, reply in answers[3:]:
                assert b"Retry-After: 1\r\n" in reply, reply
                assert b"SIP/2.0 503 Rate Limited\r\n" in reply
            other = f"other-{uuid.uuid4().hex[:6]}"
            b.sendto(invite(b.getsockname(), other), ("127.0.0.1", node.sip_port))
            assert final_status(b, other)[0] == 200
            time.sleep(1.1)  # a token comes back after a second
            again = f"again-{uuid.uuid4().hex[:6]}"
            a.sendto(invite(a.getsockname(), again), ("127.0.0.1", node.sip_port))
            assert final_status(a, again)[0] == 200
        assert limit_hits(node, "invite_rate_per_source") == 7
        lines = limit_lines(node, "invite_rate_per_source")
        assert len(lines) == 1 and lines[0]["source"] == "127.0.0.1", lines


def no_final_status(sock: socket.socket, call_id: str, wait: float) -> bool:
    """True when no final response for ``call_id`` comes within ``wait`` seconds."""
    try:
        final_status(sock, call_id, timeout=wait)
    except AssertionError:
        return True
    return False


def test_invites_get_503_overloaded_while_the_media_worker_cannot_keep_up() -> None:
    # A media worker stopped (SIGSTOP) stands for one starved of CPU: its opens wait.
    with running_node(max_answer_delay="500ms") as node:
        node.wait_for_event("media_worker_ready")
        worker_pid = int(str(node.wait_for_event("media_worker_started")["pid"]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as src:
            src.bind(("127.0.0.1", 0))
            local = src.getsockname()
            waiting, refused, later = (f"{name}-{uuid.uuid4().hex[:6]}" for name in "wrl")
            os.kill(worker_pid, signal.SIGSTOP)
            try:
                src.sendto(invite(local, waiting), ("127.0.0.1", node.sip_port))
                assert no_final_status(src, waiting, 0.8)
                assert metric(node, "siprec_media_opening") == 1
                assert metric(node, "siprec_media_open_wait_seconds") >= 0.5
                src.sendto(invite(local, refused), ("127.0.0.1", node.sip_port))
                status, reply = final_status(src, refused)
                assert status == 503 and b"SIP/2.0 503 Overloaded\r\n" in reply, reply
                # as many seconds as the oldest had waited (~0.8 s), not the 30 of a full node
                assert re.search(rb"\r\nRetry-After: [12]\r\n", reply), reply
            finally:
                os.kill(worker_pid, signal.SIGCONT)
            assert final_status(src, waiting)[0] == 200  # the accepted call is answered
            src.sendto(invite(local, later), ("127.0.0.1", node.sip_port))
            assert final_status(src, later)[0] == 200
        assert metric(node, "siprec_invites_refused_overloaded_total") == 1
        assert metric(node, "siprec_media_opening") == 0
        (started,) = node.events("overloaded")
        assert started["setting"] == "sip.max_answer_delay" and started["waiting"] == 1
        (ended,) = node.events("overload_ended")
        assert ended["refused"] == 1


# ---- readiness


def test_readyz_answers_503_within_a_second_when_redis_hangs() -> None:
    if not redis_available():
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis = RedisProcess()
    try:
        config = f'[store]\nbackend = "redis"\nurl = "{redis.url}"\n'
        with running_node(config) as node:
            deadline = time.monotonic() + 10
            while http_get(node, "/readyz")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert http_get(node, "/readyz")[0] == 200
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                results: list[tuple[float, int, str]] = []

                def probe() -> None:
                    started = time.monotonic()
                    status, body = http_get(node, "/readyz")
                    results.append((time.monotonic() - started, status, body))

                threads = [threading.Thread(target=probe) for _ in range(3)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                probe()
                for elapsed, status, body in results:
                    assert status == 503, body
                    assert elapsed < 1.6, elapsed
                    reply = json.loads(body)
                    assert "store not answering" in reply["problems"], reply
                    assert reply["store"] == "no answer within 1s", reply
                assert http_get(node, "/healthz")[0] == 200
            finally:
                redis.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while http_get(node, "/readyz")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert http_get(node, "/readyz")[0] == 200
    finally:
        redis.stop()
