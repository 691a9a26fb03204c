import errno
import socket

import pytest

from siprec_node.media.port_allocator import PortAllocator, PortRange, PortsExhausted
from siprec_node.media.rtp_ports import RtpPorts


def test_only_even_ports_with_rtcp_inside_range() -> None:
    assert list(PortRange(20001, 20008).rtp_ports) == [20002, 20004, 20006]
    assert list(PortRange(20000, 20001).rtp_ports) == [20000]
    assert list(PortRange(20000, 20000).rtp_ports) == []


def test_exhaustion_and_cooldown() -> None:
    alloc = PortAllocator(PortRange(20000, 20005), cooldown=10.0)
    ports = {alloc.allocate(0.0), alloc.allocate(0.0), alloc.allocate(0.0)}
    assert ports == {20000, 20002, 20004}
    with pytest.raises(PortsExhausted):
        alloc.allocate(0.0)
    alloc.release(20002, now=1.0)
    assert alloc.available(10.9) == 0
    with pytest.raises(PortsExhausted):
        alloc.allocate(10.9)
    assert alloc.allocate(11.0) == 20002


def test_least_recently_used_first() -> None:
    alloc = PortAllocator(PortRange(20000, 20009), cooldown=0.0)
    first = alloc.allocate(0.0)
    alloc.release(first, 0.0)
    assert alloc.allocate(0.0) != first


def test_reserve_for_recovery() -> None:
    alloc = PortAllocator(PortRange(20000, 20009), cooldown=5.0)
    assert alloc.reserve(20004)
    assert not alloc.reserve(20004)
    assert not alloc.reserve(20005)
    assert not alloc.reserve(30000)
    assert 20004 not in {alloc.allocate(0.0) for _ in range(4)}
    alloc.release(20004, 0.0)
    assert alloc.reserve(20004)  # a cooling port can be taken back by its own call


def test_quarantine() -> None:
    alloc = PortAllocator(PortRange(20000, 20003), cooldown=0.0)
    port = alloc.allocate(0.0)
    alloc.quarantine(port, now=0.0, duration=60.0)
    assert alloc.available(59.0) == 1
    assert alloc.available(60.0) == 2


def test_unallocate_gives_the_port_back_at_once() -> None:
    alloc = PortAllocator(PortRange(20000, 20005), cooldown=10.0)
    port = alloc.allocate(0.0)
    alloc.unallocate(port)
    assert alloc.in_use == 0 and alloc.available(0.0) == 3
    assert alloc.allocate(0.0) == port  # first in line again


def test_out_of_descriptors_is_not_the_ports_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE while binding: no port is quarantined or leaked, the caller hears PortsExhausted
    at once (not after trying 16 ports)."""
    ports = RtpPorts(PortAllocator(PortRange(20000, 20099)), host="127.0.0.1")
    tried: list[int] = []

    def emfile(port: int) -> socket.socket:
        tried.append(port)
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(ports, "_bind", emfile)
    with pytest.raises(PortsExhausted):
        ports.reserve(0.0)
    assert len(tried) == 1
    assert ports.allocator.in_use == 0 and ports.reserved == 0
    assert ports.allocator.available(0.0) == ports.allocator.capacity
