"""The node's HTTP endpoints while SIPp records calls through it."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.node_process import NodeProcess, free_port, start_node, start_sipp

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    port = free_port((__import__("socket").SOCK_STREAM,))
    node = start_node(http_port=port, http_token=TOKEN)
    node.http_port = port  # type: ignore[attr-defined]
    try:
        yield node
    finally:
        assert node.stop() == 0


def _get(node: NodeProcess, path: str, *, token: str | None = None, method: str = "GET"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}{path}",  # type: ignore[attr-defined]
        method=method,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_readiness(node: NodeProcess) -> None:
    assert _get(node, "/healthz")[0] == 200
    status, body = _get(node, "/readyz")
    assert status == 200, body


def test_admin_api_requires_token(node: NodeProcess) -> None:
    assert _get(node, "/sessions")[0] == 401
    assert _get(node, "/sessions", token="wrong")[0] == 401
    status, body = _get(node, "/sessions", token=TOKEN)
    assert status == 200 and json.loads(body) == []
    assert _get(node, "/sessions/nope", token=TOKEN)[0] == 404


def test_live_call_listed_paused_and_stopped(node: NodeProcess) -> None:
    sipp = start_sipp("siprec_drain.xml", node.sip_port)
    try:
        active = node.wait_for_event("call_active", timeout=10)
        session_id = active["session_id"]
        status, body = _get(node, "/sessions", token=TOKEN)
        listed = json.loads(body)
        assert status == 200 and [s["session_id"] for s in listed] == [session_id]
        assert listed[0]["status"] == "active"
        assert [s["label"] for s in listed[0]["streams"]] == ["1", "2"]
        status, body = _get(node, f"/sessions/{session_id}/pause", token=TOKEN, method="POST")
        assert status == 200 and json.loads(body)["operator_paused"] is True
        status, body = _get(node, f"/sessions/{session_id}/resume", token=TOKEN, method="POST")
        assert status == 200 and json.loads(body)["operator_paused"] is False
        status, _ = _get(node, f"/sessions/{session_id}/stop", token=TOKEN, method="POST")
        assert status == 200
        # the SRC receives our BYE (with a Reason) and answers it: the scenario completes
        assert sipp.wait(15) == 0, sipp.stderr.read().decode() if sipp.stderr else ""
    finally:
        if sipp.poll() is None:
            sipp.send_signal(signal.SIGKILL)
    ended = node.wait_for_event("call_ended", session_id=session_id)
    assert ended["reason"] == "stopped by operator"
    assert json.loads(_get(node, "/sessions", token=TOKEN)[1]) == []


def test_metrics_count_calls(node: NodeProcess) -> None:
    status, text = _get(node, "/metrics")
    assert status == 200
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['siprec_calls_total{outcome="started"}'] >= 1
    assert samples['siprec_calls_total{outcome="ended"}'] >= 1
    assert samples["siprec_active_calls"] == 0
    assert samples["siprec_rtp_ports_in_use"] == 0
    assert samples["siprec_store_healthy"] == 1
