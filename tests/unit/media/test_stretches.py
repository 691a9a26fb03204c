"""A stream recorded per packet payload type: codec switches without signalling, from the
packets (encoded by FFmpeg) through the receive path (Python and C) to the final recording,
judged by its audio: the tone of each stretch at its time, no hole at a switch, the length.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from siprec_node.media import fastpath
from siprec_node.media.finalise import finalise_call
from siprec_node.media.stream_file import read_stream_info
from siprec_node.media.stream_recorder import StreamRecorder
from siprec_node.media.timeline import SWITCH, StreamTimeline, TimelineFormat, frame_duration
from siprec_node.siprec.codecs import PayloadFormat
from siprec_node.siprec.sdp_answer import NegotiatedStream

from .test_finalise import EPOCH, call, dominant, encode, read_wav, rms, span

T0 = EPOCH.timestamp()
PCMU = PayloadFormat(0, "PCMU", 8000)
PCMA = PayloadFormat(8, "PCMA", 8000)
G722 = PayloadFormat(9, "G722", 8000)
OPUS = PayloadFormat(111, "OPUS", 48000, 2)
ALL = (PCMU, PCMA, G722, OPUS)
RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000, "OPUS": 48000}
ENCODERS = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw", "G722": "g722", "OPUS": "libopus"}
FAST = [False, *([True] if fastpath.available() else [])]


def negotiated(formats: Sequence[PayloadFormat], index: int = 0) -> NegotiatedStream:
    first = formats[0]
    return NegotiatedStream(
        index=index,
        label=str(index + 1),
        media="audio",
        accepted=True,
        port=40000,
        proto="RTP/AVP",
        codec=first.name,
        payload_type=first.payload_type,
        clock_rate=first.clock_rate,
        channels=first.channels,
        telephone_event_pt=101,
        direction="recvonly",
        formats=tuple(formats),
    )


def rtp(seq: int, ts: int, pt: int, body: bytes, ssrc: int = 0xABC) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + body


def phase_tone(freq: float, start: float, seconds: float, rate: int) -> np.ndarray:
    """A tone whose phase runs on from time 0: consecutive segments join without a step."""
    t = start + np.arange(round(seconds * rate)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@dataclass
class Segment:
    fmt: PayloadFormat
    seconds: float
    freq: float


def packets(segments: Sequence[Segment], start: float = 0.5) -> list[tuple[bytes, float]]:
    """RTP of the segments, 20 ms each, one SSRC, sequence numbers running on, timestamps
    running on within a clock (a new random base when the clock changes), arriving every 20 ms
    from ``start`` s after the epoch."""
    out: list[tuple[bytes, float]] = []
    seq, ts, at = 1000, 5000, start
    clock = segments[0].fmt.clock_rate
    for segment in segments:
        name = segment.fmt.name
        if segment.fmt.clock_rate != clock:
            clock, ts = segment.fmt.clock_rate, 123_456_789
        rate = RATES[name]
        pcm = phase_tone(segment.freq, at, segment.seconds, rate)
        frame = rate // 50
        encoded = encode(ENCODERS[name], pcm, rate, frame=frame)
        for body in encoded[: round(segment.seconds * 50)]:
            out.append((rtp(seq, ts, segment.fmt.payload_type, body), T0 + at))
            seq += 1
            ts += segment.fmt.clock_rate // 50
            at += 0.02
    return out


def record(
    folder: Path,
    formats: Sequence[PayloadFormat],
    stream: list[tuple[bytes, float]],
    *,
    fast: bool,
    close: bool = True,
) -> StreamRecorder:
    module = fastpath.module("c") if fast else None
    rec = StreamRecorder(negotiated(formats), folder, T0, fast=module)
    feed(rec, stream)
    if close:
        rec.close(stream[-1][1] + 0.02)
    return rec


def feed(rec: StreamRecorder, stream: list[tuple[bytes, float]]) -> None:
    tick = T0
    for data, arrival in stream:
        if rec.fast_stream is None or not rec.fast_stream.feed(data, arrival):
            rec.on_rtp(data, arrival)
        if arrival - tick >= 0.5:
            tick = arrival
            rec.tick(arrival)


def finalise(folder: Path, seconds: float, fmt: str = "wav") -> tuple[np.ndarray, int, dict]:
    out = finalise_call(
        folder, output_dir=folder.parent, stem="rec", call=call(seconds), fmt=fmt, durable=False
    )
    audio, rate = read_wav(out.files[0])
    return audio[:, 0], rate, out.metadata


def holes(audio: np.ndarray, rate: int, start: float, end: float, level: float) -> float:
    """The longest run (s) of 5 ms windows below a quarter of ``level`` in [start, end)."""
    window = rate // 200
    part = span(audio, rate, start, end)
    longest = run = 0
    for i in range(0, part.size - window + 1, window):
        if rms(part[i : i + window]) < level / 4:
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    return longest * window / rate


# -- the timeline ------------------------------------------------------------------------------


def timeline(**extra: object) -> StreamTimeline:
    formats = [TimelineFormat(f.payload_type, f.clock_rate, frame_duration(f.name)) for f in ALL]
    return StreamTimeline(8000, T0, payload_type=0, formats=formats, **extra)  # type: ignore[arg-type]


def test_a_switch_at_the_same_clock_continues_by_timestamp() -> None:
    tl = timeline()
    out = []
    for i in range(10):
        out += tl.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    out += tl.push(1, 10, 1600, 8, b"\x02" * 160, T0 + 1.2)
    out += tl.push(1, 11, 1760, 8, b"\x02" * 160, T0 + 1.22) + tl.flush()
    positions = [p for p, _ in out]
    assert positions.count(SWITCH) == 1
    switch = tl.take_switch()
    assert (switch.payload_type, switch.clock_rate, switch.start) == (8, 8000, 8000 + 1600)
    first_new = positions[positions.index(SWITCH) + 1]
    assert first_new == switch.start  # no gap, no overlap
    assert tl.packets == 12 and tl.lost == 0 and tl.unexpected_payload == 0


def test_a_switch_to_another_clock_follows_on_without_a_gap() -> None:
    tl = timeline()
    out = []
    for i in range(10):
        out += tl.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    toc = bytes([0x08, 1, 2, 3])  # 20 ms of Opus
    # a timestamp base unrelated to the PCMU one, arriving 3 ms late: still right after
    out += tl.push(1, 10, 777_000, 111, toc, T0 + 1.203)
    out += tl.push(1, 11, 777_960, 111, toc, T0 + 1.22) + tl.flush()
    switch = tl.take_switch()
    assert switch.clock_rate == 48000 and switch.start == 6 * (8000 + 1600)
    after = [p for p, _ in out][[p for p, _ in out].index(SWITCH) + 1 :]
    assert after == [switch.start, switch.start + 960]
    assert tl.clock_rate == 48000 and tl.late == 0 and tl.gaps == []
    # stream-level positions stay in the first format's clock
    assert tl.first_position == 8000 and tl.to_base(after[-1]) == 8000 + 1600 + 160


def test_after_a_loss_the_new_clock_is_placed_by_arrival() -> None:
    tl = timeline()
    for i in range(10):
        tl.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    # packets 10..14 lost: 100 ms missing before the switch
    out = tl.push(1, 15, 2400, 9, b"\x03" * 160, T0 + 1.3) + tl.flush()
    switch = tl.take_switch()
    assert switch.start == 9600
    placed = out[[p for p, _ in out].index(SWITCH) + 1].position
    assert placed == 8000 + 2400  # same clock: by timestamp, the 100 ms gap is kept
    tl2 = timeline()
    for i in range(10):
        tl2.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    out = tl2.push(1, 15, 5, 111, bytes([0x08, 0]), T0 + 1.3) + tl2.flush()
    assert out[-1].position == 6 * (8000 + 2400)  # by arrival: the 100 ms gap is kept
    assert tl2.gaps == [(9600, 10400)]  # a gap for the verdict, in the first clock's units
    assert tl.gaps == [(9600, 10400)] and tl2.gap_length == 800


def test_a_straggler_of_the_old_format_is_late_not_a_switch_back() -> None:
    tl = timeline()
    for i in range(5):
        tl.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    tl.push(1, 6, 960, 8, b"\x02" * 160, T0 + 1.12)
    assert tl.push(1, 5, 800, 0, b"\x01" * 160, T0 + 1.121) == []
    assert tl.switches == 1 and tl.late == 1 and tl.payload_type == 8


def test_never_offered_payload_types_are_counted_per_type() -> None:
    tl = timeline()
    for i in range(6):
        tl.push(1, i, 160 * i, 96 if i % 2 else 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    tl.push(1, 6, 960, 97, b"\x01", T0 + 1.12)
    assert tl.unexpected_types == {96: 3, 97: 1} and tl.unexpected_payload == 4
    assert tl.switches == 0


def test_a_new_ssrc_in_another_codec_is_followed() -> None:
    tl = timeline(switch_packets=3, switch_silence=0.05)
    for i in range(5):
        tl.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    out = []
    for i in range(4):  # a transfer: another SSRC, G.722
        out += tl.push(2, 500 + i, 90_000 + 160 * i, 9, b"\x05" * 160, T0 + 1.3 + 0.02 * i)
    out += tl.flush()
    assert tl.ssrc_switches == 1 and tl.switches == 1 and tl.payload_type == 9
    assert [p for p, c in out if c == b"\x05" * 160][:1] == [round(0.3 * 8000) + 8000]


# -- recorder and finalisation -----------------------------------------------------------------


@pytest.mark.parametrize("fast", FAST)
def test_pcmu_pcma_g722_pcmu_without_signalling(tmp_path: Path, fast: bool) -> None:
    folder = tmp_path / "rec.parts"
    segments = [Segment(PCMU, 1.0, 400), Segment(PCMA, 1.0, 800), Segment(G722, 1.0, 1200)]
    segments.append(Segment(PCMU, 1.0, 1600))
    stream = packets(segments)
    data, arrival = stream[60]
    stream[60] = (data[:1] + bytes([96]) + data[2:], arrival)  # a payload type never offered
    rec = record(folder, (PCMU, PCMA, G722), stream, fast=fast)
    info = read_stream_info(folder / "stream-0.json")
    assert [(s.codec, s.packets) for s in info.stretches] == [
        ("PCMU", 50),
        ("PCMA", 50),
        ("G722", 50),
        ("PCMU", 50),
    ]
    assert info.unexpected_payload == {96: 1} and info.version == 2
    assert sorted(p.name for p in folder.glob("stream-0.*")) == [
        "stream-0.json",
        "stream-0.json.tmp",
        "stream-0.pt8.wav",
        "stream-0.pt9.frames",
        "stream-0.wav",
    ]
    if fast:
        assert rec.stats().format_switches == 3
    audio, rate, meta = finalise(folder, 5.0)
    assert rate == 16000 and audio.size == 5 * 16000
    for k, segment in enumerate(segments):
        start = 0.5 + k
        middle = span(audio, rate, start + 0.2, start + 0.8)
        assert abs(dominant(middle, rate) - segment.freq) < 10, k
        assert rms(middle) > 5000
    assert rms(span(audio, rate, 0, 0.45)) < 50 and rms(span(audio, rate, 4.55, 5)) < 50
    stream_meta = meta["streams"][0]
    assert stream_meta["codec"] == "PCMU"
    assert [(c["codec"], c["payload_type"], c["packets"]) for c in stream_meta["codecs"]] == [
        ("PCMU", 0, 50),
        ("PCMA", 8, 50),
        ("G722", 9, 50),
        ("PCMU", 0, 50),
    ]
    assert [c["start_s"] for c in stream_meta["codecs"]] == [0.0, 1.5, 2.5, 3.5]
    assert stream_meta["codecs"][-1]["end_s"] == 5.0
    assert stream_meta["unexpected_payload"] == {"96": 1}
    assert stream_meta["undecodable"] == 0


@pytest.mark.parametrize("fast", FAST)
@pytest.mark.parametrize("middle", [G722, OPUS, PCMA])
def test_a_tone_across_switches_has_no_hole(
    tmp_path: Path, fast: bool, middle: PayloadFormat
) -> None:
    folder = tmp_path / "rec.parts"
    segments = [Segment(PCMU, 1.0, 1000), Segment(middle, 1.0, 1000), Segment(PCMU, 1.0, 1000)]
    record(folder, ALL, packets(segments), fast=fast)
    audio, rate, _ = finalise(folder, 4.0)
    assert rate == max(8000, RATES[middle.name])
    level = rms(span(audio, rate, 0.7, 1.3))
    assert level > 5000
    for switch in (1.5, 2.5):
        assert holes(audio, rate, switch - 0.1, switch + 0.1, level) < 0.011, switch
        assert abs(dominant(span(audio, rate, switch - 0.1, switch + 0.1), rate) - 1000) < 15
    assert holes(audio, rate, 0.55, 3.45, level) < 0.011
    assert rms(span(audio, rate, 3.55, 4.0)) < 50  # nothing doubled past the end


def test_offered_pcma_and_pcmu_sending_pcma_only_stays_g711(tmp_path: Path) -> None:
    """Answered ``8 0`` or ``0 8``, the SRC sends PCMA: one law, so ``wav-g711`` keeps the
    bytes as received."""
    for formats in ((PCMA, PCMU), (PCMU, PCMA)):
        folder = tmp_path / formats[0].name / "rec.parts"
        stream = packets([Segment(PCMA, 2.0, 700)])
        record(folder, formats, stream, fast=False)
        info = read_stream_info(folder / "stream-0.json")
        assert [(s.codec, s.start, s.packets) for s in info.stretches] == [("PCMA", 0, 100)]
        out = finalise_call(
            folder,
            output_dir=folder.parent,
            stem="rec",
            call=call(3.0),
            fmt="wav-g711",
            durable=False,
        )
        assert out.metadata["audio"][0]["encoding"] == "g711_pcma"
        raw = out.files[0].read_bytes()
        assert raw[20:22] == b"\x06\x00"  # WAVE_FORMAT_ALAW
        payload = b"".join(data[12:] for data, _ in stream)
        assert payload in raw
        assert out.metadata["streams"][0]["notes"] == []


def test_wav_g711_of_a_stream_that_changed_codec_is_pcm16(tmp_path: Path) -> None:
    folder = tmp_path / "rec.parts"
    record(folder, ALL, packets([Segment(PCMU, 1.0, 500), Segment(PCMA, 1.0, 900)]), fast=False)
    out = finalise_call(
        folder, output_dir=tmp_path, stem="rec", call=call(3.0), fmt="wav-g711", durable=False
    )
    assert [a["encoding"] for a in out.metadata["audio"]] == ["pcm_s16le"]
    assert "PCMU, PCMA" in out.metadata["streams"][0]["notes"][0]
    audio, rate = read_wav(out.files[0])
    assert rate == 8000
    assert abs(dominant(span(audio[:, 0], rate, 0.7, 1.3), rate) - 500) < 10
    assert abs(dominant(span(audio[:, 0], rate, 1.7, 2.3), rate) - 900) < 10


@pytest.mark.parametrize("fast", FAST)
@pytest.mark.parametrize("cut", [75, 125])  # in the PCMA stretch, in the G.722 one
def test_a_restart_mid_stretch_continues_the_files(tmp_path: Path, fast: bool, cut: int) -> None:
    """The recorder dies (no close) inside a stretch of another payload type; the next one (a
    node or worker restart) continues into the same files, and the recording is whole."""
    folder = tmp_path / "rec.parts"
    segments = [Segment(PCMU, 1.0, 400), Segment(PCMA, 1.0, 800), Segment(G722, 1.0, 1200)]
    stream = packets(segments)
    rec = record(folder, ALL, stream[:cut], fast=fast, close=False)
    rec.tick(stream[cut - 1][1])  # what the engine's tick flushed before the kill
    if rec.fast_stream is not None:
        rec.fast_stream.release()
    del rec
    resumed = stream[cut:]
    module = fastpath.module("c") if fast else None
    rec = StreamRecorder(negotiated(ALL), folder, T0, fast=module, now=resumed[0][1])
    feed(rec, resumed)
    rec.close(resumed[-1][1] + 0.02)
    info = read_stream_info(folder / "stream-0.json")
    assert [s.codec for s in info.stretches] == ["PCMU", "PCMA", "G722"]
    assert len(info.unclean_restarts) == 1
    assert sum(s.packets for s in info.stretches) == info.packets
    audio, rate, meta = finalise(folder, 4.0)
    for k, segment in enumerate(segments):
        middle = span(audio, rate, 0.7 + k, 1.3 + k)
        assert abs(dominant(middle, rate) - segment.freq) < 10, k
    level = rms(span(audio, rate, 0.6, 1.4))
    restart_at = 0.5 + 0.02 * cut
    assert holes(audio, rate, restart_at - 0.2, restart_at + 0.2, level) < 0.011
    assert meta["streams"][0]["complete"] is True


def test_the_stream_json_says_which_file_each_stretch_is_in(tmp_path: Path) -> None:
    folder = tmp_path / "rec.parts"
    stream = packets([Segment(PCMU, 0.4, 500), Segment(OPUS, 0.4, 500), Segment(PCMA, 0.4, 500)])
    record(folder, ALL, stream, fast=False)
    raw = json.loads((folder / "stream-0.json").read_text())
    assert raw["codec"] == "PCMU" and raw["clock_rate"] == 8000
    assert [(s["file"], s["clock_rate"], s["start"], s["origin"]) for s in raw["stretches"]] == [
        ("stream-0.wav", 8000, 0, 0),
        ("stream-0.pt111.frames", 48000, 48000 * (0.5 + 0.4), 0),
        ("stream-0.pt8.wav", 8000, 8000 * (0.5 + 0.8), 8000 * (0.5 + 0.8)),
    ]


def test_a_version_1_stream_is_continued_as_one_stretch(tmp_path: Path) -> None:
    """A node upgraded mid-call continues a stream whose sidecar is version 1 (no stretches):
    its one codec is the first stretch, and a switch after the restart is recorded."""
    folder = tmp_path / "rec.parts"
    stream = packets([Segment(PCMU, 1.0, 500), Segment(PCMA, 1.0, 900)])
    rec = record(folder, (PCMU,), stream[:25], fast=False)
    raw = json.loads((folder / "stream-0.json").read_text())
    for key in ("version", "stretches", "unexpected_payload", "switches_refused"):
        del raw[key]
    raw["closed"] = False
    (folder / "stream-0.json").write_text(json.dumps(raw))
    assert read_stream_info(folder / "stream-0.json").version == 1
    del rec
    rec = StreamRecorder(negotiated(ALL), folder, T0, now=stream[25][1])
    feed(rec, stream[25:])
    rec.close(stream[-1][1] + 0.02)
    info = read_stream_info(folder / "stream-0.json")
    assert [(s.codec, s.packets) for s in info.stretches] == [("PCMU", 50), ("PCMA", 50)]
    audio, rate, _ = finalise(folder, 3.0)
    assert abs(dominant(span(audio, rate, 0.7, 1.3), rate) - 500) < 10
    assert abs(dominant(span(audio, rate, 1.7, 2.3), rate) - 900) < 10


def test_every_telephone_event_and_comfort_noise_type_is_expected() -> None:
    tl = timeline(telephone_event_pts=(101, 102), comfort_noise_pts=(118,))
    for i in range(3):
        tl.push(1, i, 160 * i, 0, b"\x01" * 160, T0 + 1 + 0.02 * i)
    tl.push(1, 3, 480, 102, bytes([5, 0, 0, 160]), T0 + 1.06)
    tl.push(1, 4, 640, 118, b"\x40", T0 + 1.08)
    tl.push(1, 5, 800, 13, b"\x40", T0 + 1.1)
    assert tl.unexpected_payload == 0 and tl.dtmf_packets == 1 and tl.comfort_noise == 2


@pytest.mark.parametrize("other", ["G729", "GSM"])
def test_a_switch_to_a_compressed_codec_and_back(tmp_path: Path, other: str) -> None:
    """PCMU, then G.729 (two 10 ms frames a packet, bcg729) or GSM (libgsm), then PCMU: the
    compressed stretch is decoded by its own decoder between the G.711 ones, without a hole."""
    from tests import encoders

    fmt = PayloadFormat(18, "G729", 8000) if other == "G729" else PayloadFormat(3, "GSM", 8000)
    pcm = phase_tone(600, 1.5, 1.0, 8000)
    if other == "G729":
        frames = encoders.g729_frames(pcm)
        payloads = [frames[i] + frames[i + 1] for i in range(0, len(frames) - 1, 2)]
    else:
        payloads = encoders.gsm_frames(pcm)
    stream = packets([Segment(PCMU, 1.0, 600)])
    seq, ts = 1050, 5000 + 50 * 160
    at = 1.5
    for body in payloads[:50]:
        stream.append((rtp(seq, ts, fmt.payload_type, body), T0 + at))
        seq, ts, at = seq + 1, ts + 160, at + 0.02
    tail = packets([Segment(PCMU, 1.0, 600)], start=2.5)
    stream += [
        (rtp(seq + k, ts + 160 * k, 0, data[12:]), arrival)
        for k, (data, arrival) in enumerate(tail)
    ]
    folder = tmp_path / "rec.parts"
    record(folder, (PCMU, fmt), stream, fast=False)
    audio, rate, meta = finalise(folder, 4.0)
    assert [c["codec"] for c in meta["streams"][0]["codecs"]] == ["PCMU", other, "PCMU"]
    assert meta["streams"][0]["undecodable"] == 0
    middle = span(audio, rate, 1.7, 2.3)
    assert abs(dominant(middle, rate) - 600) < 10 and rms(middle) > 3000
    level = rms(span(audio, rate, 0.7, 1.3))
    # the codec's own delay (G.729: 5 ms look-ahead) aside, no hole at either switch
    assert holes(audio, rate, 1.4, 2.6, level) < 0.016


def test_a_reinvite_adds_a_codec_to_an_open_stream(tmp_path: Path) -> None:
    """Answered PCMU only, the SRC sends G.722: unexpected until a re-INVITE's answer accepts
    it (``StreamRecorder.accept``), recorded from then on as a stretch of its own; the G.722
    packets that came just before the recorder heard of the answer are placed after all."""
    folder = tmp_path / "rec.parts"
    stream = packets([Segment(PCMU, 1.0, 500), Segment(G722, 1.0, 1000)])
    rec = StreamRecorder(negotiated((PCMU,)), folder, T0)
    feed(rec, stream[:53])  # 3 G.722 packets before the answer reached the recorder
    assert rec.stats().unexpected_types == {"9": 3}
    assert rec.accept(negotiated((PCMU, G722))) == [9]
    assert rec.accept(negotiated((PCMU, G722))) == []  # a second time: nothing new
    assert rec.stats().unexpected_types == {}
    feed(rec, stream[53:])
    rec.close(stream[-1][1] + 0.02)
    info = read_stream_info(folder / "stream-0.json")
    assert [(s.codec, s.packets) for s in info.stretches] == [("PCMU", 50), ("G722", 50)]
    assert info.unexpected_payload == {}
    audio, rate, _ = finalise(folder, 3.0)
    level = rms(span(audio, rate, 0.7, 1.3))
    assert abs(dominant(span(audio, rate, 1.6, 2.4), rate) - 1000) < 10
    assert holes(audio, rate, 1.4, 2.4, level) < 0.011


def test_packets_of_a_codec_accepted_late_stay_dropped_when_others_came_after(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "rec.parts"
    stream = packets([Segment(PCMU, 1.0, 500), Segment(G722, 0.2, 1000), Segment(PCMU, 0.8, 500)])
    rec = StreamRecorder(negotiated((PCMU,)), folder, T0)
    feed(rec, stream[:62])  # G.722, then PCMU again: the G.722 packets are not the newest
    rec.accept(negotiated((PCMU, G722)))
    feed(rec, stream[62:])
    rec.close(stream[-1][1] + 0.02)
    info = read_stream_info(folder / "stream-0.json")
    assert [s.codec for s in info.stretches] == ["PCMU"] and info.unexpected_payload == {9: 10}


def test_a_switch_on_a_full_disk_loses_the_stretch_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new payload type's file cannot be created (ENOSPC): nothing raised per packet, no
    packet written into another format's file, the loss counted for the verdict."""
    import siprec_node.media.stream_recorder as module

    recorder = StreamRecorder(negotiated((PCMU, PCMA)), tmp_path, T0, now=T0)
    real = module.WavG711Writer

    def refuse(path: Path, law: str, **kwargs: object) -> object:
        if "pt8" in str(path):
            raise OSError(28, "No space left on device")
        return real(path, law, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "WavG711Writer", refuse)
    for data, arrival in packets([Segment(PCMU, 1.0, 440), Segment(PCMA, 1.0, 1000)]):
        recorder.on_rtp(data, arrival)
    recorder.close(T0 + 3.0)
    count, lost_ms, error = recorder.write_errors()
    assert count == 1 and 900 <= lost_ms <= 1000 and "No space" in str(error)
    info = read_stream_info(tmp_path / "stream-0.json")
    assert info.write_errors == 1 and [s.payload_type for s in info.stretches] == [0, 8]
    assert not (tmp_path / "stream-0.pt8.wav").exists()
    # PCMU only: from the epoch to the end of its 1 s stretch, which began at 0.5 s
    assert (tmp_path / "stream-0.wav").stat().st_size <= 58 + 8000 * 1.5 + 2
