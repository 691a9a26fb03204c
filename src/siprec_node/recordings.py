"""``siprec-node recordings``: finished recordings in the configured store and their verdicts.

Every session the store still holds (records live ``store.ttl`` after their last update) that
has ended or failed, newest last: session id, call id, when it ended, how long it lasted, and
its verdict (``ok``, the problems with their main figures, or ``-`` when it was never
finalised: a call refused or cancelled before its media, or a finalisation that failed).
``--problems`` keeps the recordings whose verdict names problems; ``--since`` those that ended
within that long.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from siprec_node.adapters import to_call_data
from siprec_node.app import _print_table, _with_store
from siprec_node.config import Settings
from siprec_node.session import SessionState, SessionStore


def describe(problem: dict[str, Any]) -> str:
    """One problem in a few words: its kind and its main figures."""
    kind = str(problem.get("kind"))
    streams = problem.get("streams")
    where = f" stream {','.join(map(str, streams))}" if streams else ""
    if kind == "gaps":
        text = f"gaps {problem.get('count')}x {problem.get('ms')} ms"
    elif kind == "unexpected_payload":
        types = problem.get("payload_types") or {}
        text = "unexpected_payload " + ",".join(f"PT{pt}:{n}" for pt, n in types.items())
    elif kind == "undecodable":
        text = f"undecodable {problem.get('frames')} frames"
    elif kind == "short":
        text = f"short {problem.get('percent')}%"
    elif kind == "silent":
        peak = problem.get("peak_dbfs")
        text = "silent" + ("" if peak is None else f" {peak} dBFS")
    else:
        text = kind
    return text + where


def _row(state: SessionState) -> dict[str, Any]:
    call = to_call_data(state)
    ended = call.ended_at or state.updated_at
    duration = (ended - call.started_at).total_seconds() if call.started_at else None
    return {
        "id": state.id,
        "call_id": state.call_id,
        "status": state.status.value,
        "node_id": state.node_id,
        "started_at": call.started_at.isoformat() if call.started_at else None,
        "ended_at": ended.isoformat(),
        "duration_s": None if duration is None else round(duration, 3),
        "end_reason": state.end_reason,
        "verdict": state.verdict.to_dict() if state.verdict is not None else None,
    }


def list_recordings(
    settings: Settings,
    *,
    problems: bool = False,
    since: timedelta | None = None,
    as_json: bool = False,
) -> int:
    """``siprec-node recordings``: see the module docstring."""
    if settings.store.backend == "memory":
        print(
            'note: store.backend is "memory": this command sees only its own process\'s store, '
            "never the calls of a running node; configure the node's shared store (redis)",
            file=sys.stderr,
        )

    async def work(store: SessionStore) -> int:
        after = datetime.now(UTC) - since if since is not None else None
        rows = []
        for state in await store.list_all():
            if not state.is_terminal:
                continue
            if problems and (state.verdict is None or state.verdict.ok):
                continue
            row = _row(state)
            if after is not None and datetime.fromisoformat(row["ended_at"]) < after:
                continue
            rows.append(row)
        rows.sort(key=lambda r: r["ended_at"])
        if as_json:
            print(json.dumps(rows, indent=2))
            return 0
        table = [("SESSION", "CALL-ID", "ENDED", "DURATION", "VERDICT")]
        for row in rows:
            verdict = row["verdict"]
            if verdict is None:
                text = "-"
            elif verdict["status"] == "ok":
                text = "ok"
            else:
                text = "; ".join(describe(p) for p in verdict["problems"])
            duration = row["duration_s"]
            table.append(
                (
                    row["id"],
                    row["call_id"],
                    row["ended_at"][:19].replace("T", " "),
                    "-" if duration is None else f"{duration:.1f}s",
                    text,
                )
            )
        _print_table(table)
        return 0

    return asyncio.run(_with_store(settings, work))
