"""Wideband codecs end to end: a G.722 leg and an Opus leg recorded by the real node, read back.

Leg 0 sends a 440 Hz tone as G.722 (PT 9, RTP clock 8000, audio 16 kHz, 160-byte payloads of
20 ms), leg 1 a 1 kHz tone as Opus (PT 111, ``opus/48000/2``, 20 ms frames), both encoded by
FFmpeg's encoders through PyAV. The stereo file must have 440 Hz on the left and 1 kHz on the
right at the rate finalisation chose for an Opus call (48 kHz: nothing a stream carries is thrown
away), last as long as the call, and keep the channels apart in every output format: WAV read
with ``wave``; FLAC and Ogg Opus decoded with PyAV.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.media.src_client import (
    G722,
    OPUS,
    RtpLeg,
    SrcCall,
    dominant_frequency,
    g722_encode,
    level_db,
    opus_encode,
    read_wav,
    tone,
)
from tests.integration.node_process import start_node

pytestmark = pytest.mark.integration

SECONDS = 2.5
FREQS = (440, 1000)
EXTENSIONS = {"wav": ".wav", "flac": ".flac", "opus": ".opus"}


def _decode(path: Path) -> tuple[int, np.ndarray]:
    """FLAC or Ogg Opus to (rate, float samples (frames, channels)) with PyAV."""
    import av

    chunks, rate = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            rate = frame.sample_rate
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)
            data = data.T if frame.format.is_planar else data.reshape(-1, channels)
            if data.dtype == np.int16:
                data = data / 32768.0
            elif data.dtype == np.int32:
                data = data / 2147483648.0
            chunks.append(np.asarray(data, dtype=np.float64))
    return rate, np.concatenate(chunks)


def _band_db(x: np.ndarray, rate: int, freq: float, width: float = 30.0) -> float:
    """Energy of ``x`` within ``width`` Hz of ``freq``, in dB (Hann-windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = spectrum[np.abs(freqs - freq) <= width].sum()
    return 10 * float(np.log10(band + 1e-30))


@pytest.mark.parametrize("fmt", ["wav", "flac", "opus"])
def test_g722_left_opus_right(fmt: str) -> None:
    legs = [
        RtpLeg(9, b"", ssrc=0x0722_0722, frames=g722_encode(tone(440, SECONDS, rate=16000))),
        RtpLeg(
            111,
            b"",
            ssrc=0x0111_0111,
            frames=opus_encode(tone(1000, SECONDS, rate=48000)),
            step=960,
            clock=48000,
        ),
    ]
    node = start_node(env={"SIPREC_RECORDING__FORMAT": fmt})
    try:
        call = SrcCall(node.sip_port, codecs=(G722, OPUS))
        t0 = time.time()
        call.invite()
        assert "G722/8000" in call.answer and "opus/48000/2" in call.answer, call.answer
        call.stream(legs, SECONDS)
        time.sleep(0.1)
        assert call.bye() == 200
        wall = time.time() - t0
        done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
        call.close()
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert sidecar["status"] == "ended"
    streams = sidecar["streams"]
    assert [s["codec"] for s in streams] == ["G722", "OPUS"], streams
    assert [s["lost"] for s in streams] == [0, 0]
    assert [s["packets"] for s in streams] == [legs[0].sent, legs[1].sent]
    files = [Path(str(f)) for f in done["files"]]
    assert len(files) == 1 and files[0].suffix == EXTENSIONS[fmt], files
    rate, audio = read_wav(files[0]) if fmt == "wav" else _decode(files[0])
    print(f"{fmt}: sidecar sample_rate {sidecar['sample_rate']}, file {rate} Hz, {audio.shape}")
    # an Opus call is finalised at 48 kHz (the highest rate among its streams)
    assert sidecar["sample_rate"] == 48000 and rate == 48000
    assert audio.ndim == 2 and audio.shape[1] == 2
    duration = len(audio) / rate
    tolerance = 0.02 if fmt != "opus" else 0.03  # Ogg Opus: 20 ms frames, pre-skip
    assert abs(duration - sidecar["duration_s"]) < tolerance, (duration, sidecar["duration_s"])
    assert wall - 0.25 < duration < wall + 0.1, (duration, wall)

    talk = audio[int(0.4 * rate) : int((SECONDS - 0.2) * rate)]
    for channel, freq in enumerate(FREQS):
        assert abs(dominant_frequency(talk[:, channel], rate) - freq) < 5, (fmt, channel)
        assert level_db(talk[:, channel]) > -15, (fmt, channel, level_db(talk[:, channel]))
    # no bleed: each tone is at least 40 dB weaker on the other channel than on its own
    for own, freq in enumerate(FREQS):
        other = 1 - own
        bleed = _band_db(talk[:, other], rate, freq) - _band_db(talk[:, own], rate, freq)
        print(f"{fmt}: {freq} Hz on channel {other} relative to channel {own}: {bleed:.1f} dB")
        assert bleed < -40, (fmt, freq, bleed)
