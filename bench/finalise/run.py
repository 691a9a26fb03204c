"""CPU cost of finalising a recording: a 5-minute, two-stream PCMU call into each format.

    python bench/finalise/run.py [--minutes 5] [--repeat 7] [--dir DIR] [--no-fsync]

The parts are written once with the receive path's own writers (media/stream_file.py): two
PCMU legs of synthetic conversation (tone bursts with noise, the parties taking turns), then
`finalise_call` runs `--repeat` times per row. CPU is `time.process_time()` (user + system of
this process, so the kernel's copying of the written file counts), wall is `perf_counter`.
The table gives the median and the minimum over the runs. The target is WAV at most 15 ms of
CPU per 5-minute call.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np

from siprec_node.media.finalise import CallInfo, ParticipantInfo, finalise_call
from siprec_node.media.stream_file import (
    StreamInfo,
    WavG711Writer,
    info_file_name,
    media_file_name,
    write_stream_info,
)

RATE = 8000
TARGET_MS = 15.0


def conversation(seconds: float, party: int, seed: int = 7) -> np.ndarray:
    """Speech-like int16 audio: 1-4 s bursts of modulated tone, the two parties alternating."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    gate = np.zeros(n, dtype=bool)
    at, speaker = 0.0, 0
    while at < seconds:
        length = rng.uniform(1.0, 4.0)
        if speaker == party:
            gate[round(at * RATE) : round((at + length) * RATE)] = True
        at += length + rng.uniform(-0.3, 0.6)  # a little overlap now and then
        speaker ^= 1
    voice = np.sin(2 * np.pi * (180 + 60 * party) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = np.where(gate, voice * 9000, 0) + rng.standard_normal(n) * 40
    return np.clip(x, -32768, 32767).astype(np.int16)


def pcmu(samples: np.ndarray) -> bytes:
    ctx = av.CodecContext.create("pcm_mulaw", "w")
    ctx.sample_rate, ctx.layout, ctx.format = RATE, "mono", "s16"
    ctx.open()
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = RATE, 0
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def write_parts(parts: Path, minutes: float, epoch: datetime) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    for index in (0, 1):
        codes = pcmu(conversation(seconds - 0.2, index))  # legs stop just before the BYE
        writer = WavG711Writer(parts / media_file_name(index, "PCMU"), "PCMU")
        for position in range(0, len(codes), 160):  # as the receive path does: 20 ms payloads
            writer.write(position, codes[position : position + 160])
        writer.close()
        info = StreamInfo(
            index=index,
            label=str(index + 1),
            codec="PCMU",
            payload_type=0,
            clock_rate=RATE,
            channels=1,
            epoch=epoch.timestamp(),
            packets=len(codes) // 160,
            closed=True,
        )
        write_stream_info(parts / info_file_name(index), info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--no-fsync", action="store_true", help="finalise with durable=False")
    args = parser.parse_args(argv)

    epoch = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    call = CallInfo(
        session_id="bench",
        call_id="bench@example.com",
        node_id="bench",
        status="ended",
        end_reason="bye",
        started_at=epoch,
        ended_at=epoch + timedelta(minutes=args.minutes),
    )
    people = [ParticipantInfo("a", streams=(0,)), ParticipantInfo("b", streams=(1,))]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        write_parts(root / "call.parts", args.minutes, epoch)
        print(
            f"finalise_call: {args.minutes:g}-minute call, 2 PCMU streams, stereo, "
            f"{'no fsync' if args.no_fsync else 'fsync'}, {args.repeat} runs per row "
            f"(python {sys.version.split()[0]}, numpy {np.__version__}, av {av.__version__})"
        )
        print(
            f"{'format':<9} {'metrics':<8} {'CPU ms med':>10} {'CPU ms min':>10} "
            f"{'wall ms med':>11} {'output':>10}"
        )
        for fmt in ("wav", "wav-g711", "flac", "opus"):
            for metrics in (False, True):
                cpu, wall = [], []
                for run in range(args.repeat + 1):
                    out = root / f"out-{fmt}-{metrics}-{run}"  # a first finalisation each time
                    c0, w0 = time.process_time(), time.perf_counter()
                    result = finalise_call(
                        root / "call.parts",
                        output_dir=out,
                        stem="call",
                        call=call,
                        fmt=fmt,
                        participants=people,
                        metrics=metrics,
                        durable=not args.no_fsync,
                    )
                    c1, w1 = time.process_time(), time.perf_counter()
                    if run:  # the first run warms caches (tables, codec contexts) up
                        cpu.append((c1 - c0) * 1000)
                        wall.append((w1 - w0) * 1000)
                    size = sum(p.stat().st_size for p in result.files)
                    shutil.rmtree(out)  # outside the timed part
                print(
                    f"{fmt:<9} {'yes' if metrics else 'no':<8} {statistics.median(cpu):>10.1f} "
                    f"{min(cpu):>10.1f} {statistics.median(wall):>11.1f} {size / 1e6:>8.2f}MB"
                )
        print(f"target: wav <= {TARGET_MS:g} ms CPU per 5-minute call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
