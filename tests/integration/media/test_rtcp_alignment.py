"""Legs aligned by RTCP through the real node: one leg's RTP travels 40 ms longer than the other's.

Both legs carry the same noise bursts at the same RTP sample (one room, two microphones), each
with a tone of its own. The SRC sends leg 2's packets two packets (40 ms) after leg 1's, and both
legs' sender reports carry the true mapping of RTP timestamp to the sender's clock. The node
places each leg's first packet by its arrival, so leg 2's audio reaches the files 40 ms late; the
SR offsets tell finalisation by how much. The stereo file is measured independently, by
cross-correlating its two channels: within 2 ms with SRs, 40 ms apart without.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import skip_unless_c_receive_path
from tests.integration.media.src_client import (
    RATE,
    Delay,
    RtpLeg,
    SrcCall,
    alaw_encode,
    delay_ms,
    read_wav,
    ulaw_encode,
)
from tests.integration.node_process import NodeProcess, start_node

pytestmark = pytest.mark.integration

SECONDS = 3.0
BURSTS = (0.5, 1.2, 1.9, 2.5)  # seconds from the first packet


def _audio(freq: float) -> np.ndarray:
    """The shared bursts and a tone of the leg's own, as float samples."""
    rng = np.random.default_rng(11)
    t = np.arange(round(SECONDS * RATE)) / RATE
    x = 0.1 * np.sin(2 * np.pi * freq * t)
    for at in BURSTS:
        a = round(at * RATE)
        x[a : a + 480] += rng.normal(0, 0.25, 480)
    return np.clip(x, -1, 1)


def _call(node: NodeProcess, *, rtcp: bool) -> tuple[np.ndarray, int, dict[str, Any]]:
    """One call whose second leg is sent 40 ms late; the stereo file and the sidecar."""
    call = SrcCall(node.sip_port)
    legs = [
        RtpLeg(0, ulaw_encode(_audio(440)), ssrc=0x1111AAAA, timestamp=1000),
        RtpLeg(8, alaw_encode(_audio(1000)), ssrc=0x2222BBBB, timestamp=7_000_000),
    ]
    call.invite()
    call.stream(legs, SECONDS, [None, Delay(2)], rtcp_every=10 if rtcp else None)
    assert call.bye() == 200
    call.close()
    done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert sidecar["call_id"] == call.call_id
    (stereo,) = [Path(str(f)) for f in done["files"] if str(f).endswith(".wav")]
    rate, audio = read_wav(stereo)
    return audio, rate, sidecar


@pytest.mark.parametrize("receive_path", ["c", "python"])
def test_legs_aligned_by_sender_reports(receive_path: str) -> None:
    if receive_path == "c":
        skip_unless_c_receive_path()
    node = start_node("", env={"SIPREC_MEDIA__RECEIVE_PATH": receive_path})
    try:
        with_sr, rate, side_sr = _call(node, rtcp=True)
        without, rate2, side_plain = _call(node, rtcp=False)
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
    assert rate == rate2 == RATE
    aligned = delay_ms(with_sr[:, 0], with_sr[:, 1], rate)
    apart = delay_ms(without[:, 0], without[:, 1], rate)
    streams = side_sr["streams"]
    print(
        f"{receive_path}: with SRs {aligned:+.3f} ms (leg 2 moved {streams[1]['alignment_ms']} ms,"
        f" SR offsets {streams[0]['sr_offset_ms']} / {streams[1]['sr_offset_ms']} ms from "
        f"{streams[0]['sr_offset_reports']} / {streams[1]['sr_offset_reports']} SRs); "
        f"without {apart:+.3f} ms"
    )
    assert abs(aligned) < 2.0
    assert apart == pytest.approx(40, abs=5)
    # what the sidecars say was done
    assert side_sr["alignment"]["method"] == "rtcp" and side_sr["alignment"]["reference"] == 0
    assert all(s["sr_offset_reports"] >= 2 for s in streams)
    assert streams[0]["alignment_ms"] == 0.0
    assert streams[1]["alignment_ms"] == pytest.approx(-40, abs=5)
    assert side_plain["alignment"]["method"] == "arrival"
    assert [s["alignment_ms"] for s in side_plain["streams"]] == [0.0, 0.0]
    assert [s["sr_offset_ms"] for s in side_plain["streams"]] == [None, None]
    # a second of call is a second of file, both ways
    for audio, side in ((with_sr, side_sr), (without, side_plain)):
        assert abs(len(audio) / rate - side["duration_s"]) < 0.02
