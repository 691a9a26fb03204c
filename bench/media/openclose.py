"""What a media worker pays to open and close a stream, in load-independent figures.

    python bench/media/openclose.py [--calls 500] [--live 0] [--receive-path auto|python]
                                    [--packets 0] [--no-strace]

Opens ``--calls`` two-stream PCMU calls through a ``LocalEngine`` (real bound UDP sockets, a
temporary recording folder), optionally sends ``--packets`` in-order RTP packets to each
stream, then closes every call, as the worker does on ``open``/``close_call``. ``--live`` more
calls stay open throughout (what a loaded worker holds while calls come and go).

Figures per stream (2 per call):

* syscalls, by name, of opening and of closing (``strace -f -c`` of the same run three
  times: up to before the opens, up to before the closes, to the end; the differences over
  the streams), when strace is installed;
* Python function calls and CPU (µs, the one figure other load disturbs) per stream, of
  ``open_stream`` and of ``close_call``, from cProfile.

With ``--packets`` the packets phase is measured too (per packet): its syscalls show how many
``pwrite`` a packet costs on the chosen receive path.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import os
import pstats
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "src"))

from siprec_node.media.engine import LocalEngine, StreamSpec  # noqa: E402
from siprec_node.siprec.sdp_answer import NegotiatedStream  # noqa: E402

PHASES = ("setup", "open", "packets", "close")
SSRC = 0x1234


def _spec(root: Path, call: int, index: int, epoch: float) -> StreamSpec:
    stream = NegotiatedStream(
        index=index,
        label=f"leg-{index}",
        media="audio",
        accepted=True,
        port=40000,
        proto="RTP/AVP",
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        telephone_event_pt=101,
        direction="recvonly",
    )
    return StreamSpec(
        session_id=f"call-{call}",
        index=index,
        negotiated=stream.to_dict(),
        parts_dir=str(root / f"call-{call}.parts"),
        epoch=epoch,
    )


def _pair() -> tuple[socket.socket, socket.socket]:
    socks = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    return socks[0], socks[1]


async def _run(args: argparse.Namespace, stop_after: str | None) -> dict[str, Any]:
    """One run; ``stop_after``: leave (os._exit) right after that phase (for strace)."""
    root = Path(args.root or tempfile.mkdtemp(prefix="openclose-"))
    try:
        engine = LocalEngine(args.receive_path)
        await engine.start()
        epoch = time.time()
        total = args.calls + args.live
        sockets = [[_pair() for _ in range(2)] for _ in range(total)]
        ports = [[rtp.getsockname()[1] for rtp, _ in call] for call in sockets]
        specs = [[_spec(root, c, i, epoch) for i in range(2)] for c in range(total)]
        for c in range(args.calls, total):  # the calls that stay open all along
            for i in range(2):
                await engine.open_stream(specs[c][i], *sockets[c][i])
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        profiles: dict[str, pstats.Stats] = {}
        cpu: dict[str, float] = {}
        _leave_if(stop_after, "setup")

        profile = cProfile.Profile()
        start = time.process_time()
        for c in range(args.calls):
            for i in range(2):
                profile.enable()
                await engine.open_stream(specs[c][i], *sockets[c][i])
                profile.disable()
        cpu["open"] = time.process_time() - start
        profiles["open"] = pstats.Stats(profile)
        _leave_if(stop_after, "open")

        if args.packets:
            payload = b"\x55" * 160
            profile = cProfile.Profile()
            start = time.process_time()
            due = time.monotonic()
            for n in range(args.packets):
                packet = struct.pack("!BBHII", 0x80, 0, n, 160 * n, SSRC) + payload
                for c in range(args.calls):
                    for port in ports[c]:
                        sender.sendto(packet, ("127.0.0.1", port))
                due += 0.02  # one packet per stream every 20 ms, as a call sends them
                profile.enable()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                profile.disable()
            expected = args.calls * 2 * args.packets
            for _ in range(500):  # every packet received before the phase ends (strace)
                activity = await engine.activity()
                got = sum(n for c in range(args.calls) for n in activity[f"call-{c}"].values())
                if got >= expected:
                    break
                await asyncio.sleep(0.01)
            cpu["packets"] = time.process_time() - start
            profiles["packets"] = pstats.Stats(profile)
        _leave_if(stop_after, "packets")

        profile = cProfile.Profile()
        start = time.process_time()
        now = time.time()
        for c in range(args.calls):
            profile.enable()
            await engine.close_call(f"call-{c}", now)
            profile.disable()
        cpu["close"] = time.process_time() - start
        profiles["close"] = pstats.Stats(profile)
        _leave_if(stop_after, "close")
        await engine.stop()
        sender.close()
        return {"cpu": cpu, "profiles": profiles}
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


def _leave_if(stop_after: str | None, phase: str) -> None:
    if stop_after == phase:
        sys.stdout.flush()
        os._exit(0)


_LOOP_SYSCALLS = frozenset({"epoll_wait", "recvmmsg", "recvfrom", "getpid", "clock_gettime"})
"""The event loop's own, whose counts depend on timing (left out but for the packets)."""
_STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def _strace(args: argparse.Namespace, phase: str) -> dict[str, int]:
    """Syscall counts (by name) of a child run that leaves after ``phase``."""
    root = tempfile.mkdtemp(prefix="openclose-")  # the child leaves with os._exit: removed here
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        command = [
            "strace", "-f", "-c", "-o", out.name, sys.executable, __file__,
            "--calls", str(args.calls), "--live", str(args.live), "--packets", str(args.packets),
            "--receive-path", args.receive_path, "--stop-after", phase, "--root", root,
        ]  # fmt: skip
        try:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        counts: dict[str, int] = {}
        for line in Path(out.name).read_text().splitlines():
            match = _STRACE_LINE.match(line)
            if match and match.group(2) != "total":
                counts[match.group(2)] = int(match.group(1))
        return counts


def _calls_of(stats: pstats.Stats) -> int:
    return sum(nc for _, nc, _, _, _ in stats.stats.values())  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--live", type=int, default=0, help="calls open all along")
    parser.add_argument("--packets", type=int, default=0, help="RTP packets per stream")
    parser.add_argument("--receive-path", default="auto", choices=("auto", "c", "python"))
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--top", type=int, default=0, help="print the N costliest functions")
    parser.add_argument("--stop-after", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stop_after:
        asyncio.run(_run(args, args.stop_after))
        return
    result = asyncio.run(_run(args, None))
    streams = 2 * args.calls
    units = {"open": streams, "packets": streams * args.packets, "close": streams}
    phases = [p for p in PHASES[1:] if p in result["cpu"]]
    print(
        f"{args.calls} calls x 2 streams, {args.live} calls open all along, "
        f"receive path {LocalEngine(args.receive_path).receive_path}, "
        f"{args.packets} packets per stream"
    )
    print(f"{'phase':<8} {'per':<7} {'py calls':>9} {'cpu us':>8}")
    for phase in phases:
        n = units[phase]
        calls = _calls_of(result["profiles"][phase]) / n
        cpu = result["cpu"][phase] / n * 1e6
        per = "packet" if phase == "packets" else "stream"
        print(f"{phase:<8} {per:<7} {calls:>9.1f} {cpu:>8.1f}")
    if args.top:
        for phase in phases:
            print(f"\n-- {phase}: top {args.top} by own time")
            result["profiles"][phase].sort_stats("tottime").print_stats(args.top)
    if args.no_strace or shutil.which("strace") is None:
        return
    counts = {phase: _strace(args, phase) for phase in PHASES}
    names = sorted({name for c in counts.values() for name in c})
    print("\nsyscalls per stream (per packet for packets), strace -f -c")
    print(f"{'syscall':<16}" + "".join(f"{p:>9}" for p in phases))
    totals = dict.fromkeys(phases, 0.0)
    for name in names:
        row: list[float | None] = []
        for before, phase in itertools.pairwise(PHASES):
            if phase not in phases:
                continue
            if phase != "packets" and name in _LOOP_SYSCALLS:
                row.append(None)
                continue
            value = (counts[phase].get(name, 0) - counts[before].get(name, 0)) / units[phase]
            totals[phase] += value
            row.append(value)
        if any(v is not None and abs(v) >= 0.005 for v in row):
            cells = "".join("        -" if v is None else f"{v:>9.2f}" for v in row)
            print(f"{name:<16}{cells}")
    print(f"{'total':<16}" + "".join(f"{totals[p]:>9.2f}" for p in phases))
    print("(-: the event loop's own, whose count depends on timing)")


if __name__ == "__main__":
    main()
