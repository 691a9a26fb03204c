"""The Python floor for bench/media: uvloop datagram endpoints that only count packets.

    python bench/media/py_sink.py --count N --port-min P --ports-out F [--rcvbuf BYTES]

The same interface as sink.c (binds N sockets from P, writes their ports to F, prints READY,
receives until SIGTERM, prints one JSON line with packets and CPU from READY on), receiving the
way a media worker does (one uvloop datagram endpoint per socket, a Python callback per
datagram with its arrival time) but recording nothing: what any design on uvloop pays before
the recorder's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import socket
import time
from pathlib import Path
from typing import Any


class Counter(asyncio.DatagramProtocol):
    packets = 0
    odd = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        Counter.packets += 1
        arrival = time.time()  # the engine's _Receiver stamps every datagram too
        if len(data) != 172 or arrival < 0:
            Counter.odd += 1


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    port = args.port_min
    while len(socks) < args.count and port < 65536:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if args.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
        try:
            sock.bind((args.host, port))
        except OSError:
            sock.close()
        else:
            sock.setblocking(False)
            socks.append(sock)
        port += 1
    if len(socks) < args.count:
        raise SystemExit(f"bound only {len(socks)} of {args.count} sockets")
    for sock in socks:
        await loop.create_datagram_endpoint(Counter, sock=sock)
    rcvbuf = socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    Path(args.ports_out).write_text("".join(f"{s.getsockname()[1]}\n" for s in socks))
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"READY {len(socks)}", flush=True)
    await done.wait()
    await asyncio.sleep(0.05)  # what is still queued
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sockets": len(socks),
        "packets": Counter.packets,
        "odd_size": Counter.odd,
        "rcvbuf": rcvbuf,
        "cpu_user_s": r1.ru_utime - r0.ru_utime,
        "cpu_sys_s": r1.ru_stime - r0.ru_stime,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--port-min", type=int, required=True)
    parser.add_argument("--ports-out", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rcvbuf", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # as a worker does without uvloop
        result = asyncio.run(serve(args))
    else:
        result = uvloop.run(serve(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
