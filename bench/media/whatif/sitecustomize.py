"""What-if experiments for bench/media: cheaper settings of the recorder, without editing src/.

    BENCH_PATCH=info=60,buffer=1000,sidecar=exchange,spread=10 \\
        PYTHONPATH=bench/media/whatif python bench/media/run.py --calls 1000

Python imports ``sitecustomize`` at start-up, in the bench and in every media worker it spawns
(WorkerEngine passes the environment on). With ``BENCH_PATCH`` unset nothing changes. Options,
comma-separated:

- ``info=S``: the recorder's sidecar interval (``StreamRecorder(info_interval=)``, 5 s);
- ``buffer=MS``: the WAV writer's buffer (``StreamRecorder(buffer_ms=)``, 100 ms);
- ``header=S``: how often the WAV header's sizes are rewritten (``header_interval``, 1 s);
- ``sidecar=exchange``: write the sidecar into a persistent ``.tmp`` twin (pwrite + ftruncate)
  and swap the names with ``renameat2(RENAME_EXCHANGE)``, instead of creating a new file and
  renaming it over the old one (no inode allocated or freed per update; still atomic for
  readers);
- ``spread=N``: ``LocalEngine`` ticks 1/N of its streams every ``TICK_INTERVAL / N`` instead
  of all of them every ``TICK_INTERVAL``, so no single pass blocks the loop.

These are measurements of proposals, not the node's behaviour.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("BENCH_PATCH", "")


def _apply(opts: dict[str, str]) -> None:
    import asyncio
    import ctypes
    import json
    import time

    from siprec_node.media import engine, stream_recorder

    init = stream_recorder.StreamRecorder.__init__
    kwargs: dict[str, float | int] = {}
    if "info" in opts:
        kwargs["info_interval"] = float(opts["info"])
    if "buffer" in opts:
        kwargs["buffer_ms"] = int(opts["buffer"])
    if "header" in opts:
        kwargs["header_interval"] = float(opts["header"])

    def patched_init(self, *args, **kw):  # type: ignore[no-untyped-def]
        for key, value in kwargs.items():
            kw.setdefault(key, value)
        init(self, *args, **kw)

    stream_recorder.StreamRecorder.__init__ = patched_init  # type: ignore[method-assign]

    if opts.get("sidecar") == "exchange":
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2

        def write_stream_info(path, info):  # type: ignore[no-untyped-def]
            path = os.fspath(path)
            tmp = path + ".tmp"
            data = json.dumps(info.to_dict(), separators=(",", ":")).encode()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
            if not os.path.exists(path):
                os.replace(tmp, path)
                return
            if libc.renameat2(at_fdcwd, tmp.encode(), at_fdcwd, path.encode(), rename_exchange):
                os.replace(tmp, path)  # a filesystem without RENAME_EXCHANGE

        stream_recorder.write_stream_info = write_stream_info

    if "spread" in opts:
        slices = max(1, int(opts["spread"]))

        async def tick_forever(self) -> None:  # type: ignore[no-untyped-def]
            turn = 0
            while True:
                await asyncio.sleep(engine.TICK_INTERVAL / slices)
                now = time.time()
                streams = list(self._streams.values())
                for stream in streams[turn::slices]:
                    try:
                        stream.recorder.tick(now)
                    except Exception:
                        engine.log.exception("recorder_tick_failed")
                turn = (turn + 1) % slices

        engine.LocalEngine._tick_forever = tick_forever  # type: ignore[method-assign]


if _SPEC:
    _apply(dict(item.split("=", 1) for item in _SPEC.split(",") if item))
