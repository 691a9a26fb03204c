"""CPU cost of finalising a recording: a 5-minute, two-stream call into each format, and
per codec.

    python bench/finalise/run.py [--minutes 5] [--repeat 7] [--dir DIR] [--no-fsync]
                                 [--codecs PCMU,G729,G729-VAD,AMR,AMR-WB,G726-32]
                                 [--short CALLS]

The parts are written once with the receive path's own writers (media/stream_file.py): two
legs of synthetic conversation (tone bursts with noise, the parties taking turns), then
`finalise_call` runs `--repeat` times per row. CPU is `time.process_time()` (user + system of
this process, so the kernel's copying of the written file counts), wall is `perf_counter`.
The first table is PCMU into every format; the second, each codec into WAV, with the CPU of
`decode_stretch` alone for one leg beside it. Codec legs are encoded by the independent
encoders of tests/encoders.py (bcg729 for G.729, VisualOn for AMR-WB, FFmpeg's own for AMR-NB
and G.726), packetised as SRCs send them: G.729 two 10 ms frames per 20 ms packet (with Annex B
VAD for G729-VAD: SID frames and nothing sent in the pauses), AMR 12.2 and AMR-WB 23.85 kbit/s
bandwidth-efficient, one frame per packet, G.726-32 80 bytes per packet. Targets: WAV at most
15 ms of CPU per 5-minute PCMU call; a 5-minute G.729 call at most 500 ms.

`--short CALLS` measures the fixed cost of a finalisation instead (no other table): the parts of
a 20-second two-leg PCMU call, and of a call whose two streams got no RTP, are written by the
receive path itself (`StreamRecorder`, 20 ms packets, a tick a second), then each is finalised
CALLS times as a finalisation process does (`keep_heap`, then `run_job`: WAV, stereo,
metrics, fsync, parts removed; every run on a fresh copy of the parts, made outside the timed
part), in `--repeat` rounds; the table gives the median and minimum over the rounds of CPU ms
per call. `--dir /dev/shm` puts the recordings on tmpfs, as bench/e2e has them.
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

from siprec_node.media.decode import FrameLog, decode_stretch
from siprec_node.media.finalise import CallInfo, ParticipantInfo, finalise_call
from siprec_node.media.stream_file import (
    FramesWriter,
    StreamInfo,
    WavG711Writer,
    info_file_name,
    media_file_name,
    read_frames,
    write_stream_info,
)
from siprec_node.media.stream_recorder import StreamRecorder
from siprec_node.recorder.finalise_pool import FinaliseJob, run_job
from siprec_node.recorder.finalise_worker import keep_heap
from siprec_node.siprec.codecs import PayloadFormat
from siprec_node.siprec.sdp_answer import NegotiatedStream

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for tests/
from tests import encoders

RATE = 8000
TARGET_MS = 15.0
TARGET_G729_MS = 500.0
CODECS = ("PCMU", "G729", "G729-VAD", "AMR", "AMR-WB", "G726-32")
SHORT_SECONDS = 20
EPOCH = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PEOPLE = (ParticipantInfo("a", streams=(0,)), ParticipantInfo("b", streams=(1,)))


def ended_call(seconds: float) -> CallInfo:
    """The call every finalisation here records: started at EPOCH, ended by a BYE."""
    return CallInfo(
        session_id="bench",
        call_id="bench@example.com",
        node_id="bench",
        status="ended",
        end_reason="bye",
        started_at=EPOCH,
        ended_at=EPOCH + timedelta(seconds=seconds),
    )


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


def _resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return samples
    return np.repeat(samples, rate // RATE)  # crude, but a conversation all the same


def codec_packets(codec: str, samples: np.ndarray) -> tuple[PayloadFormat, list[tuple[int, bytes]]]:
    """One leg as RTP payloads of ``codec`` at their positions (RTP clock units)."""
    if codec in ("G729", "G729-VAD"):
        frames = encoders.g729_frames(samples, vad=codec == "G729-VAD")
        packets = [
            (i * 80, b"".join(frames[i : i + 2]))
            for i in range(0, len(frames), 2)
            if any(frames[i : i + 2])
        ]
        return PayloadFormat(18, "G729", 8000), packets
    if codec == "AMR":
        frames = encoders.amrnb_frames(samples, 12200)
        payloads = [encoders.amr_payload([f], wideband=False, octet_aligned=False) for f in frames]
        return PayloadFormat(97, "AMR", 8000), [(i * 160, p) for i, p in enumerate(payloads)]
    if codec == "AMR-WB":
        frames = encoders.amrwb_frames(_resampled(samples, 16000), 8)
        payloads = [encoders.amr_payload([f], wideband=True, octet_aligned=False) for f in frames]
        return PayloadFormat(98, "AMR-WB", 16000), [(i * 320, p) for i, p in enumerate(payloads)]
    if codec == "G726-32":
        data = encoders.g726_bytes(samples, 4, little_endian=True)
        return PayloadFormat(2, "G726-32", 8000), [
            (i * 2, data[i : i + 80]) for i in range(0, len(data), 80)
        ]
    raise ValueError(f"no bench for {codec}")


def write_codec_parts(parts: Path, codec: str, minutes: float, epoch: datetime) -> None:
    """Two legs of ``codec`` as frame logs, as the receive path writes them."""
    parts.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    for index in (0, 1):
        fmt, packets = codec_packets(codec, conversation(seconds - 0.2, index))
        writer = FramesWriter(parts / media_file_name(index, fmt.name), fmt.clock_rate)
        for position, payload in packets:
            writer.write(position, payload)
        writer.close()
        info = StreamInfo(
            index=index,
            label=str(index + 1),
            codec=fmt.name,
            payload_type=fmt.payload_type,
            clock_rate=fmt.clock_rate,
            channels=1,
            epoch=epoch.timestamp(),
            packets=len(packets),
            closed=True,
        )
        write_stream_info(parts / info_file_name(index), info)


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


def record_short_call(parts: Path, epoch: float, seconds: float, rtp: bool) -> None:
    """Two PCMU legs recorded by `StreamRecorder` as the receive path does (20 ms packets,
    a tick a second, closed at the end); `rtp=False`: no packet on either leg."""
    recorders = []
    for index in (0, 1):
        stream = NegotiatedStream(
            index, str(index + 1), "audio", True, 40000 + 2 * index, "RTP/AVP", codec="PCMU",
            payload_type=0, clock_rate=RATE, channels=1, direction="recvonly",
        )  # fmt: skip
        recorders.append(StreamRecorder(stream, parts, epoch))
    if rtp:
        legs = [pcmu(conversation(seconds - 0.2, index)) for index in (0, 1)]
        for k in range(len(legs[0]) // 160):
            arrival = epoch + 0.05 + k * 0.02
            for index, (recorder, codes) in enumerate(zip(recorders, legs, strict=True)):
                header = bytes((0x80, 0)) + (k & 0xFFFF).to_bytes(2, "big")
                header += (k * 160).to_bytes(4, "big") + (0x1000 + index).to_bytes(4, "big")
                recorder.on_rtp(header + codes[k * 160 : (k + 1) * 160], arrival)
            if k % 50 == 49:
                for recorder in recorders:
                    recorder.tick(arrival)
    for recorder in recorders:
        recorder.close(epoch + seconds)


def short_calls(root: Path, calls: int, repeat: int, durable: bool) -> int:
    """The `--short` table: CPU ms per finalisation of a short call and of an empty one."""
    call = ended_call(SHORT_SECONDS)
    keep_heap()  # as a finalisation process does
    print(
        f"run_job: {SHORT_SECONDS}-second call, 2 PCMU streams, wav stereo, metrics, "
        f"{'fsync' if durable else 'no fsync'}, parts removed; {calls} calls per round, "
        f"{repeat} rounds (python {sys.version.split()[0]}, numpy {np.__version__})"
    )
    print(f"{'call':<22} {'CPU ms/call med':>15} {'CPU ms/call min':>15} {'output':>10}")
    for name, rtp in (("20 s, both legs RTP", True), ("no RTP on either leg", False)):
        source = root / f"{'short' if rtp else 'empty'}.parts"
        record_short_call(source, EPOCH.timestamp(), SHORT_SECONDS, rtp)
        per_call: list[float] = []
        size = 0
        for _ in range(repeat):
            day = root / "day"
            day.mkdir()
            for n in range(calls + 1):  # the first call warms caches up
                shutil.copytree(source, day / f"c{n}.parts")
            cpu = 0.0
            for n in range(calls + 1):
                job = FinaliseJob(
                    str(day / f"c{n}.parts"), str(day), f"c{n}", call, "wav", "stereo", PEOPLE,
                    remove_parts=True,
                )  # fmt: skip
                c0 = time.process_time()
                done = run_job(job)
                if n:
                    cpu += time.process_time() - c0
            size = sum(p.stat().st_size for p in done.recording.files)
            per_call.append(cpu * 1000 / calls)
            shutil.rmtree(day)
        print(
            f"{name:<22} {statistics.median(per_call):>15.2f} {min(per_call):>15.2f} "
            f"{size / 1e6:>8.2f}MB"
        )
    return 0


def timed_finalise(
    parts: Path, root: Path, name: str, repeat: int, call: CallInfo, **kw: object
) -> tuple[list[float], list[float], int]:
    """CPU and wall milliseconds of ``repeat`` first finalisations (after one warm-up)."""
    cpu, wall = [], []
    size = 0
    for run in range(repeat + 1):
        out = root / f"out-{name}-{run}"  # a first finalisation each time
        c0, w0 = time.process_time(), time.perf_counter()
        result = finalise_call(
            parts, output_dir=out, stem="call", call=call, participants=PEOPLE, **kw
        )
        c1, w1 = time.process_time(), time.perf_counter()
        if run:  # the first run warms caches (tables, codec contexts) up
            cpu.append((c1 - c0) * 1000)
            wall.append((w1 - w0) * 1000)
        size = sum(p.stat().st_size for p in result.files)
        shutil.rmtree(out)  # outside the timed part
    return cpu, wall, size


def decode_ms(parts: Path, repeat: int) -> float:
    """Median CPU milliseconds of `decode_stretch` over the first leg's frame log."""
    info = parts / info_file_name(0)
    import json

    meta = json.loads(info.read_text())
    fmt = PayloadFormat(meta["payload_type"], meta["codec"], meta["clock_rate"])
    clock, records = read_frames(parts / media_file_name(0, fmt.name))
    log = FrameLog(clock, np.array([p for p, _ in records], np.int64), [r for _, r in records])
    times = []
    for _ in range(repeat):
        c0 = time.process_time()
        decoded = decode_stretch(fmt, log)
        times.append((time.process_time() - c0) * 1000)
        assert decoded.errors == 0, decoded.errors
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--no-fsync", action="store_true", help="finalise with durable=False")
    parser.add_argument(
        "--codecs",
        default=",".join(CODECS),
        help=f"codec rows of the second table, any of {', '.join(CODECS)} ('' for none)",
    )
    parser.add_argument(
        "--short",
        type=int,
        default=0,
        metavar="CALLS",
        help="only the fixed cost: finalise a 20-second call and an empty one CALLS times each",
    )
    args = parser.parse_args(argv)
    if args.short:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            return short_calls(Path(tmp), args.short, args.repeat, not args.no_fsync)

    call = ended_call(args.minutes * 60)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        write_parts(root / "call.parts", args.minutes, EPOCH)
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
                cpu, wall, size = timed_finalise(
                    root / "call.parts",
                    root,
                    f"{fmt}-{metrics}",
                    args.repeat,
                    call,
                    fmt=fmt,
                    metrics=metrics,
                    durable=not args.no_fsync,
                )
                print(
                    f"{fmt:<9} {'yes' if metrics else 'no':<8} {statistics.median(cpu):>10.1f} "
                    f"{min(cpu):>10.1f} {statistics.median(wall):>11.1f} {size / 1e6:>8.2f}MB"
                )
        print(f"target: wav <= {TARGET_MS:g} ms CPU per 5-minute call")
        codecs = [c for c in args.codecs.split(",") if c]
        if codecs:
            print()
            print(
                f"finalise_call per codec: {args.minutes:g}-minute call, 2 streams, wav, "
                f"stereo, {'no fsync' if args.no_fsync else 'fsync'}, {args.repeat} runs"
            )
            print(
                f"{'codec':<9} {'CPU ms med':>10} {'CPU ms min':>10} {'wall ms med':>11} "
                f"{'decode 1 leg':>12} {'output':>10}"
            )
        for codec in codecs:
            parts = root / f"{codec}.parts"
            if codec == "PCMU":
                write_parts(parts, args.minutes, EPOCH)
            else:
                write_codec_parts(parts, codec, args.minutes, EPOCH)
            cpu, wall, size = timed_finalise(
                parts, root, codec, args.repeat, call, fmt="wav", durable=not args.no_fsync
            )
            leg = decode_ms(parts, args.repeat) if codec != "PCMU" else float("nan")
            print(
                f"{codec:<9} {statistics.median(cpu):>10.1f} {min(cpu):>10.1f} "
                f"{statistics.median(wall):>11.1f} {leg:>12.1f} {size / 1e6:>8.2f}MB"
            )
        if codecs:
            print(f"target: G.729 <= {TARGET_G729_MS:g} ms CPU per 5-minute call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
