"""SipTransports' stream bookkeeping in one process: who is evicted when the cap is reached,
and connections the node opens itself."""

from __future__ import annotations

import asyncio
import socket

from siprec_node.sip.transaction import Address
from siprec_node.sip.transport import SipTransports, StreamLimits

OPTIONS = (
    b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-%d\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: c%d\r\nCSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


async def _closed(reader: asyncio.StreamReader, timeout: float = 1.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_cap_evicts_silent_connections_first_never_one_in_use() -> None:
    async def run() -> None:
        got: list[tuple[bytes, Address]] = []
        transports = SipTransports(
            lambda data, source: got.append((data, source)),
            limits=StreamLimits(max_connections=3, max_connections_per_source=3),
        )
        bound = await transports.listen("tcp", "127.0.0.1", 0)

        sources = iter(range(2, 20))

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            # each from its own address: the per-source cap is not what is tested here
            local = (f"127.0.0.{next(sources)}", 0)
            pair = await asyncio.open_connection("127.0.0.1", bound.port, local_addr=local)
            await asyncio.sleep(0.05)
            return pair

        used_r, used_w = await connect()
        used_w.write(OPTIONS % (1, 1))
        await asyncio.sleep(0.05)
        assert len(got) == 1
        silent = [await connect(), await connect()]
        newer = [await connect(), await connect(), await connect()]
        # each newcomer evicted the oldest connection that never carried a message
        assert [await _closed(r) for r, _ in silent] == [True, True]
        assert transports.connection_count == 3
        assert transports.stats["tcp_evicted"] == 3
        assert transports.stats["tcp_max_connections"] == 3
        used_w.write(OPTIONS % (2, 2))
        await asyncio.sleep(0.05)
        assert len(got) == 2 and not await _closed(used_r, 0.1)
        for _, writer in [(used_r, used_w), *silent, *newer]:
            writer.close()
        await transports.close()

    asyncio.run(run())


def test_connection_opened_by_the_node_carries_both_ways() -> None:
    async def run() -> None:
        got: list[tuple[bytes, Address]] = []
        transports = SipTransports(
            lambda data, source: got.append((data, source)),
            limits=StreamLimits(max_connections=1, max_connections_per_source=1),
        )
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.put_nowait(await reader.readexactly(len(OPTIONS % (3, 3))))
            writer.write(OPTIONS % (4, 4))
            await writer.drain()
            await reader.read()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transports.send(OPTIONS % (3, 3), Address("tcp", "127.0.0.1", port, None))
        assert await asyncio.wait_for(received.get(), 2) == OPTIONS % (3, 3)
        await asyncio.sleep(0.05)
        assert [data for data, _ in got] == [OPTIONS % (4, 4)]
        assert got[0][1].connection_id is not None and transports.connection_count == 1
        # the node's own connection does not count against the peer's inbound cap
        assert transports._per_source == {}
        await transports.close()
        server.close()

    asyncio.run(run())


def test_peer_that_never_reads_its_responses_is_cut_off() -> None:
    """Requests answered into a connection whose peer never reads: the node's write backlog is
    bounded (then the connection is closed), not its memory."""

    async def run() -> None:
        transports: SipTransports

        def answer_big(data: bytes, source: Address) -> None:
            transports.send(b"y" * 65536, source)

        transports = SipTransports(answer_big)
        bound = await transports.listen("tcp", "127.0.0.1", 0)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", bound.port))
        for i in range(400):  # 400 x 64 KiB of answers, far more than the socket buffers
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, OPTIONS % (i, i)), 1)
            except (ConnectionError, TimeoutError):
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        assert transports.stats["tcp_write_backlog"] == 1
        assert transports.connection_count == 0
        sock.close()
        await transports.close()

    asyncio.run(run())
