"""`decode_stretch` for every codec SRCs send, fed by encoders we did not write.

Media comes from tests/encoders.py (bcg729, libgsm, VisualOn AMR-WB, FFmpeg's encoders),
packetised as RFC 3551 and RFC 4867 say; the decoded audio is judged by its tone (frequency,
signal-to-noise, level), its length and where each packet landed.
"""

from __future__ import annotations

from collections.abc import Sequence

import av
import numpy as np
import pytest

from siprec_node.media import amr
from siprec_node.media import decode as decode_module
from siprec_node.media.decode import (
    Decoded,
    FrameLog,
    UnsupportedCodec,
    decode_stretch,
    decoded_rate,
)
from siprec_node.siprec.codecs import DECODABLE, PayloadFormat
from tests.encoders import (
    amr_payload,
    amrnb_frames,
    amrwb_frames,
    dominant,
    ffmpeg_frames,
    g723_frames,
    g726_bytes,
    g729_frames,
    gsm_frames,
    packetise,
    rms,
    tone,
    tone_snr,
)

LEVEL = 0.3 * 32767 / np.sqrt(2)  # rms of the test tones


def stretch(fmt: PayloadFormat, packets: Sequence[tuple[int, bytes]], **kw: int) -> Decoded:
    positions = np.array([p for p, _ in packets], np.int64)
    return decode_stretch(fmt, FrameLog(fmt.clock_rate, positions, [d for _, d in packets]), **kw)


def assert_tone(
    pcm: np.ndarray, rate: int, freq: float, start: float, end: float, *, snr: float = 20.0
) -> None:
    """The tone at ``freq`` between ``start`` and ``end`` seconds, clean and at its level."""
    seg = pcm[round(start * rate) : round(end * rate)]
    assert seg.size > rate // 10
    assert dominant(seg, rate) == pytest.approx(freq, abs=max(5.0, rate / seg.size))
    assert tone_snr(seg, freq, rate) > snr
    assert 0.5 * LEVEL < rms(seg) < 1.6 * LEVEL  # within about ±4 dB of what was encoded


def assert_silent(pcm: np.ndarray, rate: int, start: float, end: float) -> None:
    seg = pcm[round(start * rate) : round(end * rate)]
    assert seg.size and rms(seg) < 100, rms(seg)


# -- G.729 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_packet", [1, 2, 6])
def test_g729_tone_at_its_positions(per_packet: int) -> None:
    frames = g729_frames(tone(1000, 2.0, 8000))
    assert {len(f) for f in frames} == {10}
    packets = packetise(frames, per_packet, 80)
    # start at 0.5 s, and lose the packets of 1.0 to 1.3 s
    packets = [(4000 + p, d) for p, d in packets if not 4000 <= p < 4000 + 2400]
    decoded = stretch(PayloadFormat(18, "G729", 8000), packets)
    assert (decoded.rate, decoded.frames, decoded.errors) == (8000, len(packets), 0)
    pcm = decoded.pcm
    assert pcm.size == 4000 + 16000
    assert_silent(pcm, 8000, 0.0, 0.5)
    assert_tone(pcm, 8000, 1000, 0.55, 0.95)
    assert_silent(pcm, 8000, 1.06, 1.3)  # a 60 ms packet at 0.98 s reaches 1.04 s
    assert_tone(pcm, 8000, 1000, 1.4, 2.5)


def test_g729_annex_b_sid_frames_are_silence_not_errors() -> None:
    speech = tone(700, 1.0, 8000)
    frames = g729_frames(np.concatenate([speech, np.zeros(8000, np.int16), speech]), vad=True)
    assert {len(f) for f in frames} == {0, 2, 10}  # speech, SID, untransmitted
    packets = []
    for i in range(0, len(frames), 2):  # 20 ms packets; a SID frame goes last in its packet
        payload = b"".join(frames[i : i + 2])
        if payload:
            packets.append((i * 80, payload))
    assert any(len(p) % 10 == 2 for _, p in packets)  # SID frames, alone or last
    decoded = stretch(PayloadFormat(18, "G729", 8000, fmtp="annexb=yes"), packets)
    assert decoded.errors == 0
    assert_tone(decoded.pcm, 8000, 700, 0.1, 0.9)
    assert_silent(decoded.pcm, 8000, 1.2, 1.9)
    assert_tone(decoded.pcm, 8000, 700, 2.2, 2.9)


def test_g729_malformed_payload_counted_and_the_rest_decoded() -> None:
    packets = packetise(g729_frames(tone(1000, 1.0, 8000)), 2, 80)
    packets[10] = (packets[10][0], packets[10][1][:15])  # 15 bytes: neither frames nor SID
    decoded = stretch(PayloadFormat(18, "G729", 8000), packets)
    assert (decoded.frames, decoded.errors) == (len(packets), 1)
    assert_silent(decoded.pcm, 8000, 0.2, 0.22)
    assert_tone(decoded.pcm, 8000, 1000, 0.3, 0.95)


# -- G.723.1 -------------------------------------------------------------------------------


@pytest.mark.parametrize("per_packet", [1, 2])
def test_g723_tone(per_packet: int) -> None:
    frames = g723_frames(tone(1000, 2.0, 8000))
    assert {len(f) for f in frames} == {24}  # 6.3 kbit/s (FFmpeg encodes no 5.3 kbit/s)
    packets = packetise(frames, per_packet, 240)
    decoded = stretch(PayloadFormat(4, "G723", 8000), packets)
    assert decoded.errors == 0
    assert decoded.pcm.size == 240 * len(frames)
    assert_tone(decoded.pcm, 8000, 1000, 0.2, 1.9)


def test_g723_sid_and_untransmitted_frames_are_sized_by_their_header() -> None:
    frames = g723_frames(tone(1000, 1.0, 8000))
    sid = bytes([0x02, 0x10, 0x20, 0x30])  # low bits 10: a 4-byte SID frame
    packets = [(0, frames[0] + frames[1]), (480, sid), (720, bytes([0x03])), (960, frames[2])]
    packets.append((1200, frames[3][:10]))  # truncated
    decoded = stretch(PayloadFormat(4, "G723", 8000), packets)
    assert (decoded.frames, decoded.errors) == (5, 1)
    assert decoded.pcm.size == 960 + 240


# -- G.726 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kbit", [16, 24, 32, 40])
@pytest.mark.parametrize("aal2", [False, True])
def test_g726_both_packings(kbit: int, aal2: bool) -> None:
    bits = kbit // 8
    data = g726_bytes(tone(1000, 2.0, 8000), bits, little_endian=not aal2)
    size = 160 * bits // 8  # 20 ms
    packets = [(i * 160, data[i * size : (i + 1) * size]) for i in range(len(data) // size)]
    name = f"AAL2-G726-{kbit}" if aal2 else f"G726-{kbit}"
    decoded = stretch(PayloadFormat(2 if name == "G726-32" else 100, name, 8000), packets)
    assert decoded.errors == 0
    assert decoded.pcm.size == 16000
    assert_tone(decoded.pcm, 8000, 1000, 0.2, 1.9, snr=15 if kbit == 16 else 20)
    # the other packing makes noise of it: the two really are told apart
    other = f"G726-{kbit}" if aal2 else f"AAL2-G726-{kbit}"
    wrong = stretch(PayloadFormat(100, other, 8000), packets).pcm
    assert tone_snr(wrong[1600:15200], 1000, 8000) < 10


def test_g726_payloads_of_part_code_words_decode_one_by_one() -> None:
    data = g726_bytes(tone(1000, 1.0, 8000), 3, little_endian=True)  # 3 bytes = 8 samples
    packets = [(i * 80, data[i * 30 : (i + 1) * 30]) for i in range(len(data) // 30)]
    packets[5] = (packets[5][0], packets[5][1][:29])  # 29 bytes: 77 whole code words
    decoded = stretch(PayloadFormat(100, "G726-24", 8000), packets)
    assert decoded.errors == 0
    assert decoded.pcm.size == 8000
    assert_tone(decoded.pcm, 8000, 1000, 0.1, 0.95, snr=15)


# -- AMR, AMR-WB ---------------------------------------------------------------------------


@pytest.mark.parametrize("octet_aligned", [True, False])
@pytest.mark.parametrize("bit_rate", [4750, 7950, 12200])
@pytest.mark.parametrize("per_packet", [1, 3])
def test_amr_nb_rfc4867_both_packings(octet_aligned: bool, bit_rate: int, per_packet: int) -> None:
    frames = amrnb_frames(tone(1000, 2.0, 8000), bit_rate)
    packets = [
        (160 * i, amr_payload(frames[i : i + per_packet], wideband=False, octet_aligned=oa))
        for i in range(0, len(frames), per_packet)
        for oa in [octet_aligned]
    ]
    packets = [(8000 + p, d) for p, d in packets]  # the stream starts 1 s into the stretch
    fmtp = "octet-align=1" if octet_aligned else None
    decoded = stretch(PayloadFormat(96, "AMR", 8000, fmtp=fmtp), packets)
    assert (decoded.rate, decoded.errors) == (8000, 0)
    assert decoded.pcm.size == 8000 + 160 * len(frames)
    assert_silent(decoded.pcm, 8000, 0.0, 1.0)
    assert_tone(decoded.pcm, 8000, 1000, 1.2, 2.9, snr=15 if bit_rate < 7000 else 20)
    # read with the other packing, every payload is wrong or noise
    other = None if octet_aligned else "octet-align=1"
    wrong = stretch(PayloadFormat(96, "AMR", 8000, fmtp=other), packets)
    assert wrong.errors > len(packets) // 2 or tone_snr(wrong.pcm[9600:], 1000, 8000) < 10


@pytest.mark.parametrize("octet_aligned", [True, False])
@pytest.mark.parametrize("mode", [0, 2, 8])
def test_amr_wb_rfc4867_both_packings(octet_aligned: bool, mode: int) -> None:
    frames = amrwb_frames(tone(1000, 2.0, 16000), mode)
    packets = [
        (320 * i, amr_payload(frames[i : i + 2], wideband=True, octet_aligned=octet_aligned))
        for i in range(0, len(frames), 2)
    ]
    fmtp = "octet-align=1" if octet_aligned else None
    decoded = stretch(PayloadFormat(97, "AMR-WB", 16000, fmtp=fmtp), packets)
    assert (decoded.rate, decoded.errors) == (16000, 0)
    assert decoded.pcm.size == 32000
    assert_tone(decoded.pcm, 16000, 1000, 0.2, 1.9)


def test_amr_dtx_sid_and_no_data_frames() -> None:
    voice = tone(1000, 0.6, 8000)
    frames = ffmpeg_frames(
        "libopencore_amrnb",
        np.concatenate([voice, np.zeros(8000, np.int16), voice]),
        8000,
        frame=160,
        bit_rate=12200,
        options={"dtx": "1"},
    )
    types = [f[0] >> 3 & 15 for f in frames]
    assert 8 in types and 15 in types  # SID and NO_DATA frames
    packets = [
        (160 * i, amr_payload(frames[i : i + 1], wideband=False, octet_aligned=False))
        for i in range(len(frames))
        if types[i] != 15  # DTX: nothing is sent between SID frames
    ]
    decoded = stretch(PayloadFormat(97, "AMR", 8000), packets)
    assert decoded.errors == 0
    assert_tone(decoded.pcm, 8000, 1000, 0.1, 0.55)
    quiet = decoded.pcm[round(0.8 * 8000) : round(1.5 * 8000)]
    assert rms(quiet) < 300  # comfort noise at most
    assert_tone(decoded.pcm, 8000, 1000, 1.7, 2.15)


def test_amr_malformed_payloads_counted() -> None:
    frames = amrnb_frames(tone(1000, 1.0, 8000))
    good = [
        (160 * i, amr_payload([f], wideband=False, octet_aligned=True))
        for i, f in enumerate(frames)
    ]
    bad = [
        (good[3][0], good[3][1][:5]),  # truncated frame
        (good[4][0], bytes([0xF0, 0x6C]) + good[4][1][2:]),  # frame type 13: reserved
        (good[5][0], bytes([0xF0])),  # a CMR and nothing else
    ]
    decoded = stretch(
        PayloadFormat(96, "AMR", 8000, fmtp="octet-align=1"), good[:3] + bad + good[6:]
    )
    assert decoded.errors == 3
    assert_tone(decoded.pcm, 8000, 1000, 0.3, 0.95)
    interleaved = PayloadFormat(96, "AMR", 8000, fmtp="octet-align=1; interleaving=4")
    assert stretch(interleaved, good).errors == len(good)


# -- GSM, iLBC -----------------------------------------------------------------------------


def test_gsm_tone_and_a_bad_frame() -> None:
    frames = gsm_frames(tone(1000, 2.0, 8000))
    packets = packetise(frames, 1, 160)
    packets[20] = (packets[20][0], b"\x00" * 33)  # no 0xD signature
    decoded = stretch(PayloadFormat(3, "GSM", 8000), packets)
    assert (decoded.frames, decoded.errors) == (100, 1)
    assert decoded.pcm.size == 16000
    assert_tone(decoded.pcm, 8000, 1000, 0.5, 1.9)
    assert_silent(decoded.pcm, 8000, 0.4, 0.42)


def test_ilbc_frame_sizes_and_positions() -> None:
    # No independent iLBC encoder exists in Debian or PyAV's FFmpeg: the decoder's output is
    # whatever these bits say, so only framing, lengths, positions and errors are judged here.
    rng = np.random.default_rng(5)
    packets = [
        (0, rng.bytes(38)),  # one 20 ms frame
        (160, rng.bytes(76)),  # two
        (800, rng.bytes(50)),  # one 30 ms frame
        (1040, rng.bytes(37)),  # neither size
        (1280, rng.bytes(100)),  # two 30 ms frames
    ]
    decoded = stretch(PayloadFormat(98, "ILBC", 8000, fmtp="mode=20"), packets)
    assert (decoded.frames, decoded.errors) == (5, 1)
    assert decoded.pcm.size == 1280 + 480
    # what FFmpeg's decoder makes of each frame, fed one by one, placed by hand
    expected = np.zeros(1760, np.int16)
    for size, frames in (
        (38, [(0, 0), (160, 0), (320, 38)]),
        (50, [(800, 0), (1280, 0), (1520, 50)]),
    ):
        ctx = av.CodecContext.create("ilbc", "r")
        ctx.sample_rate, ctx.layout = 8000, "mono"
        ctx.options = {"block_align": str(size)}
        payload_at = {0: packets[0][1], 160: packets[1][1], 320: packets[1][1]}
        payload_at |= {800: packets[2][1], 1280: packets[4][1], 1520: packets[4][1]}
        for start, offset in frames:
            (frame,) = ctx.decode(av.Packet(payload_at[start][offset : offset + size]))
            pcm = frame.to_ndarray().reshape(-1)
            expected[start : start + pcm.size] = pcm
    assert np.array_equal(decoded.pcm, expected)
    assert not decoded.pcm[480:800].any() and not decoded.pcm[1040:1280].any()


def test_ilbc_mode_decides_sizes_that_fit_both() -> None:
    payload = bytes(1900)  # 50 frames of 20 ms or 38 of 30 ms
    for mode, samples in (("mode=20", 50 * 160), ("mode=30", 38 * 240), (None, 38 * 240)):
        decoded = stretch(PayloadFormat(98, "ILBC", 8000, fmtp=mode), [(0, payload)])
        assert decoded.pcm.size == samples, mode


# -- the rest ------------------------------------------------------------------------------


def test_g722_and_opus_keep_working_and_opus_errors_count() -> None:
    g722 = ffmpeg_frames("g722", tone(1000, 1.0, 16000), 16000, frame=320)
    decoded = stretch(PayloadFormat(9, "G722", 8000), [(160 * i, p) for i, p in enumerate(g722)])
    assert decoded.rate == 16000
    assert_tone(decoded.pcm, 16000, 1000, 0.1, 0.9)
    opus = ffmpeg_frames("libopus", tone(1000, 1.0, 48000), 48000, frame=960, bit_rate=64000)
    packets = [(960 * i, p) for i, p in enumerate(opus)]
    packets[10] = (packets[10][0], b"\xff")  # a code 3 packet without its frame count
    decoded = stretch(PayloadFormat(111, "OPUS", 48000, 2), packets)
    assert (decoded.rate, decoded.errors) == (48000, 1)
    assert_tone(decoded.pcm, 48000, 1000, 0.3, 0.9)


def test_decoded_rates() -> None:
    rates = {
        name: decoded_rate(PayloadFormat(0, name, c.clock_rate)) for name, c in DECODABLE.items()
    }
    assert rates == {name: 8000 for name in DECODABLE} | {
        "G722": 16000,
        "OPUS": 48000,
        "AMR-WB": 16000,
    }


def test_length_and_limit_for_frame_codecs() -> None:
    packets = packetise(g729_frames(tone(1000, 1.0, 8000)), 2, 80)
    fmt = PayloadFormat(18, "G729", 8000)
    assert stretch(fmt, packets, length=4000).pcm.size == 4000
    assert stretch(fmt, packets, length=12000).pcm.size == 12000
    limited = stretch(fmt, packets, limit=4000)
    assert limited.pcm.size == 4000
    assert_tone(limited.pcm, 8000, 1000, 0.1, 0.5)
    assert stretch(fmt, []).pcm.size == 0
    assert stretch(fmt, [], length=160).pcm.tolist() == [0] * 160


def test_a_decoder_that_rejects_a_stretch_falls_back_payload_by_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packets = packetise(g729_frames(tone(1000, 1.0, 8000)), 2, 80)
    fmt = PayloadFormat(18, "G729", 8000)
    bulk = stretch(fmt, packets)

    def refuse(ctx: av.AudioCodecContext, data: bytes) -> np.ndarray:
        raise av.InvalidDataError(1094995529, "refused")

    monkeypatch.setattr(decode_module, "_run_decoder", refuse)
    one_by_one = stretch(fmt, packets)
    assert one_by_one.errors == 0
    assert np.array_equal(one_by_one.pcm, bulk.pcm)


def test_codec_without_a_local_decoder_or_unknown_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(UnsupportedCodec):
        stretch(PayloadFormat(15, "G728", 8000), [(0, bytes(10))])
    monkeypatch.setattr(decode_module, "locally_decodable", lambda: frozenset({"PCMU"}))
    with pytest.raises(UnsupportedCodec, match="no decoder"):
        stretch(PayloadFormat(18, "G729", 8000), [(0, bytes(10))])


@pytest.mark.parametrize("wideband", [False, True])
def test_amr_bulk_depacketising_agrees_with_the_bit_reader(wideband: bool) -> None:
    if wideband:
        frames = amrwb_frames(tone(700, 1.0, 16000), 2) + amrwb_frames(tone(700, 1.0, 16000), 8)
        bits_of = amr.AMR_WB_BITS
    else:
        frames = amrnb_frames(tone(700, 1.0, 8000), 4750) + amrnb_frames(tone(700, 1.0, 8000))
        bits_of = amr.AMR_NB_BITS
    payloads = [amr_payload([f], wideband=wideband, octet_aligned=False) for f in frames]
    payloads += [amr_payload(frames[:2], wideband=wideband, octet_aligned=False)]  # two frames
    bulk = amr.efficient_single(payloads, bits_of)
    assert set(bulk) == set(range(len(frames)))  # every one-frame payload, not the last
    for index, frame in bulk.items():
        assert [frame] == amr.bandwidth_efficient(payloads[index], bits_of, False)
        assert frame[1] == frames[index][: len(frame[1])]  # the encoder's own storage frame


def test_payload_ticks_match_what_decoding_covers() -> None:
    from siprec_node.media.decode import payload_ticks

    nb = amrnb_frames(tone(500, 0.2, 8000))
    wb = amrwb_frames(tone(500, 0.2, 16000))
    cases = [
        (PayloadFormat(18, "G729", 8000), [bytes(20), bytes(10)]),
        (PayloadFormat(4, "G723", 8000), [bytes(24) + bytes([2, 0, 0, 0]), bytes([1]) + bytes(19)]),
        (PayloadFormat(3, "GSM", 8000), [gsm_frames(tone(500, 0.1, 8000))[0] * 2]),
        (PayloadFormat(100, "G726-40", 8000), [bytes(100), bytes(7)]),
        (PayloadFormat(98, "ILBC", 8000, fmtp="mode=20"), [bytes(76), bytes(50), bytes(1900)]),
        (PayloadFormat(98, "ILBC", 8000), [bytes(1900)]),
    ]
    for octet in (True, False):
        fmtp = "octet-align=1" if octet else None
        cases.append(
            (
                PayloadFormat(96, "AMR", 8000, fmtp=fmtp),
                [
                    amr_payload(nb[i : i + n], wideband=False, octet_aligned=octet)
                    for i, n in ((0, 1), (1, 3))
                ],
            )
        )
        cases.append(
            (
                PayloadFormat(97, "AMR-WB", 16000, fmtp=fmtp),
                [
                    amr_payload(wb[i : i + n], wideband=True, octet_aligned=octet)
                    for i, n in ((0, 1), (1, 2))
                ],
            )
        )
    for fmt, payloads in cases:
        ticks = payload_ticks(fmt)
        assert ticks is not None
        for payload in payloads:
            decoded = stretch(fmt, [(0, payload)])
            scale = decoded.rate // fmt.clock_rate
            assert ticks(payload) * scale == decoded.pcm.size, (fmt.name, len(payload))
    g729 = payload_ticks(PayloadFormat(18, "G729", 8000))
    assert g729 is not None
    assert (g729(bytes(22)), g729(bytes(2))) == (240, 80)  # a SID frame covers 10 ms (silent)
    assert payload_ticks(PayloadFormat(0, "PCMU", 8000)) is None
