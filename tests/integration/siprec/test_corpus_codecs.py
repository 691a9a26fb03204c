"""The corpus: call flows that send what real SRCs send, each recording judged by its audio.

SIPp drives the signalling (``tests/sipp/corpus_*.xml``, shaped after the SRC families of
shared/INTEROP.md); at the scenario's checkpoint the test reads the answered ports from
``GET /sessions`` and sends the RTP itself to every answered stream (SIPp's ``rtp_stream`` only
feeds the first m-line). The media comes from encoders the node does not use to decode: G.711
from the ITU-T formulas (``src_client``), G.729 from bcg729, G.722, G.723.1, G.726 and AMR-NB
from FFmpeg's encoders (``tests/encoders.py``).

Leg 1 sends a 440 Hz tone, leg 2 a 1 kHz tone, for ``SECONDS``. Every recording is read back:
each tone on its own channel (and not on the other), clean (tone at least 20 dB above whatever
else the channel holds, in every stretch of a codec: a wrong decoder or byte order fails it),
sounding for the time it was sent (±1 %) without a hole (a codec switch, with or without a
re-INVITE, must not cut it), in a file as long as the call (±1 %).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.encoders import (
    amr_payload,
    amrnb_frames,
    g723_frames,
    g726_bytes,
    g729_frames,
    packetise,
)
from tests.integration.media.src_client import (
    FRAME,
    RtpLeg,
    RtpSender,
    alaw_encode,
    g722_encode,
    read_wav,
    tone,
    ulaw_encode,
)
from tests.integration.siprec.harness import Recorder, SippRun

pytestmark = pytest.mark.integration

SECONDS = 4.0
PACKETS = round(SECONDS / 0.02)
G723_PACKETS = int(SECONDS / 0.03)
FREQS = (440.0, 1000.0)
WINDOW = 0.01  # seconds per analysis window
EDGE = 0.06  # seconds left out at each end of a stretch when judging how clean it is


Encoder = Callable[[float, float], list[bytes]]
"""(tone frequency, seconds into the tone) -> one payload per packet, from a fresh encoder."""


def _tone(freq: float, skip: float, rate: int = 8000) -> np.ndarray:
    """The leg's tone from ``skip`` seconds on (phase running on), a little longer than needed
    so that an encoder's delay never leaves it short of packets."""
    return tone(freq, SECONDS + 0.2, rate=rate)[round(skip * rate) :]


def _pcm16(freq: float, skip: float) -> np.ndarray:
    """The tone at 8 kHz as the int16 samples the encoders of ``tests.encoders`` take."""
    return np.round(_tone(freq, skip) * 32767).astype(np.int16)


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def _g711(encode: Callable[[np.ndarray], bytes]) -> Encoder:
    return lambda freq, skip: _split(encode(_tone(freq, skip)), FRAME)


def _g729(freq: float, skip: float) -> list[bytes]:
    """Two 10 ms bcg729 frames per packet (RFC 3551 §4.5.6)."""
    return [payload for _, payload in packetise(g729_frames(_pcm16(freq, skip)), 2, 80)]


def _amr(freq: float, skip: float, *, octet_aligned: bool) -> list[bytes]:
    """One AMR-NB 12.2 frame per packet, RFC 4867 octet-aligned or bandwidth-efficient."""
    frames = amrnb_frames(_pcm16(freq, skip))
    return [amr_payload([f], wideband=False, octet_aligned=octet_aligned) for f in frames]


ENCODERS: dict[str, Encoder] = {
    "PCMU": _g711(ulaw_encode),
    "PCMA": _g711(alaw_encode),
    "G722": lambda f, skip: g722_encode(_tone(f, skip, rate=16000)),
    "G729": _g729,
    # G.726-32: 4 bits a sample, 80 bytes per 20 ms
    "G726-32": lambda f, skip: _split(g726_bytes(_pcm16(f, skip), 4, little_endian=True), 80),
    "AAL2-G726-32": lambda f, skip: _split(g726_bytes(_pcm16(f, skip), 4, little_endian=False), 80),
    "AMR": lambda f, skip: _amr(f, skip, octet_aligned=True),
    "AMR-bandwidth-efficient": lambda f, skip: _amr(f, skip, octet_aligned=False),
    # one 24-byte 6.3 kbit/s frame per 30 ms packet (RFC 3551 §4.5.3)
    "G723": lambda f, skip: g723_frames(_pcm16(f, skip)),
}

# The codecs' algorithmic delay (frame + look-ahead): a fresh encoder's output starts up to that
# late, so a stretch may sound that much less than it lasts (ITU-T G.729, G.723.1; 3GPP TS
# 26.090). Allowed for in the short direction only.
DELAY = {"G729": 0.015, "G723": 0.0375, "AMR": 0.025, "AMR-bandwidth-efficient": 0.025}

Stretch = tuple[int, str, int]
"""(payload type, codec of ENCODERS, packets) sent in a row on a leg."""


@dataclass(frozen=True)
class Case:
    """One corpus call: the scenario, what each m-line offers, what each leg then sends."""

    scenario: str
    offers: list[list[str]]
    legs: list[list[Stretch]]
    reinvite: list[list[str]] | None = None
    """What the scenario's re-INVITE offers per m-line (sent while the first stretch plays)."""
    ptime: float = 0.02
    """Seconds of audio per packet."""
    problems: list[str] = field(default_factory=list)
    """What the recording's verdict must name (nothing: ``ok``)."""

    @property
    def packets(self) -> int:
        return sum(count for _, _, count in self.legs[0])

    @property
    def sent(self) -> float:
        """Seconds of audio each leg sends."""
        return self.packets * self.ptime


def _both(formats: str) -> list[list[str]]:
    return [formats.split(), formats.split()]


CASES = {
    # metadata that is not well-formed XML: recorded all the same (issue 9, item 5)
    "metadata-unparsed": Case(
        "tolerant_metadata_unparsed.xml",
        _both("0 101"),
        [[(0, "PCMU", PACKETS)], [(0, "PCMU", PACKETS)]],
        problems=["metadata_unparsed"],
    ),
    # 0 8 18 101 offered, PCMA sent (Oracle/Acme)
    "pcma-offered-second": Case(
        "corpus_pcma_offered_second.xml",
        _both("0 8 18 101"),
        [[(8, "PCMA", PACKETS)], [(8, "PCMA", PACKETS)]],
    ),
    # 9 0 8 offered, G.722 sent (Avaya SBCE)
    "g722": Case(
        "corpus_g722_call.xml",
        _both("9 0 8 101"),
        [[(9, "G722", PACKETS)], [(9, "G722", PACKETS)]],
    ),
    # one mixed m-line, opus offered first, PCMU sent (Webex Calling)
    "webex-opus-first": Case(
        "corpus_webex_opus_first.xml",
        [["111", "0", "8", "101"]],
        [[(0, "PCMU", PACKETS)]],
    ),
    # a switch mid-stream without signalling: PCMU -> G.729 and PCMA -> PCMU
    "codec-switch": Case(
        "corpus_codec_switch.xml",
        _both("0 8 18 101"),
        [
            [(0, "PCMU", PACKETS // 2), (18, "G729", PACKETS - PACKETS // 2)],
            [(8, "PCMA", PACKETS // 2), (0, "PCMU", PACKETS - PACKETS // 2)],
        ],
    ),
    # PCMU only, then a re-INVITE offering G.729 and PCMA: G.729 on leg 1, PCMA on leg 2
    "reinvite-codec": Case(
        "corpus_reinvite_codec.xml",
        _both("0 101"),
        [
            [(0, "PCMU", PACKETS // 2), (18, "G729", PACKETS - PACKETS // 2)],
            [(0, "PCMU", PACKETS // 2), (8, "PCMA", PACKETS - PACKETS // 2)],
        ],
        reinvite=_both("18 8 101"),
    ),
    "g729": Case(
        "corpus_g729_call.xml",
        _both("18 101"),
        [[(18, "G729", PACKETS)], [(18, "G729", PACKETS)]],
    ),
    # G726-32 on PT 2 (RFC 3551 packing) and AAL2-G726-32 on PT 112
    "g726": Case(
        "corpus_g726_call.xml",
        [["2", "0", "101"], ["112", "0", "101"]],
        [[(2, "G726-32", PACKETS)], [(112, "AAL2-G726-32", PACKETS)]],
    ),
    # AMR-NB 12.2, octet-aligned on PT 96 and bandwidth-efficient on PT 97
    "amr": Case(
        "corpus_amr_call.xml",
        [["96", "0", "101"], ["97", "0", "101"]],
        [[(96, "AMR", PACKETS)], [(97, "AMR-bandwidth-efficient", PACKETS)]],
    ),
    # G.723.1 on static PT 4, 30 ms packets
    "g723": Case(
        "corpus_g723_call.xml",
        _both("4 0 101"),
        [[(4, "G723", G723_PACKETS)], [(4, "G723", G723_PACKETS)]],
        ptime=0.03,
    ),
}


# ------------------------------------------------------------------------------- the media


def make_leg(index: int, case: Case) -> RtpLeg:
    """A leg sending its tone through its stretches: each stretch is a fresh encoder's (as an
    SBC's after a transfer), fed the tone from where the previous stretch stopped."""
    freq = FREQS[index]
    frames: list[bytes] = []
    types: list[int] = []
    for payload_type, codec, count in case.legs[index]:
        encoded = ENCODERS[codec](freq, len(frames) * case.ptime)
        assert len(encoded) >= count, (codec, len(encoded))
        frames += encoded[:count]
        types += [payload_type] * count
    assert len(frames) == case.packets
    step = round(case.ptime * 8000)  # every codec here has an 8 kHz RTP clock
    return RtpLeg(
        types[0], b"", ssrc=0x5EC0_0000 + index, frames=frames, payload_types=types, step=step
    )


def tone_amplitude(x: np.ndarray, rate: int, freq: float) -> np.ndarray:
    """Amplitude of ``freq`` in each WINDOW of ``x`` (single-bin DFT)."""
    size = round(WINDOW * rate)
    count = len(x) // size
    frames = x[: count * size].reshape(count, size)
    probe = np.exp(-2j * np.pi * freq * np.arange(size) / rate)
    return 2 * np.abs(frames @ probe) / size


def tone_to_rest_db(x: np.ndarray, rate: int, freq: float) -> float:
    """Energy within 20 Hz of ``freq`` against all the rest, in dB (Hann-windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    band = np.abs(np.fft.rfftfreq(len(x), 1 / rate) - freq) <= 20
    return 10 * float(np.log10(spectrum[band].sum() / max(spectrum[~band].sum(), 1e-30)))


def band_db(x: np.ndarray, rate: int, freq: float) -> float:
    """Energy within 20 Hz of ``freq``, in dB (Hann-windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    band = np.abs(np.fft.rfftfreq(len(x), 1 / rate) - freq) <= 20
    return 10 * float(np.log10(spectrum[band].sum() + 1e-30))


def judge_channel(
    channel: np.ndarray,
    rate: int,
    freq: float,
    case: Case,
    index: int,
    start: float,
) -> None:
    """The tone of leg ``index``: from ``start`` (seconds into the file: when its first packet
    was sent) for as long as it was sent (±1 %; the file ends at the BYE, which may cut the last
    packet's audio), without a hole, clean in each stretch. Each stretch's codec delay (DELAY)
    is allowed for, at the start and at a switch."""
    label = f"leg {index + 1}"
    stretches = case.legs[index]
    delays = [DELAY.get(codec, 0.0) for _, codec, _ in stretches]
    active = tone_amplitude(channel, rate, freq) > 0.1
    found = np.flatnonzero(active)
    assert found.size, f"{label}: no {freq:g} Hz at all"
    sounding = found.size * WINDOW
    span = (found[-1] - found[0] + 1) * WINDOW
    began = found[0] * WINDOW
    audible = min(case.sent, len(channel) / rate - start)  # what of the audio sent the file holds
    print(f"{label}: {freq:g} Hz for {sounding:.3f} s of {audible:.3f} s, from {began:.3f} s")
    assert start - WINDOW <= began <= start + delays[0] + 2 * WINDOW, (label, began, start)
    tolerance = 0.01 * case.sent
    assert audible - sum(delays) - tolerance <= sounding <= audible + tolerance, (label, sounding)
    holes = span - sounding
    assert holes <= 2 * WINDOW + sum(delays[1:]), f"{label}: holes of {holes:.3f} s in the tone"
    for _, codec, count in stretches:
        end = start + count * case.ptime
        piece = channel[round((start + EDGE) * rate) : round((end - EDGE) * rate)]
        clean = tone_to_rest_db(piece, rate, freq)
        print(f"{label}: {codec} stretch {start:.2f}-{end:.2f} s, tone to rest {clean:.1f} dB")
        assert clean >= 20, (label, codec, clean)
        start = end


# ---------------------------------------------------------------------------------- the test


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_corpus_call_is_recorded_as_sent(recorder: Recorder, case: Case) -> None:
    legs = [make_leg(i, case) for i in range(len(case.legs))]
    switch = min(s[0][2] for s in case.legs)  # packets of each leg's first stretch
    with SippRun(case.scenario, recorder) as run:
        recorder.wait_for_event("call_active", call_id=run.call_id)
        streams = recorder.session(run.call_id)["streams"]
        assert [s["label"] for s in streams] == [str(i + 1) for i in range(len(legs))], streams
        ports = [int(s["port"]) for s in streams]
        sender = RtpSender(legs, ports, case.packets, ptime=case.ptime)
        sender.start()
        if case.reinvite is not None:
            run.release()  # SIPp re-INVITEs while the first stretch plays
            recorder.wait_for_event("call_updated", call_id=run.call_id)
            assert sender.count < switch, "the SRC switched before the re-INVITE was answered"
        sender.join(case.sent + 10)
        assert sender.first is not None and sender.last is not None
        run.release()
        outcome = run.finish()
    assert outcome.ok, outcome.explain()

    # The answer: every offered codec (all decodable here) in the offer's order, per m-line.
    offers = [case.offers] + ([case.reinvite] if case.reinvite is not None else [])
    answers = run.answers()
    assert len(answers) == len(offers), answers
    for answer, offered in zip(answers, offers, strict=True):
        for media, formats in zip(answer.media, offered, strict=True):
            assert media.port > 0 and media.direction == "recvonly", media
            assert [f for f in media.formats if f != "13"] == formats, (media, formats)

    done = recorder.wait_for_event("recording_finalised", timeout=30, call_id=run.call_id)
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert sidecar["status"] == "ended"
    counts = [(s["packets"], s["lost"]) for s in sidecar["streams"]]
    assert counts == [(case.packets, 0)] * len(legs), counts
    # The sidecar says which codec each stretch was in, and finds nothing wrong with the call.
    for stream, stretches in zip(sidecar["streams"], case.legs, strict=True):
        said = [(c["payload_type"], c["packets"]) for c in stream["codecs"]]
        assert said == [(pt, count) for pt, _, count in stretches], stream
        assert not stream.get("unexpected_payload"), stream
    problems = [p["kind"] for p in sidecar["verdict"]["problems"]]
    assert problems == case.problems, sidecar["verdict"]
    files = [Path(str(f)) for f in done["files"]]
    assert len(files) == 1, files
    rate, audio = read_wav(files[0])
    assert audio.shape[1] == len(legs)  # stereo for two legs, mono for one mixed stream

    # A second of call is a second of file: sample 0 is the node's media epoch (its streams
    # open just before the 200), the end is the BYE as SIPp's trace saw it leave.
    epoch = datetime.fromisoformat(sidecar["media_epoch"]).timestamp()
    duration = len(audio) / rate
    ok = run.responses("INVITE", 200)[0]
    bye = next(m for m in run.messages if m.direction == "sent" and m.method == "BYE")
    assert ok.at is not None and bye.at is not None
    call = bye.at.timestamp() - epoch  # SIPp's trace is in local time, like naive datetimes
    print(f"{case.scenario}: {rate} Hz, file {duration:.3f} s, call {call:.3f} s")
    assert -0.2 < ok.at.timestamp() - epoch < 1.0, "the media epoch is not the call's start"
    assert abs(duration - sidecar["duration_s"]) < 0.02, (duration, sidecar["duration_s"])
    assert abs(duration - call) <= 0.01 * call, (duration, call)

    # Where the first packet belongs in the file.
    start = sender.first - epoch
    for index in range(len(legs)):
        judge_channel(audio[:, index], rate, FREQS[index], case, index, start)
    if len(legs) == 2:  # each tone stays on its own channel: 40 dB weaker on the other
        talk = audio[round((start + EDGE) * rate) : round((start + case.sent - EDGE) * rate)]
        for own, freq in enumerate(FREQS):
            leak = band_db(talk[:, 1 - own], rate, freq) - band_db(talk[:, own], rate, freq)
            assert leak < -40, (freq, leak)
