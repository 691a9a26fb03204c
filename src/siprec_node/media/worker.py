"""A media worker process: records the streams the SIP process hands it over a control socket.

Started by :class:`~siprec_node.media.engine.WorkerEngine` as
``python -m siprec_node.media.worker --fd N``. Requests are JSON datagrams on a SOCK_SEQPACKET
socket (the RTP/RTCP sockets of an ``open`` ride along as SCM_RIGHTS); each gets a JSON reply
with the same ``id``. The worker exits when the control socket closes (its parent is gone) or on
``stop``, closing every file cleanly first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

import structlog

from siprec_node.log import configure_logging
from siprec_node.media.engine import CONTROL_MAX, LocalEngine, StreamSpec

log = structlog.get_logger("siprec_node.media.worker")


class _Control:
    def __init__(self, sock: socket.socket, engine: LocalEngine) -> None:
        self.sock = sock
        self.engine = engine
        self.done = asyncio.Event()

    def on_readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, CONTROL_MAX, 2)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.done.set()
                return
            asyncio.get_running_loop().create_task(self.handle(json.loads(data), fds))

    async def handle(self, message: dict[str, Any], fds: list[int]) -> None:
        reply: dict[str, Any] = {"id": message.get("id"), "ok": True}
        try:
            op = message["op"]
            if op == "open":
                spec = StreamSpec(**message["spec"])
                rtp = socket.socket(fileno=fds[0])
                rtcp = socket.socket(fileno=fds[1])
                await self.engine.open_stream(spec, rtp, rtcp)
            elif op == "pause":
                await self.engine.pause(message["session_id"], message["index"], message["at"])
            elif op == "resume":
                await self.engine.resume(message["session_id"], message["index"], message["at"])
            elif op == "renegotiate":
                await self.engine.renegotiate(
                    message["session_id"], message["index"], message["stream"]
                )
            elif op == "close":
                reply["stats"] = await self.engine.close_call(message["session_id"], message["at"])
            elif op == "stats":
                reply["stats"] = await self.engine.stats(message["session_id"])
            elif op == "lag":
                reply["lag"] = await self.engine.loop_lag(bool(message.get("reset")))
                reply["receiver"] = self.engine.receiver_stats()
            elif op == "stop":
                await self.engine.stop()
                self.done.set()
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:
            log.exception("media_request_failed", op=message.get("op"))
            reply = {"id": message.get("id"), "ok": False, "error": repr(exc)}
        try:
            self.sock.setblocking(True)
            self.sock.send(json.dumps(reply, default=str).encode())
        except OSError:
            self.done.set()
        finally:
            self.sock.setblocking(False)


async def serve(fd: int, index: int, receive_path: str = "auto") -> None:
    """Serve the control socket ``fd`` until it closes or a ``stop`` arrives."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    engine = LocalEngine(receive_path)
    await engine.start()
    control = _Control(sock, engine)
    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), control.on_readable)
    sock.setblocking(True)
    sock.send(b'{"ready": true}')
    sock.setblocking(False)
    log.info("media_worker_ready", worker=index, receive_path=engine.receive_path)
    await control.done.wait()
    loop.remove_reader(sock.fileno())
    await engine.stop()
    sock.close()
    log.info("media_worker_stopped", worker=index)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(prog="siprec-node media worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--receive-path", default="auto", choices=("auto", "c", "python"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    structlog.contextvars.bind_contextvars(worker=args.index)
    try:
        import uvloop
    except ImportError:  # stock asyncio: the engine lowers the datagram read size itself
        asyncio.run(serve(args.fd, args.index, args.receive_path))
    else:
        uvloop.run(serve(args.fd, args.index, args.receive_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
