"""Benchmark of the session stores, beside redis-benchmark on the same server.

    python bench/store/run.py [--url redis://127.0.0.1:6379/0] [--sessions 2000] [--ops 10000]

Without --url it starts its own redis-server on a free port (no persistence) and stops it at the
end. It measures, with `--sessions` live sessions in the store:

- snapshot save and load: throughput and p50/p99 latency, one caller and 50 concurrent callers;
- `redis-benchmark` SET and GET with the same payload size, key space and client count, and the
  ratio store / redis-benchmark; redis-py SET/GET from this process, to show how much of the
  gap is the Python client rather than the store;
- the node heartbeat (and a heartbeat + takeover tick) at 10 and at `--sessions` sessions: its
  latency and the Redis commands it sends must not grow with the number of calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis

from siprec_node.session import (
    ManagerConfig,
    MemorySessionStore,
    RedisSessionStore,
    SessionManager,
    SessionState,
    SessionStatus,
    SessionStore,
)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_BENCHMARK = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"


@dataclass
class Result:
    """One measured operation."""

    name: str
    backend: str
    clients: int
    ops_per_s: float
    p50_us: float
    p99_us: float
    ratio: str = ""


# -- redis-server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def own_redis() -> Iterator[tuple[str, int]]:
    """A throw-away redis-server on a free port: (host, port)."""
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [
            *(REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", workdir, "--logfile", str(Path(workdir) / "log")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            time.sleep(0.02)
        else:
            raise RuntimeError("redis-server did not start")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def command_count(host: str, port: int) -> int:
    """Commands the server has executed (INFO excluded)."""
    with socket.create_connection((host, port)) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = s.recv(65536)
        header, _, body = data.partition(b"\r\n")
        while len(body) < int(header[1:]):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    total = 0
    for line in body.decode().splitlines():
        if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def redis_benchmark(host: str, port: int, test: str, size: int, n: int, clients: int) -> Result:
    """Run redis-benchmark for one test (`set` or `get`) and parse its CSV line."""
    out = subprocess.run(
        [
            *(REDIS_BENCHMARK, "-h", host, "-p", str(port), "-t", test, "-d", str(size)),
            *("-n", str(n), "-c", str(clients), "-r", "2000", "--csv"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    header, row = None, None
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if cells[0] == "test":
            header = cells
        elif cells[0].upper() == test.upper():
            row = cells
    if header is None or row is None:
        raise RuntimeError(f"unexpected redis-benchmark output: {out!r}")
    values = dict(zip(header, row, strict=True))
    return Result(
        name=test.upper(),
        backend="redis-benchmark",
        clients=clients,
        ops_per_s=float(values["rps"]),
        p50_us=float(values["p50_latency_ms"]) * 1000,
        p99_us=float(values["p99_latency_ms"]) * 1000,
    )


# -- sessions ---------------------------------------------------------------------------------


def make_session(i: int, node: str, now: datetime) -> SessionState:
    """A realistic snapshot: two parties, a dozen turns, the recovery data of a live call."""
    state = SessionState(
        call_id=f"{uuid.uuid4().hex}@sbc-{i % 7}.example.net",
        provider="acme-sbc",
        direction="inbound",
        from_=f"<sip:+3312345{i:05d}@trunk.example.net>;tag=a{i}",
        to="<sip:+33187654321@recorder.example.net>;tag=srs",
        status=SessionStatus.ACTIVE,
        node_id=node,
        created_at=now,
        recovery_data={
            "dialog": {
                "call_id": f"{i}-{uuid.uuid4().hex}",
                "local_tag": uuid.uuid4().hex[:10],
                "remote_tag": uuid.uuid4().hex[:10],
                "remote_cseq": 3,
                "route_set": ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"],
                "remote_target": "<sip:sbc@10.0.0.1:5060;transport=udp>",
            },
            "streams": [
                {
                    "label": str(n),
                    "port": 20000 + 4 * i + 2 * n,
                    "ssrc": 0x10000000 + i * 2 + n,
                    "codec": "PCMU/8000",
                    "file": f"recordings/2025/01/02/call-{i}-{n}.raw",
                    "offset": 1_234_560 + n,
                }
                for n in range(2)
            ],
            "participants": [
                {"id": "p1", "name": "Caller", "aor": "sip:+33123@trunk"},
                {"id": "p2", "name": "Agent", "aor": "sip:agent-7@pbx"},
            ],
        },
    )
    for t in range(12):
        state.add_turn(
            "p1" if t % 2 else "p2",
            now + timedelta(seconds=5 * t),
            1200 + 37 * t,
            interrupted=t % 5 == 0,
        )
    return state


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """(p50, p99) in microseconds."""
    qs = statistics.quantiles(samples_ns, n=100, method="inclusive")
    return qs[49] / 1000, qs[98] / 1000


async def timed(
    op: Callable[[int], Awaitable[object]], n: int, clients: int
) -> tuple[float, list[int]]:
    """Run op(0..n-1) spread over `clients` concurrent callers: (ops/s, latencies in ns)."""
    latencies: list[int] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter_ns()
            await op(i)
            latencies.append(time.perf_counter_ns() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return n / (time.perf_counter() - start), latencies


async def bench_store(
    store: SessionStore, name: str, sessions: list[SessionState], ops: int, clients: int
) -> list[Result]:
    """Save and load throughput/latency over `sessions` (already stored)."""
    results = []

    async def save(i: int) -> None:
        await store.save(sessions[i % len(sessions)])

    async def load(i: int) -> None:
        await store.load(sessions[i % len(sessions)].id)

    for op_name, op in (("save", save), ("load", load)):
        await op(0)  # warm up (script load, connection)
        rate, lat = await timed(op, ops, clients)
        p50, p99 = percentiles(lat)
        results.append(Result(op_name, name, clients, rate, p50, p99))
    return results


async def bench_heartbeat(
    make_store: Callable[[], SessionStore],
    own_sessions: int,
    iterations: int,
    host_port: tuple[str, int] | None,
) -> list[tuple[str, float, float, float | None]]:
    """(duty, p50 µs, p99 µs, Redis commands per call) for heartbeat and heartbeat + takeover,
    on a fresh store holding `own_sessions` sessions of this node (and nothing else)."""
    store = make_store()
    try:
        now = datetime.now(UTC)
        node = "hb-node"
        for i in range(own_sessions):
            await store.save(make_session(i, node, now))
        manager = SessionManager(store, ManagerConfig(node_id=node))
        out = []

        async def tick() -> None:
            await manager.heartbeat()
            await manager.takeover()

        for duty_name, duty in (("heartbeat", manager.heartbeat), ("heartbeat+takeover", tick)):
            await duty()
            before = command_count(*host_port) if host_port else 0
            _, lat = await timed(lambda _i, duty=duty: duty(), iterations, 1)
            per_call = (command_count(*host_port) - before) / iterations if host_port else None
            p50, p99 = percentiles(lat)
            out.append((duty_name, p50, p99, per_call))
        return out
    finally:
        await store.close()


async def bench_raw_client(url: str, payload: int, ops: int, clients: int) -> list[Result]:
    """redis-py SET/GET of the same payload: how much of the gap is the Python client."""
    client = aioredis.Redis.from_url(url, max_connections=clients + 1)
    value = b"x" * payload
    results = []
    try:
        for name, op in (
            ("SET", lambda i: client.set(f"bench:raw:{i % 2000}", value)),
            ("GET", lambda i: client.get(f"bench:raw:{i % 2000}")),
        ):
            await op(0)
            rate, lat = await timed(op, ops, clients)
            p50, p99 = percentiles(lat)
            results.append(Result(name, "redis-py (raw)", clients, rate, p50, p99))
    finally:
        await client.aclose()
    return results


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        cells = zip(r, widths, strict=True)
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(cells)))
    print()


async def main_async(args: argparse.Namespace, host: str, port: int) -> None:
    url = args.url or f"redis://{host}:{port}/0"
    now = datetime.now(UTC)
    sessions = [make_session(i, "bench-node", now) for i in range(args.sessions)]
    payload = int(statistics.mean(len(s.to_json()) for s in sessions))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.sessions} live sessions, "
        f"snapshot JSON {payload} bytes on average; {args.ops} ops per measurement\n"
    )

    results: list[Result] = []
    redis_store = RedisSessionStore(url, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
    memory_store = MemorySessionStore()
    try:
        for store, name in ((redis_store, "RedisSessionStore"), (memory_store, "MemoryStore")):
            for s in sessions:
                await store.save(s)
            for clients in (1, 50):
                results += await bench_store(store, name, sessions, args.ops, clients)
        list_rows = []
        for store, name in ((redis_store, "RedisSessionStore"), (memory_store, "MemoryStore")):
            for label, call in (
                ("list_active", store.list_active),
                ("list_by_node", lambda store=store: store.list_by_node("bench-node")),
                ("list_all (SCAN)", store.list_all),
            ):
                assert len(await call()) == args.sessions
                _, lat = await timed(lambda _i, call=call: call(), 20, 1)
                p50, p99 = percentiles(lat)
                list_rows.append([label, name, str(args.sessions), f"{p50 / 1000:,.1f}"])

        for clients in (1, 50):
            results += await bench_raw_client(url, payload, args.ops, clients)
        bench = {}
        for clients in (1, 50):
            for test in ("set", "get"):
                r = redis_benchmark(host, port, test, payload, args.ops * 2, clients)
                bench[(r.name, clients)] = r
                results.append(r)
        for r in results:
            if r.backend == "RedisSessionStore":
                ref = bench[("SET" if r.name == "save" else "GET", r.clients)]
                r.ratio = (
                    f"{r.ops_per_s / ref.ops_per_s:.2f}x {ref.name} ops/s, "
                    f"p50 {r.p50_us / ref.p50_us:.1f}x"
                )

        order = ["redis-benchmark", "redis-py (raw)", "RedisSessionStore", "MemoryStore"]
        rows = [
            [
                r.name,
                r.backend,
                str(r.clients),
                f"{r.ops_per_s:,.0f}",
                f"{r.p50_us:,.0f}",
                f"{r.p99_us:,.0f}",
                r.ratio,
            ]
            for r in sorted(results, key=lambda r: (r.clients, order.index(r.backend)))
        ]
        print_table(
            ["op", "backend", "clients", "ops/s", "p50 µs", "p99 µs", "store / redis-benchmark"],
            rows,
        )

        print_table(["listing", "backend", "sessions", "p50 ms"], list_rows)

        hb_rows = []
        makers: list[tuple[str, Callable[[], SessionStore], tuple[str, int] | None]] = [
            (
                "RedisSessionStore",
                lambda: RedisSessionStore(url, prefix=f"bench:{uuid.uuid4().hex[:8]}:"),
                (host, port),
            ),
            ("MemoryStore", MemorySessionStore, None),
        ]
        for name, make, host_port in makers:
            for count in (10, args.sessions):
                for duty, p50, p99, cmds in await bench_heartbeat(
                    make, count, args.heartbeats, host_port
                ):
                    hb_rows.append(
                        [
                            duty,
                            name,
                            str(count),
                            f"{p50:,.1f}",
                            f"{p99:,.1f}",
                            "-" if cmds is None else f"{cmds:.2f}",
                        ]
                    )
        print_table(
            ["duty", "backend", "own sessions", "p50 µs", "p99 µs", "redis cmds/call"], hb_rows
        )
    finally:
        await redis_store.close()
        await memory_store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="benchmark this Redis instead of starting one")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--heartbeats", type=int, default=2_000)
    args = parser.parse_args()
    if args.url:
        from urllib.parse import urlsplit

        parts = urlsplit(args.url)
        asyncio.run(main_async(args, parts.hostname or "127.0.0.1", parts.port or 6379))
        return
    with own_redis() as (host, port):
        asyncio.run(main_async(args, host, port))


if __name__ == "__main__":
    main()
