"""A media worker SIGKILLed mid-call, against the real node with two media workers.

Two calls are placed, so that each worker records one (the engine gives a new call to the least
loaded worker). One worker process is killed while both calls stream. The node must log
``media_worker_died`` naming the killed worker's call, start a replacement, re-open that call's
streams into the same files (``media_worker_restarted_for_call``) while RTP keeps flowing, and
after the BYEs finalise both recordings: the other call's recording complete and continuous, the
affected one with audio before and after the crash and a short gap between (the gap is measured
and printed), one stereo file per call.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tests.integration.media.src_client import (
    RATE,
    RtpLeg,
    SrcCall,
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

SECONDS = 4.0
KILL_AFTER = 2.0
SILENCE = 1e-3
RUN = 3  # a gap is this many samples at the silence level or more (the noise may bring one
# sample of a zero crossing there, never three in a row)
LAWS = ("PCMU", "PCMA")
MAX_GAP = 1.0  # seconds of audio a worker crash may cost (restart + what was buffered)


def _legs(n: int) -> list[RtpLeg]:
    # tones with a little seeded noise: every packet's payload is unique, so a packet found in
    # the file says which one it is (a pure tone repeats every few packets)
    rng = np.random.default_rng(n)
    size = int(SECONDS * RATE)
    return [
        RtpLeg(
            payload_type,
            encode(tone(freq, SECONDS, phase=0.3) + rng.uniform(-0.01, 0.01, size)),
            ssrc=ssrc + n,
        )
        for payload_type, encode, freq, ssrc in (
            (0, ulaw_encode, 440, 0x10),
            (8, alaw_encode, 1000, 0x20),
        )
    ]


def _finalised(node: NodeProcess, call: SrcCall) -> tuple[dict[str, Any], Path]:
    done = node.wait_for_event("recording_finalised", timeout=20, call_id=call.call_id)
    files = [Path(str(f)) for f in done["files"]]
    assert len(files) == 1 and files[0].suffix == ".wav", files
    return json.loads(Path(str(done["sidecar"])).read_text()), files[0]


def test_worker_killed_mid_call_is_restarted_and_the_recording_continues() -> None:
    # keep_parts: the parts folder is looked at after the finalisation
    node = start_node(env={"SIPREC_MEDIA__WORKERS": "2", "SIPREC_RECORDING__KEEP_PARTS": "true"})
    calls: list[SrcCall] = []
    try:
        node.wait_for_event("media_worker_started", worker=1)
        pids = {
            int(str(e["worker"])): int(str(e["pid"])) for e in node.events("media_worker_started")
        }
        assert sorted(pids) == [0, 1], pids

        calls = [SrcCall(node.sip_port), SrcCall(node.sip_port)]
        legs = [_legs(0), _legs(1)]
        sessions = []
        for call in calls:
            call.invite()
            answered = node.wait_for_event("call_answered", call_id=call.call_id)
            sessions.append(str(answered["session_id"]))
        threads = [
            threading.Thread(target=c.stream, args=(lg, SECONDS), daemon=True)
            for c, lg in zip(calls, legs, strict=True)
        ]
        for thread in threads:
            thread.start()
        time.sleep(KILL_AFTER)

        victim = 0
        os.kill(pids[victim], signal.SIGKILL)
        killed_at = time.time()
        died = node.wait_for_event("media_worker_died", timeout=5, worker=victim)
        assert died["pid"] == pids[victim]
        lost_sessions = cast(list[str], died["sessions"])
        affected = [n for n, s in enumerate(sessions) if s in lost_sessions]
        # each worker held one of the two calls
        assert len(affected) == 1 and len(lost_sessions) == 1, (died, sessions)
        hit = affected[0]
        spared = 1 - hit
        reopened = node.wait_for_event(
            "media_worker_restarted_for_call", timeout=5, session_id=sessions[hit]
        )
        assert reopened["worker"] == victim
        restarted = node.wait_for_event("media_worker_started", timeout=5, skip=2)
        assert restarted["worker"] == victim and restarted["pid"] != pids[victim]
        for thread in threads:
            thread.join(SECONDS + 5)
        time.sleep(0.1)
        for call in calls:
            assert call.bye() == 200
        results = [_finalised(node, call) for call in calls]
        # the other worker never died
        assert [e["worker"] for e in node.events("media_worker_died")] == [victim]
        os.kill(pids[1 - victim], 0)
    finally:
        for call in calls:
            call.close()
        assert node.stop() == 0, "\n".join(node.raw[-40:])

    for n, (sidecar, path) in enumerate(results):
        assert sidecar["status"] == "ended"
        rate, audio = read_wav(path)
        assert rate == RATE and audio.shape[1] == 2
        assert abs(len(audio) / rate - sidecar["duration_s"]) < 0.02
        epoch = _epoch(sidecar)
        if n == spared:
            # complete and continuous: each channel is exactly what was sent, no gap inside
            for channel in (0, 1):
                stream = sidecar["streams"][channel]
                assert stream["packets"] == legs[n][channel].sent and stream["lost"] == 0
                x = audio[:, channel]
                start = int(np.flatnonzero(np.abs(x) > SILENCE)[0])
                expected = sent_samples(legs[n][channel], LAWS[channel])
                assert np.abs(x[start : start + expected.size] - expected).max() <= 2 / 32768
                assert np.abs(x[start + expected.size :]).max(initial=0) <= SILENCE
            # nothing wrong with its media (its RTP may start late after its ACK on a loaded
            # machine, while the second call is answered: that is `short`, not a fault)
            kinds = {p["kind"] for p in sidecar["verdict"]["problems"]}
            assert kinds <= {"short"}, sidecar["verdict"]
            continue
        # the affected call: one file, audio before the kill and after, one short gap
        kill = killed_at - epoch
        checks = []
        for channel, freq in enumerate((440, 1000)):
            x = audio[:, channel]
            before = x[int((kill - 1.0) * rate) : int((kill - 0.2) * rate)]
            after = x[int((kill + MAX_GAP) * rate) : int((kill + 1.8) * rate)]
            assert abs(dominant_frequency(before, rate) - freq) < 5
            assert abs(dominant_frequency(after, rate) - freq) < 5
            print(f"stream {channel} of the affected call: {_stats(sidecar, channel)}")
            checks.append(
                _measure_continued(
                    legs[n][channel],
                    LAWS[channel],
                    x,
                    rate,
                    epoch,
                    kill,
                    sidecar["streams"][channel],
                )
            )
        # the same files continued: one set of stream files in the call's parts folder (each
        # sidecar with its twin, the previous version, that rewrites swap it with)
        parts = path.with_suffix(".parts")
        names = sorted(p.name for p in parts.iterdir() if not p.name.endswith(".json.tmp"))
        assert names == ["stream-0.json", "stream-0.wav", "stream-1.json", "stream-1.wav"]
        problems = [problem for found in checks for problem in found]
        assert not problems, "\n".join(problems)
        # the verdict names the crash's gap, on both streams
        gaps = next(p for p in sidecar["verdict"]["problems"] if p["kind"] == "gaps")
        assert gaps["streams"] == [0, 1] and gaps["count"] == 2


def _measure_continued(
    leg: RtpLeg,
    law: str,
    x: np.ndarray,
    rate: int,
    epoch: float,
    kill: float,
    stream: dict[str, Any],
) -> list[str]:
    """One channel of the affected call: the first packets sent, one gap, then the last packets
    sent, each at the time it was sent (the payloads are unique, so each is found exactly).
    Prints what it measured; returns what is wrong with the timing and the counts (asserted
    once both channels are measured)."""
    channel = int(stream["index"])
    sent = sent_samples(leg, law)
    loud = np.flatnonzero(np.abs(x) > SILENCE)
    start, stop = int(loud[0]), int(loud[-1]) + 1
    gaps = [(int(a), int(b)) for a, b in silent_runs(x[start:stop], min_length=RUN)]
    assert len(gaps) == 1, [(a / rate, (b - a) / rate) for a, b in gaps]
    a, b = gaps[0]
    gap = (b - a) / rate
    head, tail = x[start : start + a], x[start + b : stop]
    # before the gap: the call's first packets, in order, from packet 0
    assert np.abs(head - sent[: head.size]).max() <= 2 / 32768
    # after it: a run of consecutive packets from packet k on
    first = [
        k
        for k in range(len(leg.log))
        if np.abs(sent[160 * k : 160 * k + 160] - tail[:160]).max() <= 2 / 32768
    ]
    assert len(first) == 1, first
    k = first[0]
    assert np.abs(tail - sent[160 * k : 160 * k + tail.size]).max() <= 2 / 32768
    latency_before = epoch + start / rate - leg.made_at[0]
    latency_after = epoch + (start + b) / rate - leg.made_at[k]
    lost_in_gap = (160 * k - head.size) / rate
    cut_at_end = (sent.size - 160 * k - tail.size) / rate
    print(
        f"worker crash, channel {channel}: gap {1000 * gap:.0f} ms in the file, from "
        f"{(start + a) / rate - kill:+.3f} s to {(start + b) / rate - kill:+.3f} s around the "
        f"kill; audio sent but not recorded: {1000 * lost_in_gap:.0f} ms at the crash, "
        f"{1000 * cut_at_end:.0f} ms at the end; placed {1000 * latency_before:.1f} ms after "
        f"it was sent before the crash, {1000 * latency_after:.1f} ms after it"
    )
    assert 0 < gap <= MAX_GAP
    assert (start + a) / rate <= kill + 0.05  # the gap starts at the crash

    recorded = (head.size + tail.size) // 160
    problems = []
    # audio after the restart is placed when it was sent, like before the crash (a second of
    # call is a second of file, and the two legs stay aligned), so nothing sent after it is
    # pushed past the end of the call
    if abs(latency_after - latency_before) >= 0.03:
        problems.append(
            f"stream {channel}: after the restart, audio is placed "
            f"{1000 * (latency_after - latency_before):.0f} ms later than it was sent"
        )
    if cut_at_end >= 0.001:  # (a last sample may itself be at the silence level: 1 ms slack)
        problems.append(
            f"stream {channel}: the last {1000 * cut_at_end:.0f} ms sent are not in the file"
        )
    # the sidecar counts the packets of the whole call, less those of the last seconds before
    # the crash (the recorder's counters are saved every few seconds: FORMAT.md
    # `unclean_restarts`), and says so
    if not recorded - 5 * 50 <= stream["packets"] <= recorded:
        problems.append(
            f"stream {channel}: the file holds {recorded} packets, the sidecar counts "
            f"{stream['packets']}"
        )
    # the verdict's gap is the hole in the file (the file's silent run may take in a few quiet
    # samples of the tone at its edges)
    noted = stream["gaps"]
    if len(noted) != 1 or not -5 <= 1000 * gap - noted[0]["ms"] <= 30:
        problems.append(
            f"stream {channel}: the verdict's gaps {noted} are not the {1000 * gap:.0f} ms "
            "hole in the file"
        )
    if not any("after a crash" in p for p in stream.get("problems", [])):
        problems.append(f"stream {channel}: the sidecar does not say counts were lost")
    return problems


def _epoch(sidecar: dict[str, Any]) -> float:
    return datetime.fromisoformat(sidecar["media_epoch"]).timestamp()


def _stats(sidecar: dict[str, Any], index: int) -> dict[str, Any]:
    stream = sidecar["streams"][index]
    return {k: stream[k] for k in ("packets", "lost", "late", "complete")}
