"""The final-file writers, read back with Python's `wave` (PCM) and FFmpeg (everything else)."""

from __future__ import annotations

import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from siprec_node.media.audio_out import (
    temporary_path,
    write_flac,
    write_opus,
    write_wav,
    write_wav_g711,
)


def tone(freq: float, seconds: float, rate: int, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def decode(path: Path) -> tuple[np.ndarray, int, str]:
    """(int16 samples (n, channels), rate, codec name) as FFmpeg reads the file."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            a = frame.to_ndarray()
            chunks.append(
                a.T if frame.format.is_planar else a.reshape(-1, len(frame.layout.channels))
            )
        name, rate = stream.codec_context.name, stream.codec_context.sample_rate
    data = np.concatenate(chunks)
    if data.dtype.kind == "f":
        data = np.clip(data * 32768, -32768, 32767)
    return data.astype(np.int16), rate, name


def test_wav_mono_and_stereo(tmp_path: Path) -> None:
    mono = tone(440, 0.5, 8000)
    write_wav(tmp_path / "m.wav", mono, 8000)
    with wave.open(str(tmp_path / "m.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            1,
            2,
            8000,
            4000,
        )
        assert np.array_equal(np.frombuffer(w.readframes(4000), "<i2"), mono)
    stereo = np.stack([mono, -mono], axis=1)
    write_wav(tmp_path / "s.wav", stereo, 16000, durable=False)
    with wave.open(str(tmp_path / "s.wav")) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 16000, 4000)
        assert np.array_equal(np.frombuffer(w.readframes(4000), "<i2").reshape(-1, 2), stereo)


def test_wav_from_blocks_is_the_same_file(tmp_path: Path) -> None:
    stereo = np.stack([tone(440, 1.0, 8000), tone(1000, 1.0, 8000)], axis=1)
    write_wav(tmp_path / "one.wav", stereo, 8000)
    write_wav(tmp_path / "blocks.wav", (stereo[i : i + 3000] for i in range(0, 8000, 3000)), 8000)
    assert (tmp_path / "one.wav").read_bytes() == (tmp_path / "blocks.wav").read_bytes()


def test_empty_recording_is_a_valid_file(tmp_path: Path) -> None:
    write_wav(tmp_path / "e.wav", np.zeros(0, np.int16), 8000)
    with wave.open(str(tmp_path / "e.wav")) as w:
        assert w.getnframes() == 0
    write_wav(tmp_path / "e2.wav", iter(()), 8000)
    with wave.open(str(tmp_path / "e2.wav")) as w:
        assert w.getnframes() == 0


def test_blocks_must_agree_on_channels(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_wav(tmp_path / "x.wav", [np.zeros((4, 2), np.int16), np.zeros(4, np.int16)], 8000)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("codec,tag,ffmpeg", [("PCMU", 7, "pcm_mulaw"), ("PCMA", 6, "pcm_alaw")])
def test_wav_g711(tmp_path: Path, codec: str, tag: int, ffmpeg: str) -> None:
    codes = np.random.default_rng(0).integers(0, 256, (8001, 2), dtype=np.uint8)
    write_wav_g711(tmp_path / "g.wav", codes, codec)
    data = (tmp_path / "g.wav").read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    fmt_tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", data, 20)
    assert (fmt_tag, channels, rate, block, bits) == (tag, 2, 8000, 2, 8)
    assert b"fact" in data[:64]
    with av.open(str(tmp_path / "g.wav")) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == ffmpeg
        raw = b"".join(bytes(p) for p in container.demux(stream) if p.size)
    assert raw == codes.tobytes()
    # an odd byte count gets the RIFF pad byte after the data
    write_wav_g711(tmp_path / "odd.wav", codes[:3, 0], codec)
    odd = (tmp_path / "odd.wav").read_bytes()
    assert len(odd) % 2 == 0 and odd.endswith(codes[:3, 0].tobytes() + b"\x00")
    with pytest.raises(ValueError):
        write_wav_g711(tmp_path / "x.wav", codes, "G722")


def test_flac_is_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stereo = rng.integers(-3000, 3000, (16000, 2)).astype(np.int16)
    write_flac(tmp_path / "f.flac", stereo, 16000)
    samples, rate, name = decode(tmp_path / "f.flac")
    assert (name, rate) == ("flac", 16000)
    assert np.array_equal(samples, stereo)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_opus_duration_and_isolation(tmp_path: Path, rate: int) -> None:
    left = tone(700, 3.0, rate)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    write_opus(
        tmp_path / "o.opus", (stereo[i : i + rate] for i in range(0, stereo.shape[0], rate)), rate
    )
    samples, out_rate, name = decode(tmp_path / "o.opus")
    assert (name, out_rate, samples.shape[1]) == ("opus", 48000, 2)
    assert abs(samples.shape[0] / out_rate - 3.0) <= 0.02
    middle = samples[48000:96000].astype(np.float64)
    spectrum_l = np.abs(np.fft.rfft(middle[:, 0] * np.hanning(48000)))
    spectrum_r = np.abs(np.fft.rfft(middle[:, 1] * np.hanning(48000)))
    k = 700  # 1 Hz bins
    assert int(np.argmax(spectrum_l)) == pytest.approx(k, abs=1)
    leak = 20 * np.log10(spectrum_r[k - 3 : k + 4].max() / spectrum_l[k - 3 : k + 4].max() + 1e-12)
    assert leak < -40


def test_opus_settings_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_opus(tmp_path / "x.opus", np.zeros(100, np.int16), 44100)
    with pytest.raises(ValueError):
        write_opus(
            tmp_path / "x.opus", np.zeros((100, 2), np.int16), 8000, bitrate_per_channel=16000
        )


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "r.wav"
    write_wav(path, tone(440, 0.1, 8000), 8000)
    before = path.read_bytes()

    def failing() -> Iterator[np.ndarray]:
        yield tone(1000, 0.1, 8000)
        raise RuntimeError("decoder died")

    for writer in (write_wav, write_flac):
        with pytest.raises(RuntimeError):
            writer(path, failing(), 8000)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.wav"]
    assert temporary_path(path).name == ".r.wav.partial"
