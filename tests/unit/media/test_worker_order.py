"""The media worker's request order: opens overtake other calls' recent closes, nothing else."""

from __future__ import annotations

import collections
from typing import Any

from siprec_node.media.worker import CLOSE_PATIENCE, next_request


def _open(session: str, at: float = 0.0) -> tuple[dict[str, Any], list[int], bool, float]:
    return ({"op": "open", "id": session, "spec": {"session_id": session}}, [], False, at)


def _op(
    op: str, session: str | None, at: float = 0.0
) -> tuple[dict[str, Any], list[int], bool, float]:
    message: dict[str, Any] = {"op": op, "id": f"{op}-{session}"}
    if session is not None:
        message["session_id"] = session
    return (message, [], False, at)


def _order(*requests: tuple[dict[str, Any], list[int], bool, float], now: float = 0.1) -> list[Any]:
    queue = collections.deque(requests)
    out = []
    while queue:
        out.append(next_request(queue, now)[0]["id"])
    return out


def test_an_open_goes_ahead_of_other_calls_closes() -> None:
    order = _order(_op("close", "a"), _op("close", "b"), _open("c"), _op("close", "d"))
    assert order == ["c", "close-a", "close-b", "close-d"]


def test_requests_of_a_closing_call_keep_their_order() -> None:
    # a pause (or an open) of a call whose close is queued before it does not overtake it
    order = _order(_op("close", "a"), _op("pause", "a"), _open("b"))
    assert order == ["close-a", "pause-a", "b"]


def test_stop_overtakes_nothing() -> None:
    assert _order(_op("close", "a"), _op("stop", None), _open("b")) == ["close-a", "stop-None", "b"]


def test_a_close_that_waited_its_patience_goes_first() -> None:
    queue = collections.deque([_op("close", "a", at=0.0), _open("b", at=0.5)])
    assert next_request(queue, CLOSE_PATIENCE + 0.01)[0]["id"] == "close-a"


def test_without_a_close_first_the_order_is_the_order_sent() -> None:
    assert _order(_open("a"), _op("pause", "b"), _open("c"), _op("stats", "a")) == [
        "a",
        "pause-b",
        "c",
        "stats-a",
    ]
    # once a close is first, every other call's request goes ahead of it
    order = _order(_open("a"), _op("close", "b"), _open("c"), _op("stats", "a"))
    assert order == ["a", "c", "stats-a", "close-b"]
