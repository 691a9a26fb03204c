"""A drain at fleet scale: SIGTERM with thousands of live calls, every recording closed and judged.

    python bench/drain/run.py [--calls 2000] [--packets 50] [--store memory,redis]
                              [--grace 0s] [--dir DIR] [--keep]

Issue 11 asks that a drain of 2,000 live calls close 2,000 recordings with their statistics:
the burst of endings that once made the control messages to the media worker fail (EAGAIN,
reported as a dead worker) and lost the streams' statistics. Per store, a real node
(``python -m siprec_node run``: one media worker, two finalisation processes, log level info) gets
``--calls`` two-stream SIPREC calls over UDP, one after another as fast as it answers (stream 1
PCMU, stream 2 PCMA: the SRC client of the integration tests), then ``--packets`` RTP packets a
stream at a 20 ms pace (a 440 Hz tone on stream 1, 1 kHz on stream 2), then SIGTERM. The node
drains (``node.drain_grace`` = ``--grace``: 0 s sends every BYE at once), closes every stream,
finalises every call and exits. Then every recording is read back:

- ``closed with statistics``: a ``media_closed`` line whose two streams counted every packet sent;
- ``sidecar packets``: the sidecar's per-stream packets are the packets sent;
- ``audio right``: in the stereo WAV, channel 1 holds the 440 Hz tone and channel 2 the 1 kHz one,
  each for the packets' length (within 2 packets).

The table also gives the set-up time, SIGTERM → exit and → the last ``recording_finalised``,
the drain's own figures (``drained``: how long it waited, the BYEs it sent), any
``media_close_failed``, ``media_worker_died`` or ``drain_deadline_passed`` line, and the
recordings' verdicts: the RTP stops half a second before SIGTERM, so a call whose streams sent
for 1 s of its last 1.5 s is rightly judged ``short`` (the verdict's figures say by how much).
The node's work folder goes under ``--dir`` (tmpfs recommended on a root without a journal: see
bench/e2e/RESULTS.md, session 9) and is removed at the end unless ``--keep``. Exit status 0
when every call of every store was closed with its statistics and recorded right.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for tests/
from tests.integration.media.src_client import (
    FRAME,
    RATE,
    RtpLeg,
    SrcCall,
    alaw_encode,
    dominant_frequency,
    read_wav,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import start_node
from tests.redis_server import RedisProcess

TONES = (440.0, 1000.0)
"""Stream 1's tone and stream 2's (Hz)."""


def send_rtp(calls: list[SrcCall], packets: int) -> float:
    """Every stream's packets (RtpLeg, the integration tests' sender): stream 1 a PCMU 440 Hz
    tone, stream 2 a PCMA 1 kHz one, one packet of every stream each 20 ms; the latest
    round's lateness (ms)."""
    seconds = packets * FRAME / RATE
    pcmu, pcma = ulaw_encode(tone(TONES[0], seconds)), alaw_encode(tone(TONES[1], seconds))
    legs = [[RtpLeg(0, pcmu, ssrc=0xD000), RtpLeg(8, pcma, ssrc=0xD001)] for _ in calls]
    late = 0.0
    start = time.monotonic()
    for k in range(packets):
        due = start + k * 0.02
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        late = max(late, (time.monotonic() - due) * 1000)
        for call, pair in zip(calls, legs, strict=True):
            for leg, port in zip(pair, call.ports, strict=True):
                call.rtp.sendto(leg.next_packet(), ("127.0.0.1", port))
    return late


def judge(wav: Path, packets: int) -> bool:
    """Channel n holds stream n's tone for ``packets`` packets (within 2 of its 20 ms frames)."""
    rate, audio = read_wav(wav)
    if audio.ndim != 2 or audio.shape[1] != 2:
        return False
    frame = FRAME * rate // RATE
    for channel, freq in enumerate(TONES):
        x = audio[: len(audio) // frame * frame, channel].reshape(-1, frame)
        sounding = x[np.sqrt(np.mean(np.square(x), axis=1)) > 0.05]
        if abs(len(sounding) - packets) > 2:
            return False
        if abs(dominant_frequency(sounding.reshape(-1), rate) - freq) > 15:
            return False
    return True


def when(line: dict[str, Any]) -> float:
    """A log line's time (epoch seconds)."""
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def rtp_range_start(ports: int) -> int:
    """The first of ``ports`` RTP ports for the node, just below the kernel's ephemeral range:
    the SRC client's 2 sockets a call take ephemeral ports, and would take the node's."""
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return max(1024, ephemeral - ports) // 2 * 2


def run_store(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """One drain: set up, stream, SIGTERM, then read every recording back."""
    redis = RedisProcess() if store == "redis" else None
    ports = 4 * args.calls + 100  # RTP and RTCP of two streams a call, and a margin
    low = rtp_range_start(ports)
    env = {
        "SIPREC_MEDIA__PORT_MIN": str(low),
        "SIPREC_MEDIA__PORT_MAX": str(low + ports - 1),
        "SIPREC_SIP__INVITE_RATE_PER_SOURCE": "0",  # one SRC sets up every call (an SBC)
        "SIPREC_SIP__MAX_SESSIONS": str(args.calls),
        "SIPREC_NODE__DRAIN_GRACE": args.grace,
        "SIPREC_RECORDING__FINALISE_WORKERS": "2",  # the node's default
        "SIPREC_LOG__LEVEL": "info",
    }
    if redis is not None:
        env |= {"SIPREC_STORE__BACKEND": "redis", "SIPREC_STORE__URL": redis.url}
    old_tmp = tempfile.tempdir
    tempfile.tempdir = args.dir  # start_node makes the node's work folder there
    try:
        node = start_node(env=env)
    finally:
        tempfile.tempdir = old_tmp
    calls: list[SrcCall] = []
    try:
        t0 = time.monotonic()
        for _ in range(args.calls):
            call = SrcCall(node.sip_port, call_id=f"{uuid.uuid4().hex}@drain.bench")
            call.invite()
            call.sip.settimeout(0.001)
            calls.append(call)
        setup = time.monotonic() - t0
        late = send_rtp(calls, args.packets)
        time.sleep(0.5)  # the last packets reach the worker
        sigterm = time.time()
        code = node.stop(timeout=600)
        stopped = time.time() - sigterm
    finally:
        for call in calls:
            call.close()
        node.stop()
        if redis is not None:
            redis.stop()
    closed = node.events("media_closed")
    full = 0
    for line in closed:
        streams = cast(dict[str, dict[str, Any]], line["streams"])
        full += sorted(streams) == ["0", "1"] and all(
            s["packets"] == args.packets for s in streams.values()
        )
    finalised = node.events("recording_finalised")
    sidecar_ok = audio_ok = 0
    verdicts: Counter[str] = Counter()
    for line in finalised:
        sidecar = json.loads(Path(str(line["sidecar"])).read_text())
        kinds = sorted({p["kind"] for p in sidecar["verdict"]["problems"]})
        verdicts["+".join(kinds) or "ok"] += 1
        sidecar_ok += [s["packets"] for s in sidecar["streams"]] == [args.packets] * 2
        files = [Path(f) for f in cast(list[str], line["files"])]
        audio_ok += len(files) == 1 and judge(files[0], args.packets)
    drained = node.events("drained")
    if not args.keep:
        shutil.rmtree(node.workdir, ignore_errors=True)
    return {
        "store": store,
        "answered": len(calls),
        "setup_s": setup,
        "rtp_late_ms": late,
        "exit": code,
        "stopped_s": stopped,
        "last_finalised_s": max((when(x) for x in finalised), default=sigterm) - sigterm,
        "drained": drained[0] if drained else {},
        "closed": len(closed),
        "closed_full": full,
        "close_failed": len(node.events("media_close_failed")),
        "worker_died": len(node.events("media_worker_died")),
        "deadline_passed": len(node.events("drain_deadline_passed")),
        "finalised": len(finalised),
        "sidecar_ok": sidecar_ok,
        "audio_ok": audio_ok,
        "verdicts": verdicts,
    }


def table(results: list[dict[str, Any]], calls: int) -> str:
    """The results as a Markdown table, one column per store."""
    rows: list[tuple[str, Any]] = [
        ("calls answered", lambda r: f"{r['answered']:,} / {calls:,}"),
        ("set-up (s, one after another)", lambda r: f"{r['setup_s']:.1f}"),
        ("RTP rounds' worst lateness (ms)", lambda r: f"{r['rtp_late_ms']:.0f}"),
        ("SIGTERM → exit (s), exit code", lambda r: f"{r['stopped_s']:.1f}, {r['exit']}"),
        ("SIGTERM → last finalised (s)", lambda r: f"{r['last_finalised_s']:.1f}"),
        ("drained: waited (s), BYEs sent", lambda r: _drained(r["drained"])),
        ("media_closed / with every packet", lambda r: f"{r['closed']:,} / {r['closed_full']:,}"),
        (
            "media_close_failed, worker died, deadline passed",
            lambda r: f"{r['close_failed']}, {r['worker_died']}, {r['deadline_passed']}",
        ),
        ("finalised", lambda r: f"{r['finalised']:,}"),
        ("sidecar packets right", lambda r: f"{r['sidecar_ok']:,}"),
        ("audio right (tone, channel, length)", lambda r: f"{r['audio_ok']:,}"),
        ("verdicts", lambda r: ", ".join(f"{k} {v:,}" for k, v in r["verdicts"].most_common())),
    ]
    lines = ["| | " + " | ".join(r["store"] for r in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results) + " |")
    return "\n".join(lines)


def _drained(figures: dict[str, Any]) -> str:
    if not figures:
        return "-"
    return f"{figures['waited_s']:.1f}, {figures['ended_by_us']:,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="live calls when SIGTERM comes")
    parser.add_argument("--packets", type=int, default=50, help="RTP packets per stream")
    parser.add_argument("--store", default="memory,redis", help="memory, redis or memory,redis")
    parser.add_argument("--grace", default="0s", help="node.drain_grace (default 0s)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="the node's work folder")
    parser.add_argument("--keep", action="store_true", help="keep the node's work folder")
    args = parser.parse_args(argv)
    stores = args.store.split(",")
    if any(s not in ("memory", "redis") for s in stores):
        parser.error("--store: memory, redis or memory,redis")
    if not 1 <= args.calls <= 5_000:
        parser.error("--calls: 1 to 5,000 (four RTP ports a call)")
    os.makedirs(args.dir, exist_ok=True)
    print(
        f"drain of {args.calls:,} live two-stream calls, {args.packets} packets per stream, "
        f"node.drain_grace {args.grace} (python {sys.version.split()[0]})"
    )
    results = []
    for store in stores:
        result = run_store(store, args)
        results.append(result)
        print(f"{store}: done", flush=True)
    print(table(results, args.calls))
    right = all(
        r["exit"] == 0 and r["audio_ok"] == r["sidecar_ok"] == r["closed_full"] == args.calls
        for r in results
    )
    return 0 if right else 1


if __name__ == "__main__":
    raise SystemExit(main())
