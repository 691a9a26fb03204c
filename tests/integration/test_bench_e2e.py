"""Smoke test of bench/e2e at a tiny scale: 6 SIPp calls with RTP against a node, both stores."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RUN = Path(__file__).resolve().parents[2] / "bench" / "e2e" / "run.py"


@pytest.mark.skipif(
    not all(shutil.which(x) for x in ("gcc", "sipp", "redis-server")),
    reason="the bench needs gcc (its sender), sipp and redis-server",
)
def test_bench_e2e_tiny_scale() -> None:
    command = [sys.executable, str(RUN), "--rate", "10", "--live", "10", "--hold", "2"]
    command += ["--calls", "6", "--store", "memory,redis", "--idle", "0.3", "--margin", "0.1"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("| calls offered / answered") for line in lines)
    memory, redis = json.loads(lines[-1])
    for result in (memory, redis):
        assert result["offered"] == result["answered"] == 6, result
        assert result["sipp_failed"] == 0
        assert result["end_reasons"] == {"BYE from SRC": 6}
        checks = result["checks"]
        # every recording: once, with every packet the sender sent to each stream, judged ok
        assert checks["finalised"] == checks["packets_ok"] == checks["verdict_ok"] == 6, result
        assert result["rtp_sent"] == result["rtp_recorded"] > 6 * 2 * 50  # > 1 s a stream
        assert result["sender"]["streams"] == 12
        assert 0 < result["setup_ms"]["p50"] < 10_000
        assert result["finalise_ms"]["p50"] > 0
        assert result["sip_cpu_s"]["total"] > 0
        assert result["rss"]["peak_live"] >= 1
        assert set(result["udp"]) == {"NoPorts", "RcvbufErrors"}
        assert all(value >= 0 for value in result["udp"].values())
    assert memory["redis_per_call"] is None
    # the node's own redis-server: every command in it is the node's
    assert redis["redis_per_call"] > 1
    assert redis["redis_commands"].get("evalsha", 0) >= 6


def _bench_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_e2e_run", RUN)
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = run  # its dataclasses look their module up
    spec.loader.exec_module(run)
    return run


def test_sipp_log_lines_with_an_empty_microseconds_field_are_read() -> None:
    """SIPp leaves a microseconds field empty when its time falls on a whole second (one call
    in about 4,000): the call is still answered, sent RTP and checked."""
    run = _bench_module()
    follower = run.SippFollower(Path("/nonexistent"), None, 20.0, 0.3)
    # as SIPp wrote it (the INVITE's microseconds empty), then a BYE's
    line = "ANS 547-1@127.0.0.1 1796398070.000000  1796398070.000000 4270.000000 12184 12186"
    follower._line(line)
    follower._line("BYE 547-1@127.0.0.1 1796398090.000000 ")
    call = follower.calls["547-1@127.0.0.1"]
    assert follower.answered == 1 and call.ports == (12184, 12186)
    assert call.invite_at == 1796398070.0 and call.answer_at == 1796398070.00427
    assert call.bye_at == 1796398090.0 and follower.byes == 1


def test_udp_counters_are_read_by_name() -> None:
    """/proc/net/snmp as Linux 6 writes it: the UdpLite lines after Udp's are not read."""
    text = (
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors"
        " IgnoredMulti MemErrors\n"
        "Udp: 111672190 2181051 815093 114669156 815094 0 0 0 0\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors"
        " InCsumErrors IgnoredMulti MemErrors\n"
        "UdpLite: 0 0 0 0 0 0 0 0 0\n"
    )
    counters = _bench_module().udp_counters(text)
    assert counters["NoPorts"] == 2181051 and counters["RcvbufErrors"] == 815094
