"""Start throw-away redis-server processes for tests: standalone, Sentinel and Cluster.

Each process listens on 127.0.0.1 on a free port, persists nothing (`--save "" --appendonly no`)
and works in its own temporary directory; `stop()` terminates it and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def redis_available() -> bool:
    """True if a redis-server binary can be run."""
    return os.access(REDIS_SERVER, os.X_OK)


def free_port(*, with_bus: bool = False) -> int:
    """A TCP port free on 127.0.0.1 (and, `with_bus`, port + 10000 too, for Cluster)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command in RESP and return the raw reply (enough for PING, INFO, CLUSTER INFO)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        data = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(parts))
        reply = s.recv(65536)
        if reply.startswith(b"$"):
            header, _, body = reply.partition(b"\r\n")
            size = int(header[1:])
            while size >= 0 and len(body) < size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            return body[: max(size, 0)]
        return reply


class RedisProcess:
    """One redis-server (or sentinel) process."""

    def __init__(
        self,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        sentinel_config: str | None = None,
        cluster: bool = False,
    ) -> None:
        self.port = port or free_port(with_bus=cluster)
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self.log = self.dir / "redis.log"
        self.sentinel = sentinel_config is not None
        if sentinel_config is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n{sentinel_config}\n"
            )
            argv = [REDIS_SERVER, str(conf), "--sentinel", "--logfile", str(self.log)]
        else:
            argv = [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.log),
                *args,
            ]
            if cluster:
                argv += [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    "3000",
                ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0` (for a data node)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"redis-server on {self.port} exited: {err}{log}")
            with contextlib.suppress(OSError):
                if command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on {self.port} did not answer PING in {timeout}s")

    def info(self, section: str = "") -> dict[str, str]:
        """INFO as a dict of strings."""
        raw = command(self.port, "INFO", *([section] if section else []))
        out = {}
        for line in raw.decode().splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                out[key] = value
        return out

    def stop(self) -> None:
        """Terminate the process (SIGKILL after 5 s) and remove its directory."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():  # type: ignore[operator]
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class SentinelSetup:
    """A master, a replica and one sentinel monitoring them as `service`."""

    def __init__(self, service: str = "mymaster") -> None:
        self.service = service
        self.master = RedisProcess(args=("--repl-diskless-sync-delay", "0"))
        self.replica = RedisProcess(
            args=(
                "--replicaof",
                "127.0.0.1",
                str(self.master.port),
                "--repl-diskless-sync-delay",
                "0",
            )
        )
        self.sentinel: RedisProcess | None = None
        try:
            _wait(
                lambda: self.replica.info("replication").get("master_link_status") == "up",
                10,
                "replica link",
            )
            self.sentinel = RedisProcess(
                sentinel_config=(
                    f"sentinel monitor {service} 127.0.0.1 {self.master.port} 1\n"
                    f"sentinel down-after-milliseconds {service} 1000\n"
                    f"sentinel failover-timeout {service} 3000\n"
                )
            )
            _wait(self._sees_replica, 10, "sentinel to discover the replica")
        except BaseException:
            self.stop()
            raise

    def _sees_replica(self) -> bool:
        assert self.sentinel is not None
        reply = command(self.sentinel.port, "SENTINEL", "REPLICAS", self.service)
        return str(self.replica.port).encode() in reply

    @property
    def url(self) -> str:
        """`redis+sentinel://127.0.0.1:<sentinel port>/<service>/0`."""
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def master_port(self) -> int:
        """The port of the master as the sentinel currently sees it."""
        assert self.sentinel is not None
        reply = command(
            self.sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        ).decode()
        return int([line for line in reply.split("\r\n") if line.isdigit()][-1])

    def failover(self, timeout: float = 15.0) -> None:
        """Promote the replica and wait until it is master (and the sentinel says so)."""
        assert self.sentinel is not None
        old = self.master_port()
        # -NOGOODSLAVE until the sentinel has fresh INFO from the replica: retry.
        sentinel_port = self.sentinel.port
        _wait(
            lambda: command(sentinel_port, "SENTINEL", "FAILOVER", self.service).startswith(b"+OK"),
            timeout,
            "sentinel to accept FAILOVER",
        )
        _wait(lambda: self.master_port() != old, timeout, "sentinel failover")
        new = self.replica if self.replica.port == self.master_port() else self.master
        _wait(lambda: new.info("replication").get("role") == "master", timeout, "new master")

    def stop(self) -> None:
        """Stop every process."""
        for proc in (self.sentinel, self.replica, self.master):
            if proc is not None:
                proc.stop()


class ClusterSetup:
    """Three cluster masters (no replicas), slots assigned by `redis-cli --cluster create`."""

    def __init__(self, size: int = 3) -> None:
        self.nodes: list[RedisProcess] = []
        try:
            for _ in range(size):
                self.nodes.append(RedisProcess(cluster=True))
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [
                    REDIS_CLI,
                    "--cluster",
                    "create",
                    *addrs,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            _wait(self._ok, 20, "cluster_state:ok")
        except BaseException:
            self.stop()
            raise

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        """One `redis://` URL per node."""
        return [n.url.rsplit("/", 1)[0] for n in self.nodes]

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
