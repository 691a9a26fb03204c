"""A minimal server of the OpenAI transcription API on faster-whisper, for the `http` engine's
test: `POST /v1/audio/transcriptions` (multipart `file`, `model`, `language`,
`response_format` json or text; bearer token when started with one) answers `{"text": ...}`.

    python -m tests.integration.transcription.openai_server PORT [TOKEN]

Prints `ready` on stdout once listening; one line per request on stderr.
"""

from __future__ import annotations

import asyncio
import io
import sys

from aiohttp import web
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

from siprec_node.transcription.engines import model_path


def app(token: str | None) -> web.Application:
    model = WhisperModel(model_path("tiny.en"), device="cpu", compute_type="int8", cpu_threads=1)
    lock = asyncio.Lock()

    async def transcriptions(request: web.Request) -> web.Response:
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "file is required"}}, status=400)
        audio = decode_audio(io.BytesIO(upload.file.read()), sampling_rate=16000)
        language = str(form.get("language") or "en")

        def run() -> str:
            segments, _ = model.transcribe(audio, language=language, beam_size=1)
            return " ".join(s.text.strip() for s in segments).strip()

        async with lock:
            text = await asyncio.to_thread(run)
        print(f"transcribed model={form.get('model')} {audio.size / 16000:.2f}s", file=sys.stderr)
        if form.get("response_format") == "text":
            return web.Response(text=text)
        return web.json_response({"text": text})

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/v1/audio/transcriptions", transcriptions)
    return application


async def main(port: int, token: str | None) -> None:
    runner = web.AppRunner(app(token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
