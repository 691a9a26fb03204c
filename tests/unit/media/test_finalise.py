"""Finalisation from per-stream parts written here by hand, following media/FORMAT.md.

The parts are built independently of the recorder's writers (G.711 encoded by FFmpeg through
PyAV, headers packed from FORMAT.md), and the final files are read back independently: PCM WAV
with Python's `wave`, everything else with FFmpeg through PyAV.
"""

from __future__ import annotations

import json
import struct
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from siprec_node.media.finalise import (
    CallInfo,
    ParticipantInfo,
    finalise_call,
    participants_from_session,
)
from siprec_node.media.paths import parts_dir, recording_dir, recording_stem
from siprec_node.session.state import SessionState
from siprec_node.siprec.recording_session import Party, RecordingSession
from siprec_node.siprec.sdp_answer import NegotiatedStream

EPOCH = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STARTED = EPOCH - timedelta(milliseconds=150)


# -- building parts --------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def encode(codec: str, pcm: np.ndarray, rate: int, frame: int | None = None) -> list[bytes]:
    """Packets of `pcm` encoded by FFmpeg (`frame` samples each when given)."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    if codec == "libopus":
        ctx.bit_rate = 64000
    ctx.open()
    size = frame or ctx.frame_size or pcm.size
    packets: list[bytes] = []
    for i in range(0, pcm.size - size + 1, size):
        f = av.AudioFrame.from_ndarray(
            pcm[i : i + size].reshape(1, -1), format="s16", layout="mono"
        )
        f.sample_rate = rate
        f.pts = i
        f.time_base = Fraction(1, rate)
        packets += [bytes(p) for p in ctx.encode(f)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


G711_ENCODERS = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}
SILENCE = {"PCMU": b"\xff", "PCMA": b"\xd5"}


def g711_bytes(codec: str, pcm: np.ndarray) -> bytes:
    return b"".join(encode(G711_ENCODERS[codec], pcm, 8000, frame=160))


def wav_g711_file(codec: str, samples: bytes, header_samples: int | None = None) -> bytes:
    """A FORMAT.md stream WAV; `header_samples` as a stale header would count them."""
    n = len(samples) if header_samples is None else header_samples
    tag = 7 if codec == "PCMU" else 6
    fmt = struct.pack("<HHIIHHH", tag, 1, 8000, 8000, 1, 8, 0)
    header = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    header += b"fact" + struct.pack("<II", 4, n) + b"data" + struct.pack("<I", n)
    return b"RIFF" + struct.pack("<I", len(header) + n) + header + samples


def frames_file(clock: int, records: Sequence[tuple[int, bytes]]) -> bytes:
    out = bytearray(b"SRFRAMES" + struct.pack("<II", 1, clock))
    for position, payload in records:
        out += struct.pack("<QH", position, len(payload)) + payload
    return bytes(out)


@dataclass
class Parts:
    path: Path

    def info(self, index: int, codec: str, clock: int, **extra: object) -> None:
        data = {
            "index": index,
            "label": str(index + 1),
            "codec": codec,
            "payload_type": {"PCMU": 0, "PCMA": 8, "G722": 9}.get(codec, 111),
            "clock_rate": clock,
            "channels": 1,
            "epoch": EPOCH.timestamp(),
            "ssrcs": [{"ssrc": 0x1000 + index, "first_position": 0}],
            "packets": 100,
            "lost": 2,
            "duplicates": 0,
            "late": 0,
            "jitter_ms": 1.5,
            "first_position": 0,
            "last_position": 0,
            "pauses": [],
            "dtmf": [],
            "closed": True,
        }
        data.update(extra)
        (self.path / f"stream-{index}.json").write_text(json.dumps(data))

    def g711(
        self, index: int, codec: str, pcm: np.ndarray, start_s: float = 0.0, **extra: object
    ) -> bytes:
        """A G.711 stream whose audio starts `start_s` after the epoch (silence before)."""
        samples = SILENCE[codec] * round(start_s * 8000) + g711_bytes(codec, pcm)
        (self.path / f"stream-{index}.wav").write_bytes(wav_g711_file(codec, samples))
        self.info(index, codec, 8000, **extra)
        return samples

    def g722(self, index: int, pcm16k: np.ndarray, start_s: float = 0.0) -> None:
        packets = encode("g722", pcm16k, 16000, frame=320)  # 20 ms, 160 bytes
        first = round(start_s * 8000)
        records = [(first + 160 * k, p) for k, p in enumerate(packets)]
        (self.path / f"stream-{index}.frames").write_bytes(frames_file(8000, records))
        self.info(index, "G722", 8000)

    def opus(self, index: int, pcm48k: np.ndarray, start_s: float = 0.0) -> None:
        packets = encode("libopus", pcm48k, 48000, frame=960)
        first = round(start_s * 48000)
        records = [(first + 960 * k, p) for k, p in enumerate(packets)]
        (self.path / f"stream-{index}.frames").write_bytes(frames_file(48000, records))
        self.info(index, "opus", 48000)


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    folder = tmp_path / "p.parts"
    folder.mkdir()
    return Parts(folder)


def call(seconds: float, **changes: object) -> CallInfo:
    values: dict[str, object] = {
        "session_id": "sess-1",
        "call_id": "call-1@example.com",
        "node_id": "rec-1",
        "status": "ended",
        "end_reason": "bye",
        "started_at": STARTED,
        "ended_at": EPOCH + timedelta(seconds=seconds),
    }
    values.update(changes)
    return CallInfo(**values)  # type: ignore[arg-type]


ALICE = ParticipantInfo("alice", "Alice", "sip:alice@example.com", streams=(0,))
BOB = ParticipantInfo("bob", "Bob", "sip:bob@example.com", streams=(1,))


# -- reading results -------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples (n, channels), rate) through Python's wave module."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels()), w.getframerate()


def read_av(path: Path) -> tuple[np.ndarray, int]:
    """(samples (n, channels) as int16, rate) decoded by FFmpeg."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            a = frame.to_ndarray()
            chunks.append(
                a.T if frame.format.is_planar else a.reshape(-1, frame.layout.nb_channels)
            )
        rate = stream.codec_context.sample_rate
    data = np.concatenate(chunks)
    if data.dtype.kind == "f":
        data = np.clip(data * 32768, -32768, 32767)
    return data.astype(np.int16), rate


def dominant(x: np.ndarray, rate: int) -> float:
    x = x.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def span(x: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return x[round(start * rate) : round(end * rate)]


# -- stereo, codecs, alignment ---------------------------------------------------------------


def test_pcmu_left_pcma_right_stereo_wav(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 3.0, 8000))
    parts.g711(1, "PCMA", tone(1000, 2.5, 8000), start_s=0.5)
    out = tmp_path / "out"
    result = finalise_call(
        parts.path, output_dir=out, stem="rec", call=call(4.0), participants=[ALICE, BOB]
    )
    assert [p.name for p in result.files] == ["rec.wav"]
    samples, rate = read_wav(out / "rec.wav")
    assert rate == 8000 and samples.shape[1] == 2
    assert abs(samples.shape[0] / rate - 4.0) <= 0.02
    left, right = samples[:, 0], samples[:, 1]
    assert dominant(span(left, rate, 0.1, 2.9), rate) == pytest.approx(440, abs=2)
    assert dominant(span(right, rate, 0.6, 2.9), rate) == pytest.approx(1000, abs=2)
    # the right leg started late and both stopped before the BYE: silence, not a shorter file
    assert rms(span(right, rate, 0.0, 0.45)) < 20
    assert rms(span(left, rate, 3.05, 4.0)) < 20 and rms(span(right, rate, 3.05, 4.0)) < 20

    side = json.loads((out / "rec.json").read_text())
    assert side["files"] == ["rec.wav"]
    for key in ("session_id", "call_id", "node_id", "status", "end_reason"):
        assert side[key] == getattr(call(4.0), key)
    assert datetime.fromisoformat(side["started_at"]) == STARTED
    assert datetime.fromisoformat(side["ended_at"]) == EPOCH + timedelta(seconds=4)
    assert side["duration_s"] == pytest.approx(4.0, abs=0.02)
    assert [(p["id"], p["name"], p["aor"], p["channel"]) for p in side["participants"]] == [
        ("alice", "Alice", "sip:alice@example.com", "left"),
        ("bob", "Bob", "sip:bob@example.com", "right"),
    ]
    s0, s1 = side["streams"]
    assert (s0["label"], s0["participant"], s0["codec"], s0["ssrc"]) == (
        "1",
        "alice",
        "PCMU",
        0x1000,
    )
    assert (s1["codec"], s1["packets"], s1["lost"]) == ("PCMA", 100, 2)
    assert side["pauses"] == []
    metrics = side["metrics"]
    assert metrics["speech_ms"]["alice"] == pytest.approx(3000, abs=60)
    assert metrics["speech_ms"]["bob"] == pytest.approx(2500, abs=60)
    assert metrics["interruptions"] == 1  # bob starts while alice speaks, and both go on


def test_g722_and_opus_streams(parts: Parts, tmp_path: Path) -> None:
    parts.g722(0, tone(3000, 2.0, 16000))  # above 4 kHz Nyquist of narrowband: kept wideband
    parts.opus(1, tone(600, 2.0, 48000), start_s=0.3)
    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="wb", call=call(2.5), channels="both"
    )
    assert [p.name for p in result.files] == ["wb.wav", "wb.stream-0.wav", "wb.stream-1.wav"]
    samples, rate = read_wav(tmp_path / "wb.wav")
    assert rate == 48000  # any Opus stream: the call is mixed at 48 kHz
    assert abs(samples.shape[0] / rate - 2.5) <= 0.02
    assert dominant(span(samples[:, 0], rate, 0.2, 1.8), rate) == pytest.approx(3000, abs=3)
    assert dominant(span(samples[:, 1], rate, 0.5, 2.1), rate) == pytest.approx(600, abs=3)
    assert rms(span(samples[:, 1], rate, 0.0, 0.25)) < 20

    g722, g722_rate = read_wav(tmp_path / "wb.stream-0.wav")
    opus, opus_rate = read_wav(tmp_path / "wb.stream-1.wav")
    assert (g722_rate, opus_rate) == (16000, 48000)  # separate files keep their stream's rate
    assert abs(g722.shape[0] / g722_rate - 2.5) <= 0.02
    assert abs(opus.shape[0] / opus_rate - 2.5) <= 0.02
    assert dominant(span(g722[:, 0], g722_rate, 0.2, 1.8), g722_rate) == pytest.approx(3000, abs=3)


def test_single_stream_gives_a_mono_file(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    both = [ParticipantInfo("a", streams=(0,)), ParticipantInfo("b", streams=(0,))]
    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="m", call=call(1.0), participants=both
    )
    samples, _ = read_wav(result.files[0])
    assert samples.shape[1] == 1
    side = result.metadata
    assert [p["channel"] for p in side["participants"]] == ["mono", "mono"]
    assert side["streams"][0]["participant"] is None  # a mix of two participants
    assert side["streams"][0]["participants"] == ["a", "b"]
    assert side["metrics"]["speech_ms"] == {"stream-0": pytest.approx(1000, abs=60)}


def test_three_streams_stereo_of_the_first_two_and_a_file_each(
    parts: Parts, tmp_path: Path
) -> None:
    for i, freq in enumerate((440, 1000, 1500)):
        parts.g711(i, "PCMU", tone(freq, 1.0, 8000))
    result = finalise_call(parts.path, output_dir=tmp_path, stem="c", call=call(1.0))
    names = [p.name for p in result.files]
    assert names == ["c.wav", "c.stream-0.wav", "c.stream-1.wav", "c.stream-2.wav"]
    third, rate = read_wav(tmp_path / "c.stream-2.wav")
    assert dominant(third[:, 0], rate) == pytest.approx(1500, abs=2)


def test_participants_by_label_and_by_position(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    parts.g711(1, "PCMU", tone(1000, 1.0, 8000))
    by_label = [ParticipantInfo("x", labels=("2",)), ParticipantInfo("y", labels=("1",))]
    side = finalise_call(
        parts.path, output_dir=tmp_path, stem="l", call=call(1.0), participants=by_label
    ).metadata
    assert [(p["id"], p["channel"]) for p in side["participants"]] == [
        ("x", "right"),
        ("y", "left"),
    ]
    by_order = [ParticipantInfo("first"), ParticipantInfo("second")]
    side = finalise_call(
        parts.path, output_dir=tmp_path, stem="o", call=call(1.0), participants=by_order
    ).metadata
    assert [(p["id"], p["channel"]) for p in side["participants"]] == [
        ("first", "left"),
        ("second", "right"),
    ]


# -- pauses ----------------------------------------------------------------------------------


def test_pauses_are_silence(parts: Parts, tmp_path: Path) -> None:
    # the SRC kept sending while paused: finalisation still silences the pause
    parts.g711(0, "PCMU", tone(440, 4.0, 8000))
    # stream 1 recorded its own pause (positions), closed normally
    parts.g711(
        1, "PCMU", tone(1000, 4.0, 8000), pauses=[{"start": 8000 * 3, "end": 8000 * 3 + 4000}]
    )
    paused = [(EPOCH + timedelta(seconds=1), EPOCH + timedelta(seconds=2))]
    result = finalise_call(parts.path, output_dir=tmp_path, stem="p", call=call(4.0), pauses=paused)
    samples, rate = read_wav(result.files[0])
    for channel in (0, 1):
        assert rms(span(samples[:, channel], rate, 1.0, 2.0)) == 0
        assert rms(span(samples[:, channel], rate, 0.2, 0.9)) > 1000
    assert rms(span(samples[:, 1], rate, 3.0, 3.5)) < 20
    assert rms(span(samples[:, 0], rate, 3.0, 3.5)) > 1000
    side = result.metadata
    assert [
        (datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"]))
        for p in side["pauses"]
    ] == paused
    assert side["streams"][1]["pauses"] == [
        {"start": "2024-05-01T12:00:03.000+00:00", "end": "2024-05-01T12:00:03.500+00:00"}
    ]


def test_pauses_of_every_stream_are_the_recordings_pauses(parts: Parts, tmp_path: Path) -> None:
    pause = [{"start": 8000, "end": 16000}]
    parts.g711(0, "PCMU", tone(440, 3.0, 8000), pauses=pause)
    parts.g711(1, "PCMU", tone(440, 3.0, 8000), pauses=[{"start": 12000, "end": 20000}])
    side = finalise_call(parts.path, output_dir=tmp_path, stem="q", call=call(3.0)).metadata
    assert side["pauses"] == [
        {"start": "2024-05-01T12:00:01.500+00:00", "end": "2024-05-01T12:00:02.000+00:00"}
    ]


# -- formats ---------------------------------------------------------------------------------


def test_flac_stereo(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 2.0, 8000))
    parts.g711(1, "PCMA", tone(1000, 2.0, 8000))
    result = finalise_call(parts.path, output_dir=tmp_path, stem="f", fmt="flac", call=call(2.0))
    assert [p.name for p in result.files] == ["f.flac"]
    samples, rate = read_av(tmp_path / "f.flac")
    assert (rate, samples.shape[1]) == (8000, 2)
    assert abs(samples.shape[0] / rate - 2.0) <= 0.02
    assert dominant(samples[:, 0], rate) == pytest.approx(440, abs=2)
    assert dominant(samples[:, 1], rate) == pytest.approx(1000, abs=2)
    # lossless: exactly what the WAV of the same parts holds
    wav = finalise_call(parts.path, output_dir=tmp_path, stem="w", call=call(2.0))
    assert np.array_equal(read_wav(wav.files[0])[0], samples)


def leak_db(left: np.ndarray, right: np.ndarray, freq: float, rate: int) -> float:
    window = np.hanning(left.size)
    freqs = np.fft.rfftfreq(left.size, 1 / rate)
    k = int(np.argmin(np.abs(freqs - freq)))
    sl = np.abs(np.fft.rfft(left * window))[k - 3 : k + 4].max()
    sr = np.abs(np.fft.rfft(right * window))[k - 3 : k + 4].max()
    return 20 * np.log10(sr / sl + 1e-12)


@pytest.mark.parametrize("codec,rate_in", [("PCMU", 8000), ("G722", 16000)])
def test_opus_stereo_keeps_the_parties_apart(
    parts: Parts, tmp_path: Path, codec: str, rate_in: int
) -> None:
    freqs = [300, 1000, 2500, 3500] + ([5000, 7000] if rate_in == 16000 else [])
    t = np.arange(3 * rate_in) / rate_in
    mix = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) * 0.5 * 32767
    left = mix.astype(np.int16)
    right = (np.random.default_rng(1).standard_normal(t.size) * 30).astype(np.int16)
    if codec == "PCMU":
        parts.g711(0, "PCMU", left)
        parts.g711(1, "PCMU", right)
    else:
        parts.g722(0, left)
        parts.g722(1, right)
    result = finalise_call(parts.path, output_dir=tmp_path, stem="o", fmt="opus", call=call(3.0))
    samples, rate = read_av(result.files[0])
    assert samples.shape[1] == 2
    assert abs(samples.shape[0] / rate - 3.0) <= 0.02
    on, off = (span(samples[:, c], rate, 0.5, 2.5).astype(np.float64) for c in (0, 1))
    for f in freqs:
        assert leak_db(on, off, f, rate) < -40, f


def test_wav_g711_same_law_is_the_bytes_as_received(parts: Parts, tmp_path: Path) -> None:
    a = parts.g711(0, "PCMA", tone(440, 1.0, 8000))
    b = parts.g711(1, "PCMA", tone(1000, 1.0, 8000), start_s=0.25)
    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="g", fmt="wav-g711", call=call(1.5)
    )
    assert [p.name for p in result.files] == ["g.wav"]
    with av.open(str(result.files[0])) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_alaw"
        assert stream.codec_context.channels == 2
        raw = b"".join(bytes(p) for p in container.demux(stream) if p.size)
    pairs = np.frombuffer(raw, np.uint8).reshape(-1, 2)
    assert pairs.shape[0] == 12000
    assert pairs[: len(a), 0].tobytes() == a
    assert pairs[: len(b), 1].tobytes() == b
    assert set(pairs[len(b) :, 1].tolist()) == {0xD5}  # padded with A-law silence


def test_wav_g711_mixed_laws_and_wideband_are_files_per_stream(
    parts: Parts, tmp_path: Path
) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    parts.g711(1, "PCMA", tone(1000, 1.0, 8000))
    parts.g722(2, tone(3000, 1.0, 16000))
    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="x", fmt="wav-g711", call=call(1.0)
    )
    assert [p.name for p in result.files] == ["x.stream-0.wav", "x.stream-1.wav", "x.stream-2.wav"]
    encodings = [a["encoding"] for a in result.metadata["audio"]]
    assert encodings == ["g711_pcmu", "g711_pcma", "pcm_s16le"]
    names = []
    for path in result.files:
        with av.open(str(path)) as container:
            names.append(container.streams.audio[0].codec_context.name)
    assert names == ["pcm_mulaw", "pcm_alaw", "pcm_s16le"]
    # the participants get no stereo channel
    assert all(p["channel"] is None for p in result.metadata["participants"])


# -- crash-cut parts, re-runs ----------------------------------------------------------------


def test_crash_cut_parts(parts: Parts, tmp_path: Path) -> None:
    # stream 0: the header last counted 1 s, the file holds 2.5 s and half a... byte is a sample
    samples = g711_bytes("PCMU", tone(440, 2.5, 8000))
    (parts.path / "stream-0.wav").write_bytes(wav_g711_file("PCMU", samples, header_samples=8000))
    # its JSON is stale: written at 1 s, not closed, with a pause it had since left
    parts.info(0, "PCMU", 8000, packets=50, closed=False, pauses=[{"start": 4000, "end": None}])
    # stream 1: an Opus frame log cut in the middle of its last record, and no JSON at all
    packets = encode("libopus", tone(1000, 2.0, 48000), 48000, frame=960)
    blob = frames_file(48000, [(960 * k, p) for k, p in enumerate(packets)])
    (parts.path / "stream-1.frames").write_bytes(blob[:-7])
    # a temporary file of an earlier, interrupted finalisation
    (tmp_path / ".cut.wav.partial").write_bytes(b"junk")

    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="cut", call=call(3.0, status="failed")
    )
    assert not (tmp_path / ".cut.wav.partial").exists()
    stereo, rate = read_wav(result.files[0])
    assert rate == 48000
    assert abs(stereo.shape[0] / rate - 3.0) <= 0.02
    # every sample present was kept, and the stale open pause did not silence the resumed audio
    assert dominant(span(stereo[:, 0], rate, 0.6, 2.4), rate) == pytest.approx(440, abs=2)
    assert rms(span(stereo[:, 0], rate, 2.0, 2.45)) > 1000
    assert dominant(span(stereo[:, 1], rate, 0.2, 1.9), rate) == pytest.approx(1000, abs=2)
    side = result.metadata
    assert side["status"] == "failed"
    assert side["streams"][0]["complete"] is False
    assert side["streams"][1]["codec"] == "OPUS"  # told by the frame log's 48 kHz clock


def test_unreadable_parts_are_silence_not_a_failure(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    (parts.path / "stream-1.wav").write_bytes(b"RIFF\x00")  # killed while creating the file
    parts.info(1, "PCMU", 8000, closed=False)
    (parts.path / "stream-2.json").write_text('{"index": 2, "codec": "G729"')  # torn JSON
    (parts.path / "stream-2.wav.tmp").write_bytes(b"x")
    result = finalise_call(parts.path, output_dir=tmp_path, stem="u", call=call(1.0))
    stereo, _ = read_wav(result.files[0])
    assert stereo.shape == (8000, 2)
    assert rms(stereo[:, 1]) == 0
    assert result.metadata["streams"][1]["problems"]
    assert result.metadata["streams"][2]["recorded"] is False


def test_rerun_is_idempotent_and_drops_files_of_the_earlier_run(
    parts: Parts, tmp_path: Path
) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    parts.g711(1, "PCMA", tone(1000, 1.0, 8000))
    first = finalise_call(
        parts.path, output_dir=tmp_path, stem="r", call=call(1.0), channels="both"
    )
    contents = {p: p.read_bytes() for p in first.files}
    sidecar = first.sidecar.read_bytes()
    again = finalise_call(
        parts.path, output_dir=tmp_path, stem="r", call=call(1.0), channels="both"
    )
    assert {p: p.read_bytes() for p in again.files} == contents
    assert again.sidecar.read_bytes() == sidecar
    finalise_call(parts.path, output_dir=tmp_path, stem="r", call=call(1.0), channels="stereo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parts", "r.json", "r.wav"]


def test_no_parts_at_all(tmp_path: Path) -> None:
    result = finalise_call(
        tmp_path / "missing.parts", output_dir=tmp_path, stem="n", call=call(5.0)
    )
    assert result.files == ()
    side = json.loads(result.sidecar.read_text())
    assert side["files"] == [] and side["streams"] == []
    assert side["metrics"] is None


def test_unknown_end_takes_the_end_of_the_media(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 1.5, 8000))
    parts.opus(1, tone(1000, 2.0, 48000))
    result = finalise_call(parts.path, output_dir=tmp_path, stem="e", call=call(0, ended_at=None))
    samples, rate = read_wav(result.files[0])
    assert abs(samples.shape[0] / rate - 2.0) <= 0.03
    assert result.metadata["duration_s"] == pytest.approx(2.0, abs=0.03)


def test_weird_identifiers_in_paths(tmp_path: Path) -> None:
    weird_call = "../../\x00evil/..\r\n\u202e☎ CON"
    stem = recording_stem(STARTED, weird_call, "../sess\x00/..")
    folder = parts_dir(tmp_path / "recordings", STARTED, stem)
    folder.mkdir(parents=True)
    Parts(folder).g711(0, "PCMU", tone(440, 0.5, 8000))
    out = recording_dir(tmp_path / "recordings", STARTED)
    result = finalise_call(
        folder,
        output_dir=out,
        stem=stem,
        call=call(0.5, call_id=weird_call, session_id="../sess\x00/.."),
    )
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.parts[:4] == ("recordings", "2024", "05", "01") for p in written)
    assert result.sidecar.parent == out
    assert json.loads(result.sidecar.read_text())["call_id"] == weird_call


# -- conversation metrics --------------------------------------------------------------------


def bursts(spans: Sequence[tuple[float, float]], freq: float, seconds: float) -> np.ndarray:
    x = np.zeros(round(seconds * 8000), np.int16)
    for start, end in spans:
        piece = tone(freq, end - start, 8000)
        x[round(start * 8000) : round(start * 8000) + piece.size] = piece
    return x


def test_metrics_in_the_sidecar_and_in_the_session(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", bursts([(0.5, 2.5), (5.0, 7.0), (8.0, 9.0)], 440, 10))
    parts.g711(1, "PCMA", bursts([(3.0, 4.5), (6.0, 7.5), (8.5, 9.5)], 1000, 10))
    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="t", call=call(10.0), participants=[ALICE, BOB]
    )
    m = result.metadata["metrics"]
    assert m["turn_count"] == 6
    assert m["interruptions"] == 2  # bob talks into alice's 2nd and 3rd turns
    assert m["interruptions_by"] == {"alice": 2, "bob": 0}
    assert m["interruptions_made_by"] == {"alice": 0, "bob": 2}
    assert m["speech_ms"]["alice"] == pytest.approx(5000, abs=100)
    assert m["speech_ms"]["bob"] == pytest.approx(4000, abs=100)
    who = [(t["participant"], round(t["start_ms"] / 100)) for t in m["turns"]]
    assert who == [
        ("alice", 5),
        ("bob", 30),
        ("alice", 50),
        ("bob", 60),
        ("alice", 80),
        ("bob", 85),
    ]

    state = SessionState(id="sess-1", call_id="call-1@example.com")
    result.record_turns(state)
    assert state.metrics.turn_count == m["turn_count"]
    assert state.metrics.interruptions == m["interruptions"]
    assert state.metrics.speech_ms == m["speech_ms"]
    assert state.metrics.interruptions_by == {"alice": 2}
    assert state.history[1].participant == "bob"
    assert state.history[1].start == EPOCH + timedelta(milliseconds=m["turns"][1]["start_ms"])


def test_metrics_can_be_skipped(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    result = finalise_call(parts.path, output_dir=tmp_path, stem="s", call=call(1.0), metrics=False)
    assert result.conversation is None and result.metadata["metrics"] is None


@pytest.mark.parametrize("fmt,channels", [("mp3", "stereo"), ("wav", "quad")])
def test_settings_are_checked(tmp_path: Path, fmt: str, channels: str) -> None:
    with pytest.raises(ValueError):
        finalise_call(
            tmp_path, output_dir=tmp_path, stem="z", call=call(1), fmt=fmt, channels=channels
        )


def test_wav_g711_two_legs_of_one_law_and_a_wideband_third(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 1.0, 8000))
    parts.g711(1, "PCMU", tone(1000, 1.0, 8000))
    parts.g722(2, tone(3000, 1.0, 16000))
    result = finalise_call(
        parts.path, output_dir=tmp_path, stem="y", fmt="wav-g711", call=call(1.0)
    )
    names = [p.name for p in result.files]
    assert names == ["y.wav", "y.stream-0.wav", "y.stream-1.wav", "y.stream-2.wav"]
    assert [a["encoding"] for a in result.metadata["audio"]][:1] == ["g711_pcmu"]
    assert result.metadata["audio"][0]["streams"] == [0, 1]


def test_the_wav_header_decides_the_law(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMA", tone(440, 1.0, 8000))
    parts.info(0, "PCMU", 8000)  # a JSON that disagrees with the file
    result = finalise_call(parts.path, output_dir=tmp_path, stem="h", call=call(1.0))
    samples, rate = read_wav(result.files[0])
    assert dominant(samples[:, 0], rate) == pytest.approx(440, abs=2)
    assert rms(samples[:, 0]) > 5000  # decoded as A-law, not as µ-law noise
    stream = result.metadata["streams"][0]
    assert stream["codec"] == "PCMA" and stream["problems"]


def test_a_pause_open_at_a_clean_close_lasts_to_the_end(parts: Parts, tmp_path: Path) -> None:
    parts.g711(0, "PCMU", tone(440, 2.0, 8000), pauses=[{"start": 8000, "end": None}])
    result = finalise_call(parts.path, output_dir=tmp_path, stem="c", call=call(2.0))
    samples, rate = read_wav(result.files[0])
    assert rms(span(samples[:, 0], rate, 0.1, 0.9)) > 1000
    assert rms(span(samples[:, 0], rate, 1.0, 2.0)) == 0
    assert result.metadata["pauses"] == [
        {"start": "2024-05-01T12:00:01.000+00:00", "end": "2024-05-01T12:00:02.000+00:00"}
    ]


def test_naive_times_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    naive = call(1, ended_at=datetime(2024, 5, 1))
    with pytest.raises(ValueError):
        finalise_call(tmp_path, output_dir=tmp_path / "o", stem="n", call=naive)
    assert not (tmp_path / "o").exists()


def test_participants_from_a_recording_session() -> None:
    session = RecordingSession(
        "c1", caller=Party("Alice", "sip:alice@a.example"), callee=Party(None, "sip:bob@b.example")
    )
    session.update_streams(
        [
            NegotiatedStream(0, "1", "audio", True, 20000, "RTP/AVP", codec="PCMU"),
            NegotiatedStream(1, "2", "audio", True, 20002, "RTP/AVP", codec="PCMU"),
        ]
    )
    assert participants_from_session(session) == [
        ParticipantInfo("caller", "Alice", "sip:alice@a.example", streams=(0,)),
        ParticipantInfo("callee", None, "sip:bob@b.example", streams=(1,)),
    ]


def test_a_corrupt_far_future_frame_does_not_stretch_the_call(parts: Parts, tmp_path: Path) -> None:
    packets = encode("libopus", tone(1000, 1.0, 48000), 48000, frame=960)
    records = [(960 * k, p) for k, p in enumerate(packets)] + [(2**40, packets[3])]
    (parts.path / "stream-0.frames").write_bytes(frames_file(48000, records))
    parts.info(0, "opus", 48000)
    result = finalise_call(parts.path, output_dir=tmp_path, stem="f", call=call(1.5))
    samples, rate = read_wav(result.files[0])
    assert abs(samples.shape[0] / rate - 1.5) <= 0.02


def test_blocks_no_leg_recorded_are_the_laws_silence_every_time(
    parts: Parts, tmp_path: Path
) -> None:
    """Blocks in which neither G.711 leg has a code (decoded once per process) are the same
    silence, with the same levels, as the decoded codes would be."""
    from siprec_node.media.decode import decode_g711

    speech = np.where(np.arange(8000 * 3) % 16000 < 8000, tone(440, 3.0, 8000), 0)
    codes = parts.g711(0, "PCMA", speech.astype(np.int16))
    parts.g711(1, "PCMU", np.zeros(0, np.int16))
    files = []
    for run in range(2):
        result = finalise_call(
            parts.path, output_dir=tmp_path / f"out{run}", stem="s", call=call(20.0)
        )
        files.append(result.files[0].read_bytes())
        samples, _ = read_wav(result.files[0])
        left = decode_g711(codes + SILENCE["PCMA"] * (160000 - len(codes)), "PCMA")
        assert np.array_equal(samples[:, 0], left) and not samples[:, 1].any()
        assert result.metadata["metrics"]["turn_count"] == 2
    assert files[0] == files[1]
