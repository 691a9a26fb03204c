"""The RTP source check (``media.source_check``) at the receive entry points: the C
``Receiver`` and the Python path's datagram endpoint take a stream's datagrams only from its
allowed addresses and count the others, before any recorder sees them."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

import pytest

from siprec_node.media import fastpath
from siprec_node.media.engine import LocalEngine, StreamSpec, allowed_addresses
from siprec_node.siprec.sdp_answer import NegotiatedStream
from tests.conftest import skip_unless_c_receive_path

OTHER = "127.0.0.2"  # another sender on the loopback network


def _udp(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + b"\xff" * 160


def _drain(rx: object, expect: int, timeout: float = 2.0) -> list[tuple[object, bytes, float]]:
    out: list[tuple[object, bytes, float]] = []
    deadline = time.monotonic() + timeout
    while rx.stats()["datagrams"] < expect and time.monotonic() < deadline:  # type: ignore[attr-defined]
        out += rx.drain() or []  # type: ignore[attr-defined]
        time.sleep(0.001)
    return out


def test_allowed_addresses_cover_the_forms_recvfrom_gives() -> None:
    assert allowed_addresses(None) is None
    assert allowed_addresses([]) == frozenset()
    assert allowed_addresses(["192.0.2.7"]) == {"192.0.2.7", "::ffff:192.0.2.7"}
    assert allowed_addresses(["::ffff:192.0.2.7"]) == {"192.0.2.7", "::ffff:192.0.2.7"}
    assert allowed_addresses(["2001:DB8::1", "sbc.example.com"]) == {"2001:db8::1"}


def test_c_receiver_drops_and_counts_other_sources() -> None:
    skip_unless_c_receive_path()
    rx = fastpath.module("c").Receiver()  # type: ignore[union-attr]
    guarded, open_, src, attacker = _udp(), _udp(), _udp(), _udp(OTHER)
    rx.add(guarded.fileno(), "guarded", None, ["127.0.0.1"])
    rx.add(open_.fileno(), "open")
    for n in range(10):
        src.sendto(_rtp(n, 1), guarded.getsockname())
        attacker.sendto(_rtp(n, 2), guarded.getsockname())
        attacker.sendto(_rtp(n, 2), open_.getsockname())
    handed = _drain(rx, 30)
    assert [h for h, _, _ in handed].count("guarded") == 10
    assert all(struct.unpack_from("!I", d, 8)[0] == 1 for h, d, _ in handed if h == "guarded")
    assert [h for h, _, _ in handed].count("open") == 10
    assert rx.foreign(guarded.fileno()) == 10
    assert rx.foreign(guarded.fileno()) == 0  # taken
    assert rx.foreign(open_.fileno()) == 0
    assert rx.stats()["foreign"] == 10
    # a re-INVITE moves the SRC to 127.0.0.2: its packets are taken, 127.0.0.1's are not
    rx.set_sources(guarded.fileno(), [OTHER])
    src.sendto(_rtp(20, 1), guarded.getsockname())
    attacker.sendto(_rtp(20, 2), guarded.getsockname())
    handed = _drain(rx, 32)
    assert [(h, struct.unpack_from("!I", d, 8)[0]) for h, d, _ in handed] == [("guarded", 2)]
    assert rx.foreign(guarded.fileno()) == 1
    rx.set_sources(guarded.fileno(), None)  # any
    src.sendto(_rtp(21, 1), guarded.getsockname())
    assert len(_drain(rx, 33)) == 1
    with pytest.raises(KeyError):
        rx.foreign(12345)
    rx.close()
    for s in (guarded, open_, src, attacker):
        s.close()


def test_c_receiver_on_a_dual_stack_socket_matches_ipv4_senders() -> None:
    skip_unless_c_receive_path()
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    rx = fastpath.module("c").Receiver()  # type: ignore[union-attr]
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    rx.add(sock.fileno(), "s", None, ["127.0.0.1"])
    src, attacker = _udp(), _udp(OTHER)
    src.sendto(_rtp(1, 1), ("127.0.0.1", port))
    attacker.sendto(_rtp(1, 2), ("127.0.0.1", port))
    handed = _drain(rx, 2)
    assert len(handed) == 1 and rx.foreign(sock.fileno()) == 1
    rx.close()
    for s in (sock, src, attacker):
        s.close()


def _spec(tmp: Path, sources: list[str] | None) -> StreamSpec:
    stream = NegotiatedStream(
        index=0,
        label="1",
        media="audio",
        accepted=True,
        port=40000,
        proto="RTP/AVP",
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        direction="recvonly",
    )
    return StreamSpec("call", 0, stream.to_dict(), str(tmp), time.time(), sources)


@pytest.mark.parametrize("receive_path", ["python", "c"])
async def test_engine_records_only_the_allowed_source(tmp_path: Path, receive_path: str) -> None:
    if receive_path == "c":
        skip_unless_c_receive_path()
    engine = LocalEngine(receive_path)
    await engine.start()
    rtp, rtcp = _udp(), _udp()
    port = rtp.getsockname()[1]
    await engine.open_stream(_spec(tmp_path, ["127.0.0.1"]), rtp, rtcp)
    src, attacker = _udp(), _udp(OTHER)
    for n in range(20):
        attacker.sendto(_rtp(n, 0xBAD), ("127.0.0.1", port))  # first, every time
        src.sendto(_rtp(n, 0x5EC), ("127.0.0.1", port))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.3)
    stats = (await engine.stats("call"))[0]
    assert (stats["packets"], stats["ssrc"], stats["foreign_packets"]) == (20, 0x5EC, 20)
    await engine.set_sources("call", 0, [OTHER])
    attacker.sendto(_rtp(50, 0xBAD), ("127.0.0.1", port))
    src.sendto(_rtp(21, 0x5EC), ("127.0.0.1", port))
    await asyncio.sleep(0.3)
    closed = (await engine.close_call("call", time.time()))[0]
    assert closed["foreign_packets"] == 21
    info = (tmp_path / "stream-0.json").read_text()
    assert '"foreign_packets":21' in info
    await engine.stop()
    src.close()
    attacker.close()
