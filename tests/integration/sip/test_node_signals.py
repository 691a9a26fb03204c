"""Signals to the whole process group, as a terminal's Ctrl-C (SIGINT), a closed terminal or ssh
session (SIGHUP) and systemd's default ``KillMode=control-group`` (SIGTERM) deliver them: the
node and its two media workers get the signal at once, with live calls carrying RTP.

The workers must ignore it and leave only when the node has closed their calls; the node drains
(BYE to each call), every sidecar has its packet counts and ``complete`` streams, the node exits
0, no worker is restarted and no media close fails. A SIGHUP to a worker alone changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.integration.media.src_client import RtpLeg, SrcCall, alaw_encode, tone, ulaw_encode
from tests.integration.node_process import start_node

pytestmark = pytest.mark.integration

WORKERS = 2
CALLS = 2
SECONDS = 6.0
SIGNAL_AFTER = 2.0


def _legs(n: int) -> list[RtpLeg]:
    return [
        RtpLeg(0, ulaw_encode(tone(440, SECONDS)), ssrc=0x100 + n),
        RtpLeg(8, alaw_encode(tone(1000, SECONDS)), ssrc=0x200 + n),
    ]


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
def test_signal_to_the_process_group_drains_with_every_statistic(sig: signal.Signals) -> None:
    node = start_node(
        env={"SIPREC_MEDIA__WORKERS": str(WORKERS), "SIPREC_NODE__DRAIN_GRACE": "0s"},
        start_new_session=True,
    )
    calls: list[SrcCall] = []
    threads: list[threading.Thread] = []
    try:
        for n in range(WORKERS):
            node.wait_for_event("media_worker_ready", worker=n)
        workers = [int(str(e["pid"])) for e in node.events("media_worker_started")]
        assert len(workers) == WORKERS
        pgid = os.getpgid(node.proc.pid)
        assert pgid == node.proc.pid and all(os.getpgid(p) == pgid for p in workers)
        os.kill(workers[0], signal.SIGHUP)  # a hangup of one worker alone changes nothing
        for n in range(CALLS):
            call = SrcCall(node.sip_port)
            call.invite()
            calls.append(call)
            thread = threading.Thread(target=call.stream, args=(_legs(n), SECONDS), daemon=True)
            thread.start()
            threads.append(thread)
        time.sleep(SIGNAL_AFTER)
        os.killpg(pgid, sig)
        code = node.proc.wait(20)
        assert code == 0, "\n".join(node.raw[-40:])
        node.stop()  # joins the log reader
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
        for thread in threads:
            thread.join(SECONDS + 2)
        for call in calls:
            call.close()
    log = "\n".join(node.raw[-60:])
    assert "Traceback" not in "\n".join(node.raw), log
    assert not node.events("media_worker_died"), log
    assert len(node.events("media_worker_started")) == WORKERS, log  # none restarted
    assert not node.events("media_close_failed"), log
    assert len(node.events("media_worker_stopped")) == WORKERS, log
    assert node.events("signal_received")[0]["signal"] == sig.name
    for call in calls:
        ended = node.wait_for_event("call_ended", call_id=call.call_id)
        assert ended["reason"] == "recorder shutting down", ended
        done = node.wait_for_event("recording_finalised", call_id=call.call_id)
        data = json.loads(Path(str(done["sidecar"])).read_text())
        streams = data["streams"]
        assert len(streams) == 2, streams
        for stream in streams:
            # about SIGNAL_AFTER seconds of 20 ms packets, every one counted, none lost
            assert stream["packets"] >= (SIGNAL_AFTER - 0.5) / 0.02, stream
            assert stream["lost"] == 0, stream
            assert stream["complete"] is True, stream
        assert data["duration_s"] >= SIGNAL_AFTER - 0.5, data
    node.wait_for_event("node_stopped")
    for pid in workers:  # the workers are gone too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (reparented children may wait for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_worker_whose_node_is_killed_closes_its_files_and_exits() -> None:
    """SIGKILL of the node alone: the worker sees its control socket close, closes the call's
    stream files cleanly (their sidecars say ``closed``) and exits."""
    node = start_node(start_new_session=True)
    call = SrcCall(node.sip_port)
    try:
        node.wait_for_event("media_worker_ready", worker=0)
        (worker,) = [int(str(e["pid"])) for e in node.events("media_worker_started")]
        call.invite()
        call.stream(_legs(0), 1.0)
        node.proc.kill()
        node.proc.wait(5)
        node.wait_for_event("media_worker_stopped", timeout=10, after_exit=True)
        deadline = time.monotonic() + 10
        while not _exited(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _exited(worker)
    finally:
        call.close()
        if node.proc.poll() is None:
            node.proc.kill()
    infos = sorted((node.workdir / "recordings").rglob("stream-*.json"))
    assert len(infos) == 2, infos
    for info in infos:
        data = json.loads(info.read_text())
        assert data["closed"] is True and data["packets"] >= 40, data
