"""A fleet that knows who left: a node stopped cleanly (SIGTERM) is shown ``stopped``, not alive,
by ``siprec-node nodes`` right after it exits (well before ``node_ttl``), in JSON and in the table;
started again with the same id it is alive again. A node killed (SIGKILL) says nothing and stays
"alive" until its heartbeat is older than ``node_ttl``, then "dead", never "stopped"."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.persistence.harness import (
    Processes,
    RedisServer,
    _clean_env,
    cli_nodes,
    fleet_of_two,
    kill_node,
    launch_node,
    log_tail,
    sigterm,
)

pytestmark = pytest.mark.integration


def nodes_table(spec_config: str) -> dict[str, str]:
    """``siprec-node nodes`` (the table) as node id -> its row."""
    out = subprocess.run(
        [sys.executable, "-m", "siprec_node", "nodes", "-c", spec_config],
        capture_output=True,
        timeout=15,
        env=_clean_env(),
        check=True,
    )
    lines = out.stdout.decode().splitlines()
    assert lines[0].split() == ["NODE", "ALIVE", "STATUS", "LAST", "HEARTBEAT"], lines
    return {line.split()[0]: line for line in lines[1:]}


def test_nodes_shows_a_cleanly_stopped_node_as_stopped_at_once(
    redis_server: RedisServer, procs: Processes
) -> None:
    spec, peer_spec = fleet_of_two(redis_server.url, "left")
    node = procs.node(launch_node(spec))
    peer = procs.node(launch_node(peer_spec))
    before = cli_nodes(peer_spec)
    assert before["rec-1"]["status"] == "alive" and before["rec-1"]["alive"] is True, before

    stop_at = time.monotonic()
    assert sigterm(node) == 0, log_tail(node)
    exit_s = time.monotonic() - stop_at
    nodes = cli_nodes(peer_spec)
    seen_s = time.monotonic() - stop_at
    # "stopped", not "dead": the mark says it left, whatever the heartbeat's age
    assert nodes["rec-1"]["alive"] is False and nodes["rec-1"]["status"] == "stopped", nodes
    assert nodes["rec-1"]["stopped_at"] is not None
    assert nodes["rec-2"]["status"] == "alive", nodes
    rows = nodes_table(str(peer_spec.config))
    assert " no " in rows["rec-1"] and " stopped " in rows["rec-1"], rows
    assert " yes " in rows["rec-2"] and " alive " in rows["rec-2"], rows
    assert node.events("node_stopped")

    # back with the same id: alive again
    node = procs.node(launch_node(spec))
    again = cli_nodes(peer_spec)
    assert again["rec-1"]["status"] == "alive" and again["rec-1"]["stopped_at"] is None, again

    # a crash leaves no mark: "alive" until node_ttl has passed, then "dead", never "stopped"
    kill_node(node)
    crashed = cli_nodes(peer_spec)
    assert crashed["rec-1"]["status"] in ("alive", "dead"), crashed
    assert crashed["rec-1"]["stopped_at"] is None, crashed
    assert sigterm(peer) == 0, log_tail(peer)
    print(f"\nnodes: rec-1 exited {exit_s:.2f}s after SIGTERM, shown stopped at {seen_s:.2f}s")
