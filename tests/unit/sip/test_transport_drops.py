"""The SIP UDP socket's receive buffer and the kernel's drop counter on it, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest
from structlog.testing import capture_logs

from siprec_node.sip.transport import SipTransports, set_receive_buffer, udp_socket_drops

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the drop counter is Linux's SO_MEMINFO"
)

SMALL = 4096
"""A receive buffer a few datagrams fill (Linux rounds it up to its minimum)."""


def _flood(port: int, count: int = 400, size: int = 1200) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(count):
            sender.sendto(b"x" * size, ("127.0.0.1", port))


def test_the_drop_counter_counts_what_a_full_receive_queue_lost() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        set_receive_buffer(sock, SMALL)
        assert udp_socket_drops(sock) == 0
        _flood(sock.getsockname()[1])
        sock.setblocking(False)
        queued = 0
        while True:
            try:
                sock.recv(65536)
            except BlockingIOError:
                break
            queued += 1
        dropped = udp_socket_drops(sock)
        assert dropped is not None and dropped > 0
        assert queued + dropped == 400  # every datagram either waited or was counted
        assert dropped == _proc_net_udp_drops(sock)  # the counter /proc/net/udp lists


def _proc_net_udp_drops(sock: socket.socket) -> int:
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/net/udp") as table:
        for line in table:
            fields = line.split()
            if len(fields) >= 13 and fields[9] == inode:
                return int(fields[12])
    raise AssertionError("socket not in /proc/net/udp")


def test_a_closed_socket_has_no_counter() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.close()
    assert udp_socket_drops(sock) is None


def test_the_receive_buffer_asked_for_is_granted_up_to_the_cap() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        small = set_receive_buffer(sock, SMALL)
        larger = set_receive_buffer(sock, 256 * 1024)
        assert small >= SMALL  # Linux reports twice what it grants, and has a minimum
        assert larger > small


def test_listener_reports_drops_as_a_counter_and_a_warning() -> None:
    async def run() -> None:
        got: list[bytes] = []
        transports = SipTransports(
            lambda data, source: got.append(data),
            udp_receive_buffer=SMALL,
            drop_check_interval=0.05,
        )
        with capture_logs() as logs:
            bound = await transports.listen("udp", "127.0.0.1", 0)
            assert transports.check_udp_drops() == 0
            _flood(bound.port)  # the loop does not read while this runs: the queue overflows
            for _ in range(100):
                await asyncio.sleep(0.02)
                if any(e["event"] == "sip_datagrams_dropped" for e in logs):
                    break
            await transports.close()
        dropped = transports.udp_datagrams_dropped
        assert dropped > 0
        assert len(got) + dropped == 400
        warnings = [e for e in logs if e["event"] == "sip_datagrams_dropped"]
        assert warnings and warnings[0]["log_level"] == "warning"
        assert sum(w["dropped"] for w in warnings) == dropped
        (buffer,) = [e for e in logs if e["event"].startswith("sip_udp_receive_buffer")]
        assert buffer["requested_bytes"] == SMALL and buffer["effective_bytes"] >= SMALL

    asyncio.run(run())


def test_drops_never_counted_when_the_node_keeps_up() -> None:
    async def run() -> None:
        got: list[bytes] = []
        transports = SipTransports(lambda data, source: got.append(data), drop_check_interval=0)
        bound = await transports.listen("udp", "127.0.0.1", 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(50):
                sender.sendto(b"x" * 1200, ("127.0.0.1", bound.port))
                await asyncio.sleep(0)
        for _ in range(50):
            if len(got) == 50:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 50 and transports.check_udp_drops() == 0
        await transports.close()

    asyncio.run(run())
