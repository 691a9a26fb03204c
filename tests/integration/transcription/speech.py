"""Speech for the transcription tests: espeak-ng sentences, a word error rate, recordings
written as finalisation writes them, and `transcribe-worker` processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from siprec_node.media.decode import resample
from tests.integration.node_process import ROOT

ESPEAK = shutil.which("espeak-ng")
ALICE, BOB = "YWxpY2U=", "Ym9i"  # participant ids of the test client's metadata


def speak(text: str, rate: int = 8000) -> np.ndarray:
    """`text` spoken by espeak-ng, as float samples in [-1, 1] at `rate`."""
    if ESPEAK is None:
        raise AssertionError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        subprocess.run([ESPEAK, "-s", "160", "-w", out.name, text], check=True)
        with wave.open(out.name) as wav:
            source = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return resample(pcm.copy(), source, rate).astype(np.float64) / 32768.0


CONTRACTIONS = {
    "i'm": "i am",
    "it's": "it is",
    "don't": "do not",
    "that's": "that is",
    "i'll": "i will",
    "can't": "cannot",
    "we'll": "we will",
    "you're": "you are",
}


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped, common contractions spelled out."""
    found = re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
    return " ".join(CONTRACTIONS.get(w, w) for w in found).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(len(ref), 1)


# -- a recording as finalisation leaves it --------------------------------------------------


@dataclass
class Recording:
    sidecar: Path
    session_id: str
    texts: list[tuple[str, str]]
    """(participant, spoken text) per turn, in order."""
    epoch: datetime
    turns: list[dict[str, object]] = field(default_factory=list)


def write_recording(
    directory: Path, session_id: str, lines: list[tuple[str, str]], gap: float = 0.6
) -> Recording:
    """A stereo 8 kHz WAV (Alice left, Bob right) with `lines` spoken in turn, and its sidecar
    with the turns (start and duration of each sentence), as `media/finalise.py` writes them."""
    rate = 8000
    clips = [(who, speak(text)) for who, text in lines]
    total = sum(c.size for _, c in clips) / rate + gap * (len(clips) + 1)
    audio = np.zeros((round(total * rate), 2))
    turns = []
    at = gap
    for who, clip in clips:
        first = round(at * rate)
        audio[first : first + clip.size, 0 if who == ALICE else 1] = clip
        turns.append(
            {
                "participant": who,
                "start_ms": round(at * 1000),
                "duration_ms": round(clip.size / rate * 1000),
                "interrupted": False,
            }
        )
        at += clip.size / rate + gap
    stem = f"rec-{session_id}"
    wav_path = directory / f"{stem}.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    epoch = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    sidecar = {
        "schema": 1,
        "session_id": session_id,
        "media_epoch": epoch.isoformat(timespec="milliseconds"),
        "duration_s": round(total, 3),
        "files": [wav_path.name],
        "audio": [{"path": wav_path.name, "streams": [0, 1], "channels": 2, "sample_rate": rate}],
        "participants": [
            {"id": ALICE, "streams": [0], "channel": "left"},
            {"id": BOB, "streams": [1], "channel": "right"},
        ],
        "streams": [
            {"index": 0, "participant": ALICE, "pauses": []},
            {"index": 1, "participant": BOB, "pauses": []},
        ],
        "pauses": [],
        "metrics": {"turn_count": len(turns), "turns": turns},
    }
    path = directory / f"{stem}.json"
    path.write_text(json.dumps(sidecar))
    return Recording(path, session_id, list(lines), epoch, turns)


def session_record(recording: Recording, node: str = "node-a") -> object:
    """The ended session of a recording, as a node stores it (turns, transcription pending)."""
    from siprec_node.session import SessionState, SessionStatus, TranscriptionStatus

    state = SessionState(
        id=recording.session_id,
        call_id=f"{recording.session_id}@test",
        node_id=node,
        created_at=recording.epoch,
    )
    for turn in recording.turns:
        start = recording.epoch + timedelta(milliseconds=int(turn["start_ms"]))  # type: ignore[call-overload]
        state.add_turn(str(turn["participant"]), start, int(turn["duration_ms"]))  # type: ignore[call-overload]
    state.transition(SessionStatus.ENDED, reason="bye")
    state.transcription = TranscriptionStatus("pending")
    return state


# -- worker processes -----------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    lines: list[dict[str, object]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        def read() -> None:
            assert self.proc.stderr is not None
            for line in iter(self.proc.stderr.readline, b""):
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.raw.append(text)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(text))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def events(self, event: str, **match: object) -> list[dict[str, object]]:
        return [
            ln
            for ln in list(self.lines)
            if ln.get("event") == event and all(ln.get(k) == v for k, v in match.items())
        ]

    def wait_for(self, event: str, timeout: float = 30.0, count: int = 1, **match: object) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events(event, **match)) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no {count}x {event} {match} (exit={self.proc.poll()}):\n" + "\n".join(self.raw[-30:])
        )

    def kill(self) -> None:
        """SIGKILL the worker and its worker processes (the machine died)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        self.reader.join(2)
        return code


def worker_config(directory: Path, redis_url: str, prefix: str, extra: str = "") -> Path:
    config = directory / "worker.toml"
    config.write_text(
        f'[store]\nbackend = "redis"\nurl = "{redis_url}"\nprefix = "{prefix}"\n\n'
        f'[log]\nlevel = "info"\nformat = "json"\n\n[transcription]\n{extra}\n'
    )
    return config


def start_worker(config: Path, *args: str) -> WorkerProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"  # the model is in the package: nothing may be fetched
    proc = subprocess.Popen(
        [sys.executable, "-m", "siprec_node", "transcribe-worker", "-c", str(config), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    worker = WorkerProcess(proc)
    worker.wait_for("transcription_started", timeout=30)
    return worker
