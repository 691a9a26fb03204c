"""End to end: a real node answering SIPREC calls from SIPp, with paced RTP on every stream.

    python bench/e2e/run.py [--rate 100] [--live 2000] [--hold 20] [--calls N]
                            [--store memory,redis] [--workers 1] [--finalise-workers 2]
                            [--format wav] [--margin 0.3] [--redis-url URL]
                            [--port-min 10000] [--idle 2]
                            [--profile py-spy|cprofile] [--no-rtp] [--keep] [--dir DIR] [--json]

For each store of `--store` (a comma-separated list, run one after the other), it

1. starts a node (`python -m siprec_node run`) on 127.0.0.1 with `--workers` media workers
   and `--finalise-workers` finalisation processes,
   that store (`redis`: a redis-server of its own on a free port, no persistence; or
   `--redis-url` with a unique key prefix, whose command counts then include other clients'),
   JSON log on stderr at info level (into a file the bench tails: a pipe the bench read late
   would block the node's logging), recordings in a temporary folder in `--format`;
   `sip.invite_rate_per_source` is off (one SIPp is every SRC) and `sip.max_sessions` is
   2 x `--live` (so calls still finalising do not make it refuse INVITEs);
2. runs SIPp (`bench/e2e/siprec_e2e.xml`: the two-stream SIPREC INVITE with multipart SDP and
   RFC 7865 metadata of tests/sipp, ACK, a hold of `--hold` seconds, BYE) at `--rate` new calls
   a second, at most `--live` at once, `--calls` in all (default: rate x hold x 2, so the
   second half runs at `--live` with calls ending as fast as they start);
3. reads SIPp's log as it is written (`<log>` actions: INVITE and 200 times, the two RTP ports
   of the answer, the BYE time) and hands every answered stream to bench/media's C sender in
   follow mode (`sender.c --follow`: one PCMU packet every 20 ms per stream, absolute-time
   pacing), which sends from the first slot after the answer until `--margin` seconds before the
   call's BYE, so that no packet is in flight when the recording is closed;
4. when SIPp is done and the node has finalised every ended call, checks every recording
   (the `recording_finalised` event of the node's log and the sidecar JSON it names): one per
   answered call, its duration within 1 % of the call's length at the SRC (at least 99 % of
   200→BYE, at most 101 % of INVITE→BYE: the node starts a call's media epoch when it takes
   the INVITE, somewhere between the two), each
   stream's `packets` equal to what the sender sent to it, verdict `ok`;
5. prints one table, a column per store: offered and answered calls, INVITE→200 p50/p99/max
   (SIPp's clock, first INVITE to the 200), INVITE retransmissions and timeouts seen by SIPp,
   datagrams the kernel dropped on the node's SIP socket (full receive queue, /proc/net/udp),
   CPU of the SIP process (its event-loop thread and the others: the executor threads that
   finalise when `--finalise-workers 0`), of each media worker and of each finalisation
   process over the traffic (/proc/<pid>/stat and task/<tid>/stat), per
   answered call (also less the node's idle CPU, measured over `--idle` seconds before),
   RSS per live call (anonymous memory of the SIP process and workers at the peak of live
   calls less before the traffic; file-backed pages are the recordings' mapped files),
   Redis commands per call (INFO commandstats delta), finalisation latency (SIPp's BYE →
   `recording_finalised`) p50/p99/max, the most calls ended but not yet finalised at once and
   the deepest the finalisation queue was (the node's /metrics, every 0.5 s),
   RTP packets sent and recorded and, of the kernel's UDP counters over the run (machine-wide,
   /proc/net/snmp), datagrams that came to a port with no socket (`NoPorts`: RTP the sender
   sent after the node closed the stream, i.e. late) and datagrams dropped on a full socket
   buffer (`RcvbufErrors`: a receiver that fell behind), and the checks. Below the table: how
   the node ended the answered calls (`call_ended` reasons) and the RTP lost in each kind (a
   call the node ends for a missing ACK loses what the sender sends until the BYE time),
   verdict problems, the node's warnings by event, and the sender's wake-up lateness, p99 and
   max (when it is high the machine itself was out of CPU and the sender sent in bursts; a
   sender seconds behind sends the end of a call after its BYE, to a closed port).

A recording judged `short` needs over 0.5 s of the dialog without audio: the sender stops
`--margin` (0.3 s) before the BYE, so a node that takes the BYE more than ~0.2 s late (an event
loop behind) gets `short` verdicts although every packet was recorded.

`--profile py-spy` records the SIP process with py-spy (`pip install py-spy`; 100 Hz,
non-blocking, every thread) over the traffic and prints where it spent its samples;
`--profile cprofile` runs the node under cProfile instead (env `SIPREC_BENCH_CPROFILE`, read by
this script's wrapper, not by the node; it sees the event-loop thread only) and prints the top
functions by own time. Both slow the node down:
use them in a run of their own. `--no-rtp` sends no media (the issue's first measurement; the
recordings are then judged `no_rtp`, which is expected). `--keep` keeps the work folder
(recordings, node and SIPp logs). `--json` also prints every figure as JSON.

The machine is shared: the load average before and after each store's run is printed with it,
and so is what creating a file and a folder costs on the disk of the work folder (CPU µs, the
kernel's), before the node starts and in its recordings folder after: a stream's open and close
and a call's parts folder are mostly such creations, and on the machine of RESULTS.md they cost
20-50 µs on a fresh part of the filesystem and 400-800 µs where recordings had filled it, which
moved every figure of a run. Compare runs whose disks cost alike.
A default run takes about 2.5 minutes when the node keeps up (60 s of calls per store plus
start-up and checks); while it collapses (SIPp waiting out INVITE timeouts, finalisations
queued) it took about 5 minutes on the 2-core machine of RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCENARIO = HERE / "siprec_e2e.xml"
SENDER_C = ROOT / "bench" / "media" / "sender.c"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
EVENTS = (
    "node_started",
    "media_worker_ready",
    "call_ended",
    "recording_finalised",
    "invite_rejected",
)
CPROFILE_WRAPPER = """
import cProfile, os, pstats, signal, sys, runpy
# guarded: the node's finalisation processes are spawned, and spawn imports this file again
if __name__ == "__main__":
    out = os.environ["SIPREC_BENCH_CPROFILE"]
    profile = cProfile.Profile()
    def dump(*_):
        profile.disable()
        profile.dump_stats(out)
    sys.argv = ["siprec_node", *sys.argv[1:]]
    profile.enable()
    try:
        runpy.run_module("siprec_node", run_name="__main__")
    finally:
        dump()
"""


# ------------------------------------------------------------------------------------ helpers


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def fs_probe(folder: Path, files: int = 200, dirs: int = 20) -> str:
    """CPU µs of one file create and of one mkdir in a new folder under ``folder`` (the
    kernel's CPU, so little disturbed by the load): what a stream's open and close and a
    call's parts folder cost on this disk. On the 2-CPU guest of RESULTS.md they ranged from
    20-50 µs to 400-800 µs on the same ext4 filesystem, higher where recordings had filled it."""
    probe = Path(tempfile.mkdtemp(prefix="fs-probe-", dir=folder))
    try:
        start = time.process_time()
        for i in range(files):
            os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        made = time.process_time()
        for i in range(dirs):
            (probe / f"d{i}").mkdir()
        done = time.process_time()
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return f"{(made - start) / files * 1e6:.0f} / {(done - made) / dirs * 1e6:.0f}"


def udp_counters(text: str | None = None) -> dict[str, int]:
    """The kernel's UDP counters (``/proc/net/snmp``), machine-wide: ``RcvbufErrors`` counts
    datagrams dropped on a full socket buffer (a receiver that fell behind), ``NoPorts`` those
    that came to a port with no socket (for RTP: after the node closed the stream)."""
    if text is None:
        text = Path("/proc/net/snmp").read_text()
    names, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")][:2]
    return dict(zip(names, map(int, values), strict=True))


def cpu_s(path: str) -> float:
    """User + system CPU seconds from a /proc stat file (process or thread)."""
    text = Path(path).read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the process, of its main (event-loop) thread, and of the other threads
    (total less main: threads that ended are counted in the total)."""
    total = cpu_s(f"/proc/{pid}/stat")
    main = cpu_s(f"/proc/{pid}/task/{pid}/stat")
    return {"total": total, "main": main, "other": total - main}


def thread_names(pid: int) -> Counter[str]:
    names: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                names[Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()] += 1
    return names


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [
                    int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                ]
    return sorted(found)


def roles(pid: int) -> tuple[list[int], list[int]]:
    """The node's children by what they are: media workers, finalisation processes (and
    multiprocessing's resource tracker, neither, where a transcription pool started one)."""
    media: list[int] = []
    finalisers: list[int] = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"resource_tracker" in command:
            continue
        (finalisers if b"finalise_worker" in command else media).append(child)
    return media, finalisers


def cpu_or_zero(pid: int) -> float:
    """CPU seconds of a process, 0 when it is gone (a finalisation process replaced)."""
    try:
        return cpu_s(f"/proc/{pid}/stat")
    except OSError:
        return 0.0


def metric_values(port: int, names: tuple[str, ...]) -> dict[str, float]:
    """Values of unlabelled metrics from the node's /metrics (empty when unreachable)."""
    out: dict[str, float] = {}
    url = f"http://127.0.0.1:{port}/metrics"
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=2) as reply:
        for line in reply.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                out[name] = float(value)
    return out


def rss_kb(pid: int) -> dict[str, int]:
    """RssAnon, RssFile, RssShmem of a process in KB (0s when it is gone)."""
    out = {"anon": 0, "file": 0, "shmem": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key[3:].lower()] = int(value.split()[0])
    return out


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped (full receive queue) on this host's UDP sockets bound to
    ``port`` (/proc/net/udp, the last field of each socket's line)."""
    drops = 0
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port:
                drops += int(fields[-1])
    return drops


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def iso_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def build_sender(out: Path) -> Path:
    binary = out / "sender"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(SENDER_C)], check=True)
    return binary


@contextlib.contextmanager
def own_redis(work: Path):  # type: ignore[no-untyped-def]
    """A redis-server of our own on a free port: its URL."""
    port = free_port(socket.SOCK_STREAM)
    folder = work / f"redis-{port}"
    folder.mkdir()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]  # noqa: RUF005
        + ["--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def redis_commands(url: str) -> dict[str, int]:
    """Calls per command from INFO commandstats."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


# ------------------------------------------------------------------------------- node, SIPp


@dataclass
class Call:
    call_id: str
    invite_at: float
    answer_at: float
    ports: tuple[int, int]
    streams: tuple[int, int]  # the sender's stream numbers
    bye_at: float | None = None
    ended: bool = False


@dataclass
class NodeLog:
    """The node's stderr, a file the bench tails (a file, not a pipe: a bench that falls behind
    must not block the node's logging), keeping the events it needs."""

    proc: subprocess.Popen[bytes]
    path: Path
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    levels: Counter[str] = field(default_factory=Counter)  # warning/error lines by event
    lock: threading.Lock = field(default_factory=threading.Lock)

    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        """Wait until every line of the exited node is read."""
        if self.thread is not None:
            self.thread.join(60)

    def _read(self) -> None:
        with self.path.open("rb") as f:
            partial = b""
            exited = False
            while True:
                chunk = f.readline()
                if not chunk:
                    if exited:
                        break
                    exited = self.proc.poll() is not None  # then read to the end once more
                    if not exited:
                        time.sleep(0.02)
                    continue
                partial += chunk
                if not partial.endswith(b"\n"):
                    continue
                raw, partial = partial, b""
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                event = line.get("event")
                level = line.get("level")
                with self.lock:
                    if level in ("warning", "error", "critical"):
                        self.levels[f"{level}:{event}"] += 1
                    if event in EVENTS:
                        self.events.setdefault(event, []).append(line)

    def get(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events.get(event, ()))

    def wait(self, event: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.get(event)) < count:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited {self.proc.returncode}; log in {self.path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {count} {event} in the node log {self.path}")
            time.sleep(0.05)


def node_config(
    args: argparse.Namespace, work: Path, sip_port: int, http_port: int, store: str, url: str
) -> str:
    port_min = args.port_min
    port_max = min(65535, port_min + max(4000, args.live * 8 + 2000))
    store_toml = f'backend = "{store}"'
    if store == "redis":
        store_toml += f'\nurl = "{url}"\nprefix = "bench-e2e-{os.getpid()}-{time.time_ns()}:"'
    receive_interval = (
        "" if args.receive_interval is None else f'receive_interval = "{args.receive_interval}"\n'
    )
    return f"""
[node]
id = "bench-e2e"

[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
invite_rate_per_source = 0
max_sessions = {2 * args.live}

[media]
host = "127.0.0.1"
port_min = {port_min}
port_max = {port_max}
workers = {args.workers}
{receive_interval}
[recording]
directory = "{work / "recordings"}"
format = "{args.format}"
finalise_workers = {args.finalise_workers}

[store]
{store_toml}

[http]
listen = "127.0.0.1:{http_port}"

[log]
level = "info"
format = "json"
"""


def start_node(
    args: argparse.Namespace, work: Path, store: str, url: str
) -> tuple[NodeLog, int, int]:
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    cfg = work / "node.toml"
    cfg.write_text(node_config(args, work, sip_port, http_port, store, url))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "siprec_node", "run", "-c", str(cfg)]
    if args.profile == "cprofile":
        wrapper = work / "cprofile_node.py"
        wrapper.write_text(CPROFILE_WRAPPER)
        env["SIPREC_BENCH_CPROFILE"] = str(work / "node.cprofile")
        command = [sys.executable, str(wrapper), "run", "-c", str(cfg)]
    with (work / "node.log").open("wb") as stderr:
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=work, env=env
        )
    log = NodeLog(proc, work / "node.log")
    log.start()
    log.wait("node_started", timeout=60)
    log.wait("media_worker_ready", args.workers, timeout=60)
    return log, sip_port, http_port


class SippFollower:
    """Tails SIPp's log file: answered calls go to the sender as they come."""

    LINE = re.compile(r"^(ANS|BYE|END) (\S+)(.*)$")

    def __init__(
        self, path: Path, sender: subprocess.Popen[str] | None, hold: float, margin: float
    ):
        self.path = path
        self.sender = sender
        self.hold = hold
        self.margin = margin
        self.calls: dict[str, Call] = {}
        self.streams = 0
        self.answered = 0
        self.byes = 0
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def live(self) -> int:
        with self.lock:
            return self.answered - self.byes

    def _run(self) -> None:
        while not self.path.exists() and not self.done.is_set():
            time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError), self.path.open() as f:
            partial = ""
            while True:
                chunk = f.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith("\n"):
                        try:
                            self._line(partial.strip())
                        except ValueError:  # e.g. SIPp left a field empty: that call only
                            print(f"unreadable SIPp log line: {partial!r}", file=sys.stderr)
                        partial = ""
                    continue
                if self.done.is_set():
                    break
                time.sleep(0.01)

    def _line(self, line: str) -> None:
        m = self.LINE.match(line)
        if not m:
            return
        # fields are split on single spaces: SIPp sometimes leaves a microseconds field empty
        # (its time fell on a whole second; seen in about one of 4,000 calls), which is 0
        kind, call_id, rest = m.group(1), m.group(2), m.group(3).strip().split(" ")
        if kind == "ANS":
            if len(rest) != 6:
                raise ValueError(f"ANS line with {len(rest)} fields")
            inv_s, inv_us, ans_s, ans_us, p1, p2 = (float(x or 0) for x in rest)
            invite_at, answer_at = inv_s + inv_us / 1e6, ans_s + ans_us / 1e6
            ids = (self.streams, self.streams + 1)
            self.streams += 2
            call = Call(call_id, invite_at, answer_at, (int(p1), int(p2)), ids)
            with self.lock:
                self.calls[call_id] = call
                self.answered += 1
            if self.sender is not None and self.sender.stdin is not None:
                end = answer_at + self.hold - self.margin
                self.sender.stdin.write(f"{int(p1)} {end:.6f}\n{int(p2)} {end:.6f}\n")
                self.sender.stdin.flush()
        elif kind == "BYE":
            with self.lock:
                call = self.calls.get(call_id)
                if call is not None:
                    micros = float(rest[1] or 0) if len(rest) > 1 else 0.0
                    call.bye_at = float(rest[0]) + micros / 1e6
                    self.byes += 1
        elif kind == "END":
            with self.lock:
                if call_id in self.calls:
                    self.calls[call_id].ended = True


def sipp_screen(path: Path) -> dict[str, dict[str, int]]:
    """Per-message counters of SIPp's final scenario screen: {"INVITE": {messages, retrans,
    timeout}, "200": {... , unexpected}, ...} (the first line of each name)."""
    out: dict[str, dict[str, int]] = {}
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(
            r"^\s+(\w+) (?:-+>|<-+)\s+(?:E-RTD1\s+)?(\d+)\s+(\d+)?\s*(\d+)?\s*(\d+)?", line
        )
        if m and m.group(1) not in out:
            nums = [int(x) if x else 0 for x in m.groups()[1:]]
            names = ("messages", "retrans", "timeout", "unexpected")
            out[m.group(1)] = dict(zip(names, nums, strict=False))
    return out


def sipp_stats(path: Path) -> dict[str, str]:
    """The last line of SIPp's stat file, by column name."""
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


class Sampler:
    """Every 0.5 s: live calls (SIPp side) and memory of the node's processes; the sample at
    the most live calls is kept. Also the SIP process's busiest 5 s of CPU, and the deepest
    the finalisation queue was (the node's /metrics)."""

    QUEUE = ("siprec_finalisation_queue_depth", "siprec_finalisations_running")

    def __init__(self, pid: int, workers: list[int], follower: SippFollower, http_port: int):
        self.pid, self.workers, self.follower = pid, workers, follower
        self.http_port = http_port
        self.peak: dict[str, Any] = {"live": 0}
        self.busiest = 0.0
        self.queue_max = {name: 0.0 for name in self.QUEUE}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        window: list[tuple[float, float]] = []
        while not self.stop.wait(0.5):
            live = self.follower.live()
            with contextlib.suppress(OSError):
                now, cpu = time.monotonic(), cpu_s(f"/proc/{self.pid}/stat")
                window.append((now, cpu))
                while now - window[0][0] > 5.0:
                    window.pop(0)
                if now - window[0][0] >= 4.5:
                    self.busiest = max(self.busiest, (cpu - window[0][1]) / (now - window[0][0]))
            for name, value in metric_values(self.http_port, self.QUEUE).items():
                self.queue_max[name] = max(self.queue_max[name], value)
            if live >= self.peak["live"]:
                self.peak = {
                    "live": live,
                    "sip": rss_kb(self.pid),
                    "workers": [rss_kb(w) for w in self.workers],
                }


# ------------------------------------------------------------------------------------ a phase


def run_phase(
    args: argparse.Namespace, work: Path, sender_bin: Path, store: str, url: str
) -> dict[str, Any]:
    load_before = loadavg()
    fs_before = fs_probe(work)
    udp_before = udp_counters()
    node, sip_port, http_port = start_node(args, work, store, url)
    pid = node.proc.pid
    result: dict[str, Any] = {"store": store, "load_before": load_before, "fs_before": fs_before}
    sender = spy = None
    try:
        time.sleep(1.0)  # let the node settle (first heartbeat, worker start-up)
        workers, _ = roles(pid)
        result["workers"] = len(workers)
        idle0, i0 = cpu_s(f"/proc/{pid}/stat"), time.monotonic()
        time.sleep(args.idle)
        result["sip_idle"] = (cpu_s(f"/proc/{pid}/stat") - idle0) / (time.monotonic() - i0)
        redis0 = redis_commands(url) if store == "redis" else {}
        base = {"sip": rss_kb(pid), "workers": [rss_kb(w) for w in workers]}
        cpu0 = threads_cpu(pid), [cpu_s(f"/proc/{w}/stat") for w in workers]
        drops0 = udp_drops(sip_port)
        if not args.no_rtp:
            sender = subprocess.Popen(
                [str(sender_bin), "--follow", "--counts-file", str(work / "sent.txt")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        log_file = work / "sipp_calls.log"
        follower = SippFollower(log_file, sender, args.hold, args.margin)
        follower.start()
        sampler = Sampler(pid, workers, follower, http_port)
        sampler.thread.start()
        expected_s = args.calls / args.rate + args.hold
        if args.profile == "py-spy":
            spy = start_spy(pid, expected_s + 10, work / "spy.txt")
        sipp_cmd = [
            "sipp", f"127.0.0.1:{sip_port}", "-sf", str(SCENARIO), "-i", "127.0.0.1",
            "-p", str(free_port()), "-t", "u1", "-s", "srs",
            "-m", str(args.calls), "-r", str(args.rate), "-l", str(args.live),
            "-d", str(int(args.hold * 1000)),
            "-timeout", f"{int(expected_s + 120)}s", "-nostdin",
            "-trace_logs", "-log_file", str(log_file),
            "-trace_stat", "-stf", str(work / "sipp_stat.csv"), "-fd", "5",
            "-trace_screen", "-screen_file", str(work / "sipp_screen.log"),
            "-trace_err", "-error_file", str(work / "sipp_errors.log"),
        ]  # fmt: skip
        t0 = time.monotonic()
        sipp = subprocess.run(sipp_cmd, cwd=work, capture_output=True, timeout=expected_s + 200)
        traffic_s = time.monotonic() - t0
        result["sipp_rc"] = sipp.returncode
        time.sleep(0.3)
        follower.done.set()
        follower.thread.join(5)
        sent_report: dict[str, Any] = {}
        if sender is not None:
            out, _ = sender.communicate(timeout=args.hold + 30)  # closes its stdin
            sent_report = json.loads(out) if out.strip() else {}
        # wait for every ended call's recording (no progress for 30 s: give up)
        ended = len(node.get("call_ended"))
        last, last_change = -1, time.monotonic()
        while True:
            done = len(node.get("recording_finalised"))
            ended = len(node.get("call_ended"))
            if done >= ended:
                break
            if done != last:
                last, last_change = done, time.monotonic()
            if time.monotonic() - last_change > 30:
                break
            time.sleep(0.2)
        finalise_wait_s = time.monotonic() - t0 - traffic_s
        cpu1 = threads_cpu(pid), [cpu_s(f"/proc/{w}/stat") for w in workers]
        # spawned at the first finalisation: all their CPU is the run's (their start-up
        # included); one replaced after a crash is not counted (its CPU is gone)
        _, finalisers = roles(pid)
        result["finalisers"] = len(finalisers)
        result["finaliser_cpu_s"] = [cpu_or_zero(f) for f in finalisers]
        result["queue_max"] = dict(sampler.queue_max)
        result["sip_socket_drops"] = udp_drops(sip_port) - drops0
        sampler.stop.set()
        sampler.thread.join(2)
        redis1 = redis_commands(url) if store == "redis" else {}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
            result["profile"] = summarise_spy(work / "spy.txt")
        result["threads"] = dict(thread_names(pid))
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        if spy is not None and spy.poll() is None:
            spy.kill()
        code = stop_node(node)
        node.finish()
    result["node_exit"] = code
    udp_after = udp_counters()
    result["udp"] = {k: udp_after[k] - udp_before[k] for k in ("RcvbufErrors", "NoPorts")}
    result["load_after"] = loadavg()
    result["fs_after"] = fs_probe(work / "recordings" if (work / "recordings").is_dir() else work)
    if args.profile == "cprofile":
        result["profile"] = summarise_cprofile(work / "node.cprofile")
    result.update(
        figures(
            args, work, node, follower, sampler, base, cpu0, cpu1, traffic_s, finalise_wait_s,
            redis0, redis1, sent_report, result["sip_idle"],
        )
    )  # fmt: skip
    return result


def stop_node(node: NodeLog) -> int:
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
    try:
        return node.proc.wait(60)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        return node.proc.wait()


def start_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(exe, os.X_OK):
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    command = [exe, "record", "-p", str(pid), "-d", str(int(seconds) + 1), "-r", "100"]
    command += ["-f", "raw", "-o", str(out), "--nonblocking", "--threads"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_spy(path: Path, top: int = 25) -> str:
    """Samples per thread, then the functions holding most samples (own and inclusive)."""
    if not path.exists():
        return "py-spy wrote no profile"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \((?:.*/)?([^/:]+)(?::\d+)?\)$", r" (\1)", f) for f in stack.split(";")]
        if frames and frames[0].startswith(("thread", "process")):
            thread = frames.pop(0)
            if frames and frames[0].startswith("thread"):
                thread = frames.pop(0)
            per_thread[thread] += n
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "py-spy recorded no samples"
    lines = [f"{total} samples (100 Hz, active threads only); by thread:"]
    for thread, n in per_thread.most_common(8):
        lines.append(f"  {100 * n / total:5.1f}%  {thread}")
    lines.append("own time (the frame itself, the C calls it makes included):")
    for frame, n in own.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {frame}")
    lines.append("inclusive (the frame and what it calls):")
    for frame, n in inclusive.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines)


def summarise_cprofile(path: Path, top: int = 30) -> str:
    import io
    import pstats

    if not path.exists():
        return "cProfile wrote no profile"
    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def figures(
    args: argparse.Namespace,
    work: Path,
    node: NodeLog,
    follower: SippFollower,
    sampler: Sampler,
    base: dict[str, Any],
    cpu0: tuple[dict[str, float], list[float]],
    cpu1: tuple[dict[str, float], list[float]],
    traffic_s: float,
    finalise_wait_s: float,
    redis0: dict[str, int],
    redis1: dict[str, int],
    sent_report: dict[str, Any],
    idle: float,
) -> dict[str, Any]:
    calls = follower.calls
    answered = len(calls)
    screen = sipp_screen(work / "sipp_screen.log")
    stats = sipp_stats(work / "sipp_stat.csv")
    setup_ms = [(c.answer_at - c.invite_at) * 1000 for c in calls.values()]
    window = traffic_s + finalise_wait_s
    sip_cpu = {k: cpu1[0][k] - cpu0[0][k] for k in cpu1[0]}
    worker_cpu = [b - a for a, b in zip(cpu0[1], cpu1[1], strict=True)]
    peak = sampler.peak
    live = peak.get("live", 0)

    def per_call_kb(now: dict[str, int], before: dict[str, int], key: str) -> float:
        return (now.get(key, 0) - before.get(key, 0)) / live if live else float("nan")

    rss = {
        "peak_live": live,
        "sip_anon_kb_per_call": per_call_kb(peak.get("sip", {}), base["sip"], "anon"),
        "workers_anon_kb_per_call": sum(
            per_call_kb(now, before, "anon")
            for now, before in zip(peak.get("workers", []), base["workers"], strict=False)
        ),
        "workers_file_kb_per_call": sum(
            per_call_kb(now, before, "file") + per_call_kb(now, before, "shmem")
            for now, before in zip(peak.get("workers", []), base["workers"], strict=False)
        ),
        "sip_at_peak": peak.get("sip"),
        "workers_at_peak": peak.get("workers"),
        "base": base,
    }

    # sender's counts per stream number
    sent: dict[int, int] = {}
    sent_file = work / "sent.txt"
    if sent_file.exists():
        for line in sent_file.read_text().splitlines():
            k, _, n = line.split()
            sent[int(k)] = int(n)

    ended_at = {e.get("call_id"): iso_ts(e["timestamp"]) for e in node.get("call_ended")}
    reason_of = {e.get("call_id"): str(e.get("reason")) for e in node.get("call_ended")}
    end_reasons = Counter(reason_of.get(c, "not ended") for c in calls)
    lost_by_reason: Counter[str] = Counter()
    finalised = {e.get("call_id"): e for e in node.get("recording_finalised")}
    latency_ms: list[float] = []
    node_latency_ms: list[float] = []
    checks = Counter()
    problems: Counter[str] = Counter()
    recorded_packets = 0
    sent_packets = sum(sent.values())
    examples: list[str] = []
    for call in calls.values():
        event = finalised.get(call.call_id)
        if event is None:
            checks["not_finalised"] += 1
            continue
        fin_at = iso_ts(event["timestamp"])
        if call.bye_at is not None:
            latency_ms.append((fin_at - call.bye_at) * 1000)
        if call.call_id in ended_at:
            node_latency_ms.append((fin_at - ended_at[call.call_id]) * 1000)
        try:
            sidecar = json.loads(Path(str(event["sidecar"])).read_text())
        except (OSError, ValueError, KeyError):
            checks["sidecar_unreadable"] += 1
            continue
        checks["finalised"] += 1
        if call.bye_at is not None:
            # the call began, for the node, somewhere between the INVITE and the 200
            expected = call.bye_at - call.answer_at
            duration = float(sidecar.get("duration_s", 0))
            if 0.99 * expected <= duration <= 1.01 * (call.bye_at - call.invite_at):
                checks["duration_ok"] += 1
            elif len(examples) < 5:
                examples.append(
                    f"{call.call_id}: duration {sidecar.get('duration_s')} s, 200→BYE "
                    f"{expected:.3f} s, INVITE→200 {call.answer_at - call.invite_at:.3f} s"
                )
        streams = {s.get("index"): s for s in sidecar.get("streams", [])}
        packets_ok = True
        for index, number in enumerate(call.streams):
            got = int((streams.get(index) or {}).get("packets", 0))
            recorded_packets += got
            lost_by_reason[reason_of.get(call.call_id, "not ended")] += sent.get(number, 0) - got
            if not args.no_rtp and got != sent.get(number, -1):
                packets_ok = False
        checks["packets_ok"] += packets_ok
        verdict = sidecar.get("verdict") or {}
        if verdict.get("status") == "ok":
            checks["verdict_ok"] += 1
        for p in verdict.get("problems", []):
            problems[p.get("kind", "?")] += 1

    # the most calls ended but not yet finalised at once (node's clock)
    marks = sorted(
        [(t, 1) for t in ended_at.values()]
        + [(iso_ts(e["timestamp"]), -1) for e in finalised.values() if e.get("call_id") in ended_at]
    )
    pending = pending_max = 0
    for _, step in marks:
        pending += step
        pending_max = max(pending_max, pending)

    commands = {k: redis1.get(k, 0) - redis0.get(k, 0) for k in redis1}
    commands = {k: v for k, v in commands.items() if v > 0}
    total_commands = sum(commands.values()) - commands.get("info", 0)
    rejected = Counter(str(e.get("status")) for e in node.get("invite_rejected"))
    invite = screen.get("INVITE", {})
    return {
        "offered": int(stats.get("OutgoingCall(C)", 0) or invite.get("messages", 0)),
        "answered": answered,
        "sipp_successful": int(stats.get("SuccessfulCall(C)", 0) or 0),
        "sipp_failed": int(stats.get("FailedCall(C)", 0) or 0),
        "invite_retrans": invite.get("retrans", 0),
        "invite_timeouts": invite.get("timeout", 0),
        "retrans_total": int(stats.get("Retransmissions(C)", 0) or 0),
        "unexpected": sum(v.get("unexpected", 0) for v in screen.values()),
        "rejected": dict(rejected),
        "setup_ms": {
            "p50": percentile(setup_ms, 0.50),
            "p99": percentile(setup_ms, 0.99),
            "max": max(setup_ms, default=float("nan")),
        },
        "traffic_s": traffic_s,
        "finalise_wait_s": finalise_wait_s,
        "sip_cpu_s": sip_cpu,
        "sip_cpu_ms_per_call": 1000 * sip_cpu["total"] / answered if answered else float("nan"),
        "sip_loop_ms_per_call": 1000 * sip_cpu["main"] / answered if answered else float("nan"),
        "sip_busy": sip_cpu["total"] / window if window else float("nan"),
        "sip_net_ms_per_call": (
            1000 * (sip_cpu["total"] - idle * window) / answered if answered else float("nan")
        ),
        "sip_busiest_5s": sampler.busiest,
        "worker_cpu_s": worker_cpu,
        "worker_busy": [c / window for c in worker_cpu] if window else [],
        "rss": rss,
        "redis_commands": commands,
        "redis_per_call": total_commands / answered if answered and commands else None,
        "finalise_ms": {
            "p50": percentile(latency_ms, 0.50),
            "p99": percentile(latency_ms, 0.99),
            "max": max(latency_ms, default=float("nan")),
        },
        "finalise_node_ms": {
            "p50": percentile(node_latency_ms, 0.50),
            "p99": percentile(node_latency_ms, 0.99),
        },
        "finalise_over_5s": sum(1 for x in latency_ms if x > 5000),
        "pending_max": pending_max,
        "checks": dict(checks),
        "end_reasons": dict(end_reasons),
        "lost_by_end_reason": {k: v for k, v in lost_by_reason.items() if v},
        "problems": dict(problems),
        "examples": examples,
        "rtp_sent": sent_packets,
        "rtp_recorded": recorded_packets,
        "sender": sent_report,
        "log_warnings": dict(node.levels.most_common(12)),
    }


# ------------------------------------------------------------------------------------- output


def fmt_ms(x: float) -> str:
    return "-" if x != x else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows: list[tuple[str, list[str], str]] = []

    def row(name: str, target: str, fn: Any) -> None:
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except (KeyError, IndexError, TypeError, ZeroDivisionError):
                cells.append("-")
        rows.append((name, cells, target))

    row(
        "calls offered / answered",
        "all answered",
        lambda r: f"{r['offered']:,} / {r['answered']:,}",
    )
    row("SIPp failed calls", "0", lambda r: f"{r['sipp_failed']:,}")
    row(
        "INVITE→200 p50 / p99 / max (ms)",
        "p99 < 50",
        lambda r: " / ".join(fmt_ms(r["setup_ms"][k]) for k in ("p50", "p99", "max")),
    )
    row(
        "INVITE retransmissions / timeouts",
        "0",
        lambda r: f"{r['invite_retrans']:,} / {r['invite_timeouts']:,}",
    )
    row("SIP socket: datagrams dropped by the kernel", "0", lambda r: f"{r['sip_socket_drops']:,}")
    row("peak live calls", "", lambda r: f"{r['rss']['peak_live']:,}")
    row(
        "SIP process CPU (s): loop + other threads",
        "",
        # other = all - main, of two clock-tick readings: -0.0 where no other thread ran
        lambda r: f"{r['sip_cpu_s']['main']:.1f} + {max(r['sip_cpu_s']['other'], 0.0):.1f}",
    )
    row(
        "SIP process CPU per call (ms): all / loop / all less idle",
        "≤ 1",
        lambda r: (
            f"{r['sip_cpu_ms_per_call']:.2f} / {r['sip_loop_ms_per_call']:.2f} / "
            f"{r['sip_net_ms_per_call']:.2f}"
        ),
    )
    row("SIP process idle before the traffic", "", lambda r: f"{100 * r['sip_idle']:.1f} %")
    row(
        "SIP process busy: run / busiest 5 s",
        "",
        lambda r: f"{100 * r['sip_busy']:.0f} % / {100 * r['sip_busiest_5s']:.0f} %",
    )
    row(
        "worker CPU busy (each)",
        "",
        lambda r: ", ".join(f"{100 * b:.0f} %" for b in r["worker_busy"]),
    )
    row(
        "finalisation processes CPU busy (each)",
        "",
        lambda r: (
            ", ".join(
                f"{100 * c / (r['traffic_s'] + r['finalise_wait_s']):.0f} %"
                for c in r["finaliser_cpu_s"]
            )
            or "-"
        ),
    )
    row(
        "finalisation queue depth / running (max)",
        "",
        lambda r: (
            f"{r['queue_max']['siprec_finalisation_queue_depth']:.0f} / "
            f"{r['queue_max']['siprec_finalisations_running']:.0f}"
        ),
    )
    row(
        "RSS per live call, anon (KB): SIP / workers",
        "≤ 100",
        lambda r: (
            f"{r['rss']['sip_anon_kb_per_call']:.0f} / {r['rss']['workers_anon_kb_per_call']:.0f}"
        ),
    )
    row(
        "  file-backed in workers (KB per call)",
        "",
        lambda r: f"{r['rss']['workers_file_kb_per_call']:.0f}",
    )
    row(
        "store commands per call",
        "",
        lambda r: "-" if r["redis_per_call"] is None else f"{r['redis_per_call']:.1f}",
    )
    row(
        "BYE→finalised p50 / p99 / max (ms)",
        "≤ 5,000",
        lambda r: " / ".join(fmt_ms(r["finalise_ms"][k]) for k in ("p50", "p99", "max")),
    )
    row("ended, not yet finalised (max at once)", "", lambda r: f"{r['pending_max']:,}")
    row(
        "recordings finalised / answered",
        "all",
        lambda r: f"{r['checks'].get('finalised', 0):,} / {r['answered']:,}",
    )
    row(
        "duration within 1 % / packets = sent / verdict ok",
        "all",
        lambda r: (
            f"{r['checks'].get('duration_ok', 0):,} / {r['checks'].get('packets_ok', 0):,} / "
            f"{r['checks'].get('verdict_ok', 0):,}"
        ),
    )
    row(
        "RTP packets sent / recorded / lost",
        "0 lost",
        lambda r: (
            f"{r['rtp_sent']:,} / {r['rtp_recorded']:,} / {r['rtp_sent'] - r['rtp_recorded']:,}"
        ),
    )
    row(
        "  UDP to a closed port / dropped on a full buffer (machine)",
        "",
        lambda r: f"{r['udp']['NoPorts']:,} / {r['udp']['RcvbufErrors']:,}",
    )
    row("load average before → after", "", lambda r: f"{r['load_before']} → {r['load_after']}")
    row(
        "disk: µs CPU per file create / mkdir, before → after",
        "",
        lambda r: f"{r['fs_before']} → {r['fs_after']}",
    )
    headers = ["", *[f"{r['store']} store" for r in results], "target"]
    body = [[name, *cells, target] for name, cells, target in rows]
    widths = [max(len(str(line[i])) for line in [headers, *body]) for i in range(len(headers))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in body:
        out.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        )
    return "\n".join(out)


def details(r: dict[str, Any]) -> str:
    lines = [f"{r['store']} store:"]
    lines.append(
        f"  SIPp exit {r['sipp_rc']}, node exit {r['node_exit']}; traffic {r['traffic_s']:.1f} s, "
        f"then {r['finalise_wait_s']:.1f} s for the last finalisations; "
        f"all retransmissions seen by SIPp {r['retrans_total']:,}; unexpected messages "
        f"{r['unexpected']:,}; INVITEs the node refused {r['rejected'] or 0}"
    )
    lines.append(
        f"  finalisation on the node's clock (call_ended → recording_finalised) p50 "
        f"{fmt_ms(r['finalise_node_ms']['p50'])} ms, "
        f"p99 {fmt_ms(r['finalise_node_ms']['p99'])} ms; "
        f"{r['finalise_over_5s']:,} over 5 s after the BYE"
    )
    if r.get("sender"):
        s = r["sender"]
        lines.append(
            f"  sender: {s.get('streams', 0):,} streams, {s.get('packets', 0):,} packets, "
            f"{s.get('send_errors', 0)} send errors, wake-up lateness p99 "
            f"{s.get('late_p99_us', 0) / 1000:.1f} ms (its histogram stops at 1 s), max "
            f"{s.get('late_max_us', 0) / 1000:,.0f} ms, "
            f"CPU {s.get('cpu_user_s', 0) + s.get('cpu_sys_s', 0):.1f} s"
        )
    if r["redis_commands"]:
        top = sorted(r["redis_commands"].items(), key=lambda kv: -kv[1])[:8]
        lines.append("  Redis commands: " + ", ".join(f"{k} {v:,}" for k, v in top))
    lines.append(f"  how the node ended the answered calls: {r['end_reasons']}")
    if r["lost_by_end_reason"]:
        lines.append(f"  RTP packets lost, by how the call ended: {r['lost_by_end_reason']}")
    if r["problems"]:
        lines.append(f"  verdict problems: {r['problems']}")
    if r["checks"].get("not_finalised"):
        lines.append(
            f"  answered calls with no recording_finalised: {r['checks']['not_finalised']:,}"
        )
    for example in r["examples"]:
        lines.append(f"  duration off: {example}")
    if r["log_warnings"]:
        lines.append(f"  node warnings/errors: {r['log_warnings']}")
    lines.append(f"  SIP process threads at the end: {r.get('threads')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="new calls per second (100)")
    parser.add_argument("--live", type=int, default=2000, help="most calls at once (2000)")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds from ACK to BYE (20)")
    parser.add_argument("--calls", type=int, default=0, help="calls in all (rate x hold x 2)")
    parser.add_argument(
        "--store", default="memory,redis", help="memory, redis or both (memory,redis)"
    )
    parser.add_argument("--workers", type=int, default=1, help="media workers (1)")
    parser.add_argument(
        "--receive-interval",
        default=None,
        help="media.receive_interval, e.g. 0 or 20ms (default: the node's own)",
    )
    parser.add_argument(
        "--finalise-workers", type=int, default=2, help="recording.finalise_workers (2)"
    )
    parser.add_argument("--format", default="wav", help="recording.format (wav)")
    parser.add_argument(
        "--margin", type=float, default=0.3, help="RTP stops this long before the BYE (s)"
    )
    parser.add_argument(
        "--redis-url", default="", help="use this Redis (default: a redis-server of its own)"
    )
    parser.add_argument(
        "--port-min", type=int, default=10000, help="lowest RTP port of the node (10000)"
    )
    parser.add_argument("--profile", choices=["py-spy", "cprofile"], default=None)
    parser.add_argument("--no-rtp", action="store_true", help="send no RTP")
    parser.add_argument(
        "--idle", type=float, default=2.0, help="idle CPU window before the traffic (s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--dir", type=Path, default=None, help="where the work folder goes")
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = parser.parse_args(argv)
    if not args.calls:
        args.calls = max(1, round(args.rate * args.hold * 2))
    stores = [s for s in args.store.split(",") if s]
    if any(s not in ("memory", "redis") for s in stores):
        parser.error("--store: memory, redis or memory,redis")
    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (Debian: apt-get install sip-tester)")
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the node and SIPp inherit it
    results = []
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)  # /dev/shm/e2e on a new machine
    work_root = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir=args.dir))
    try:
        sender_bin = build_sender(work_root)
        for store in stores:
            work = work_root / store
            work.mkdir()
            if store == "redis" and not args.redis_url:
                with own_redis(work) as url:
                    results.append(run_phase(args, work, sender_bin, store, url))
            else:
                results.append(run_phase(args, work, sender_bin, store, args.redis_url))
    finally:
        if args.keep:
            print(f"work folder kept: {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    print(
        f"bench/e2e: {args.calls:,} calls at {args.rate:g}/s, at most {args.live:,} live, "
        f"hold {args.hold:g} s, {'no RTP' if args.no_rtp else 'PCMU RTP on both streams'}; "
        f"{args.workers} media worker(s), recording.format {args.format}; "
        f"{os.cpu_count()} CPUs, commit {commit}, python {sys.version.split()[0]}"
    )
    print()
    print(table(results, args))
    print()
    for r in results:
        print(details(r))
        if r.get("profile"):
            print(f"profile of the SIP process ({r['store']} store):")
            print(r["profile"])
    print(f"bench wall time {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
