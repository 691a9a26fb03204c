"""A recording disk that fills up (a small tmpfs), on a real node with Redis.

Below ``recording.min_free`` new INVITEs get 503 and ``/readyz`` says why; a live call keeps
its files whole, its failed writes are counted and named in the verdict; its finalisation fails,
is retried with backoff (counted in the metrics) and succeeds once space is freed. A second call
ends while the disk is full and the node is SIGKILLed while it is still ``finalising``: the
restarted node finalises it once, and removes its parts folder. A call left ``finalising`` by
a node that died is finalised by the node that takes it over, and keeps its own outcome.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.media.src_client import (
    RtpLeg,
    SrcCall,
    alaw_encode,
    tone,
    ulaw_encode,
)
from tests.integration.node_process import free_port
from tests.integration.persistence.harness import (
    NodeSpec,
    Processes,
    RedisServer,
    fleet_of_two,
    kill_node,
    launch_node,
    log_tail,
    sigterm,
    unique_prefix,
    wait_http_status,
    wait_session,
)

TMPFS_SIZE = "8m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs (root and a kernel that allows it; else the test is skipped)."""
    mount = tmp_path / "recordings"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if os.environ.get("CI"):  # CI runs as root: a skip there would hide the disk tests
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses a single byte more."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 16, 4096, 1):
            data = b"\0" * chunk
            while True:
                try:
                    os.write(fd, data)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def invite_status(port: int) -> int:
    call = SrcCall(port)
    try:
        call.invite()
    except AssertionError as exc:
        return int(str(exc).split(" ", 2)[1])
    finally:
        call.close()
    return 200


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def legs() -> list[RtpLeg]:
    return [
        RtpLeg(0, ulaw_encode(tone(440, 1.0)), ssrc=0x0E0E0E0E),
        RtpLeg(8, alaw_encode(tone(1000, 1.0)), ssrc=0x0F0F0F0F),
    ]


def files_of(directory: Path, session_id: str) -> list[str]:
    return sorted(p.name for p in directory.rglob(f"*{session_id}*"))


def test_a_full_disk_refuses_calls_keeps_live_ones_and_finalises_later(
    redis_server: RedisServer, procs: Processes, small_disk: Path
) -> None:
    spec = NodeSpec(
        node_id="rec-disk",
        redis_url=redis_server.url,
        prefix=unique_prefix("disk-full"),
        http_port=free_port((socket.SOCK_STREAM,)),
        recording='min_free = "1MB"\nfinalise_retry = "1s"\nfinalise_retry_max = "2s"',
        workdir=small_disk.parent,  # the node records into <workdir>/recordings: the tmpfs
    )
    redis = redis_server.client()
    node = procs.node(launch_node(spec))
    http = spec.http_port
    assert http is not None

    # -- call A: live when the disk fills up
    call = SrcCall(spec.sip_port)
    call.invite()
    first = str(node.wait_for_event("call_answered")["session_id"])
    filler = fill(small_disk)  # before its first packet: no room was preallocated yet
    _, body = wait_http_status(http, "/readyz", 503, timeout=5)
    assert "recording disk low" in body["problems"], body
    assert "recording.min_free" in body["disk"], body
    assert invite_status(spec.sip_port) == 503
    call.stream(legs(), 2.0)  # every write of the stream files fails
    failed = node.wait_for_event("stream_write_failed", session_id=first, timeout=10)
    assert "No space left" in str(failed["error"])
    assert call.bye() == 200
    node.wait_for_event("recording_finalise_failed", session_id=first, timeout=10)
    node.wait_for_event("recording_finalise_failed", session_id=first, skip=1, timeout=10)
    assert wait_session(redis, spec.prefix, first, status="finalising").in_active_index
    assert metric(http, "siprec_finalisation_failures_total") >= 2
    assert metric(http, "siprec_finalisation_retries_total") >= 1
    assert len(node.events("stream_write_failed")) <= 2  # one line per stream, not per packet
    filler.unlink()
    done = node.wait_for_event("recording_finalised", session_id=first, timeout=10)
    node.wait_for_event("recording_finalise_recovered", session_id=first)
    stored = wait_session(redis, spec.prefix, first, status="ended")
    assert not stored.in_active_index
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    problems = {p["kind"]: p for p in sidecar["verdict"]["problems"]}
    assert problems["write_errors"]["count"] > 0, problems
    assert problems["write_errors"]["ms"] > 0, problems
    assert "No space left" in problems["write_errors"]["detail"]
    assert stored.body["verdict"] == sidecar["verdict"]
    assert metric(http, "siprec_recording_write_errors_total") > 0
    assert metric(http, 'siprec_recording_problems_total{problem="write_errors"}') == 1
    wav = next(Path(str(f)) for f in done["files"])  # type: ignore[union-attr]
    with wave.open(str(wav)) as w:  # whole, and as long as the call
        assert w.getnframes() / w.getframerate() > 2.0
    sidecar_name = Path(str(done["sidecar"])).name
    assert files_of(small_disk, first) == sorted([wav.name, sidecar_name])  # no parts left
    wait_http_status(http, "/readyz", 200, timeout=5)

    # -- call B: ends while the disk is full, the node dies while finalising it
    second_call = SrcCall(spec.sip_port)
    second_call.invite()
    second = str(node.wait_for_event("call_answered", skip=1)["session_id"])
    filler = fill(small_disk)
    second_call.stream(legs(), 1.0)
    assert second_call.bye() == 200
    node.wait_for_event("recording_finalise_failed", session_id=second, timeout=10)
    wait_session(redis, spec.prefix, second, status="finalising")
    kill_node(node)
    filler.unlink()
    node = procs.node(launch_node(spec))
    node.wait_for_event("recording_finalise_resumed", session_id=second, timeout=10)
    done = node.wait_for_event("recording_finalised", session_id=second, timeout=15)
    stored = wait_session(redis, spec.prefix, second, status="ended")
    assert stored.body["end_reason"] == "BYE from SRC"
    time.sleep(1.0)
    assert len(node.events("recording_finalised")) == 1  # once
    wav = next(Path(str(f)) for f in done["files"])  # type: ignore[union-attr]
    expected = sorted([Path(str(done["sidecar"])).name, wav.name])
    assert files_of(small_disk, second) == expected  # one final file, its sidecar, no parts
    assert metric(http, "siprec_finalisations_recovered_total") == 1
    assert sigterm(node) == 0, log_tail(node)
    for c in (call, second_call):
        with contextlib.suppress(Exception):
            c.close()


def test_sigkill_right_after_bye_then_restart_finalises_once(
    tmp_path: Path, procs: Processes
) -> None:
    """The memory store (nothing survives the process): the restarted node finds the parts
    folder without a final sidecar and finalises it; whether the kill came before, during or
    after the first finalisation, there is one final file and one sidecar, and no parts."""
    spec = NodeSpec(
        node_id="rec-kill",
        redis_url="redis://127.0.0.1:1/0",
        prefix=unique_prefix("kill-after-bye"),
        backend="memory",
        workdir=tmp_path,
    )
    node = procs.node(launch_node(spec))
    call = SrcCall(spec.sip_port)
    call.invite()
    session_id = str(node.wait_for_event("call_answered")["session_id"])
    call.stream(legs(), 1.0)
    assert call.bye() == 200
    kill_node(node)  # right after the BYE's 200: the finalisation has barely begun, if at all
    first_run = [e for e in node.events("recording_finalised") if e.get("session_id") == session_id]
    node = procs.node(launch_node(spec))
    recordings = tmp_path / "recordings"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        names = files_of(recordings, session_id)
        if not any(n.endswith(".parts") for n in names) and any(n.endswith(".json") for n in names):
            break
        time.sleep(0.1)
    names = files_of(recordings, session_id)
    assert [n.rsplit(".", 1)[1] for n in names] == ["json", "wav"], (names, log_tail(node))
    sidecar = json.loads(next(recordings.rglob(f"*{session_id}.json")).read_text())
    assert sidecar["duration_s"] >= 1.0
    assert sum(s["packets"] for s in sidecar["streams"]) > 80
    second_run = [
        e for e in node.events("recording_finalised") if e.get("session_id") == session_id
    ]
    print(f"finalised before the kill: {len(first_run)}, after the restart: {len(second_run)}")
    assert len(first_run) + len(second_run) >= 1
    assert sigterm(node) == 0, log_tail(node)
    call.close()


def test_a_finalising_call_taken_over_by_another_node_keeps_its_outcome(
    redis_server: RedisServer, procs: Processes, small_disk: Path
) -> None:
    """rec-1 dies while a call that ended by BYE is still ``finalising`` (its disk was full);
    rec-2 takes the session over once rec-1's heartbeat has expired and finalises the recording
    (its verdict names the write errors): the store keeps the call's own outcome ("ended",
    "BYE from SRC"), not "failed, node died"."""
    first, second = fleet_of_two(redis_server.url, "disk-takeover")
    first.workdir = small_disk.parent  # rec-1 records into the tmpfs
    first.recording = 'min_free = "1MB"\nfinalise_retry = "1s"\nfinalise_retry_max = "2s"'
    redis = redis_server.client()
    rec1 = procs.node(launch_node(first))
    rec2 = procs.node(launch_node(second))
    call = SrcCall(first.sip_port)
    call.invite()
    session_id = str(rec1.wait_for_event("call_answered")["session_id"])
    filler = fill(small_disk)  # before the first packet: no room was preallocated yet
    call.stream(legs(), 1.5)  # every write fails: the verdict will say so
    assert call.bye() == 200
    rec1.wait_for_event("recording_finalise_failed", session_id=session_id, timeout=10)
    wait_session(redis, first.prefix, session_id, status="finalising")
    kill_node(rec1)
    filler.unlink()
    done = rec2.wait_for_event("recording_finalised", session_id=session_id, timeout=20)
    stored = wait_session(redis, first.prefix, session_id, status="ended", node="rec-2")
    assert stored.body["end_reason"] == "BYE from SRC", stored.body
    assert not stored.in_active_index
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    assert (sidecar["status"], sidecar["end_reason"]) == ("ended", "BYE from SRC")
    assert stored.body["verdict"] == sidecar["verdict"]
    wav = next(Path(str(f)) for f in done["files"] if str(f).endswith(".wav"))  # type: ignore[union-attr]
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768.0
    assert len(audio) / rate >= 1.4  # as long as the call (silence where writes failed)
    problems = {p["kind"]: p for p in sidecar["verdict"]["problems"]}
    assert "No space left" in problems["write_errors"]["detail"], problems
    assert files_of(small_disk, session_id) == sorted([wav.name, Path(done["sidecar"]).name])
    assert sigterm(rec2) == 0, log_tail(rec2)
    call.close()
