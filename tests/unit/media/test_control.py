"""ControlChannel: a burst far beyond the socket's queue goes out complete and in order; the
channel closes only when the peer goes."""

from __future__ import annotations

import asyncio
import os
import socket

from siprec_node.media.control import ControlChannel, MessageTooLarge


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


async def test_a_burst_waits_for_room_and_arrives_in_order() -> None:
    a, b = _pair()
    got: list[dict[str, object]] = []
    closed: list[bool] = []
    sender = ControlChannel(a, lambda m, f, t: None, lambda: closed.append(True))
    results: list[BaseException | None] = []
    count = 5000  # the kernel queues net.unix.max_dgram_qlen (often 10) messages
    for n in range(count):
        sender.send({"n": n, "pad": "x" * 200}, (), results.append)
    assert sender.queued > 0  # the socket was full: the rest waits
    receiver = ControlChannel(b, lambda m, f, t: got.append(m), lambda: None)
    for _ in range(500):
        if len(got) == count:
            break
        await asyncio.sleep(0.01)
    assert [m["n"] for m in got] == list(range(count))
    assert results == [None] * count
    assert sender.waits > 0 and sender.queued == 0
    assert not closed
    sender.close()
    receiver.close()


async def test_descriptors_ride_along_and_stay_with_their_message() -> None:
    a, b = _pair()
    got: list[tuple[int, list[int]]] = []
    sender = ControlChannel(a, lambda m, f, t: None, lambda: None)
    receiver = ControlChannel(
        b, lambda m, f, t: got.append((int(m["n"]), f)), lambda: None, max_fds=2
    )
    pipes = [os.pipe() for _ in range(50)]
    for n, (r, w) in enumerate(pipes):
        sender.send({"n": n}, [r, w])
    for _ in range(200):
        if len(got) == len(pipes):
            break
        await asyncio.sleep(0.01)
    assert [n for n, _ in got] == list(range(len(pipes)))
    for (n, fds), (r, w) in zip(got, pipes, strict=True):
        assert len(fds) == 2
        os.write(w, bytes([n]))
        assert os.read(fds[0], 1) == bytes([n])  # the received copy of this message's pipe
        for fd in (*fds, r, w):
            os.close(fd)
    sender.close()
    receiver.close()


async def test_the_peer_going_away_closes_the_channel_and_fails_what_waits() -> None:
    a, b = _pair()
    closed: list[bool] = []
    sender = ControlChannel(a, lambda m, f, t: None, lambda: closed.append(True))
    results: list[BaseException | None] = []
    for n in range(5000):
        sender.send({"n": n, "pad": "x" * 200}, (), results.append)
    assert sender.queued > 0
    b.close()
    for _ in range(100):
        if closed:
            break
        await asyncio.sleep(0.01)
    assert closed == [True]
    assert sender.closed and sender.queued == 0
    assert any(isinstance(r, ConnectionResetError) for r in results)
    sender.close()


async def test_a_message_too_large_fails_alone() -> None:
    a, b = _pair()
    got: list[object] = []
    sender = ControlChannel(a, lambda m, f, t: None, lambda: None)
    receiver = ControlChannel(b, lambda m, f, t: got.append(m["n"]), lambda: None)
    results: list[BaseException | None] = []
    sender.send({"n": 1}, (), results.append)
    sender.send({"n": 2, "pad": "x" * (8 << 20)}, (), results.append)
    sender.send({"n": 3}, (), results.append)
    for _ in range(100):
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    assert got == [1, 3]
    assert results[0] is None and isinstance(results[1], MessageTooLarge) and results[2] is None
    assert not sender.closed
    sender.close()
    receiver.close()
