"""The node's RTP receive path against a C recvmmsg sink, on the same machine in the same run.

    python bench/media/run.py [--calls 2000] [--seconds 20] [--workers 1[,2]] [--finalise]
                              [--profile [--profile-calls 500]] [--rcvbuf BYTES] [--no-pin]

`sender.c` (built here with gcc into a temporary directory) paces N two-stream calls of PCMU:
one 172-byte packet (12-byte RTP header + 160 bytes) per stream every 20 ms, sendmmsg in
batches, absolute-time pacing. It sends, in turn, to

1. `sink.c`: epoll + recvmmsg over one UDP socket per stream, counting packets: the baseline;
2. the node's media path: a `WorkerEngine` (1 worker by default) recording every stream into
   a temporary directory, the sockets bound by `RtpPorts` and handed over by `open_stream` as
   the SIP process does (RTP and RTCP socket per stream).

CPU per packet is the receiving processes' user + system time over the traffic window
(getrusage in the sink, /proc/<pid>/stat of the workers) divided by the packets they received.
On loopback the kernel's receive processing up to the socket queue runs in the sender's
context, so both figures are what the receiving process itself pays: its syscalls, wake-ups and
user work. Received packets come from the sink's counters and the `packets` of every stream's
`stats`; offered is what the sender's sendmmsg accepted; loop lag is the worker's 10 ms probe
(`WorkerEngine.loop_lag`) over the traffic window.

By default, on a machine with two or more CPUs, the sender is pinned to CPU 0 and the receivers
(sink, workers) to the others, so the sender keeps pace and stands in for another machine;
`--no-pin` leaves placement to the scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKET_BYTES = 172
PACKETS_PER_SECOND = 50
TARGET_RATIO = 1.6
TARGET_LAG_P99_MS = 20.0
TARGET_FINALISE_MS = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One phase's figures."""

    phase: str
    streams: int
    offered: int
    received: int
    cpu_user_s: float
    cpu_sys_s: float
    sender: dict[str, Any]
    lag: dict[str, Any] | None = None
    rcvbuf: int = 0
    kernel_drops: int = 0  # datagrams the kernel dropped on these sockets (full buffer)
    backlog_s: float = 0.0  # how long the receiver took to empty its queues after the sender
    setup_s: float = 0.0
    profile: str | None = None
    streams_stats: dict[str, int] | None = None  # node phases: sums of the streams' stats
    busy: list[float] | None = None  # each worker's CPU over the traffic window, 1.0 = a CPU
    receiver: dict[str, int] | None = None  # node phases on the C path: its counters, summed

    @property
    def lost(self) -> int:
        return self.offered - self.received

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.offered if self.offered else 0.0

    @property
    def cpu_us_per_packet(self) -> float:
        total = self.cpu_user_s + self.cpu_sys_s
        return total * 1e6 / self.received if self.received else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "streams": self.streams,
            "offered": self.offered,
            "received": self.received,
            "lost": self.lost,
            "loss_pct": self.loss_pct,
            "cpu_user_s": self.cpu_user_s,
            "cpu_sys_s": self.cpu_sys_s,
            "cpu_us_per_packet": self.cpu_us_per_packet,
            "sender": self.sender,
            "lag": self.lag,
            "rcvbuf": self.rcvbuf,
            "kernel_drops": self.kernel_drops,
            "backlog_s": self.backlog_s,
            "setup_s": self.setup_s,
            "busy": self.busy,
            "streams_stats": self.streams_stats,
            "receiver": self.receiver,
        }


# ------------------------------------------------------------------------------------ helpers


def build(out: Path) -> tuple[Path, Path]:
    """Compile sender.c and sink.c into ``out``."""
    binaries = []
    for name in ("sender", "sink"):
        binary = out / name
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(binary), str(HERE / f"{name}.c")],
            check=True,
        )
        binaries.append(binary)
    return binaries[0], binaries[1]


def proc_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (/proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (14th, 15th)


def udp_sockets(ports: set[int]) -> tuple[int, int]:
    """Bytes queued and datagrams dropped (full buffer) on this host's UDP sockets bound to
    ``ports`` (/proc/net/udp: rx_queue and drops of each socket)."""
    queued = drops = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) in ports:
                queued += int(fields[4].partition(":")[2], 16)
                drops += int(fields[-1])
    return queued, drops


def wait_drained(ports: set[int], limit: float) -> float:
    """Wait until nothing is queued on ``ports`` (at most ``limit`` s); how long it took."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit and udp_sockets(ports)[0]:
        time.sleep(0.05)
    return time.perf_counter() - t0


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        sys.exit(f"RLIMIT_NOFILE is {hard}; {needed} descriptors are needed: use fewer --calls")


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


@dataclass
class Placement:
    sender: set[int] | None
    receivers: set[int] | None

    def describe(self) -> str:
        if self.sender is None:
            return "not pinned"
        receivers = sorted(self.receivers or [])
        return f"sender on CPU {sorted(self.sender)}, receivers on CPU {receivers}"


def placement(no_pin: bool) -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return Placement(None, None)
    return Placement({cpus[0]}, set(cpus[1:]))


def run_sender(
    sender: Path, ports_file: Path, seconds: float, cpus: set[int] | None
) -> dict[str, Any]:
    """Send to every port of ``ports_file`` for ``seconds``; the sender's JSON report."""
    proc = subprocess.Popen(
        [str(sender), "--ports-file", str(ports_file), "--seconds", str(seconds)],
        stdout=subprocess.PIPE,
    )
    pin(proc.pid, cpus)
    out, _ = proc.communicate(timeout=seconds * 3 + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"sender exited {proc.returncode}")
    return json.loads(out)


async def run_sender_async(
    sender: Path, ports_file: Path, seconds: float, cpus: set[int] | None
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, run_sender, sender, ports_file, seconds, cpus)


# ------------------------------------------------------------------------------------- phases


def sink_phase(
    label: str,
    sink: list[str],
    sender: Path,
    work: Path,
    streams: int,
    seconds: float,
    port_min: int,
    rcvbuf: int,
    where: Placement,
    drain: float,
    drain_limit: float,
) -> Row:
    """Phase 1: a sink (sink.c, or py_sink.py) counting what arrives on ``streams`` sockets."""
    ports_file = work / "sink-ports.txt"
    command = [*sink, "--count", str(streams), "--port-min", str(port_min)]
    command += ["--ports-out", str(ports_file), "--rcvbuf", str(rcvbuf)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        pin(proc.pid, where.receivers)
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if not ready.startswith("READY"):
            raise RuntimeError(f"sink did not start: {ready!r}")
        ports = {int(x) for x in ports_file.read_text().split()}
        drops0 = udp_sockets(ports)[1]
        sent = run_sender(sender, ports_file, seconds, where.sender)
        backlog = wait_drained(ports, drain_limit)
        time.sleep(drain)
        drops1 = udp_sockets(ports)[1]
        proc.send_signal(signal.SIGTERM)
        report = json.loads(proc.stdout.readline())
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Row(
        phase=label,
        streams=streams,
        offered=sent["packets"],
        received=report["packets"],
        cpu_user_s=report["cpu_user_s"],
        cpu_sys_s=report["cpu_sys_s"],
        sender=sent,
        rcvbuf=report["rcvbuf"],
        kernel_drops=drops1 - drops0,
        backlog_s=backlog,
    )


def pcmu_stream(index: int, port: int) -> dict[str, Any]:
    from siprec_node.siprec.sdp_answer import NegotiatedStream

    return NegotiatedStream(
        index=index,
        label=str(index + 1),
        media="audio",
        accepted=True,
        port=port,
        proto="RTP/AVP",
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        direction="recvonly",
    ).to_dict()


def reserve(rtp_ports: Any) -> int:
    """A bound RTP/RTCP pair, skipping runs of ports other processes hold."""
    from siprec_node.media.port_allocator import PortsExhausted

    for _ in range(200):
        try:
            return int(rtp_ports.reserve(time.monotonic()))
        except PortsExhausted:  # 16 busy ports in a row, quarantined: try the next ones
            continue
    raise RuntimeError("no free RTP ports above --port-base")


async def open_calls(
    engine: Any, calls: int, port_min: int, rcvbuf: int, recordings: Path
) -> tuple[list[int], Any, int]:
    """Bind and open ``calls`` two-stream calls; their RTP ports, the RtpPorts, SO_RCVBUF."""
    from siprec_node.media.engine import StreamSpec
    from siprec_node.media.port_allocator import PortAllocator, PortRange
    from siprec_node.media.rtp_ports import RtpPorts

    streams = calls * 2
    rtp_ports = RtpPorts(
        PortAllocator(PortRange(port_min, min(65535, port_min + 2 * streams + 4000)), 0.0),
        host="127.0.0.1",
    )
    epoch = time.time()
    ports: list[int] = []
    effective = 0
    jobs = []
    for call in range(calls):
        for index in (0, 1):
            port = reserve(rtp_ports)
            ports.append(port)
            rtp, rtcp = rtp_ports.take(port)
            if rcvbuf:
                rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            effective = rtp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            spec = StreamSpec(
                session_id=f"bench-{call}",
                index=index,
                negotiated=pcmu_stream(index, port),
                parts_dir=str(recordings / f"call-{call}.parts"),
                epoch=epoch,
            )
            jobs.append(engine.open_stream(spec, rtp, rtcp))
            if len(jobs) >= 64:
                await asyncio.gather(*jobs)
                jobs = []
    await asyncio.gather(*jobs)
    return ports, rtp_ports, effective


STREAM_COUNTERS = ("packets", "lost", "duplicates", "late", "reanchors", "malformed", "ignored")


async def stream_totals(engine: Any, calls: int) -> dict[str, int]:
    """The sum over every stream's ``stats`` of the counters that judge the traffic."""
    totals = dict.fromkeys(STREAM_COUNTERS, 0)
    for start in range(0, calls, 200):
        replies = await asyncio.gather(
            *(engine.stats(f"bench-{c}") for c in range(start, min(calls, start + 200)))
        )
        for reply in replies:
            for stream in reply.values():
                for name in STREAM_COUNTERS:
                    totals[name] += stream[name]
    return totals


async def node_phase(
    sender: Path,
    work: Path,
    calls: int,
    seconds: float,
    workers: int,
    port_min: int,
    rcvbuf: int,
    where: Placement,
    drain: float,
    settle: float,
    drain_limit: float,
    spy: str | None = None,
    receive_path: str = "auto",
    receive_interval: float = 0.02,
) -> Row:
    """Phase 2: the node's WorkerEngine recording every stream (``spy``: py-spy the first
    worker over the traffic, ``python`` without stopping it, ``native`` with C frames)."""
    from siprec_node.media.worker_engine import WorkerEngine

    recordings = Path(tempfile.mkdtemp(prefix="recordings-", dir=work))
    engine = WorkerEngine(
        workers,
        log_level="warning",
        log_format="json",
        receive_path=receive_path,
        receive_interval=receive_interval,
    )
    await engine.start()
    rtp_ports = None
    try:
        for pid in engine.pids:
            pin(pid, where.receivers)
        t0 = time.perf_counter()
        ports, rtp_ports, effective = await open_calls(engine, calls, port_min, rcvbuf, recordings)
        setup = time.perf_counter() - t0
        ports_file = work / f"node-ports-{workers}.txt"
        ports_file.write_text("\n".join(map(str, ports)) + "\n")
        await asyncio.sleep(settle)  # let the first sidecars and ticks of the setup pass
        pids = engine.pids
        await engine.loop_lag(reset=True)
        port_set = set(ports)
        drops0 = udp_sockets(port_set)[1]
        spying = start_spy(spy, pids[0], seconds, work / "spy.txt") if spy else None
        cpu0 = [proc_cpu(pid) for pid in pids]
        w0 = time.perf_counter()
        sent = await run_sender_async(sender, ports_file, seconds, where.sender)
        loop = asyncio.get_running_loop()
        backlog = await loop.run_in_executor(None, wait_drained, port_set, drain_limit)
        await asyncio.sleep(drain)
        cpu1 = [proc_cpu(pid) for pid in pids]
        window = time.perf_counter() - w0
        profile = None
        if spying is not None:
            await asyncio.get_running_loop().run_in_executor(None, spying.wait, 60)
            profile = summarise_spy(work / "spy.txt")
        drops1 = udp_sockets(port_set)[1]
        lags = await engine.loop_lag()
        expected = round((time.time() - min(x["since"] for x in lags)) * 100) * len(lags)
        totals = await stream_totals(engine, calls)
        at = time.time()
        for start in range(0, calls, 200):
            batch = range(start, min(calls, start + 200))
            await asyncio.gather(*(engine.close_call(f"bench-{c}", at) for c in batch))
    finally:
        await engine.stop()
        if rtp_ports is not None:
            rtp_ports.close()
        shutil.rmtree(recordings, ignore_errors=True)
    receivers = [x["receiver"] for x in lags if x.get("receiver")]
    receiver = (
        {k: sum(r[k] for r in receivers) for k in receivers[0] if k != "sockets"}
        if receivers
        else None
    )
    path = f"C path, {receive_interval * 1000:g} ms" if receiver else "Python path"
    lag = {
        "p50_ms": max(x["p50_ms"] for x in lags),
        "p99_ms": max(x["p99_ms"] for x in lags),
        "max_ms": max(x["max_ms"] for x in lags),
        "samples": sum(x["samples"] for x in lags),
        "expected": expected,
        "per_worker": lags,
    }
    return Row(
        phase=f"node, {workers} worker{'s' if workers > 1 else ''}, {path}",
        streams=calls * 2,
        offered=sent["packets"],
        received=totals["packets"],
        cpu_user_s=sum(b[0] - a[0] for a, b in zip(cpu0, cpu1, strict=True)),
        cpu_sys_s=sum(b[1] - a[1] for a, b in zip(cpu0, cpu1, strict=True)),
        sender=sent,
        lag=lag,
        rcvbuf=effective,
        kernel_drops=drops1 - drops0,
        backlog_s=backlog,
        setup_s=setup,
        profile=profile,
        streams_stats=totals,
        busy=[(sum(b) - sum(a)) / window for a, b in zip(cpu0, cpu1, strict=True)],
        receiver=receiver,
    )


def start_spy(mode: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy record of ``pid`` for ``seconds`` into ``out`` (None when py-spy is missing)."""
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    command = [exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds)))]
    command += ["-r", "200", "-f", "raw", "-o", str(out)]
    command += ["--native"] if mode == "native" else ["--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_spy(path: Path, top: int = 20) -> str:
    """The functions holding most samples of a py-spy raw (collapsed) profile."""
    if not path.exists():
        return "py-spy wrote no profile"
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [re.sub(r" \((?:.*/)?([^/:]+)(?::\d+)?\)$", r" (\1)", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    lines = [f"{total} samples; own time (the frame itself, C calls it makes included):"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f}%  {frame}")
    lines.append("inclusive (the frame and what it calls):")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines)


async def profile_phase(
    sender: Path, work: Path, calls: int, seconds: float, port_min: int, where: Placement
) -> tuple[Row, str]:
    """The worker's code (a LocalEngine on uvloop) in this process under cProfile."""
    from siprec_node.media.engine import LocalEngine

    recordings = Path(tempfile.mkdtemp(prefix="profile-", dir=work))
    engine = LocalEngine()
    await engine.start()
    affinity = os.sched_getaffinity(0)
    pin(0, where.receivers)
    rtp_ports = None
    try:
        ports, rtp_ports, effective = await open_calls(engine, calls, port_min, 0, recordings)
        ports_file = work / "profile-ports.txt"
        ports_file.write_text("\n".join(map(str, ports)) + "\n")
        await asyncio.sleep(1.0)
        await engine.loop_lag(reset=True)
        profiler = cProfile.Profile()
        c0 = time.process_time()
        profiler.enable()
        sent = await run_sender_async(sender, ports_file, seconds, where.sender)
        await asyncio.sleep(0.5)
        profiler.disable()
        cpu = time.process_time() - c0
        lag = await engine.loop_lag()
        lag["expected"] = round((time.time() - lag["since"]) * 100)
        totals = await stream_totals(engine, calls)
    finally:
        await engine.stop()
        if rtp_ports is not None:
            rtp_ports.close()
        shutil.rmtree(recordings, ignore_errors=True)
        os.sched_setaffinity(0, affinity)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    row = Row(
        phase="node in-process, cProfile",
        streams=calls * 2,
        offered=sent["packets"],
        received=totals["packets"],
        cpu_user_s=cpu,
        cpu_sys_s=0.0,
        sender=sent,
        lag=lag,
        rcvbuf=effective,
        streams_stats=totals,
    )
    return row, text.getvalue()


def finalise_cost(minutes: float = 5.0) -> dict[str, float] | None:
    """WAV finalisation CPU of a ``minutes`` call from bench/finalise (None if it is absent)."""
    script = ROOT / "bench" / "finalise" / "run.py"
    if not script.exists():
        return None
    out = subprocess.run(
        [sys.executable, str(script), "--minutes", str(minutes), "--repeat", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    result: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"(wav|wav-g711)\s+(no|yes)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            result[f"{m[1]}{'+metrics' if m[2] == 'yes' else ''}"] = float(m[3])
    return result


# ------------------------------------------------------------------------------------- report


def table(rows: list[Row], sink: Row | None) -> str:
    head = (
        f"{'phase':<34} {'streams':>7} {'offered':>10} {'received':>10} {'lost':>7} "
        f"{'loss %':>7} {'CPU µs/pkt':>10} {'vs sink':>7} {'lag p99 ms':>10}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        ratio = (
            f"{row.cpu_us_per_packet / sink.cpu_us_per_packet:.2f}x"
            if sink is not None and row is not sink and sink.received
            else ("1.00x" if row is sink else "-")
        )
        lag = f"{row.lag['p99_ms']:.1f}" if row.lag else "-"
        lines.append(
            f"{row.phase:<34} {row.streams:>7} {row.offered:>10} {row.received:>10} "
            f"{row.lost:>7} {row.loss_pct:>7.3f} {row.cpu_us_per_packet:>10.2f} {ratio:>7} "
            f"{lag:>10}"
        )
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        s = row.sender
        rate = s["packets"] / s["wall_s"] if s.get("wall_s") else 0.0
        per = row.received or 1
        line = (
            f"{row.phase}: user {row.cpu_user_s * 1e6 / per:.2f} + sys "
            f"{row.cpu_sys_s * 1e6 / per:.2f} µs/pkt; SO_RCVBUF {row.rcvbuf}; kernel drops "
            f"{row.kernel_drops}; queues emptied {row.backlog_s:.2f} s after the sender; "
            f"sender {rate:,.0f} pkt/s over "
            f"{s['wall_s']:.2f} s, late p50/p99/max {s['late_p50_us'] / 1000:.1f}/"
            f"{s['late_p99_us'] / 1000:.1f}/{s['late_max_us'] / 1000:.1f} ms, "
            f"{(s['cpu_user_s'] + s['cpu_sys_s']) * 1e6 / max(1, s['packets']):.2f} µs/pkt"
        )
        if row.lag:
            line += (
                f"; loop lag p50/p99/max {row.lag['p50_ms']:.1f}/{row.lag['p99_ms']:.1f}/"
                f"{row.lag['max_ms']:.1f} ms ({row.lag['samples']} wake-ups of "
                f"~{row.lag['expected']} if never late)"
            )
        if row.streams_stats:
            line += "; streams' stats: " + ", ".join(
                f"{k} {v}" for k, v in row.streams_stats.items() if k != "packets"
            )
        if row.busy:
            line += "; worker CPU " + " ".join(f"{100 * b:.0f}%" for b in row.busy)
        if row.receiver and row.receiver.get("datagrams"):
            r = row.receiver
            line += (
                f"; C receiver: {r['datagrams']:,} datagrams in {r['drains']:,} drains, "
                f"{100 * r['taken'] / r['datagrams']:.2f}% taken by the fast path"
            )
        if row.setup_s:
            line += f"; {row.streams} streams opened in {row.setup_s:.1f} s"
        lines.append(line)
    return "\n".join(lines)


def verdict(rows: list[Row], sink: Row | None, finalise: dict[str, float] | None) -> str:
    lines = []
    for row in rows:
        if row is sink or row.lag is None or "cProfile" in row.phase:
            continue
        if sink is not None and sink.received:
            ratio = row.cpu_us_per_packet / sink.cpu_us_per_packet
            cpu = f"CPU {ratio:.2f}x sink (target ≤ {TARGET_RATIO}x) "
            cpu += "ok" if ratio <= TARGET_RATIO else "MISSED"
        else:
            cpu = "CPU ratio: no sink phase"
        lines.append(
            f"{row.phase}: lost {row.lost} (target 0) {'ok' if row.lost == 0 else 'MISSED'}; "
            f"{cpu}; lag p99 {row.lag['p99_ms']:.1f} ms (target < {TARGET_LAG_P99_MS:g}) "
            f"{'ok' if row.lag['p99_ms'] < TARGET_LAG_P99_MS else 'MISSED'}"
        )
        if row.busy and max(row.busy) >= 0.9:
            lines.append(
                f"  {row.phase}: a worker was busy {100 * max(row.busy):.0f}% of the window: "
                "saturated, so its CPU per packet is what it managed (its ticks were starved), "
                "not what the load needs"
            )
        stats = row.streams_stats or {}
        extra = stats.get("reanchors", 0) - row.streams
        if extra > 0:
            lines.append(
                f"  {row.phase}: {extra} re-anchors beyond each stream's first: packets "
                "handled late enough for the timeline to see a discontinuity"
            )
    if finalise:
        wav = finalise.get("wav")
        if wav is not None:
            lines.append(
                f"finalisation, 5-minute call: wav {wav:.1f} ms CPU (target ≤ "
                f"{TARGET_FINALISE_MS:g}) {'ok' if wav <= TARGET_FINALISE_MS else 'MISSED'}; "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in finalise.items())
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="two-stream calls (2000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="traffic per phase (20)")
    parser.add_argument(
        "--workers", default="1", help="media workers of the node phase; 1,2 runs both (1)"
    )
    parser.add_argument(
        "--receive-path",
        default="auto",
        help="media.receive_path of the node phases: auto, c, python; c,python runs both (auto)",
    )
    parser.add_argument(
        "--receive-interval",
        default="20",
        help="media.receive_interval of the node phases on the C path, in ms; 0,20 runs both (20)",
    )
    parser.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF (0: kernel default)")
    parser.add_argument("--port-base", type=int, default=10000, help="first port used (10000)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin sender/receivers")
    parser.add_argument("--no-sink", action="store_true", help="skip the C sink phase")
    parser.add_argument(
        "--py-sink", action="store_true", help="also a uvloop sink that only counts (py_sink.py)"
    )
    parser.add_argument("--finalise", action="store_true", help="also run bench/finalise")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the node path with cProfile"
    )
    parser.add_argument("--profile-calls", type=int, default=500)
    parser.add_argument(
        "--py-spy",
        choices=("python", "native"),
        default=None,
        help="py-spy the (first) worker during the node phase: python frames without pausing "
        "it, or native frames too (pauses it: CPU figures inflate)",
    )
    parser.add_argument(
        "--drain", type=float, default=0.3, help="wait after the queues are empty (s)"
    )
    parser.add_argument(
        "--drain-limit",
        type=float,
        default=15.0,
        help="longest wait for a receiver to empty its socket queues after the sender (s)",
    )
    parser.add_argument("--settle", type=float, default=1.0, help="wait after opening (s)")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: temp)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    from siprec_node.log import configure_logging

    configure_logging("warning", "console")
    workers = [int(w) for w in args.workers.split(",") if w]
    receive_paths = [p for p in args.receive_path.split(",") if p]
    intervals = [float(ms) / 1000.0 for ms in args.receive_interval.split(",") if ms]
    streams = args.calls * 2
    raise_fd_limit(3 * streams + 200)
    sink_min = args.port_base
    node_min = sink_min + streams + 1000
    node_min += node_min % 2
    if node_min + 2 * streams + 1000 > 65535:
        sys.exit("too many calls for the port space above --port-base")

    where = placement(args.no_pin)
    limit = rmem_max()
    notes = []
    raised_from = None
    if args.rcvbuf > limit:
        if os.geteuid() == 0:
            raised_from = limit
            Path("/proc/sys/net/core/rmem_max").write_text(str(args.rcvbuf))
            notes.append(f"net.core.rmem_max raised {limit} → {args.rcvbuf} for the run (root)")
        else:
            notes.append(f"--rcvbuf {args.rcvbuf} is capped by net.core.rmem_max {limit}")

    rows: list[Row] = []
    sink_row = None
    profile_text = None
    finalise = None
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-media-", dir=args.dir) as tmp:
            work = Path(tmp)
            sender, sink = build(work)
            if not args.no_sink:
                sink_row = sink_phase(
                    "C sink (recvmmsg)",
                    [str(sink)],
                    sender,
                    work,
                    streams,
                    args.seconds,
                    sink_min,
                    args.rcvbuf,
                    where,
                    args.drain,
                    args.drain_limit,
                )
                rows.append(sink_row)
            if args.py_sink:
                rows.append(
                    sink_phase(
                        "uvloop sink (count only)",
                        [sys.executable, str(HERE / "py_sink.py")],
                        sender,
                        work,
                        streams,
                        args.seconds,
                        sink_min,
                        args.rcvbuf,
                        where,
                        args.drain,
                        args.drain_limit,
                    )
                )
            phases = [(c, p, i) for p in receive_paths for i in intervals for c in workers]
            for count, path, interval in phases:
                rows.append(
                    asyncio.run(
                        node_phase(
                            sender,
                            work,
                            args.calls,
                            args.seconds,
                            count,
                            node_min,
                            args.rcvbuf,
                            where,
                            args.drain,
                            args.settle,
                            args.drain_limit,
                            args.py_spy,
                            path,
                            interval,
                        )
                    )
                )
            if args.profile:
                row, profile_text = run_uvloop(
                    profile_phase(sender, work, args.profile_calls, args.seconds, node_min, where)
                )
                rows.append(row)
            if args.finalise:
                finalise = finalise_cost()
                if finalise is None:
                    notes.append("bench/finalise/run.py not found: finalisation skipped")
    finally:
        if raised_from is not None:
            Path("/proc/sys/net/core/rmem_max").write_text(str(raised_from))

    print(
        f"bench/media: {args.calls} calls ({streams} streams) of PCMU, 172-byte packets every "
        f"20 ms ({streams * PACKETS_PER_SECOND:,} packets/s offered), {args.seconds:g} s per "
        f"phase; {os.cpu_count()} CPUs, {where.describe()}; net.core.rmem_max {limit}; "
        f"python {sys.version.split()[0]}; workers on {worker_loop()}"
    )
    print()
    print(table(rows, sink_row))
    print()
    print(details(rows))
    for note in notes:
        print(note)
    for row in rows:
        if row.profile:
            print()
            print(f"py-spy of the first worker, {row.phase}:")
            print(row.profile)
    if profile_text:
        print()
        print(f"cProfile of the node path ({args.profile_calls} calls, top 25 by own time):")
        print(profile_text.strip())
    print()
    print(verdict(rows, sink_row, finalise))
    print(f"bench wall time {time.perf_counter() - started:.1f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "rows": [r.to_dict() for r in rows],
                    "finalise": finalise,
                    "notes": notes,
                }
            )
        )
    return 0


def worker_loop() -> str:
    """The event loop a media worker runs here (uvloop when it can be imported)."""
    try:
        import uvloop
    except ImportError:
        return "stock asyncio (uvloop is not installed)"
    return f"uvloop {uvloop.__version__}"


def run_uvloop(coro: Any) -> Any:
    """Run ``coro`` on uvloop, as a media worker does (stock asyncio if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    raise SystemExit(main())
