"""``LocalEngine``'s bookkeeping of open streams: by call, all or nothing on open, and what a
call's requests touch."""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
from pathlib import Path

import pytest

from siprec_node.media.engine import LocalEngine, StreamSpec
from siprec_node.siprec.sdp_answer import NegotiatedStream

EPOCH = 1_700_000_000.0


def _spec(parts: Path, session_id: str, index: int) -> StreamSpec:
    stream = NegotiatedStream(
        index=index,
        label=f"leg-{index}",
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
    return StreamSpec(session_id, index, stream.to_dict(), str(parts), EPOCH)


def _pair() -> tuple[socket.socket, socket.socket]:
    socks = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    return socks[0], socks[1]


@pytest.mark.parametrize("receive_path", ["python", "auto"])
async def test_a_calls_requests_touch_its_own_streams(tmp_path: Path, receive_path: str) -> None:
    engine = LocalEngine(receive_path)
    await engine.start()
    try:
        for call in ("a", "b"):
            for index in (0, 1):
                await engine.open_stream(_spec(tmp_path / call, call, index), *_pair())
        assert engine.open_streams == 4
        assert await engine.activity() == {"a": {0: 0, 1: 0}, "b": {0: 0, 1: 0}}
        assert sorted(await engine.stats("a")) == [0, 1]
        assert await engine.stats("missing") == {}
        closed = await engine.close_call("a", time.time())
        assert sorted(closed) == [0, 1] and all(s["closed"] for s in closed.values())
        assert await engine.close_call("a", time.time()) == {}
        assert await engine.activity() == {"b": {0: 0, 1: 0}}
        assert engine.open_streams == 2
        await engine.open_stream(_spec(tmp_path / "a2", "a", 1), *_pair())
        assert await engine.activity() == {"b": {0: 0, 1: 0}, "a": {1: 0}}
    finally:
        await engine.stop()
    assert engine.open_streams == 0 and await engine.activity() == {}


async def test_a_failed_open_removes_the_files_it_created_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LocalEngine("python")
    await engine.start()
    parts = tmp_path / "call.parts"
    try:
        await engine.open_stream(_spec(parts, "a", 0), *_pair())
        assert engine._calls["a"][0].recorder.parts_dir_made

        async def refuse(*args: object) -> None:
            raise OSError("no endpoint")

        monkeypatch.setattr(engine, "_receive", refuse)
        rtp, rtcp = _pair()
        with pytest.raises(OSError, match="no endpoint"):
            await engine.open_stream(_spec(parts, "a", 1), rtp, rtcp)
        assert rtp.fileno() == -1 and rtcp.fileno() == -1
        assert sorted(p.name for p in parts.iterdir()) == ["stream-0.json", "stream-0.wav"]
        assert await engine.activity() == {"a": {0: 0}}
        await engine.close_call("a", time.time())
    finally:
        await engine.stop()
    # a later run on the same folder (worker restart): stream 1 is new, stream 0 continued
    engine = LocalEngine("python")
    await engine.start()
    try:
        monkeypatch.setattr(engine, "_receive", refuse)
        with pytest.raises(OSError):
            await engine.open_stream(_spec(parts, "a", 0), *_pair())
        assert sorted(p.name for p in parts.iterdir()) == [
            "stream-0.json",
            "stream-0.json.tmp",
            "stream-0.wav",
        ]
        assert engine.open_streams == 0
    finally:
        await engine.stop()


@pytest.mark.parametrize("receive_path", ["python", "auto"])
async def test_datagrams_waiting_unread_at_close_are_recorded(
    tmp_path: Path, receive_path: str
) -> None:
    """A worker busy elsewhere has not read a call's last packets when its close comes: they
    were sent before the BYE and belong in the recording, not dropped with the socket."""
    engine = LocalEngine(receive_path)
    await engine.start()
    try:
        rtp, rtcp = _pair()
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # room for all 200
        port = rtp.getsockname()[1]
        spec = dataclasses.replace(_spec(tmp_path / "a", "a", 0), epoch=time.time())
        await engine.open_stream(spec, rtp, rtcp)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for seq in range(200):  # more than one drain's 128 per socket; no await: none read
            header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234)
            sender.sendto(header + bytes([0x55]) * 160, ("127.0.0.1", port))
        sender.close()
        closed = await engine.close_call("a", time.time())
        assert closed[0]["packets"] == 200
    finally:
        await engine.stop()
