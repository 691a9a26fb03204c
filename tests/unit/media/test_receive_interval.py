"""``media.receive_interval``: the C receive path reads on a timer while packets keep coming,
watches its sockets again when they go quiet, and loses nothing that waited meanwhile; and the
C receiver's bookkeeping of many sockets (one drain reads every ready one, slots by
descriptor)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import time
from pathlib import Path

import pytest

from siprec_node.media import fastpath
from siprec_node.media.engine import LocalEngine, StreamSpec
from tests.conftest import skip_unless_c_receive_path
from tests.unit.media.test_engine_streams import _spec as engine_spec

skip_unless_c_receive_path()


def _spec(parts: Path) -> StreamSpec:
    """test_engine_streams' PCMU stream 0 of call ``call``, its epoch now."""
    return dataclasses.replace(engine_spec(parts, "call", 0), epoch=time.time())


class _Stream:
    """One open stream of ``engine`` and a sender of in-order PCMU packets to it."""

    def __init__(self) -> None:
        self.rtp, self.rtcp = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in "ab")
        for sock in (self.rtp, self.rtcp):
            sock.bind(("127.0.0.1", 0))
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.address = self.rtp.getsockname()
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.seq = 0

    def send(self, count: int = 1) -> None:
        for _ in range(count):
            header = struct.pack("!BBHII", 0x80, 0, self.seq, self.seq * 160, 0x1234)
            self.sender.sendto(header + bytes([0x55]) * 160, self.address)
            self.seq += 1


async def _open(engine: LocalEngine, tmp_path: Path) -> _Stream:
    stream = _Stream()
    await engine.open_stream(_spec(tmp_path / "call.parts"), stream.rtp, stream.rtcp)
    return stream


def _drains(engine: LocalEngine) -> int:
    stats = engine.receiver_stats()
    assert stats is not None
    return int(stats["drains"])


async def test_a_steady_stream_is_read_once_per_interval_and_every_packet_recorded(
    tmp_path: Path,
) -> None:
    engine = LocalEngine("c", receive_interval=0.1)
    await engine.start()
    try:
        stream = await _open(engine, tmp_path)
        before = _drains(engine)
        for _ in range(100):  # a packet every ~5 ms for ~0.5 s
            stream.send()
            await asyncio.sleep(0.005)
        reads = _drains(engine) - before
        closed = await engine.close_call("call", time.time())
    finally:
        await engine.stop()
    # read on arrival would be ~100 reads; paced at 100 ms: one on the first packet, then one
    # per interval (a loaded machine can only stretch the interval, never shorten it)
    assert 2 <= reads <= 8
    assert closed[0]["packets"] == 100


async def test_read_on_arrival_without_an_interval(tmp_path: Path) -> None:
    engine = LocalEngine("c", receive_interval=0.0)
    await engine.start()
    try:
        stream = await _open(engine, tmp_path)
        before = _drains(engine)
        for _ in range(40):
            stream.send()
            await asyncio.sleep(0.005)
        reads = _drains(engine) - before
        await engine.close_call("call", time.time())
    finally:
        await engine.stop()
    assert reads >= 30


async def test_a_quiet_engine_stops_reading_on_a_timer_and_wakes_for_the_next_packet(
    tmp_path: Path,
) -> None:
    engine = LocalEngine("c", receive_interval=0.05)
    await engine.start()
    try:
        stream = await _open(engine, tmp_path)
        stream.send(3)
        await asyncio.sleep(0.3)  # the paced reads find nothing more: back to watching
        quiet = _drains(engine)
        await asyncio.sleep(0.3)
        assert _drains(engine) == quiet  # no timer reads while nothing comes
        stream.send()
        await asyncio.sleep(0.02)  # well under the interval: read on arrival
        assert _drains(engine) == quiet + 1
        assert (await engine.stats("call"))[0]["packets"] == 4
        await engine.close_call("call", time.time())
    finally:
        await engine.stop()


async def test_packets_waiting_at_a_pause_are_recorded_and_those_waiting_at_resume_are_not(
    tmp_path: Path,
) -> None:
    """Packets that came before the SRC's re-INVITE to inactive belong in the recording, those
    that came while paused do not, however long the interval kept them in the socket."""
    engine = LocalEngine("c", receive_interval=0.1)
    await engine.start()
    try:
        stream = await _open(engine, tmp_path)
        stream.send()
        await asyncio.sleep(0.01)  # read on arrival: the next read is 100 ms away
        stream.send(5)
        await asyncio.sleep(0.005)  # in the socket, not yet read
        await engine.pause("call", 0, time.time())
        stream.send(3)
        await asyncio.sleep(0.005)
        await engine.resume("call", 0, time.time())
        closed = await engine.close_call("call", time.time())
    finally:
        await engine.stop()
    assert closed[0]["packets"] == 6
    assert closed[0]["paused_packets"] == 3


async def test_stop_cancels_the_pending_read(tmp_path: Path) -> None:
    engine = LocalEngine("c", receive_interval=0.1)
    await engine.start()
    stream = await _open(engine, tmp_path)
    stream.send()
    await asyncio.sleep(0.01)
    await engine.stop()
    await asyncio.sleep(0.15)  # a timer left behind would read a closed receiver here
    assert engine.receiver_stats() is None


class _FailingOnce:
    """The engine's C receiver, whose next drain() raises once (an epoll_wait error)."""

    def __init__(self, rx: object) -> None:
        self._rx = rx
        self.failed = 0

    def drain(self) -> object:
        if not self.failed:
            self.failed += 1
            raise OSError(9, "Bad file descriptor")
        return self._rx.drain()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._rx, name)


@pytest.mark.parametrize("fail_in", ["the read on arrival", "a paced read"])
async def test_a_read_that_fails_does_not_stop_the_receiving(
    tmp_path: Path, fail_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = LocalEngine("c", receive_interval=0.05)
    await engine.start()
    try:
        stream = await _open(engine, tmp_path)
        if fail_in == "a paced read":
            stream.send()
            await asyncio.sleep(0.01)  # read on arrival; the next read is a paced one
        failing = _FailingOnce(engine._rx)
        engine._rx = failing
        for _ in range(20):
            stream.send()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.15)
        assert failing.failed == 1
        # read while the call is up (a close would read what waits whatever happened before)
        assert (await engine.stats("call"))[0]["packets"] == stream.seq
        await engine.close_call("call", time.time())
    finally:
        await engine.stop()


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="receive_interval"):
        LocalEngine("c", receive_interval=-0.01)


@pytest.mark.parametrize(("interval", "most", "least"), [(0.1, 8, 2), (0.0, None, 30)])
async def test_a_media_worker_reads_at_its_configured_interval(
    tmp_path: Path, interval: float, most: int | None, least: int
) -> None:
    from siprec_node.media.worker_engine import WorkerEngine

    engine = WorkerEngine(1, receive_path="c", receive_interval=interval)
    await engine.start()
    try:
        stream = _Stream()
        await engine.open_stream(_spec(tmp_path / "call.parts"), stream.rtp, stream.rtcp)

        async def drains() -> int:
            (lag,) = await engine.loop_lag()
            return int(lag["receiver"]["drains"])

        before = await drains()
        for _ in range(100):
            stream.send()
            await asyncio.sleep(0.005)
        reads = await drains() - before
        closed = await engine.close_call("call", time.time())
    finally:
        await engine.stop()
    assert closed[0]["packets"] == 100
    assert reads >= least
    assert most is None or reads <= most


def test_a_negative_interval_is_refused_by_the_worker_engine() -> None:
    from siprec_node.media.worker_engine import WorkerEngine

    with pytest.raises(ValueError, match="receive_interval"):
        WorkerEngine(1, receive_interval=-1.0)


def test_one_drain_reads_every_ready_socket_not_only_one_epoll_batch() -> None:
    """Paced reads find most sockets ready at once: more than one epoll_wait's worth (512)."""
    module = fastpath.module("c")
    assert module is not None
    rx = module.Receiver()
    socks = []
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(1200):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            socks.append(sock)
            rx.add(sock.fileno(), len(socks))
        for sock in socks:
            sender.sendto(b"\x80\x00\x00\x01" + bytes(168), sock.getsockname())
        handed = rx.drain()
        assert handed is not None
        assert sorted(handler for handler, _, _ in handed) == list(range(1, 1201))
        assert rx.datagrams == 1200 and rx.stats()["drains"] == 1
    finally:
        for sock in socks:
            rx.remove(sock.fileno())
            sock.close()
        rx.close()
        sender.close()


def test_sockets_come_and_go_in_any_order_and_each_keeps_its_handler() -> None:
    """The receiver finds a socket's slot by its descriptor (add, remove, foreign,
    set_sources): slots freed in any order are reused, and every datagram still reaches the
    handler its socket was added with."""
    import random

    module = fastpath.module("c")
    assert module is not None
    rx = module.Receiver()
    rng = random.Random(7)
    live: dict[int, socket.socket] = {}
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def add(count: int) -> None:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            rx.add(sock.fileno(), ("handler", sock.fileno()))
            live[sock.fileno()] = sock

    def remove(count: int) -> None:
        for fd in rng.sample(sorted(live), count):
            assert rx.remove(fd) is True
            assert rx.remove(fd) is False
            with pytest.raises(KeyError):
                rx.foreign(fd)
            live.pop(fd).close()

    try:
        add(300)
        remove(200)
        add(250)
        remove(100)
        add(50)
        assert rx.stats()["sockets"] == len(live) == 300
        fd = next(iter(live))
        with pytest.raises(ValueError, match="already registered"):
            rx.add(fd, None)
        for sock in live.values():
            sender.sendto(b"\x80\x00\x00\x01" + bytes(168), sock.getsockname())
        handed = rx.drain()
        assert handed is not None
        assert sorted(handler for handler, _, _ in handed) == [("handler", f) for f in sorted(live)]
        assert all(rx.foreign(f) == 0 for f in live)
    finally:
        for fd, sock in live.items():
            rx.remove(fd)
            sock.close()
        rx.close()
        sender.close()
    assert rx.stats()["sockets"] == 0
