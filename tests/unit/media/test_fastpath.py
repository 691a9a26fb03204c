"""The C receive path (``media/_rtprecv.c``) against the Python one it shortcuts.

The fast path claims to do exactly what ``StreamRecorder.on_rtp`` does for in-order G.711
packets and to hand everything else back. Randomised impaired streams (loss, duplicates,
reordering, jitter, stalls, SSRC changes, sequence and timestamp wraps and jumps, DTMF, comfort
noise, odd headers, RTCP, pauses, payload-type switches between PCMU, PCMA, G.722 and Opus, a
payload type never offered) are fed to two recorders, one in pure Python and one the way
the C ``Receiver`` feeds it; the files and every counter must come out identical, and the fast
path must have taken most packets of a clean stream. Then the ``Receiver`` itself on real UDP
sockets: batching, kernel arrival times, cut datagrams, removal.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from siprec_node.media import fastpath
from siprec_node.media.stream_file import read_wav_g711
from siprec_node.media.stream_recorder import StreamRecorder
from siprec_node.siprec.codecs import PayloadFormat
from siprec_node.siprec.sdp_answer import NegotiatedStream
from tests.conftest import skip_unless_c_receive_path

skip_unless_c_receive_path()

_rtprecv = fastpath.module("c")
EPOCH = 1_700_000_000.0
RATE = 8000


FORMATS = (
    PayloadFormat(0, "PCMU", 8000),
    PayloadFormat(8, "PCMA", 8000),
    PayloadFormat(9, "G722", 8000),
    PayloadFormat(111, "OPUS", 48000, 2),
)
"""What the randomised streams may switch between (the first is the negotiated codec)."""
OPUS_20MS = 0x08  # TOC: SILK narrowband 20 ms, one frame


def negotiated(
    codec: str = "PCMU", pt: int = 0, formats: tuple[PayloadFormat, ...] = ()
) -> NegotiatedStream:
    return NegotiatedStream(
        index=0,
        label="leg-0",
        media="audio",
        accepted=True,
        port=40000,
        proto="RTP/AVP",
        codec=codec,
        payload_type=pt,
        clock_rate=RATE,
        channels=1,
        telephone_event_pt=101,
        direction="recvonly",
        formats=formats,
    )


def rtp(
    seq: int, ts: int, body: bytes, pt: int = 0, ssrc: int = 0x1234, first: int = 0x80
) -> bytes:
    return struct.pack("!BBHII", first, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + body


def sender_report(ssrc: int, ntp: float, rtp_ts: int) -> bytes:
    seconds = int(ntp) + 2_208_988_800
    fraction = int((ntp % 1) * (1 << 32))
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, seconds, fraction, rtp_ts, 10, 1600)


Event = tuple  # ("rtp"|"rtcp", data, arrival) | ("tick"|"pause"|"resume", at)


def scenario(seed: int, packets: int = 600) -> list[Event]:
    """An impaired stream: what a recorder is fed, in order, with ticks every 0.5 s."""
    r = random.Random(seed)
    ssrc = r.getrandbits(32)
    seq = r.choice([r.randrange(65536), 65500 + r.randrange(36)])  # some start near the wrap
    ts = r.choice([r.getrandbits(32), 0xFFFFFFFF - r.randrange(20000)])
    t = EPOCH + 0.1 + r.random()
    loss, dup, swap = r.choice([0, 0.02, 0.1]), r.choice([0, 0.02]), r.choice([0, 0.03, 0.1])
    jitter = r.choice([0.0, 0.002, 0.015])
    out: list[Event] = []
    paused = False
    size = r.choice([160, 160, 80, 240])
    step = size if r.random() < 0.9 else 160  # some senders' timestamps disagree with ptime
    codec = 0  # the payload type sent; switches without signalling
    switchy = r.random() < 0.5
    for _ in range(packets):
        kind = r.random()
        body = bytes(r.getrandbits(8) for _ in range(8)) * (size // 8)
        if codec == 111:
            body = bytes([OPUS_20MS]) + body[:40]
        if switchy and r.random() < 0.01:
            new = r.choice([f.payload_type for f in FORMATS if f.payload_type != codec])
            if (new == 111) != (codec == 111) and r.random() < 0.5:
                ts = r.getrandbits(32)  # a sender whose clocks do not continue
            codec = new
            continue
        if kind < 0.005:
            ssrc, seq, ts = r.getrandbits(32), r.randrange(65536), r.getrandbits(32)
        elif kind < 0.01:
            seq = (seq + r.randrange(100, 5000)) & 0xFFFF  # the sender renumbered
        elif kind < 0.015:
            ts = (ts + r.randrange(8000, 80000)) & 0xFFFFFFFF  # a timestamp jump
        elif kind < 0.02:
            t += r.uniform(1.0, 3.0)  # a stall: re-anchor
        elif kind < 0.025 and not paused:
            out.append(("pause", t))
            paused = True
        elif kind < 0.03 and paused:
            out.append(("resume", t))
            paused = False
        pt, first = codec, 0x80
        special = r.random()
        if special < 0.01:
            pt, body = 101, bytes([5, 0x80 if r.random() < 0.5 else 0, 0, 160])
        elif special < 0.015:
            pt, body = 13, b"\x40"
        elif special < 0.02:
            pt = 0x80 | codec  # marker bit
        elif special < 0.025:
            first, body = 0xA0, body + b"\x00\x00\x02"  # padding
        elif special < 0.03:
            first, body = 0x81, struct.pack("!I", 77) + body  # one CSRC
        elif special < 0.032:
            pt = 96  # a payload type never offered
        elif special < 0.034:
            body = b""
        data = rtp(seq, ts, body, pt, ssrc, first)
        arrival = t + abs(r.gauss(0, jitter))
        if r.random() >= loss:
            out.append(("rtp", data, arrival))
            if r.random() < dup:
                out.append(("rtp", data, arrival + 0.001))
        if r.random() < 0.01:
            out.append(("rtcp", sender_report(ssrc, t - 0.003, ts), t))
        seq = (seq + 1) & 0xFFFF
        advance = 960 if codec == 111 else step
        ts = (ts + (advance if pt != 101 else 0)) & 0xFFFFFFFF
        t += 0.02
    # reorder neighbours (arrival order is list order)
    for i in range(len(out) - 1):
        if out[i][0] == "rtp" and out[i + 1][0] == "rtp" and r.random() < swap:
            out[i], out[i + 1] = out[i + 1], out[i]
    # ticks every 0.5 s of arrival time
    ticked: list[Event] = []
    next_tick = EPOCH + 0.5
    for event in out:
        at = event[-1]
        while at >= next_tick:
            ticked.append(("tick", next_tick))
            next_tick += 0.5
        ticked.append(event)
    ticked.append(("tick", next_tick))
    return ticked


def play(rec: StreamRecorder, events: list[Event], *, fast: bool) -> int:
    """Feed ``rec`` as the engine does; returns how many packets the fast path took."""
    taken = 0
    for event in events:
        kind = event[0]
        if kind == "rtp":
            _, data, arrival = event
            if fast and rec.fast_stream.feed(data, arrival):
                taken += 1
            else:
                rec.on_rtp(data, arrival)
        elif kind == "rtcp":
            rec.on_rtcp(event[1], event[2])
        elif kind == "tick":
            rec.tick(event[1])
        elif kind == "pause":
            rec.pause(event[1])
        else:
            rec.resume(event[1])
    return taken


def record(
    tmp: Path,
    events: list[Event],
    *,
    fast: bool,
    codec: str = "PCMU",
    pt: int = 0,
    formats: tuple[PayloadFormat, ...] = FORMATS,
):
    stream = negotiated(codec, pt, formats)
    rec = StreamRecorder(stream, tmp, EPOCH, fast=_rtprecv if fast else None)
    taken = play(rec, events, fast=fast)
    stats = rec.stats().to_dict()
    end = max(e[-1] for e in events)
    rec.close(end)
    media = {p.name: p.read_bytes() for p in tmp.iterdir() if p.suffix in (".wav", ".frames")}
    return media, json.loads((tmp / "stream-0.json").read_text()), stats, taken


@pytest.mark.parametrize("seed", range(120))
def test_fast_path_records_what_the_python_path_records(tmp_path: Path, seed: int) -> None:
    events = scenario(seed)
    slow = record(tmp_path / "python", events, fast=False)
    fast = record(tmp_path / "c", events, fast=True)
    assert fast[0] == slow[0], "different audio"
    assert fast[1] == slow[1], "different sidecar"
    assert fast[2] == slow[2], "different statistics"
    assert slow[3] == 0


def test_the_randomised_streams_switch_codecs(tmp_path: Path) -> None:
    """The comparison above covers codec switches: many streams have several stretches, in
    several files, at both clock rates, with the fast path taking packets after a switch."""
    switched = rates = 0
    for seed in range(120):
        media, info, stats, _taken = record(tmp_path / str(seed), scenario(seed), fast=True)
        if len(info["stretches"]) > 1:
            switched += 1
            assert len(media) > 1
            assert stats["format_switches"] >= len(info["stretches"]) - 1
        rates += len({s["clock_rate"] for s in info["stretches"]}) > 1
        assert sum(s["packets"] for s in info["stretches"]) == info["packets"]
    assert switched > 30 and rates > 10


def test_the_randomised_streams_mostly_went_through_the_fast_path(tmp_path: Path) -> None:
    """The comparison above means something only if the fast path took a good share of the
    packets of those streams while the impairments sent the rest to Python."""
    taken_shares: list[float] = []
    for seed in range(120):
        events = scenario(seed)
        taken = record(tmp_path / str(seed), events, fast=True)[3]
        taken_shares.append(taken / sum(1 for e in events if e[0] == "rtp"))
    assert sum(taken_shares) / len(taken_shares) > 0.3  # 0.42 when written
    assert min(taken_shares) < 0.1 and max(taken_shares) > 0.7


def test_a_clean_stream_goes_through_the_fast_path(tmp_path: Path) -> None:
    events: list[Event] = []
    for i in range(3000):
        arrival = EPOCH + 1 + 0.02 * i
        events.append(("rtp", rtp(i, 160 * i, bytes([i & 0xFF]) * 160), arrival))
        if i % 25 == 24:
            events.append(("tick", arrival))  # the engine's ticks: each re-arms with room ahead
    slow = record(tmp_path / "python", events, fast=False)
    fast = record(tmp_path / "c", events, fast=True)
    assert fast[:3] == slow[:3]
    # all but the first four: the first locks the SSRC and, placed by arrival, waits out the
    # 60 ms reorder window in Python with the next three behind it
    assert fast[3] == 2996
    assert fast[2]["packets"] == 3000 and fast[2]["lost"] == 0


def test_frames_codecs_and_srtp_have_no_fast_path(tmp_path: Path) -> None:
    rec = StreamRecorder(negotiated("G722", 9), tmp_path, EPOCH, fast=_rtprecv)
    assert rec.fast_stream is None
    rec.close(EPOCH)


def test_what_the_fast_path_took_is_in_the_file_at_once(tmp_path: Path) -> None:
    """Nothing of a fast-path packet waits in the process: the file read now (as after a
    SIGKILL, the page cache being the kernel's) has every sample, and its header counts them."""
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH, fast=_rtprecv)
    audio = bytes(random.Random(3).getrandbits(8) for _ in range(160 * 500))
    taken = 0
    for i in range(500):  # 10 s, no tick at all
        data = rtp(i, 160 * i, audio[160 * i : 160 * i + 160])
        arrival = EPOCH + 0.02 * i
        if rec.fast_stream.feed(data, arrival):
            taken += 1
        else:
            rec.on_rtp(data, arrival)
    assert taken > 450  # the room runs out every few seconds without ticks: Python extends it
    raw = (tmp_path / "stream-0.wav").read_bytes()
    declared = struct.unpack_from("<I", raw, 54)[0]
    assert raw[58 : 58 + declared] == audio  # the first packet is placed at 0: no lead silence
    assert read_wav_g711(tmp_path / "stream-0.wav") == ("PCMU", audio)
    rec.close(EPOCH + 10)
    assert (tmp_path / "stream-0.wav").stat().st_size == 58 + len(audio)


def test_packets_python_placed_before_a_re_arm_go_through_the_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Samples the Python path buffered when the fast path is armed again are copied, with the
    header's sizes, through its mapping (no pwrite): the file reads as after a flush."""
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH, fast=_rtprecv)
    audio = bytes(random.Random(4).getrandbits(8) for _ in range(160 * 100))
    order = list(range(100))
    for i in range(10, 90, 10):  # a swapped pair every 10 packets: both placed in Python
        order[i], order[i + 1] = order[i + 1], order[i]
    for k, i in enumerate(order[:20]):  # the SSRC locked, the fast path armed
        data = rtp(i, 160 * i, audio[160 * i : 160 * i + 160])
        if not rec.fast_stream.feed(data, EPOCH + 0.02 * k):
            rec.on_rtp(data, EPOCH + 0.02 * k)
    writes = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        writes.append(offset)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    handed = 0
    for k, i in enumerate(order[20:], start=20):
        data = rtp(i, 160 * i, audio[160 * i : 160 * i + 160])
        if not rec.fast_stream.feed(data, EPOCH + 0.02 * k):
            handed += 1
            rec.on_rtp(data, EPOCH + 0.02 * k)
    assert handed == 14 and writes == []
    assert read_wav_g711(tmp_path / "stream-0.wav") == ("PCMU", audio)  # the header counts all
    put = rec.fast_stream.put
    assert not put(58 + 160 * 100, b"x")  # armed: refused
    rec.pause(EPOCH + 2)  # takes over and disarms
    assert not put(58 + 160 * 100 + 8000 * 60, b"x")  # past the room of the last arm: refused
    assert read_wav_g711(tmp_path / "stream-0.wav") == ("PCMU", audio)
    rec.close(EPOCH + 2)
    assert read_wav_g711(tmp_path / "stream-0.wav") == ("PCMU", audio)


def test_a_file_continued_after_a_kill_keeps_the_fast_paths_samples(tmp_path: Path) -> None:
    """A recorder killed with silence preallocated ahead: the next one (node restart) continues
    after the last sample taken, not after the silence."""
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH, fast=_rtprecv)
    for i in range(100):
        data = rtp(i, 160 * i, b"\x11" * 160)
        if not rec.fast_stream.feed(data, EPOCH + 0.02 * i):
            rec.on_rtp(data, EPOCH + 0.02 * i)
    rec.fast_stream.release()  # the process dies: nothing closed, nothing flushed
    os.close(rec._writer.fileno())
    assert (tmp_path / "stream-0.wav").stat().st_size > 58 + 100 * 160 + 8000  # silence ahead
    again = StreamRecorder(negotiated(), tmp_path, EPOCH, now=EPOCH + 3.0, fast=_rtprecv)
    for i in range(150, 200):  # the sender went on; the restarted node hears it from 3 s
        data = rtp(i, 160 * i, b"\x22" * 160)
        if not again.fast_stream.feed(data, EPOCH + 0.02 * i):
            again.on_rtp(data, EPOCH + 0.02 * i)
    again.close(EPOCH + 4.0)
    _, samples = read_wav_g711(tmp_path / "stream-0.wav")
    assert samples[: 100 * 160] == b"\x11" * 16000  # all of the first run
    assert samples[16000:24000] == b"\xff" * 8000  # the outage, silence
    assert samples[24000:] == b"\x22" * 8000  # the second run at its place
    info = json.loads((tmp_path / "stream-0.json").read_text())
    assert info["unclean_restarts"] == [16000]


# -- the Receiver on sockets -------------------------------------------------------------------


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _drain_all(rx, expect: int, timeout: float = 2.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while rx.stats()["datagrams"] < expect and time.monotonic() < deadline:
        out += rx.drain() or []
        time.sleep(0.001)
    return out


def test_receiver_feeds_fast_streams_and_hands_the_rest_over(tmp_path: Path) -> None:
    rx = _rtprecv.Receiver()
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH, fast=_rtprecv)
    rtp_sock, rtcp_sock, sender = _udp(), _udp(), _udp()
    rx.add(rtp_sock.fileno(), rec.on_rtp, rec.fast_stream)
    rx.add(rtcp_sock.fileno(), rec.on_rtcp)
    with pytest.raises(ValueError):
        rx.add(rtp_sock.fileno(), rec.on_rtp)
    now = time.time()
    epoch_rec = StreamRecorder(negotiated(), tmp_path / "live", now - 1, fast=_rtprecv)
    rx.remove(rtp_sock.fileno())
    rx.add(rtp_sock.fileno(), epoch_rec.on_rtp, epoch_rec.fast_stream)
    for i in range(100):
        sender.sendto(rtp(i, 160 * i, b"\x33" * 160), rtp_sock.getsockname())
    sender.sendto(sender_report(0x1234, now, 0), rtcp_sock.getsockname())
    sender.sendto(b"\x80" * 5000, rtp_sock.getsockname())  # longer than a receive buffer
    handed = _drain_all(rx, 102)
    before = time.time()
    stats = rx.stats()
    assert stats["datagrams"] == 102 and stats["truncated"] == 1
    assert stats["sockets"] == 2
    # the first RTP packet locks the SSRC in Python; the RTCP goes to its handler
    handlers = [h for h, _, _ in handed]
    assert handlers.count(epoch_rec.on_rtp) >= 1 and handlers.count(rec.on_rtcp) == 1
    for handler, data, arrival in handed:
        assert now - 0.5 < arrival <= before  # kernel arrival times, on the wall clock
        handler(data, arrival)
    # after Python handled the first packet the rest arrive in order: taken or handed, but the
    # recorder has all 100 in the end
    assert stats["taken"] + stats["handed"] == 101
    assert epoch_rec.stats().packets == 100
    assert rx.remove(rtp_sock.fileno()) and not rx.remove(rtp_sock.fileno())
    sender.sendto(rtp(100, 16000, b"\x33" * 160), rtp_sock.getsockname())
    time.sleep(0.05)
    assert rx.drain() is None  # a removed socket is not read
    rx.close()
    for s in (rtp_sock, rtcp_sock, sender):
        s.close()
    rec.close(EPOCH)
    epoch_rec.close(time.time())


def test_receiver_fileno_is_readable_when_a_socket_is(tmp_path: Path) -> None:
    import select

    rx = _rtprecv.Receiver()
    sock, sender = _udp(), _udp()
    rx.add(sock.fileno(), lambda data, arrival: None)
    assert select.select([rx.fileno()], [], [], 0)[0] == []
    sender.sendto(b"x" * 20, sock.getsockname())
    assert select.select([rx.fileno()], [], [], 1.0)[0] == [rx.fileno()]
    assert len(rx.drain()) == 1
    rx.close()
    sock.close()
    sender.close()


def test_the_fast_path_follows_g711_stretches(tmp_path: Path) -> None:
    """A clean stream that switches PCMU, PCMA, G.722, PCMU: each switch goes through Python,
    which re-arms the fast path on the new stretch's file when it is G.711; the files are those
    of the Python path."""
    events: list[Event] = []
    plan = [(0, 100), (8, 100), (9, 50), (0, 100)]
    kinds: list[int] = []
    i = 0
    for pt, count in plan:
        for _ in range(count):
            arrival = EPOCH + 1 + 0.02 * i
            events.append(("rtp", rtp(i, 160 * i, bytes([i & 0xFF]) * 160, pt), arrival))
            kinds.append(pt)
            if i % 25 == 24:
                events.append(("tick", arrival))
            i += 1
    slow = record(tmp_path / "python", events, fast=False)
    rec = StreamRecorder(negotiated(formats=FORMATS), tmp_path / "c", EPOCH, fast=_rtprecv)
    taken: dict[int, int] = {}
    n = 0
    for event in events:
        if event[0] == "tick":
            rec.tick(event[1])
            continue
        if rec.fast_stream.feed(event[1], event[2]):
            taken[kinds[n]] = taken.get(kinds[n], 0) + 1
        else:
            rec.on_rtp(event[1], event[2])
        n += 1
    rec.close(events[-1][-1])
    media = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir() if p.suffix != ".json"}
    media.pop("stream-0.json.tmp", None)
    assert media == slow[0]
    assert set(media) == {"stream-0.wav", "stream-0.pt8.wav", "stream-0.pt9.frames"}
    # all but the few after each arming point: 4 at the start, then one per switch
    assert taken[8] >= 95 and taken.get(9, 0) == 0 and taken[0] >= 190, taken
