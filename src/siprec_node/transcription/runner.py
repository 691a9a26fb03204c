"""One job, start to finish, inside a worker process: read the sidecar, cut each turn's audio,
transcribe it, write `<stem>.vtt` and the texts into the sidecar, and return the texts for the
session store (which the calling process writes: it owns the store connection).

`init_process` builds the process's engine once (the model load is the slow part); `run_job`
uses it. CPU time is the process's own (`time.process_time`), which covers the engine's
threads: audio seconds per CPU second is the figure capacity planning needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..media import audio_out
from . import vtt
from .audio import RecordingUnreadable, turn_audio
from .engines import Engine, EngineSettings, build_engine
from .jobs import Job

_engine: Engine | None = None


@dataclass(frozen=True)
class TurnText:
    participant: str
    start_ms: int
    duration_ms: int
    text: str


@dataclass(frozen=True)
class JobResult:
    """What a job produced."""

    session_id: str
    media_epoch: str
    turns: tuple[TurnText, ...]
    vtt: str | None
    audio_s: float
    cpu_s: float
    wall_s: float
    engine: str
    model: str
    extra: dict[str, Any] = field(default_factory=dict)


def init_process(settings: EngineSettings) -> None:
    """Build this process's engine (a process pool's initializer)."""
    global _engine
    _engine = build_engine(settings)


def engine() -> Engine:
    if _engine is None:
        raise RuntimeError("init_process was not called in this process")
    return _engine


def read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecordingUnreadable(f"sidecar {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RecordingUnreadable(f"sidecar {path}: not a JSON object")
    return data


def update_sidecar(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the sidecar with `change` applied (atomically: temporary file, rename)."""
    data = read_sidecar(path)
    change(data)
    with audio_out.atomic_file(path, durable=True) as out:
        out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


def mark_failed(sidecar: str, error: str, attempts: int) -> None:
    """The sidecar's `transcription` after the job was dead-lettered."""

    def change(data: dict[str, Any]) -> None:
        data["transcription"] = {"status": "failed", "error": error, "attempts": attempts}

    update_sidecar(Path(sidecar), change)


def run_job(job: Job) -> JobResult:
    """Transcribe every turn of the job's recording (see module doc)."""
    wall, cpu = time.perf_counter(), time.process_time()
    sidecar = Path(job.sidecar)
    meta = read_sidecar(sidecar)
    if meta.get("session_id") not in (None, job.session_id):
        raise RecordingUnreadable(f"sidecar {sidecar} is session {meta.get('session_id')}")
    stt = engine()
    texts = [
        TurnText(t.participant, t.start_ms, t.duration_ms, stt.transcribe(t.samples))
        for t in turn_audio(meta, sidecar.parent)
    ]
    audio_s = sum(t.duration_ms for t in texts) / 1000
    stem = sidecar.name.removesuffix(".json")
    vtt_path = sidecar.parent / f"{stem}.vtt"
    cues = [vtt.Cue(t.start_ms, t.start_ms + t.duration_ms, t.participant, t.text) for t in texts]
    with audio_out.atomic_file(vtt_path, durable=True) as out:
        out.write(vtt.render(cues).encode())
    cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall

    def change(data: dict[str, Any]) -> None:
        turns = (data.get("metrics") or {}).get("turns") or []
        for turn, text in zip(turns, texts, strict=False):
            turn["text"] = text.text
        data["transcription"] = {
            "status": "done",
            "error": None,
            "engine": stt.name,
            "model": stt.model,
            "vtt": vtt_path.name,
            "audio_s": round(audio_s, 3),
            "cpu_s": round(cpu_s, 3),
        }

    update_sidecar(sidecar, change)
    return JobResult(
        session_id=job.session_id,
        media_epoch=str(meta.get("media_epoch")),
        turns=tuple(texts),
        vtt=str(vtt_path),
        audio_s=audio_s,
        cpu_s=cpu_s,
        wall_s=wall_s,
        engine=stt.name,
        model=stt.model,
    )
