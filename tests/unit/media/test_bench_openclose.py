"""Smoke test of bench/media/openclose.py at a tiny scale (strace included where installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

OPENCLOSE = Path(__file__).resolve().parents[3] / "bench" / "media" / "openclose.py"


def test_bench_openclose_tiny_scale() -> None:
    command = [sys.executable, str(OPENCLOSE), "--calls", "3", "--live", "2", "--packets", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures, _, syscalls = done.stdout.partition("syscalls per stream")
    rows = {line.split()[0]: line.split() for line in figures.splitlines()[2:] if line.strip()}
    for phase in ("open", "packets", "close"):
        assert float(rows[phase][2]) > 0  # Python calls per stream (per packet)
    if shutil.which("strace") is not None:
        rows = {line.split()[0]: line.split() for line in syscalls.splitlines()[2:] if line}
        assert float(rows["openat"][1]) > 0  # every open makes files
        assert float(rows["total"][1]) > 0
