"""Smoke test of bench/drain at a tiny scale: 8 live calls drained, both stores."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "bench" / "drain" / "run.py"


@pytest.mark.skipif(not shutil.which("redis-server"), reason="the bench needs redis-server")
def test_bench_drain_tiny_scale(tmp_path: Path) -> None:
    command = [sys.executable, str(RUN), "--calls", "8", "--packets", "25"]
    command += ["--store", "memory,redis", "--dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    # exit 0: every call closed with every packet, its sidecar and its audio right
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in done.stdout.splitlines()
        if line.startswith("| ")
    }
    assert rows["media_closed / with every packet"] == ["8 / 8", "8 / 8 |"]
    assert rows["audio right (tone, channel, length)"] == ["8", "8 |"]
    assert rows["media_close_failed, worker died, deadline passed"] == ["0, 0, 0", "0, 0, 0 |"]
    assert not list(tmp_path.iterdir())  # the node's work folder is removed
