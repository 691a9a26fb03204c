"""Bulk decoding, checked against FFmpeg's own decoders run packet by packet."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from siprec_node.media.decode import (
    ALAW_TABLE,
    G711_SILENCE,
    MULAW_TABLE,
    FrameLog,
    UnsupportedCodec,
    canonical_codec,
    decode_frames,
    decode_g711,
    decode_g711_stereo,
    decode_g722,
    decode_opus,
    fit,
    output_rate,
    resample,
    scatter,
)


def ffmpeg_decode(codec: str, packets: list[bytes], rate: int, layout: str = "mono") -> np.ndarray:
    ctx = av.CodecContext.create(codec, "r")
    ctx.sample_rate = rate
    ctx.layout = layout
    out = []
    for packet in packets:
        for frame in ctx.decode(av.Packet(packet)):
            out.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(out)


def encode(codec: str, pcm: np.ndarray, rate: int, frame: int, layout: str = "mono") -> list[bytes]:
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate = rate
    ctx.layout = layout
    ctx.format = "s16"
    ctx.open()
    packets: list[bytes] = []
    for i in range(0, pcm.shape[0] - frame + 1, frame):
        block = np.ascontiguousarray(pcm[i : i + frame]).reshape(1, -1)
        f = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
        f.sample_rate = rate
        f.pts = i
        f.time_base = Fraction(1, rate)
        packets += [bytes(p) for p in ctx.encode(f)]
    return packets + [bytes(p) for p in ctx.encode(None)]


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


def dominant(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


# -- G.711 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec,ffmpeg", [("PCMU", "pcm_mulaw"), ("PCMA", "pcm_alaw")])
def test_g711_tables_are_ffmpegs(codec: str, ffmpeg: str) -> None:
    every_code = bytes(range(256))
    expected = ffmpeg_decode(ffmpeg, [every_code], 8000)
    assert np.array_equal(decode_g711(every_code, codec), expected)
    assert np.array_equal({"PCMU": MULAW_TABLE, "PCMA": ALAW_TABLE}[codec], expected)
    assert abs(int(decode_g711(bytes([G711_SILENCE[codec]]), codec)[0])) <= 8


@pytest.mark.parametrize("size", [0, 1, 2, 3, 160, 8001])
@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "pcmu", "pcma"])
def test_g711_any_length_and_input_type(size: int, codec: str) -> None:
    codes = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    table = MULAW_TABLE if codec.upper() == "PCMU" else ALAW_TABLE
    assert np.array_equal(decode_g711(codes, codec), table[codes])
    assert np.array_equal(decode_g711(codes.tobytes(), codec), table[codes])
    assert np.array_equal(decode_g711(memoryview(codes.tobytes()), codec), table[codes])


def test_g711_stereo_is_the_two_legs_interleaved() -> None:
    rng = np.random.default_rng(3)
    left = rng.integers(0, 256, 12345, dtype=np.uint8)
    right = rng.integers(0, 256, 12345, dtype=np.uint8)
    stereo = decode_g711_stereo(left, right, "PCMU", "PCMA")
    assert stereo.shape == (12345, 2)
    assert np.array_equal(stereo[:, 0], MULAW_TABLE[left])
    assert np.array_equal(stereo[:, 1], ALAW_TABLE[right])
    with pytest.raises(ValueError):
        decode_g711_stereo(left, right[:-1], "PCMU", "PCMU")


# -- G.722 ---------------------------------------------------------------------------------


def test_g722_bulk_equals_packet_by_packet() -> None:
    packets = encode("g722", tone(1000, 1.0, 16000), 16000, 320)
    positions = np.arange(len(packets), dtype=np.int64) * 160
    bulk = decode_g722(FrameLog(8000, positions, packets))
    assert np.array_equal(bulk, ffmpeg_decode("g722", packets, 16000))


def test_g722_positions_are_8khz_clock_and_gaps_are_silence() -> None:
    packets = encode("g722", tone(3000, 1.0, 16000), 16000, 320)
    # packets 10..19 lost; the stream starts 0.5 s after the epoch; records out of order
    kept = [k for k in range(len(packets)) if not 10 <= k < 20]
    order = kept[::-1]
    log = FrameLog(8000, np.array([4000 + 160 * k for k in order]), [packets[k] for k in order])
    pcm = decode_frames("G.722", log, length=16000 * 2)
    assert pcm.size == 32000
    assert not pcm[:8000].any()
    assert not pcm[8000 + 320 * 10 + 40 : 8000 + 320 * 20].any()  # the lost 200 ms
    assert dominant(pcm[8000 + 320 * 25 : 24000], 16000) == pytest.approx(3000, abs=2)
    assert not pcm[8000 + 16000 :].any()


# -- Opus ----------------------------------------------------------------------------------


def test_opus_decoded_at_its_positions() -> None:
    packets = encode("libopus", tone(440, 1.0, 48000), 48000, 960)
    positions = [960 * k for k in range(len(packets))]
    positions = [p + (48000 if k >= 25 else 0) for k, p in enumerate(positions)]  # 1 s gap (DTX)
    pcm = decode_opus(FrameLog(48000, np.array(positions), packets))
    assert pcm.size == positions[-1] + 960
    assert not pcm[960 * 25 + 100 : 960 * 25 + 48000].any()
    assert dominant(pcm[48000 + 960 * 26 : 48000 + 960 * 49], 48000) == pytest.approx(440, abs=3)


def test_opus_stereo_payloads_are_down_mixed_and_bad_ones_are_silence() -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack(
        [np.sin(2 * np.pi * 500 * t) * 8000, np.sin(2 * np.pi * 500 * t) * 8000], axis=1
    ).astype(np.int16)
    packets = encode("libopus", stereo, 48000, 960, layout="stereo")
    assert packets[3][0] & 0x04  # the TOC says stereo
    packets[30] = b"\xff\xff\xff"  # garbage
    pcm = decode_opus(FrameLog(48000, np.arange(len(packets)) * 960, packets))
    assert pcm.ndim == 1 and pcm.size >= 48000
    assert dominant(pcm[4800:24000], 48000) == pytest.approx(500, abs=3)
    assert np.sqrt(np.mean(pcm[4800:24000].astype(float) ** 2)) > 3000


def test_empty_logs() -> None:
    assert decode_opus(FrameLog(48000), length=480).tolist() == [0] * 480
    assert decode_g722(FrameLog(8000)).size == 0
    with pytest.raises(UnsupportedCodec):
        decode_frames("PCMU", FrameLog(8000))


# -- timelines -----------------------------------------------------------------------------


def test_scatter_places_runs_drops_outside_later_wins() -> None:
    chunks = np.arange(1, 10, dtype=np.int16)  # runs: [1,2,3] [4,5] [6,7,8,9]
    out = scatter(chunks, np.array([2, -1, 3]), np.array([3, 2, 4]), length=6)
    assert out.tolist() == [5, 0, 1, 6, 7, 8]


def test_fit() -> None:
    x = np.array([1, 2, 3], np.int16)
    assert fit(x, 3) is x
    assert fit(x, 5, 1).tolist() == [0, 1, 2, 3, 0]
    assert fit(x, 2, -1).tolist() == [2, 3]
    assert fit(x, 4, 2, fill=9).tolist() == [9, 9, 1, 2]
    assert fit(x, 2, 5).tolist() == [0, 0]
    stereo = np.ones((2, 2), np.int16)
    assert fit(stereo, 3).shape == (3, 2)


@pytest.mark.parametrize("target", [16000, 48000])
def test_resample_keeps_time_and_pitch(target: int) -> None:
    x = np.zeros(8000, np.int16)
    x[4000] = 20000
    y = resample(x, 8000, target)
    assert y.size == target
    assert abs(int(np.argmax(np.abs(y))) - target // 2) <= 2  # aligned, no filter delay
    z = resample(tone(440, 1.0, 8000), 8000, target)
    assert dominant(z[1000:-1000], target) == pytest.approx(440, abs=2)
    assert resample(x, 8000, 8000) is x


def test_codecs_and_rates() -> None:
    assert [canonical_codec(c) for c in ("pcmu", "PCMA", "G.722", "opus")] == [
        "PCMU",
        "PCMA",
        "G722",
        "OPUS",
    ]
    with pytest.raises(UnsupportedCodec):
        canonical_codec("G728")
    assert canonical_codec("g.729a") == "G729"
    assert output_rate([]) == 8000
    assert output_rate(["PCMU", "PCMA"]) == 8000
    assert output_rate(["PCMU", "G722"]) == 16000
    assert output_rate(["G722", "opus"]) == 48000


def test_limit_bounds_a_log_with_a_position_far_in_the_future() -> None:
    packets = encode("g722", tone(1000, 0.2, 16000), 16000, 320)
    positions = np.arange(len(packets), dtype=np.int64) * 160
    positions[-1] = 2**40  # a corrupt record: decoded as it is, it would be years of silence
    log = FrameLog(8000, positions, packets)
    assert decode_g722(log, limit=16000).size == (len(packets) - 1) * 320
    assert decode_g722(log, limit=1000).size == 1000
    assert decode_frames("G722", log, 500).size == 500
    opus = encode("libopus", tone(440, 0.2, 48000), 48000, 960)
    far = np.array([960 * k for k in range(len(opus) - 1)] + [2**40])
    assert decode_opus(FrameLog(48000, far, opus), limit=10**6).size == 960 * (len(opus) - 1)
