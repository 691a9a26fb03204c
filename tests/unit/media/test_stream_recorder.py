"""StreamRecorder end to end: RTP bytes in, FORMAT.md files out, checked independently.

The audio is a 440 Hz tone encoded to µ-law here, with the segment encoder of ITU-T G.711;
the ``.wav`` is read back with this file's own RIFF walk and decoded with the G.711 expansion,
so nothing of the code under test checks itself.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import random
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pylibsrtp
import pytest

from siprec_node.media.stream_file import GapSpan, read_frames, read_stream_info, read_wav_g711
from siprec_node.media.stream_recorder import StreamRecorder
from siprec_node.siprec.sdp_answer import NegotiatedStream, SrtpKeys

EPOCH = 1_700_000_000.0
START = EPOCH + 0.25  # first packet: sample 2000
FIRST = 2000
SSRC = 0x0BADCAFE
RATE = 8000

# -- G.711 µ-law (ITU-T G.711 segment coding, bias 0x84) -----------------------------------------


def ulaw_encode(x: np.ndarray) -> bytes:
    x = x.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, np.uint8).astype(np.int32) & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude)


def tone(seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return ulaw_encode(np.round(16000 * np.sin(2 * np.pi * freq * t)))


def wav_samples(path: Path) -> bytes:
    """The test's own reading of a closed stream .wav: header checked, data returned."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    pos, fmt = 12, None
    while True:
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, pos + 8)
        if cid == b"data":
            assert pos + 8 + size == len(data)
            assert fmt is not None and fmt[0] in (6, 7) and fmt[1:3] == (1, 8000)
            return data[pos + 8 :]
        pos += 8 + size + (size & 1)


# -- packets ---------------------------------------------------------------------------------------


def rtp(seq: int, ts: int, body: bytes, pt: int = 0, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + body


def packets(
    audio: bytes, *, start: float = START, seq0: int = 100, ts0: int = 9000, ssrc: int = SSRC
) -> list[tuple[bytes, float]]:
    """20 ms packets of ``audio`` with their arrival times."""
    return [
        (rtp(seq0 + i, ts0 + 160 * i, audio[160 * i : 160 * i + 160], ssrc=ssrc), start + 0.02 * i)
        for i in range(len(audio) // 160)
    ]


def negotiated(
    codec: str = "PCMU",
    pt: int = 0,
    rate: int = 8000,
    *,
    srtp: SrtpKeys | None = None,
    paused: bool = False,
    index: int = 0,
) -> NegotiatedStream:
    return NegotiatedStream(
        index=index,
        label=f"leg-{index}",
        media="audio",
        accepted=True,
        port=40000,
        proto="RTP/SAVP" if srtp else "RTP/AVP",
        codec=codec,
        payload_type=pt,
        clock_rate=rate,
        channels=2 if codec == "opus" else 1,
        telephone_event_pt=101,
        direction="inactive" if paused else "recvonly",
        paused=paused,
        srtp=srtp,
    )


def feed(rec: StreamRecorder, items: list[tuple[bytes, float]]) -> None:
    for data, arrival in items:
        rec.on_rtp(data, arrival)


# -- tests -----------------------------------------------------------------------------------------


def test_tone_recorded_exactly_at_its_place(tmp_path: Path) -> None:
    audio = tone(5.0)
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, packets(audio))
    rec.close(START + 5.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    assert read_wav_g711(tmp_path / "stream-0.wav") == ("PCMU", samples)
    assert samples[:FIRST] == b"\xff" * FIRST  # before the first packet: silence
    assert samples[FIRST : FIRST + len(audio)] == audio
    assert len(samples) == FIRST + len(audio)
    pcm = ulaw_decode(samples[FIRST:])
    spectrum = np.abs(np.fft.rfft(pcm))
    assert np.argmax(spectrum) * RATE / len(pcm) == pytest.approx(440, abs=1)
    assert np.sqrt(np.mean(pcm.astype(float) ** 2)) == pytest.approx(16000 / np.sqrt(2), rel=0.02)
    assert not np.any(ulaw_decode(samples[:FIRST]))

    info = json.loads((tmp_path / "stream-0.json").read_text())
    assert info["closed"] is True
    assert (info["packets"], info["lost"], info["late"], info["duplicates"]) == (250, 0, 0, 0)
    assert info["ssrcs"] == [{"ssrc": SSRC, "first_position": FIRST}]
    assert (info["first_position"], info["last_position"]) == (FIRST, FIRST + 249 * 160)
    assert (info["epoch"], info["clock_rate"], info["codec"], info["label"]) == (
        EPOCH,
        8000,
        "PCMU",
        "leg-0",
    )


def test_five_percent_loss_is_silence(tmp_path: Path) -> None:
    audio = tone(4.0)
    items = packets(audio)
    rng = random.Random(11)
    lost = set(rng.sample(range(1, len(items) - 1), len(items) // 20))
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, [p for i, p in enumerate(items) if i not in lost])
    rec.close(START + 4.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    assert len(samples) == FIRST + len(audio)
    for i in range(len(items)):
        chunk = samples[FIRST + 160 * i : FIRST + 160 * (i + 1)]
        if i in lost:
            assert not np.any(ulaw_decode(chunk))
        else:
            assert chunk == audio[160 * i : 160 * (i + 1)]
    assert rec.stats().lost == len(lost) == read_stream_info(tmp_path / "stream-0.json").lost


def test_jittery_network_reorders_duplicates_and_late(tmp_path: Path) -> None:
    audio = tone(3.0)
    items = packets(audio)
    rng = random.Random(2)
    arrivals = [(d, a + rng.uniform(0, 0.035)) for d, a in items]  # up to 35 ms of jitter
    arrivals += [arrivals[i] for i in rng.sample(range(len(arrivals)), 10)]  # duplicates
    arrivals.sort(key=lambda p: p[1])
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, arrivals)
    rec.close(START + 4.0)
    # the first packet to arrive is placed by its arrival, the others by timestamp from it
    data, arrival = arrivals[0]
    index = (struct.unpack_from("!I", data, 4)[0] - 9000) // 160
    first = round((arrival - EPOCH) * RATE) - 160 * index
    assert FIRST < first < FIRST + 0.035 * RATE
    samples = wav_samples(tmp_path / "stream-0.wav")
    assert samples == b"\xff" * first + audio
    stats = rec.stats()
    assert (stats.duplicates, stats.late, stats.lost) == (10, 0, 0)
    assert 3 < stats.jitter_ms < 20


@pytest.mark.parametrize("sender", ["silent, timestamps continue", "silent, timestamps jump"])
def test_pause_resume_gap_is_the_pause(tmp_path: Path, sender: str) -> None:
    before, after = tone(2.0), tone(2.0, 660.0)
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, packets(before))
    rec.pause(START + 2.0)
    rec.resume(START + 5.0)
    ts0 = 9000 + 100 * 160 + (3 * RATE if "jump" in sender else 0)
    feed(rec, packets(after, start=START + 5.0, seq0=200, ts0=ts0))
    rec.close(START + 7.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    end_before = FIRST + len(before)
    assert samples[FIRST:end_before] == before
    resumed = samples.index(after[:160], end_before)
    assert resumed - end_before == pytest.approx(3 * RATE, abs=160)  # 3 s ± 20 ms
    assert set(samples[end_before:resumed]) == {0xFF}
    assert samples[resumed:] == after
    info = read_stream_info(tmp_path / "stream-0.json")
    assert [(p.start, p.end) for p in info.pauses] == [(end_before, end_before + 3 * RATE)]


def test_packets_sent_during_a_pause_are_not_recorded(tmp_path: Path) -> None:
    audio = tone(7.0)
    items = packets(audio)
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, items[:100])
    rec.pause(START + 2.0)
    feed(rec, items[100:250])
    rec.resume(START + 5.0)
    feed(rec, items[250:])
    rec.close(START + 7.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    cut, back = FIRST + 100 * 160, FIRST + 250 * 160
    assert samples[:cut] == b"\xff" * FIRST + audio[: 100 * 160]
    assert set(samples[cut:back]) == {0xFF}
    assert samples[back:] == audio[250 * 160 :]
    assert rec.stats().paused_packets == 150


def test_stream_starting_inactive(tmp_path: Path) -> None:
    rec = StreamRecorder(negotiated(paused=True), tmp_path, EPOCH, now=START)
    assert rec.paused
    feed(rec, packets(tone(1.0)))
    rec.resume(START + 1.0)
    feed(rec, packets(tone(1.0), start=START + 1.0, seq0=300))
    rec.close(START + 2.0)
    info = read_stream_info(tmp_path / "stream-0.json")
    assert [(p.start, p.end) for p in info.pauses] == [(FIRST, FIRST + RATE)]
    assert info.first_position == FIRST + RATE


def test_dtmf_and_comfort_noise(tmp_path: Path) -> None:
    audio = tone(3.0)
    items = packets(audio)
    for i in range(50, 100):  # one second of DTX: a CN packet every 200 ms, no audio
        items[i] = (rtp(100 + i, 9000 + 160 * i, b"\x40", pt=13) if i % 10 == 0 else b"", 0.0)
    for k, duration in enumerate((160, 480, 800, 1120, 1120, 1120)):  # key 1 over packets 120+
        end = 0x80 if k >= 3 else 0
        body = bytes([1, end | 10]) + duration.to_bytes(2, "big")
        items[120 + k] = (rtp(220 + k, 9000 + 160 * 120, body, pt=101), items[120 + k][1])
    sent = [p for p in items if p[0]]  # a DTX sender numbers what it sends without gaps
    sent = [(d[:2] + struct.pack("!H", 100 + k) + d[4:], a) for k, (d, a) in enumerate(sent)]
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, sent)
    rec.close(START + 3.0)
    assert (rec.stats().lost, rec.stats().packets) == (0, len(sent))
    samples = wav_samples(tmp_path / "stream-0.wav")
    assert samples[FIRST + 160 * 50 : FIRST + 160 * 100] == b"\xff" * 8000
    assert samples[FIRST + 160 * 100 : FIRST + 160 * 120] == audio[160 * 100 : 160 * 120]
    assert samples[FIRST + 160 * 120 : FIRST + 160 * 126] == b"\xff" * 960
    assert samples[FIRST + 160 * 126 :] == audio[160 * 126 :]
    info = json.loads((tmp_path / "stream-0.json").read_text())
    assert info["dtmf"] == [{"position": FIRST + 160 * 120, "event": 1, "duration": 1120}]
    assert rec.stats().comfort_noise == 5


def test_ssrc_change_mid_call(tmp_path: Path) -> None:
    first, second = tone(2.0), tone(2.0, 300.0)
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, packets(first))
    feed(rec, packets(second, start=START + 2.0, seq0=40000, ts0=123, ssrc=0x5151))
    rec.close(START + 4.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    assert samples[FIRST:] == first + second
    info = read_stream_info(tmp_path / "stream-0.json")
    assert [(s.ssrc, s.first_position) for s in info.ssrcs] == [
        (SSRC, FIRST),
        (0x5151, FIRST + 2 * RATE),
    ]


def test_srtp_and_rtcp_multiplexed(tmp_path: Path) -> None:
    key = os.urandom(30)
    inline = base64.b64encode(key).decode()
    keys = SrtpKeys(
        suite="AES_CM_128_HMAC_SHA1_80",
        tag=1,
        remote_key=inline,
        local_key=base64.b64encode(bytes(30)).decode(),
        remote_key_params=f"inline:{inline}|2^31",
    )
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    audio = tone(2.0)
    items = [(tx.protect(d), a) for d, a in packets(audio)]
    items[30] = (items[30][0][:-1] + bytes([items[30][0][-1] ^ 1]), items[30][1])  # forged
    rec = StreamRecorder(negotiated(srtp=keys), tmp_path, EPOCH)
    feed(rec, items)
    # an SR for the packet 50's timestamp, sent when packet 50 was: RTCP muxed on the RTP port
    ntp = ((int(START + 1.0) + 2_208_988_800) << 32) | int((START + 1.0) % 1 * 2**32)
    sr = struct.pack("!BBHIQIII", 0x80, 200, 6, SSRC, ntp, 9000 + 160 * 50, 50, 8000)
    rec.on_rtp(tx.protect_rtcp(sr), START + 1.001)
    rec.on_rtcp(tx.protect_rtcp(sr), START + 1.002)  # and on the RTCP port
    rec.close(START + 2.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    expected = bytearray(audio)
    expected[30 * 160 : 31 * 160] = b"\xff" * 160
    assert samples[FIRST:] == bytes(expected)
    stats = rec.stats()
    assert (stats.srtp_failures, stats.rtcp_packets, stats.sender_reports) == (1, 2, 2)
    assert stats.sr_offset_ms == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize(
    ("codec", "pt", "rate", "body", "step"),
    [("G722", 9, 8000, b"\x5a" * 160, 160), ("opus", 111, 48000, b"\x78" + b"\x01" * 60, 960)],
)
def test_other_codecs_go_to_a_frame_log(
    tmp_path: Path, codec: str, pt: int, rate: int, body: bytes, step: int
) -> None:
    rec = StreamRecorder(negotiated(codec, pt, rate), tmp_path, EPOCH)
    sent = [
        (struct.pack("!BBHII", 0x80, pt, i, 777 + step * i, SSRC) + body, START + 0.02 * i)
        for i in range(100)
    ]
    sent[10], sent[11] = sent[11], sent[10]
    del sent[50]
    feed(rec, sent)
    rec.close(START + 2.0)
    assert not (tmp_path / "stream-0.wav").exists()
    clock, records = read_frames(tmp_path / "stream-0.frames")
    first = round(0.25 * rate)
    assert clock == rate
    assert records == [(first + step * i, body) for i in range(100) if i != 50]
    info = read_stream_info(tmp_path / "stream-0.json")
    assert (info.codec, info.clock_rate, info.lost, info.first_position) == (
        codec,
        rate,
        1,
        first,
    )


def test_header_kept_current_by_packets_alone(tmp_path: Path) -> None:
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, packets(tone(2.5)))  # no tick() call at all
    data = (tmp_path / "stream-0.wav").read_bytes()
    declared = int.from_bytes(data[54:58], "little")
    assert declared >= 2.5 * RATE - RATE - 1600  # at most a second (and a buffer) behind
    rec.close(START + 3.0)


def _record_then_wait(directory: str, ready: multiprocessing.synchronize.Event) -> None:
    rec = StreamRecorder(negotiated(), directory, EPOCH)
    for data, arrival in packets(tone(3.0)):
        rec.on_rtp(data, arrival)
    ready.set()
    time.sleep(60)


def test_sigkill_loses_at_most_the_buffers(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_record_then_wait, args=(str(tmp_path), ready))
    child.start()
    assert ready.wait(20)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    audio = tone(3.0)
    law, samples = read_wav_g711(tmp_path / "stream-0.wav")
    assert law == "PCMU"
    sent = FIRST + len(audio)
    assert sent - len(samples) <= 0.2 * RATE  # ≤ 200 ms lost
    assert samples == (b"\xff" * FIRST + audio)[: len(samples)]
    info = read_stream_info(tmp_path / "stream-0.json")
    assert info.closed is False and info.epoch == EPOCH
    # and cut anywhere after the header, every sample up to the cut is read
    full = (tmp_path / "stream-0.wav").read_bytes()
    rng = random.Random(1)
    for cut in rng.sample(range(58, len(full)), 25):
        (tmp_path / "cut.wav").write_bytes(full[:cut])
        assert read_wav_g711(tmp_path / "cut.wav")[1] == samples[: cut - 58]


def test_restarted_recorder_continues_the_files(tmp_path: Path) -> None:
    first, second = tone(2.0), tone(2.0, 550.0)
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH, info_interval=1.0)
    feed(rec, packets(first))
    rec.tick(START + 2.0)  # flushed and described, then the node dies
    os.close(rec._writer._fd)
    rec2 = StreamRecorder(negotiated(), tmp_path, EPOCH, now=START + 4.0)
    feed(rec2, packets(second, start=START + 4.0, seq0=5000, ts0=1, ssrc=0x7777))
    rec2.close(START + 6.0)
    samples = wav_samples(tmp_path / "stream-0.wav")
    resumed = FIRST + 4 * RATE
    assert samples[: FIRST + len(first)] == b"\xff" * FIRST + first
    assert set(samples[FIRST + len(first) : resumed]) == {0xFF}
    assert samples[resumed:] == second
    info = read_stream_info(tmp_path / "stream-0.json")
    assert info.packets == 200 and info.first_position == FIRST
    assert [s.ssrc for s in info.ssrcs] == [SSRC, 0x7777]
    # the downtime is a gap, from the end of what the first run wrote to the second's audio
    assert info.gaps == [GapSpan(FIRST + len(first), resumed)]
    assert (info.gap_count, info.gap_length) == (1, resumed - FIRST - len(first))
    with pytest.raises(ValueError):
        StreamRecorder(negotiated(), tmp_path, EPOCH + 1.0)


def test_gaps_and_unexpected_payload_types_in_the_sidecar_and_kept_over_a_restart(
    tmp_path: Path,
) -> None:
    audio = packets(tone(2.0))
    stray = [(rtp(900 + i, 1, b"\x00" * 20, pt=96, ssrc=SSRC), START) for i in range(3)]
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH)
    feed(rec, audio[:30] + stray[:1] + audio[50:])  # 400 ms lost; a packet of PT 96
    rec.tick(START + 2.0)
    rec._write_info()
    os.close(rec._writer._fd)  # the node dies
    info = read_stream_info(tmp_path / "stream-0.json")
    assert info.gaps == [GapSpan(FIRST + 30 * 160, FIRST + 50 * 160)]
    assert info.unexpected_payload == {96: 1}
    again = StreamRecorder(negotiated(), tmp_path, EPOCH, now=START + 3.0)
    feed(again, stray[1:] + packets(tone(1.0), start=START + 3.0, seq0=5000, ts0=1))
    again.close(START + 4.0)
    info = read_stream_info(tmp_path / "stream-0.json")
    assert info.unexpected_payload == {96: 3}
    assert [(g.start, g.end) for g in info.gaps] == [
        (FIRST + 30 * 160, FIRST + 50 * 160),
        (FIRST + 100 * 160, FIRST + 3 * RATE),
    ]
    assert info.gap_count == 2 and info.gap_length == 20 * 160 + 3 * RATE - 100 * 160


def test_refused_stream_is_not_recorded(tmp_path: Path) -> None:
    refused = NegotiatedStream(
        index=1, label=None, media="video", accepted=False, port=0, proto="RTP/AVP", reason="no"
    )
    with pytest.raises(ValueError):
        StreamRecorder(refused, tmp_path, EPOCH)


def test_on_rtp_cost(tmp_path: Path) -> None:
    n = 20_000
    body = b"\x55" * 160
    data = [struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, 160 * i, SSRC) + body for i in range(n)]
    arrivals = [START + 0.02 * i for i in range(n)]
    best = float("inf")
    for attempt in range(3):
        rec = StreamRecorder(negotiated(index=attempt), tmp_path, EPOCH, info_interval=1e9)
        on_rtp = rec.on_rtp
        t0 = time.perf_counter()
        for d, a in zip(data, arrivals, strict=True):
            on_rtp(d, a)
        best = min(best, time.perf_counter() - t0)
        rec.close(arrivals[-1])
    per_packet = best / n * 1e6
    print(f"StreamRecorder.on_rtp: {per_packet:.2f} µs/packet")
    assert per_packet < 30  # generous: catches a slow path taken on every packet


def test_reopening_after_a_crash_marks_where_counting_resumed(tmp_path: Path) -> None:
    first = StreamRecorder(negotiated(), tmp_path, EPOCH, now=START)
    feed(first, packets(tone(1.0)))
    first.tick(START + 1.0)  # the recorder is killed after this: no close()
    del first
    second = StreamRecorder(negotiated(), tmp_path, EPOCH, now=START + 2.0)
    feed(second, packets(tone(1.0), start=START + 2.0, seq0=400, ts0=9000 + 16000))
    second.close(START + 3.0)
    info = read_stream_info(tmp_path / "stream-0.json")
    assert len(info.unclean_restarts) == 1
    # counting resumed where the file ended when the second recorder took it over
    assert info.unclean_restarts[0] <= round((START + 2.0 - EPOCH) * 8000)
    # a clean close and re-open is not a crash
    third = StreamRecorder(negotiated(), tmp_path, EPOCH, now=START + 4.0)
    third.close(START + 4.5)
    assert read_stream_info(tmp_path / "stream-0.json").unclean_restarts == info.unclean_restarts


def _sr(ssrc: int, ntp_unix: float, rtp_ts: int) -> bytes:
    ntp = ((int(ntp_unix) + 2_208_988_800) << 32) | int(ntp_unix % 1 * 2**32)
    return struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, ntp, rtp_ts, 50, 8000)


def test_sender_report_offset_in_the_sidecar_and_kept_over_a_restart(tmp_path: Path) -> None:
    rec = StreamRecorder(negotiated(), tmp_path, EPOCH, info_interval=1.0)
    feed(rec, packets(tone(2.0)))
    # the sender made packet i at START + 0.02 i - 25 ms (it reached us 25 ms after), one SR
    # of four with an NTP time taken 200 ms late
    for i, late in ((10, 0.0), (30, 0.0), (50, 0.2), (70, 0.0)):
        rec.on_rtcp(_sr(SSRC, START + 0.02 * i - 0.025 + late, 9000 + 160 * i), START + 0.02 * i)
    stats = rec.stats()
    assert stats.sender_reports == 4 and stats.sr_offset_reports == 4
    assert stats.sr_offset_ms == pytest.approx(25.0, abs=0.01)  # the last SR's
    assert stats.sr_offset_median_ms == pytest.approx(25.0, abs=0.01)
    rec.tick(START + 2.0)
    info = read_stream_info(tmp_path / "stream-0.json")
    assert (info.sr_offset_ms, info.sr_offset_reports) == (pytest.approx(25.0, abs=0.01), 4)
    os.close(rec._writer._fd)  # the node dies
    # the next run has no SR yet: the earlier run's measure stands; then its own replaces it
    rec2 = StreamRecorder(negotiated(), tmp_path, EPOCH, now=START + 4.0)
    feed(rec2, packets(tone(1.0), start=START + 4.0, seq0=5000, ts0=1))
    assert (rec2.info().sr_offset_ms, rec2.info().sr_offset_reports) == (
        pytest.approx(25.0, abs=0.01),
        4,
    )
    rec2.on_rtcp(_sr(SSRC, START + 4.0 + 0.2 - 0.007, 1 + 1600), START + 4.2)
    rec2.on_rtcp(_sr(SSRC, START + 4.0 + 0.4 - 0.007, 1 + 3200), START + 4.4)
    rec2.close(START + 5.0)
    info = read_stream_info(tmp_path / "stream-0.json")
    assert (info.sr_offset_ms, info.sr_offset_reports) == (pytest.approx(7.0, abs=0.01), 2)


def test_a_recorder_says_whether_it_made_the_folder_and_reports_what_it_created(
    tmp_path: Path,
) -> None:
    parts = tmp_path / "2026" / "12" / "03" / "call.parts"
    created: list[Path] = []
    first = StreamRecorder(negotiated(), parts, EPOCH, created=created)
    assert first.parts_dir_made  # parents made too
    assert created == [parts / "stream-0.wav", parts / "stream-0.json"]
    # another stream of the call, told the folder is new: no look for files, all created
    created = []
    second = StreamRecorder(
        negotiated("opus", 111, 48000, index=1), parts, EPOCH, parts_dir_made=True, created=created
    )
    assert created == [parts / "stream-1.frames", parts / "stream-1.json"]
    audio = tone(0.2)
    feed(first, packets(audio))
    for rec in (first, second):
        rec.close(START + 1)
    assert sorted(p.name for p in parts.iterdir()) == [
        "stream-0.json",
        "stream-0.json.tmp",
        "stream-0.wav",
        "stream-1.frames",
        "stream-1.json",
        "stream-1.json.tmp",
    ]
    # a later run finds the folder: continues the files, creates nothing
    created = []
    again = StreamRecorder(negotiated(), parts, EPOCH, now=START + 2, created=created)
    assert not again.parts_dir_made and created == []
    assert again.info().packets == len(audio) // 160
    again.close(START + 3)
    assert wav_samples(parts / "stream-0.wav")[2000 : 2000 + len(audio)] == audio
