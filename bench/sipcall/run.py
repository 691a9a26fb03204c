"""CPU per call of the SIP process, apart from the network: SIPREC calls through the real code.

    python bench/sipcall/run.py [--calls 2000] [--live 2000] [--mode core|driver|both]
                                [--log-level info] [--profile] [--top 25] [--no-gc-aging]

Each call is the one bench/e2e's SIPp scenario (``bench/e2e/siprec_e2e.xml``) makes: the
two-stream multipart INVITE with RFC 7865 metadata, the ACK of the 200, the BYE. ``--live``
calls are set up first and kept up; then ``--calls`` calls are measured, each new call's INVITE
and ACK followed by the BYE of the oldest live call, so the measured calls run with ``--live``
calls up (as the node does at 100 calls/s with a 20 s hold).

- ``core``: the sans-I/O call-control core (``sip.call_control.CallControl``) alone, fed bytes
  and the outcomes of its effects, with numbers for ports (no sockets, no files). Its
  ``SaveSnapshot`` effects (a deep copy of the call's data each) are made but not written.
- ``driver``: the asyncio ``recorder.driver.CallDriver`` on an event loop, as the node runs it:
  real RTP port sockets (bound, then handed to a fake media engine that closes them as the
  worker engine does), the parts folders made, snapshots written by the snapshot writer to the
  memory session store through the shared-call-store adapter (as ``app`` wires it);
  finalisation is replaced by a no-op (it leaves the SIP process: issue 11, item 1).

Logging goes through the node's own set-up (``log.configure_logging``, JSON lines) into a sink
that counts the lines. CPU is the process's CPU time (``time.process_time``) over the measured
calls; the breakdown is cProfile's own time per function, grouped by where the code lives,
scaled to the unprofiled CPU per call (cProfile inflates Python-heavy code more than C calls,
so read the shares as approximate). RSS per live call is the growth of the process's resident
set while the ``--live`` calls were set up, divided by their number (the first run of a mode;
the allocator's arenas make it coarse below a thousand calls). Objects per live call is the
growth of the objects the cyclic GC tracks (``len(gc.get_objects())``, each count after a
``gc.collect()``) over the same set-up, divided by the number of live calls: what makes the
generation-2 collections of a loaded node long, and independent of the machine's load; the
full collection's time with the ``--live`` calls up is printed beside it (the best of five
``gc.collect()``, wall time: a loaded machine inflates it), with the process's tracked
objects. ``--objects-by-type`` prints the types that grew most, per live call. The collector's
pauses while the measured calls run (the node's ``gc_watch.GcWatch``) are counted too: full
collections and their time, and the time of every collection per call with the longest pause.
Driver mode runs the node's GC aging (start-up objects frozen, the survivors frozen every second:
``gc_watch.py``); ``--no-gc-aging`` leaves CPython's collections as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import re
import sys
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from siprec_node.gc_watch import GcWatch, freeze_startup
from siprec_node.log import configure_logging
from siprec_node.sip.call_control import CallControl
from siprec_node.sip.calls import CallControlConfig
from siprec_node.sip.effects import CloseMedia, DiscardMedia, Finalise, OpenMedia
from siprec_node.sip.transaction import Address, TimerConfig

SCENARIO = Path(__file__).resolve().parents[1] / "e2e" / "siprec_e2e.xml"
SRC = Address("udp", "127.0.0.2", 5070, None)
_TAG = "@@to-tag@@"
NODE_HOST, NODE_PORT = "127.0.0.1", 5060


# ------------------------------------------------------------------------------- the messages


class Scenario:
    """The INVITE, ACK and BYE of the SIPp scenario, filled in as SIPp fills them in."""

    def __init__(self, path: Path = SCENARIO) -> None:
        sends = re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", path.read_text(), re.S)
        self.invite, self.ack, self.bye = (textwrap.dedent(s).strip("\n") for s in sends)
        self._branches = 0
        self._made: dict[int, tuple[bytes, bytes, bytes]] = {}

    def _fill(self, template: str, n: int, last_to: str = "") -> bytes:
        self._branches += 1
        values = {
            "service": "recorder",
            "remote_ip": NODE_HOST,
            "remote_port": str(NODE_PORT),
            "transport": "UDP",
            "local_ip": SRC.host,
            "local_port": str(SRC.port),
            "branch": f"z9hG4bK-{n}-{self._branches}",
            "pid": "4242",
            "call_number": str(n),
            "call_id": f"{n}-4242@{SRC.host}",
            "local_ip_type": "4",
            "media_ip_type": "4",
            "media_ip": SRC.host,
            "last_To:": last_to,
        }
        text = re.sub(r"\[([A-Za-z_:]+)\]", lambda m: values.get(m[1], m[0]), template)
        head, _, body = text.partition("\n\n")
        lines = [line for line in head.split("\n") if line.strip()]
        body_bytes = body.rstrip("\n").replace("\n", "\r\n").encode()
        if body_bytes:
            body_bytes += b"\r\n"
        head_text = "\r\n".join(lines).replace("[len]", str(len(body_bytes)))
        return head_text.encode() + b"\r\n\r\n" + body_bytes

    def prepare(self, count: int) -> None:
        """Make the messages of calls 1..``count`` now, so that the measured loop only puts
        the To tag in (one bytes.replace)."""
        for n in range(len(self._made) + 1, count + 1):
            self._made[n] = (
                self._fill(self.invite, n),
                self._fill(self.ack, n, self._to(_TAG)),
                self._fill(self.bye, n, self._to(_TAG)),
            )

    def invite_for(self, n: int) -> bytes:
        if n not in self._made:
            self.prepare(n)
        return self._made[n][0]

    def ack_for(self, n: int, to_tag: str) -> bytes:
        return self._made[n][1].replace(_TAG.encode(), to_tag.encode())

    def bye_for(self, n: int, to_tag: str) -> bytes:
        return self._made[n][2].replace(_TAG.encode(), to_tag.encode())

    @staticmethod
    def _to(tag: str) -> str:
        return f"To: <sip:recorder@{NODE_HOST}:{NODE_PORT}>;tag={tag}"


# ------------------------------------------------------------------------------- logging sink


class LineCounter(io.TextIOBase):
    """A log stream that writes to /dev/null (one write a line, as to a pipe) and counts."""

    def __init__(self) -> None:
        self.lines = 0
        self._null = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the bench

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        return self._null.write(s)

    def flush(self) -> None:
        self._null.flush()

    def isatty(self) -> bool:
        return False


# ------------------------------------------------------------------------------- core mode


class FakePorts:
    """The core's port pool as numbers (the driver's binds sockets)."""

    def __init__(self) -> None:
        self.free = list(range(20000, 60000, 2))

    def reserve(self, now: float) -> int:
        return self.free.pop()

    def release(self, ports: list[int], now: float) -> None:
        self.free.extend(ports)

    def reclaim(self, port: int) -> bool:
        return True


def core_config() -> CallControlConfig:
    return CallControlConfig(
        node_id="bench",
        advertise_host=NODE_HOST,
        media_advertise_host=NODE_HOST,
        timers=TimerConfig(),
        recording_dir=tempfile.gettempdir(),
        max_sessions=100_000,
        invite_rate_per_source=0.0,  # one SRC address for every call: no rate limit
    )


class CoreRun:
    """Calls through ``CallControl`` alone, the driver's part played here (outside the time)."""

    def __init__(self) -> None:
        self.core = CallControl(core_config(), FakePorts(), local_address=lambda peer: NODE_HOST)
        self.core.addressing.set_listener("udp", NODE_HOST, NODE_PORT)
        self.now = 1000.0
        self.datagrams = 0

    def _pump(self) -> None:
        core = self.core
        self.datagrams += len(core.datagrams_to_send())
        while (effect := core.next_effect()) is not None:
            if isinstance(effect, OpenMedia):
                effect.state.engaged = True
                for stream in effect.streams:
                    effect.state.open[stream.index] = False
                core.media_opened(effect.session_id, self.now)
            elif isinstance(effect, CloseMedia):
                core.media_closed(effect.session_id)
            elif isinstance(effect, Finalise):
                core.finalised(effect.session_id)
            elif isinstance(effect, DiscardMedia):
                pass
        self.datagrams += len(core.datagrams_to_send())
        core.next_timer()  # the driver re-arms its one timer after every input
        if (deadline := core.next_timer()) is not None and deadline <= self.now:
            core.handle_timer(self.now)

    def start(self, scenario: Scenario, n: int) -> str:
        """INVITE → 100, media opened → 200, ACK; the call's To tag."""
        self.now += 0.01
        self.core.receive(scenario.invite_for(n), SRC, self.now)
        self._pump()
        session_id = next(reversed(self.core.calls))  # the newest (no O(live) set here)
        assert self.core.calls[session_id].data.call_id == f"{n}-4242@{SRC.host}"
        tag = self.core.calls[session_id].dialog.local_tag
        self.core.receive(scenario.ack_for(n, tag), SRC, self.now)
        self._pump()
        return tag

    def end(self, scenario: Scenario, n: int, tag: str) -> None:
        self.core.receive(scenario.bye_for(n, tag), SRC, self.now)
        self._pump()

    @property
    def live(self) -> int:
        return len(self.core.calls)


# ------------------------------------------------------------------------------- driver mode


class FakeEngine:
    """The media engine as the SIP process sees a worker: sockets handed over (closed here)."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def open_stream(self, spec: Any, rtp: Any, rtcp: Any) -> None:
        rtp.close()
        rtcp.close()
        self.open[spec.session_id] = self.open.get(spec.session_id, 0) + 1

    async def set_sources(self, session_id: str, index: int, sources: Any) -> None:
        return None

    async def update_stream(self, spec: Any) -> None:
        return None

    async def pause(self, session_id: str, index: int, at: float) -> None:
        return None

    async def resume(self, session_id: str, index: int, at: float) -> None:
        return None

    async def close_call(self, session_id: str, at: float) -> dict[int, dict[str, Any]]:
        streams = self.open.pop(session_id, 0)
        stats = {"packets": 0, "lost": 0, "duplicates": 0, "late": 0}
        return {i: dict(stats) for i in range(streams)}

    async def stats(self, session_id: str) -> dict[int, dict[str, Any]]:
        return {}

    async def activity(self) -> dict[str, dict[int, int]]:
        return {}

    def begin_stop(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class DriverRun:
    """Calls through the asyncio ``CallDriver`` with the memory store, sockets bound."""

    def __init__(self, recordings: str) -> None:
        from siprec_node.adapters import SharedCallStore
        from siprec_node.recorder import CallDriver, HandlerConfig
        from siprec_node.recorder.call_media import CallMedia
        from siprec_node.session import MemorySessionStore

        self.store = MemorySessionStore()
        config = HandlerConfig(
            node_id="bench",
            advertise_host=NODE_HOST,
            media_host="127.0.0.1",
            media_advertise_host=NODE_HOST,
            port_min=20000,
            port_max=59999,
            port_cooldown=0.0,
            recording_dir=recordings,
            max_sessions=100_000,
            invite_rate_per_source=0.0,
            # no RTP in the bench: the silence probes of a long run are not per-call cost
            rtp_timeout_action="none",
            call_store=SharedCallStore(self.store, "bench"),
        )
        self.driver = CallDriver(config, local_address=lambda peer: NODE_HOST)
        self.driver.engine = FakeEngine()  # type: ignore[assignment]
        self.driver.call_media = CallMedia(self.driver.media, self.driver.engine)

        async def no_finalise(*args: Any, **kwargs: Any) -> None:
            return None

        self.driver.finalise = no_finalise  # type: ignore[method-assign]
        self.sent: list[bytes] = []
        self.driver.attach(lambda data, dest: self.sent.append(data))
        self.driver.set_listener("udp", NODE_HOST, NODE_PORT)

    async def start_driver(self) -> None:
        await self.driver.start()

    async def start(self, scenario: Scenario, n: int) -> str:
        self.driver.on_message(scenario.invite_for(n), SRC)
        await self.driver.idle()
        session_id = next(reversed(self.driver.calls), "")  # the newest (no O(live) set here)
        call = self.driver.calls.get(session_id)
        if call is None or call.data.call_id != f"{n}-4242@{SRC.host}":
            answers = [d.split(b"\r\n", 1)[0].decode() for d in self.sent[-3:]]
            raise RuntimeError(f"call {n} not set up: {answers}, stats {self.driver.stats}")
        tag = self.driver.calls[session_id].dialog.local_tag
        self.driver.on_message(scenario.ack_for(n, tag), SRC)
        await asyncio.sleep(0)  # the snapshot writer's turn
        return tag

    async def end(self, scenario: Scenario, n: int, tag: str) -> None:
        self.driver.on_message(scenario.bye_for(n, tag), SRC)
        await self.driver.idle()
        await asyncio.sleep(0)
        self.sent.clear()

    async def settle(self) -> None:
        await self.driver.idle()
        if self.driver.snapshots is not None:
            await self.driver.snapshots.flush()  # type: ignore[attr-defined]

    @property
    def live(self) -> int:
        return len(self.driver.calls)


# ------------------------------------------------------------------------------- breakdown

# (category, pattern on "path:function"), first match wins; paths are relative to site/src.
CATEGORIES: list[tuple[str, str]] = [
    (
        "snapshots, to_dict, copies",
        r"sip/call\.py|session/|adapters/|recorder/snapshots\.py"
        r"|dataclasses\.py|copy\.py|:_snapshot$|to_dict$|media_snapshot$",
    ),
    ("logging", r"structlog/|logging/|orjson|:_log$"),
    (
        "SIP parse",
        r"sip/(message|uri|framing)\.py:(parse|_parse|_split|_header|from_|__init__"
        r"|tokens|get|param)",
    ),
    (
        "SIP build",
        r"sip/message\.py|sip/(dialog|call_policy)\.py:(create_request|make_|"
        r"session_timer|capabilities|via|contact)",
    ),
    (
        "SIPREC/SDP/metadata",
        r"siprec/(metadata|multipart|recording_session|codecs|sdp)\.py"
        r"|sip/recording\.py:(from_request|start|_streams|_offer)|xml|ElementTree|pyexpat",
    ),
    ("SDP answer", r"siprec/sdp_answer\.py|answer_sdp"),
    ("transactions/dialogs", r"sip/(transaction|transaction_table|dialog)\.py|heapq"),
    ("ids (uuid/random)", r"uuid|random|secrets|os\.py:urandom|urandom"),
    (
        "call control",
        r"sip/(call_control|call_lifecycle|calls|call_policy|recording"
        r"|media_state|rate_limit|rtp_timeout|effects)\.py",
    ),
    ("driver/effects/media", r"recorder/|media/|asyncio/|socket\.py|pathlib|posixpath|shutil"),
    ("bench harness", r"bench/sipcall|re/|re\.py"),
]


def _where(func: tuple[str, int, str]) -> str:
    path, _, name = func
    path = path.replace("\\", "/")
    for marker in ("/siprec_node/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


def _category(where: str, compiled: list[tuple[str, re.Pattern[str]]]) -> str | None:
    for name, pattern in compiled:
        if pattern.search(where):
            return name
    return None


def categorise(stats: pstats.Stats) -> dict[str, float]:
    """Own time per category (seconds); a C function's (a builtin's, a C method's) and the json
    module's own time goes to the categories of its callers, in proportion to the time each
    caller spent in it."""
    compiled = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]
    table = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = defaultdict(float)

    def assign(func: Any, seconds: float, depth: int = 0) -> None:
        where = _where(func)
        shared = func[0] == "~" or where.startswith("json/")  # logging's and the store's
        category = None if shared else _category(where, compiled)
        if category is not None:
            out[category] += seconds
            return
        callers = table.get(func, (0, 0, 0, 0, {}))[4]
        spent = sum(timing[2] for timing in callers.values())
        if not shared or depth > 5 or not callers or spent <= 0:
            out["other"] += seconds
            return
        for caller, timing in callers.items():
            assign(caller, seconds * timing[2] / spent, depth + 1)

    for func, (_, _, tottime, _, _) in table.items():
        assign(func, tottime)
    return dict(out)


# ------------------------------------------------------------------------------- running


def reference_ms() -> float:
    """CPU time of a fixed pure-Python loop (ms): how fast this machine runs Python right now,
    to read the figures of runs made at different moments on a shared machine."""
    start = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i % 7
    return (time.process_time() - start) * 1e3


def rss_kb() -> float:
    """This process's resident set (KB), from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


class GcCount:
    """Objects tracked by the cyclic GC grown over the set-up of the live calls."""

    def __init__(self, by_type: bool) -> None:
        self.by_type = by_type
        with _thawed():
            gc.collect()
            self.before = len(gc.get_objects())
            self.types_before = self._types() if by_type else Counter()

    @staticmethod
    def _types() -> Counter[str]:
        return Counter(
            f"{type(o).__module__}.{type(o).__qualname__}".removeprefix("builtins.")
            for o in gc.get_objects()
        )

    def done(self, live: int) -> dict[str, Any]:
        with _thawed():
            gc.collect()
            total = len(gc.get_objects())
            grown = total - self.before
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                gc.collect()
                best = min(best, time.perf_counter() - start)
            out: dict[str, Any] = {
                "objects_per_live": grown / max(live, 1),
                "objects": total,
                "full_gc_ms": best * 1e3,
            }
            if self.by_type:
                out["types_per_live"] = {
                    name: count / max(live, 1)
                    for name, count in (self._types() - self.types_before).most_common()
                }
        return out


@contextlib.contextmanager
def _thawed() -> Iterator[None]:
    """Every object within the collector's reach (counted, collected), frozen again after
    when some were (the node's GC aging, gc_watch.py)."""
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    try:
        yield
    finally:
        if frozen:
            gc.freeze()


class GcPauses:
    """The collector's pauses over the measured calls (the node's ``GcWatch``), and in driver
    mode the node's GC aging running on the loop unless ``--no-gc-aging``."""

    def __init__(self, aging: bool) -> None:
        self.watch = GcWatch(long_pause=float("inf"))
        self.aging = aging

    def start(self) -> None:
        self.watch.install()
        if self.aging:
            self.watch.start_reporting(age_interval=1.0)

    def done(self, calls: int) -> dict[str, Any]:
        self.watch.uninstall()
        w = self.watch
        return {
            "gc_full": w.count[2],
            "gc_full_ms": w.seconds[2] * 1e3,
            "gc_us_per_call": sum(w.seconds) / max(calls, 1) * 1e6,
            "gc_longest_ms": w.longest * 1e3,
        }


def run_core(
    scenario: Scenario, calls: int, live: int, profiler: cProfile.Profile | None, by_type: bool
) -> Any:
    bench = CoreRun()
    scenario.prepare(live + calls)
    up: list[tuple[int, str]] = []
    n = 0
    objects = GcCount(by_type)
    rss = rss_kb()
    for _ in range(live):
        n += 1
        up.append((n, bench.start(scenario, n)))
    rss_per_live = (rss_kb() - rss) / max(live, 1)
    gc_figures = objects.done(live)
    start = time.process_time()
    if profiler is not None:
        profiler.enable()
    for _ in range(calls):
        n += 1
        up.append((n, bench.start(scenario, n)))
        old, tag = up.pop(0)
        bench.end(scenario, old, tag)
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - start
    return cpu, bench.live, rss_per_live, gc_figures


async def run_driver(
    scenario: Scenario,
    calls: int,
    live: int,
    profiler: cProfile.Profile | None,
    by_type: bool,
    aging: bool,
) -> Any:
    pauses = GcPauses(aging)
    if aging:
        freeze_startup()  # as the node does once it listens
        pauses.start()
    recordings = tempfile.mkdtemp(prefix="sipcall-bench-")
    bench = DriverRun(recordings)
    scenario.prepare(live + calls)
    await bench.start_driver()
    up: list[tuple[int, str]] = []
    n = 0
    objects = GcCount(by_type)
    rss = rss_kb()
    for _ in range(live):
        n += 1
        up.append((n, await bench.start(scenario, n)))
    await bench.settle()
    rss_per_live = (rss_kb() - rss) / max(live, 1)
    gc_figures = objects.done(live)
    if not aging:
        pauses.start()
    pauses.watch.count = [0, 0, 0]
    pauses.watch.seconds = [0.0, 0.0, 0.0]
    pauses.watch.longest = 0.0
    start = time.process_time()
    if profiler is not None:
        profiler.enable()
    for _ in range(calls):
        n += 1
        up.append((n, await bench.start(scenario, n)))
        old, tag = up.pop(0)
        await bench.end(scenario, old, tag)
    await bench.settle()
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - start
    gc_figures.update(pauses.done(calls))
    gc.unfreeze()
    live_now = bench.live
    await bench.driver.close(timeout=5)
    import shutil

    shutil.rmtree(recordings, ignore_errors=True)
    return cpu, live_now, rss_per_live, gc_figures


def measure(
    mode: str, scenario: Scenario, args: argparse.Namespace, sink: LineCounter, profile: bool
) -> dict[str, Any]:
    profiler = cProfile.Profile() if profile else None
    lines_before = sink.lines
    by_type = args.objects_by_type and not profile
    if mode == "core":
        cpu, live, rss, gc_figures = run_core(scenario, args.calls, args.live, profiler, by_type)
    else:
        cpu, live, rss, gc_figures = asyncio.run(
            run_driver(scenario, args.calls, args.live, profiler, by_type, args.gc_aging)
        )
    result: dict[str, Any] = {
        "mode": mode,
        "cpu_us_per_call": cpu / args.calls * 1e6,
        "live": live,
        "rss_kb_per_live": rss,
        # lines of setup (live) + measured calls, per call
        "log_lines_per_call": (sink.lines - lines_before) / (args.calls + args.live),
        **gc_figures,
    }
    if profiler is not None:
        stats = pstats.Stats(profiler)
        result["stats"] = stats
        result["categories"] = categorise(stats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls measured")
    parser.add_argument("--live", type=int, default=2000, help="calls kept up meanwhile")
    parser.add_argument("--mode", choices=("core", "driver", "both"), default="both")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--profile", action="store_true", help="cProfile top functions too")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--objects-by-type",
        action="store_true",
        help="the types of the GC-tracked objects grown per live call (top --top)",
    )
    parser.add_argument(
        "--no-gc-aging",
        dest="gc_aging",
        action="store_false",
        help="driver mode without the node's GC aging (gc_watch.py): CPython's collections as"
        " they come",
    )
    parser.add_argument(
        "--without-snapshots",
        action="store_true",
        help="the core makes no snapshots (CallLifecycle._snapshot a no-op): the per-call cost"
        " of everything else, measured without the snapshot serialisation's",
    )
    args = parser.parse_args()
    if args.without_snapshots:
        from siprec_node.sip.call_lifecycle import CallLifecycle

        CallLifecycle._snapshot = lambda self, call: None  # type: ignore[method-assign]

    sink = LineCounter()
    configure_logging(args.log_level, "json", stream=sink)  # type: ignore[arg-type]
    scenario = Scenario()
    modes = ("core", "driver") if args.mode == "both" else (args.mode,)
    print(
        f"# reference loop {reference_ms():.0f} ms of CPU (compare runs by it); "
        f"{args.calls} calls measured with {args.live} live; log level {args.log_level}; "
        f"Python {sys.version.split()[0]}"
        + ("; without snapshots" if args.without_snapshots else "")
    )
    rows = []
    for mode in modes:
        print(f"# {mode}: reference loop {reference_ms():.0f} ms before the run")
        plain = measure(mode, scenario, args, sink, profile=False)
        profiled = measure(mode, scenario, args, sink, profile=True)
        rows.append((plain, profiled))
    print()
    print(
        "| mode | CPU µs per call | log lines per call | live calls at the end"
        " | RSS per live call (KB, first run) | GC objects per live call"
        f" | GC-tracked objects with {args.live} live | full gc.collect() ms with them"
        " | full collections while measured (ms in all) | GC µs per call (longest ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for plain, _ in rows:
        pauses = (
            f"{plain['gc_full']} ({plain['gc_full_ms']:,.0f}) | "
            f"{plain['gc_us_per_call']:,.0f} ({plain['gc_longest_ms']:.0f})"
            if "gc_full" in plain
            else "- | -"
        )
        label = plain["mode"] + (
            "" if plain["mode"] == "core" or args.gc_aging else ", no GC aging"
        )
        print(
            f"| {label} | {plain['cpu_us_per_call']:,.0f} | "
            f"{plain['log_lines_per_call']:.1f} | {plain['live']} | "
            f"{plain['rss_kb_per_live']:.0f} | {plain['objects_per_live']:.1f} | "
            f"{plain['objects']:,} | {plain['full_gc_ms']:.0f} | {pauses} |"
        )
    print()
    if args.objects_by_type:
        for plain, _ in rows:
            print(f"| {plain['mode']}: GC-tracked type | per live call |")
            print("|---|---:|")
            for name, count in list(plain["types_per_live"].items())[: args.top]:
                print(f"| {name} | {count:.2f} |")
            print()
    names = [name for name, _ in CATEGORIES] + ["other"]
    header = " | ".join(f"{plain['mode']} µs (%)" for plain, _ in rows)
    print(f"| where (cProfile own time, scaled to the CPU above) | {header} |")
    print("|---|" + "---:|" * len(rows))
    for name in names:
        cells = []
        for plain, profiled in rows:
            cats = profiled["categories"]
            total = sum(cats.values()) or 1.0
            share = cats.get(name, 0.0) / total
            cells.append(f"{share * plain['cpu_us_per_call']:,.0f} ({share * 100:.1f} %)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.profile:
        for _, profiled in rows:
            print(f"\n## {profiled['mode']}: top {args.top} by own time (profiled run)\n")
            out = io.StringIO()
            stats = profiled["stats"]
            stats.stream = out
            stats.sort_stats("tottime").print_stats(args.top)
            print("\n".join(out.getvalue().splitlines()[6:]))
            out = io.StringIO()
            stats.stream = out
            stats.sort_stats("cumulative").print_stats(args.top)
            print(f"\n## {profiled['mode']}: top {args.top} cumulative\n")
            print("\n".join(out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    main()
