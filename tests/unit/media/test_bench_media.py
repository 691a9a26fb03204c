"""Smoke test of bench/media at a tiny scale: 5 calls for 2 s through the C sink and the node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[3] / "bench" / "media" / "run.py"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the bench builds its sender with gcc")
def test_bench_media_tiny_scale() -> None:
    command = [sys.executable, str(RUN), "--calls", "5", "--seconds", "2", "--json"]
    done = subprocess.run(
        [*command, "--drain", "0.3", "--settle", "0.3"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("C sink (recvmmsg)") for line in lines)
    assert any(line.startswith("node, 1 worker") for line in lines)
    result = json.loads(lines[-1])
    sink, node = result["rows"]
    for row in (sink, node):
        assert row["streams"] == 10
        assert row["offered"] == 10 * 2 * 50  # 10 streams, 2 s, one packet per 20 ms
        assert row["sender"]["per_stream_min"] == row["sender"]["per_stream_max"] == 100
        assert row["received"] == row["offered"]
        assert row["cpu_user_s"] + row["cpu_sys_s"] >= 0
    # the sender's sequence numbers and timestamps are right: the recorder sees a clean stream
    stats = node["streams_stats"]
    assert stats["lost"] == stats["duplicates"] == stats["late"] == stats["malformed"] == 0
    assert stats["reanchors"] == 10  # each stream's first packet anchors it, nothing after
    assert node["lag"]["samples"] > 50
    assert node["lag"]["p99_ms"] < 1000
