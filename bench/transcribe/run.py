"""Throughput of transcription: audio seconds per CPU second of Whisper tiny.en (int8,
faster-whisper) at 1 and 2 threads, and what a worker costs around the model.

    python bench/transcribe/run.py [--turns 8] [--repeat 3] [--threads 1,2] [--redis URL]

A conversation of espeak-ng sentences (two speakers taking turns, 8 kHz, as a recording of a
G.711 call is) is written as finalisation leaves it: a stereo WAV and its sidecar. Rows:

- `model` — `WhisperModel.transcribe` on each turn's 16 kHz audio, cut beforehand: the
  engine alone. CPU is `time.process_time()` of the process, which includes CTranslate2's
  threads; audio/CPU is speech seconds per CPU second, audio/wall the same per wall second.
- `job` — `runner.run_job`: reading the sidecar, decoding and cutting the audio, the model,
  the VTT and the sidecar rewrite. Its CPU beyond the model row's is the worker's overhead.
- `service` (with `--redis`, default the local Redis) — jobs through `Transcriber`: the Redis
  stream, a spawned worker process, the texts written into the session store, the ack. CPU of
  the service's own process per job (queue, store, IPC), beside the worker's.

Each row runs in a fresh process (the model loaded once, one warm-up turn not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

SENTENCES = [
    "Good morning, thank you for calling the support line.",
    "Hello, my internet connection stopped working yesterday.",
    "I am sorry to hear that. Let me check your account.",
    "I would like to check the status of my order.",
    "Your connection will work again in one hour.",
    "Thank you very much, that is good news.",
]


def _recording(directory: Path, turns: int) -> Path:
    from tests.integration.transcription.speech import ALICE, BOB, write_recording

    lines = [((ALICE, BOB)[n % 2], SENTENCES[n % len(SENTENCES)]) for n in range(turns)]
    return write_recording(directory, uuid.uuid4().hex, lines).sidecar


class _NoModel:
    name, model = "none", "none"

    def transcribe(self, samples: object) -> str:
        return "words"


def _measure(sidecar: str, threads: int, repeat: int, queue: multiprocessing.Queue) -> None:
    from siprec_node.transcription import runner
    from siprec_node.transcription.audio import turn_audio
    from siprec_node.transcription.engines import EngineSettings
    from siprec_node.transcription.jobs import Job

    load = time.perf_counter()
    runner.init_process(EngineSettings("whisper", threads=threads))
    load = time.perf_counter() - load
    engine = runner.engine()
    path = Path(sidecar)
    meta = json.loads(path.read_text())
    turns = turn_audio(meta, path.parent)
    speech = sum(t.duration_ms for t in turns) / 1000
    engine.transcribe(turns[0].samples)  # warm-up
    model_cpu, model_wall = [], []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        for turn in turns:
            engine.transcribe(turn.samples)
        model_cpu.append(time.process_time() - cpu)
        model_wall.append(time.perf_counter() - wall)
    job_cpu, job_wall = [], []
    pristine = path.read_bytes()
    for _ in range(repeat):
        path.write_bytes(pristine)
        result = runner.run_job(Job(str(meta["session_id"]), sidecar))
        job_cpu.append(result.cpu_s)
        job_wall.append(result.wall_s)
    # the same job with an engine that answers at once: what the worker adds, measured alone
    runner._engine = _NoModel()
    bare = []
    for _ in range(repeat * 3):
        path.write_bytes(pristine)
        bare.append(runner.run_job(Job(str(meta["session_id"]), sidecar)).cpu_s)
    path.write_bytes(pristine)
    queue.put(
        {
            "threads": threads,
            "load_s": load,
            "speech_s": speech,
            "turns": len(turns),
            "model_cpu": statistics.median(model_cpu),
            "model_wall": statistics.median(model_wall),
            "job_cpu": statistics.median(job_cpu),
            "job_wall": statistics.median(job_wall),
            "bare_cpu": statistics.median(bare),
        }
    )


async def _service(directory: Path, url: str, jobs: int, turns: int) -> dict[str, float]:
    from tests.integration.transcription.speech import (
        ALICE,
        BOB,
        session_record,
        write_recording,
    )

    from siprec_node.session import RedisSessionStore
    from siprec_node.transcription import EngineSettings
    from siprec_node.transcription.redis_queue import RedisJobQueue
    from siprec_node.transcription.service import Transcriber

    prefix = f"bench-transcribe-{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(url, prefix=prefix)
    queue = RedisJobQueue(store)
    recordings = []
    for _ in range(jobs):
        lines = [((ALICE, BOB)[n % 2], SENTENCES[n % len(SENTENCES)]) for n in range(turns)]
        recording = write_recording(directory, uuid.uuid4().hex, lines)
        await store.save(session_record(recording))  # type: ignore[arg-type]
        recordings.append(recording)
    service = Transcriber(EngineSettings("whisper"), queue, store, consumer="bench", workers=1)
    await service.start()
    from siprec_node.transcription.jobs import Job

    await queue.put(Job(recordings[0].session_id, str(recordings[0].sidecar)))  # warm-up
    while service.stats.done < 1:
        await asyncio.sleep(0.05)
    cpu, wall = time.process_time(), time.perf_counter()
    worker_cpu = service.stats.cpu_s
    for recording in recordings[1:]:
        await queue.put(Job(recording.session_id, str(recording.sidecar)))
    while service.stats.done < jobs:
        await asyncio.sleep(0.02)
    own_cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    worker_cpu = service.stats.cpu_s - worker_cpu
    await service.stop()
    cleanup = RedisSessionStore(url, prefix=prefix)
    keys = [k async for k in cleanup.client.scan_iter(match=f"{prefix}*")]
    if keys:
        for key in keys:
            await cleanup.client.delete(key)
    await cleanup.close()
    await store.close()
    return {"jobs": jobs - 1, "own_cpu": own_cpu, "worker_cpu": worker_cpu, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip")
    parser.add_argument("--jobs", type=int, default=5, help="service row: jobs after a warm-up")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-transcribe-"))
    sidecar = _recording(directory, args.turns)
    context = multiprocessing.get_context("spawn")
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        queue = context.Queue()
        proc = context.Process(target=_measure, args=(str(sidecar), threads, args.repeat, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    first = rows[0]
    print(
        f"tiny.en int8, {first['turns']} turns, {first['speech_s']:.1f} s of speech, "
        f"median of {args.repeat}\n"
    )
    print("| row | threads | model load s | CPU s | wall s | audio s / CPU s | audio s / wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for name, cpu, wall in (
            ("model", r["model_cpu"], r["model_wall"]),
            ("job", r["job_cpu"], r["job_wall"]),
        ):
            print(
                f"| {name} | {r['threads']} | {r['load_s']:.2f} | {cpu:.2f} | {wall:.2f} | "
                f"{r['speech_s'] / cpu:.2f} | {r['speech_s'] / wall:.2f} |"
            )
    print()
    for r in rows:
        extra = r["bare_cpu"]
        print(
            f"worker overhead around the model (the job with an engine that answers at once; "
            f"{r['threads']} thread(s) row): {extra * 1000:.0f} ms CPU per job "
            f"({100 * extra / r['model_cpu']:.1f} % of the model's), "
            f"{1000 * extra / r['turns']:.1f} ms per turn"
        )
    if args.redis:
        from siprec_node.log import configure_logging

        configure_logging("warning", "console")
        s = asyncio.run(_service(directory, args.redis, args.jobs + 1, args.turns))
        print(
            f"service (Redis stream, worker process, store write, ack), {s['jobs']} jobs: "
            f"{1000 * s['own_cpu'] / s['jobs']:.0f} ms CPU per job in the service process, "
            f"{s['worker_cpu'] / s['jobs']:.2f} s in the worker, "
            f"{s['wall'] / s['jobs']:.2f} s wall per job"
        )


if __name__ == "__main__":
    main()
