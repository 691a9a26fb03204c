"""`siprec-node call` against a running node: the call is recorded, and the command says where.

The recording is judged by its audio: the caller's 440 Hz on the left channel, the callee's
1000 Hz on the right, as long as the call.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.media.src_client import dominant_frequency, read_wav
from tests.integration.node_process import ROOT, free_port, start_node

pytestmark = pytest.mark.integration


def _call(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "siprec_node", "call", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("transport", "codec", "dialect"),
    [("udp", "PCMU", "rfc7865"), ("tcp", "G722", "broadworks"), ("udp", "PCMA", "none")],
)
def test_call_is_recorded_and_located(transport: str, codec: str, dialect: str) -> None:
    http = free_port((socket.SOCK_STREAM,))
    node = start_node(http_port=http)
    try:
        result = _call(
            f"sip:127.0.0.1:{node.sip_port};transport={transport}",
            *("--seconds", "3", "--codec", codec, "--dialect", dialect, "--json"),
            *("--http", f"http://127.0.0.1:{http}"),
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
    finally:
        node.stop()
    assert report["packets_sent"] == [150, 150]
    assert report["session_id"] and report["answered_ms"] < 1000
    sidecar = Path(report["sidecar"])
    assert sidecar.parent.is_relative_to(node.workdir / "recordings")
    recording = report["recording"]
    assert recording == json.loads(sidecar.read_text())
    (wav,) = recording["files"]
    rate, audio = read_wav(sidecar.parent / wav)
    assert 3.0 <= len(audio) / rate < 3.3  # the call: 3 s of tone, then the BYE
    middle = audio[int(0.5 * rate) : int(2.5 * rate)]
    assert abs(dominant_frequency(middle[:, 0], rate) - 440) < 5
    assert abs(dominant_frequency(middle[:, 1], rate) - 1000) < 5
    # each channel holds only its own leg
    spectrum = np.abs(np.fft.rfft(middle[:, 0]))
    freqs = np.fft.rfftfreq(len(middle), 1 / rate)
    assert spectrum[np.argmin(abs(freqs - 1000))] < spectrum.max() / 100


def test_call_to_nothing_fails_with_exit_1() -> None:
    port = free_port()
    result = _call(f"sip:127.0.0.1:{port};transport=tcp", "--seconds", "1", "--http", "")
    assert result.returncode == 1
    assert "call failed" in result.stderr


def test_bad_target_is_a_usage_error() -> None:
    result = _call("sip:", "--http", "")
    assert result.returncode == 2
    assert "target" in result.stderr
