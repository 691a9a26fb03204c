"""Recordings are finalised outside the SIP process, by the node's finalisation pool.

A real node (one finalisation process, as the tests' nodes have) records a call: its
``recording_finalised`` line names the process that ran ``finalise_call`` (``worker_pid``),
a child of the node started for it, not the node itself. That process is then SIGKILLed
between two calls: the next call's recording is still finalised, exactly once, by a new
pool process (``finalisation_pool_restarted``, saying how the old one ended), without a failed
attempt. (A process killed during a job: tests/unit/recorder/test_finalise_pool.py.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.media.src_client import RtpLeg, SrcCall, tone, ulaw_encode
from tests.integration.node_process import NodeProcess, start_node

pytestmark = pytest.mark.integration

SECONDS = 1.0


def _record(node: NodeProcess) -> dict[str, object]:
    call = SrcCall(node.sip_port)
    try:
        call.invite()
        node.wait_for_event("call_answered", call_id=call.call_id)
        legs = [RtpLeg(0, ulaw_encode(tone(f, SECONDS)), ssrc=s) for f, s in ((440, 1), (660, 2))]
        call.stream(legs, SECONDS)
        assert call.bye() == 200
        return node.wait_for_event("recording_finalised", timeout=30, call_id=call.call_id)
    finally:
        call.close()


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_recordings_are_finalised_by_a_pool_process_that_is_replaced_when_killed() -> None:
    node = start_node(config='\n[node]\ndrain_grace = "0s"\ndrain_deadline = "5s"\n')
    try:
        first = _record(node)
        pid = int(str(first["worker_pid"]))
        assert pid != node.proc.pid and _parent(pid) == node.proc.pid
        assert b"siprec_node.recorder.finalise_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert Path(str(first["sidecar"])).exists()

        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        second = _record(node)
        new_pid = int(str(second["worker_pid"]))
        assert new_pid not in (pid, node.proc.pid) and _parent(new_pid) == node.proc.pid
        restarted = node.wait_for_event("finalisation_pool_restarted")
        assert restarted["pid"] == pid and restarted["exit"] == "killed by SIGKILL"
        # it died between two jobs: the next job went to a new process, nothing failed
        assert not node.events("recording_finalise_failed")
        assert Path(str(second["sidecar"])).exists()
        finalised = [str(e["session_id"]) for e in node.events("recording_finalised")]
        assert len(finalised) == len(set(finalised)) == 2  # each call once
    finally:
        code = node.stop()
    assert code == 0
    assert not node.events("finalisations_abandoned")
