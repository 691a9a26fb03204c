"""Hundreds of streams opened and closed at once through a real media worker.

The control socket queues only a few messages in the kernel (``net.unix.max_dgram_qlen``, 10 by
default), so a burst of opens and closes used to meet ``EAGAIN`` and report it as ``WorkerDied``:
closes failed and sidecars lost their statistics. Every open must succeed, every close return
both streams' statistics (with the packets sent to them), the worker must not be restarted,
and its descriptors must be back where they were.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from siprec_node.media.engine import StreamSpec
from siprec_node.media.worker_engine import WorkerEngine
from siprec_node.siprec.sdp_answer import NegotiatedStream

pytestmark = pytest.mark.integration

CALLS = 320
STREAMS = 2


def _negotiated(index: int, port: int) -> NegotiatedStream:
    return NegotiatedStream(
        index=index,
        label=str(index + 1),
        media="audio",
        accepted=True,
        port=port,
        proto="RTP/AVP",
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        direction="recvonly",
        remote_address="127.0.0.1",
        remote_port=9,
    )


def _bound_pair() -> tuple[socket.socket, socket.socket]:
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", 0))
    return rtp, rtcp


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_hundreds_of_opens_and_closes_at_once(tmp_path: Path) -> None:
    engine = WorkerEngine(1, log_format="json")
    await engine.start()
    try:
        (pid,) = engine.pids
        baseline = _fds(pid)
        epoch = time.time()
        ports: dict[tuple[str, int], int] = {}
        jobs = []
        for call in range(CALLS):
            session = f"burst-{call}"
            for index in range(STREAMS):
                rtp, rtcp = _bound_pair()
                port = rtp.getsockname()[1]
                ports[(session, index)] = port
                spec = StreamSpec(
                    session_id=session,
                    index=index,
                    negotiated=_negotiated(index, port).to_dict(),
                    parts_dir=str(tmp_path / session),
                    epoch=epoch,
                    sources=["127.0.0.1"],
                )
                jobs.append(engine.open_stream(spec, rtp, rtcp))
        # The worker stopped while the burst goes out, as one busy elsewhere would be: the opens
        # must meet a full queue however fast the worker is (it kept up with the burst once).
        os.kill(pid, signal.SIGSTOP)
        try:
            opening = asyncio.gather(*jobs)
            await asyncio.sleep(0.3)
        finally:
            os.kill(pid, signal.SIGCONT)
        await opening
        assert _fds(pid) >= baseline + CALLS * STREAMS * 2

        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for (_, index), port in ports.items():
            for n in range(3):
                header = struct.pack("!BBHII", 0x80, 0, 100 + n, 1000 + 160 * n, 0x1000 + index)
                sender.sendto(header + b"\xff" * 160, ("127.0.0.1", port))
        sender.close()
        await asyncio.sleep(1.0)

        closes = await asyncio.gather(
            *(engine.close_call(f"burst-{call}", time.time()) for call in range(CALLS))
        )
        assert engine.restarts == 0
        for stats in closes:
            assert sorted(stats) == list(range(STREAMS))
            assert all(s["packets"] == 3 and s["closed"] for s in stats.values()), stats
            assert all(s["foreign_packets"] == 0 for s in stats.values())
        assert engine.pids == [pid]
        assert _fds(pid) == baseline
        worker = engine._workers[0]
        assert worker.channel is not None and worker.channel.waits > 0  # it was a burst
    finally:
        await engine.stop()
