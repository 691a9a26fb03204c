"""deploy/systemd/siprec-node.service: systemd accepts it, and its stop timing fits the drain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from siprec_node.config import Settings

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "siprec-node.service"


def _directives() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_stop_outlasts_the_drain_and_signals_only_the_node() -> None:
    unit = _directives()
    drain = Settings().node.drain_deadline.total_seconds()
    assert int(unit["TimeoutStopSec"]) >= drain + 30  # room to finalise the last recordings
    assert unit["KillMode"] == "mixed" and unit["KillSignal"] == "SIGTERM"
    # two descriptors per RTP/RTCP pair in the SIP process and in a worker, two streams a call
    assert int(unit["LimitNOFILE"]) >= 2 * 2 * 2 * Settings().sip.max_sessions


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (Debian package systemd) is needed"
    node = str(Path(sys.executable).with_name("siprec-node"))
    text = UNIT.read_text().replace("/opt/siprec-node/bin/siprec-node", node)
    copy = tmp_path / "siprec-node.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    problems = [
        line for line in result.stderr.splitlines() if "siprec-node.service" in line
    ]
    assert result.returncode == 0 and problems == [], result.stderr
