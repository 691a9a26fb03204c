"""The recording under network impairments, against the real node, read back from the files.

Each test places one short call (both legs, a 440 Hz µ-law tone on the left and a 1 kHz A-law
tone on the right), impairs the packets on the way out (loss, adjacent swaps, duplicates, an SSRC
change, sequence and timestamp wrap), hangs up, waits for ``recording_finalised`` and reads the
stereo WAV with ``wave``. Beyond the tone and the length, each leg is compared sample by sample
with what was sent: G.711 has no codec state, so the channel of a leg must be exactly the decoded
payloads at their RTP positions, with silence where packets were lost and nowhere else.

The tones start at a phase of 0.3 rad so that no sample of them decodes to the silence level: a
run of silence in the file is a gap the node made, never a zero crossing of the tone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.media.src_client import (
    RATE,
    Duplicate,
    Impairment,
    Loss,
    RtpLeg,
    SrcCall,
    Swap,
    alaw_encode,
    dominant_frequency,
    read_wav,
    sent_samples,
    silent_runs,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import NodeProcess, start_node

pytestmark = pytest.mark.integration

FREQS = (440, 1000)
LAWS = ("PCMU", "PCMA")
SILENCE = 1e-3  # µ-law silence decodes to 0, A-law's to 8/32768; the tones never go this low


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    node = start_node()
    try:
        yield node
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-40:])


def _legs() -> list[RtpLeg]:
    return [
        RtpLeg(0, ulaw_encode(tone(440, 1.0, phase=0.3)), ssrc=0x1111AAAA),
        RtpLeg(8, alaw_encode(tone(1000, 1.0, phase=0.3)), ssrc=0x2222BBBB),
    ]


@dataclass
class Recorded:
    call: SrcCall
    legs: list[RtpLeg]
    sidecar: dict[str, Any]
    rate: int
    audio: np.ndarray
    wall: float  # INVITE sent to BYE answered, as the client measured it

    @property
    def duration(self) -> float:
        return len(self.audio) / self.rate

    def stream(self, index: int) -> dict[str, Any]:
        return self.sidecar["streams"][index]


def _record(
    node: NodeProcess, send: Callable[[SrcCall, list[RtpLeg]], None], legs: list[RtpLeg]
) -> Recorded:
    call = SrcCall(node.sip_port)
    try:
        t0 = time.time()
        call.invite()
        send(call, legs)
        # the file ends at the BYE: let the last packet's 20 ms pass first, with some margin,
        # so that every packet sent is inside the call
        time.sleep(0.1)
        assert call.bye() == 200
        wall = time.time() - t0
        done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
    finally:
        call.close()
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert sidecar["status"] == "ended" and sidecar["call_id"] == call.call_id
    stereo = [Path(str(f)) for f in done["files"] if str(f).endswith(".wav")]
    assert len(stereo) == 1, done["files"]
    rate, audio = read_wav(stereo[0])
    assert rate == RATE and audio.shape[1] == 2
    recorded = Recorded(call, legs, sidecar, rate, audio, wall)
    _check_common(recorded)
    return recorded


def _check_common(rec: Recorded) -> None:
    """Tone on its channel, nothing of it on the other, a file as long as the call."""
    assert abs(rec.duration - rec.sidecar["duration_s"]) < 0.02, (
        rec.duration,
        rec.sidecar["duration_s"],
    )
    assert rec.wall - 0.25 < rec.duration < rec.wall + 0.1, (rec.duration, rec.wall)
    middle = rec.audio[int(0.3 * rec.rate) : int((rec.duration - 0.3) * rec.rate)]
    for channel, freq in enumerate(FREQS):
        assert abs(dominant_frequency(middle[:, channel], rec.rate) - freq) < 5


def _expected(leg: RtpLeg, channel: int, missing: set[int]) -> np.ndarray:
    """What a leg's channel holds from its first received packet on: the decoded payloads in
    RTP order, silence for the packets in ``missing`` (sequence numbers)."""
    samples = sent_samples(leg, LAWS[channel], missing)
    skipped = 0
    for _, seq, _, payload in leg.log:
        if seq not in missing:
            break
        skipped += len(payload)  # nothing places a packet before the first one that arrived
    return samples[skipped:]


def _first_sound(x: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(x) > SILENCE)
    assert loud.size, "the channel is silent"
    return int(loud[0])


def _assert_leg_exact(rec: Recorded, channel: int, missing: set[int] | None = None) -> None:
    """The channel is, sample for sample, the sent payloads (``missing`` ones as silence)."""
    x = rec.audio[:, channel]
    expected = _expected(rec.legs[channel], channel, missing or set())
    start = _first_sound(x)
    got = x[start : start + expected.size]
    assert got.size == expected.size, (got.size, expected.size)
    wrong = np.flatnonzero(np.abs(got - expected) > 2 / 32768)
    assert wrong.size == 0, (
        f"channel {channel}: {wrong.size} samples differ from what was sent, first at "
        f"{wrong[0]} ({(start + wrong[0]) / rec.rate:.3f} s into the file)"
    )
    # after the last packet, only silence (no repeated or stray audio)
    assert np.abs(x[start + expected.size :]).max(initial=0) <= SILENCE


def _impaired(
    seconds: float, impairments: list[Impairment | None]
) -> Callable[[SrcCall, list[RtpLeg]], None]:
    def send(call: SrcCall, legs: list[RtpLeg]) -> None:
        call.stream(legs, seconds, impairments)

    return send


def test_five_percent_loss_is_counted_and_silent(node: NodeProcess) -> None:
    losses = [Loss(0.05, seed=7), Loss(0.05, seed=11)]
    rec = _record(node, _impaired(4.0, list(losses)), _legs())
    for channel, (leg, loss) in enumerate(zip(rec.legs, losses, strict=True)):
        sent = leg.sent
        seqs = [seq for _, seq, _, _ in leg.log]
        received = [s for s in seqs if s not in loss.dropped]
        # RTP can only count a loss between two packets that arrived
        countable = [s for s in loss.dropped if received[0] < s < received[-1]]
        stream = rec.stream(channel)
        print(
            f"leg {channel}: sent {sent}, dropped {len(loss.dropped)} "
            f"({100 * len(loss.dropped) / sent:.1f} %), sidecar lost {stream['lost']} "
            f"({100 * stream['lost'] / sent:.1f} %), packets {stream['packets']}"
        )
        assert abs(len(loss.dropped) / sent - 0.05) <= 0.02  # the seeds do drop ≈ 5 %
        assert stream["lost"] == len(countable)
        assert abs(stream["lost"] / sent - 0.05) <= 0.02
        assert stream["packets"] == loss.passed
        assert stream["late"] == 0 and stream["duplicates"] == 0
        # every lost packet is 20 ms of silence at its place, every other one is its audio
        _assert_leg_exact(rec, channel, set(loss.dropped))


def test_reordered_packets_give_the_same_recording(node: NodeProcess) -> None:
    swaps = [Swap(0.10, seed=3), Swap(0.10, seed=5)]
    rec = _record(node, _impaired(3.0, list(swaps)), _legs())
    for channel, swap in enumerate(swaps):
        assert swap.swapped >= 8, swap.swapped  # the impairment did happen
        stream = rec.stream(channel)
        assert stream["lost"] == 0 and stream["late"] == 0, stream
        assert stream["packets"] == rec.legs[channel].sent
        _assert_leg_exact(rec, channel)
        start = _first_sound(rec.audio[:, channel])
        got = rec.audio[start : start + rec.legs[channel].sent * 160, channel]
        reference = _expected(rec.legs[channel], channel, set())
        spectrum = np.abs(np.fft.rfft(got))
        assert np.allclose(spectrum, np.abs(np.fft.rfft(reference)), atol=1e-3 * spectrum.max())


def test_duplicated_packets_add_nothing(node: NodeProcess) -> None:
    doubles = [Duplicate(0.10, seed=13), Duplicate(0.10, seed=17)]
    rec = _record(node, _impaired(3.0, list(doubles)), _legs())
    for channel, double in enumerate(doubles):
        assert double.doubled >= 8, double.doubled
        stream = rec.stream(channel)
        assert stream["lost"] == 0, stream
        assert stream["packets"] == rec.legs[channel].sent
        assert stream["duplicates"] == double.doubled
        _assert_leg_exact(rec, channel)  # no extra length: the audio ends where the call's did


def test_ssrc_change_mid_stream_continues_without_gap_or_overlap(node: NodeProcess) -> None:
    def send(call: SrcCall, legs: list[RtpLeg]) -> None:
        call.stream(legs, 2.0)
        # leg 0's sender restarts: a new SSRC, new timestamp and sequence bases; the old SSRC
        # sends nothing more
        legs[0].ssrc = 0x5555CCCC
        legs[0].timestamp = 987_654_321
        legs[0].seq = 40_000
        call.stream(legs, 1.6)

    rec = _record(node, send, _legs())
    stream = rec.stream(0)
    assert [s for s in stream["ssrcs"]] == [0x1111AAAA, 0x5555CCCC], stream
    assert stream["lost"] == 0 and stream["late"] == 0, stream
    x = rec.audio[:, 0]
    start = _first_sound(x)
    sent = rec.legs[0].sent * 160
    runs = silent_runs(x, threshold=SILENCE, min_length=1)
    inner = [(int(a), int(b)) for a, b in runs if a > start and b < len(x)]
    longest = max((b - a for a, b in inner), default=0) / RATE
    print(f"SSRC change: gaps inside the tone {[(a / RATE, (b - a) / RATE) for a, b in inner]}")
    assert longest <= 0.040, inner
    # no overlap and no loss: with the silence of the gaps taken out, the channel is exactly
    # every payload sent, in order (an overlap would have dropped or overwritten some)
    keep = np.ones(x.size, dtype=bool)
    keep[:start] = False
    for a, b in runs:
        keep[a:b] = False
    got = x[keep]
    expected = _expected(rec.legs[0], 0, set())
    assert got.size == expected.size == sent, (got.size, expected.size)
    assert np.abs(got - expected).max() <= 2 / 32768
    # the other leg did not notice
    _assert_leg_exact(rec, 1)


def test_sequence_and_timestamp_wrap(node: NodeProcess) -> None:
    legs = _legs()
    legs[0].seq = 65_500  # wraps after 36 packets
    legs[1].timestamp = 2**32 - 8000  # wraps after 1 s
    rec = _record(node, _impaired(2.6, [None, None]), legs)
    assert any(seq == 0 for _, seq, _, _ in rec.legs[0].log)
    assert any(ts < 8000 for _, _, ts, _ in rec.legs[1].log)
    for channel in (0, 1):
        stream = rec.stream(channel)
        assert stream["lost"] == 0 and stream["late"] == 0, stream
        assert stream["packets"] == rec.legs[channel].sent
        _assert_leg_exact(rec, channel)
        assert not [
            (a, b)
            for a, b in silent_runs(rec.audio[:, channel], threshold=SILENCE)
            if a > 0 and b < len(rec.audio)
        ], "a gap in the middle of the tone"
