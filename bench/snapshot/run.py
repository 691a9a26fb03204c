"""Cost of one call snapshot, before (a git revision, default 806699e) and now (this tree).

    python bench/snapshot/run.py [--before 806699e] [--repeat 2000] [--redis redis://127.0.0.1:6379/0]

A realistic two-stream SIPREC call (multipart INVITE with RFC 7865 metadata: two participants,
two streams; 200, ACK) is driven through the sans-I/O call-control core as the driver would, then
each step a snapshot goes through at a change of state is timed, in CPU µs per snapshot (the best
of five runs of ``--repeat``; Redis: wall time, its round trip is the point):

- core: the core's ``_snapshot`` (dialog, recording and media dicts, then the frozen snapshot;
  before: the same dicts, then ``copy.deepcopy`` of the CallData);
- submit: ``SnapshotWriter.submit`` of that effect's payload;
- memory CallStore save: the default store with no session store configured;
- shared save (memory): ``SharedCallStore`` over ``MemorySessionStore`` (the SessionState, its
  JSON body and the indexes);
- Redis body: what ``RedisSessionStore.save`` sends (``to_session_state`` + ``encode_for_save``);
- shared save (Redis): the whole save to a real Redis, round trip included (skipped without one);
- shared load (memory): a restarted node reading the call back;
- the same, for the final snapshot of a finalised call (40 turns and a verdict).

The "before" column runs this same script in a subprocess against ``git archive <rev> src
tests``, so both columns measure the code as it is at each revision, not a re-creation of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    ("core", "core: snapshot at a state change"),
    ("submit", "SnapshotWriter.submit"),
    ("memory_call_store", "memory CallStore.save (no session store)"),
    ("shared_memory", "SharedCallStore.save → MemorySessionStore"),
    ("redis_body", "Redis body: to_session_state + encode_for_save"),
    ("shared_redis", "SharedCallStore.save → Redis (round trip)"),
    ("load_memory", "SharedCallStore.load ← MemorySessionStore"),
    ("final_shared_memory", "final snapshot (40 turns, verdict) → MemorySessionStore"),
    ("final_redis_body", "final snapshot (40 turns, verdict): Redis body"),
]


def _time(fn: Callable[[], object], repeat: int) -> float:
    """The CPU µs per call of ``fn`` (this process's CPU time, as issue 11's budget counts it):
    the best of five runs, the one least disturbed by other processes on a shared machine."""
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(repeat):
            fn()
        runs.append((time.process_time() - start) / repeat * 1e6)
    return min(runs)


async def _atime(
    fn: Callable[[], Awaitable[object]], repeat: int, clock: Callable[[], float] = time.process_time
) -> float:
    runs = []
    for _ in range(5):
        start = clock()
        for _ in range(repeat):
            await fn()
        runs.append((clock() - start) / repeat * 1e6)
    return min(runs)


async def measure(repeat: int, redis_url: str | None) -> dict[str, Any]:
    """Time each step in this process (whichever ``siprec_node`` is first on the path)."""
    # the tests' scripted SRC and fake-clock core, of the same revision as the code measured
    sys.path.insert(0, os.environ.get("SNAPSHOT_BENCH_TESTS", str(ROOT)))
    from tests.unit.sip.test_call_control import Core

    import siprec_node
    from siprec_node.adapters import SharedCallStore, to_session_state
    from siprec_node.recorder.snapshots import SnapshotWriter
    from siprec_node.session import MemorySessionStore, RedisSessionStore
    from siprec_node.session.store import encode_for_save
    from siprec_node.sip.call import CallData, MemoryCallStore

    new = hasattr(CallData, "snapshot")
    core = Core()
    _dialogue, session_id = core.confirmed("bench-call@sbc")
    call = core.core.calls[session_id]
    effects = core.core._effects

    def snapshot() -> Any:
        core.core._snapshot(call)
        return effects.pop().data

    out: dict[str, Any] = {"siprec_node": str(Path(siprec_node.__file__).parent.parent)}
    out["core"] = _time(snapshot, repeat)
    payload = snapshot()
    out["snapshot_bytes"] = len(json.dumps(call.data.to_dict()))

    writer = SnapshotWriter(MemoryCallStore())
    if new:
        out["submit"] = _time(lambda: writer.submit(payload), repeat)
    else:
        out["submit"] = _time(lambda: writer.submit(payload, owned=True), repeat)
    await writer.close()

    memory = MemoryCallStore()
    out["memory_call_store"] = await _atime(lambda: memory.save(payload), repeat)

    sessions = MemorySessionStore()
    shared = SharedCallStore(sessions, call.data.node_id)
    out["shared_memory"] = await _atime(lambda: shared.save(payload), repeat)
    out["load_memory"] = await _atime(lambda: shared.load(session_id), repeat)
    now = datetime.now(UTC)

    def body(data: Any) -> Callable[[], object]:
        return lambda: encode_for_save(to_session_state(data), now=now, activity=now)

    out["redis_body"] = _time(body(payload), repeat)
    if redis_url is not None:
        redis = RedisSessionStore(redis_url, prefix=f"bench-snapshot-{os.getpid()}:")
        try:
            remote = SharedCallStore(redis, call.data.node_id)
            await remote.save(payload)
            out["shared_redis"] = await _atime(
                lambda: remote.save(payload), max(repeat // 4, 1), time.perf_counter
            )
            await redis.delete(session_id)
        except Exception as exc:  # no Redis there: the row stays empty
            out["redis_error"] = repr(exc)
        finally:
            with contextlib.suppress(Exception):
                await redis.close()

    start = call.data.started_at or now
    for i in range(40):
        call.data.add_turn(
            "alice" if i % 2 else "bob",
            start + timedelta(seconds=3 * i),
            2500,
            interrupted=i % 7 == 0,
        )
    call.data.verdict = {
        "status": "problems",
        "problems": [{"kind": "gaps", "streams": [0], "count": 1, "ms": 2600}],
    }
    final = snapshot()
    if not new:
        final = copy.deepcopy(final)
    out["final_shared_memory"] = await _atime(lambda: shared.save(final), repeat // 4)
    out["final_redis_body"] = _time(body(final), repeat // 4)
    return out


def _export(rev: str, into: Path) -> Path:
    """``src`` and ``tests`` of ``rev`` under ``into``; returns ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src", "tests"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _run(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), SNAPSHOT_BENCH_TESTS=str(tree))
    command = [sys.executable, __file__, "--measure", "--repeat", str(args.repeat)]
    if args.redis:
        command += ["--redis", args.redis]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="806699e", help="git revision of the 'before' column")
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip Redis")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.repeat, args.redis or None))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        before = _run(_export(args.before, Path(tmp)), args)
    after = _run(ROOT, args)
    print(
        f"CPU µs per snapshot, best of 5 x {args.repeat} (Redis round trip: wall); snapshot JSON "
        f"{after['snapshot_bytes']} bytes; before = {args.before}, after = this tree\n"
    )
    print(f"| {'step':<58} | {'before':>8} | {'after':>8} | {'ratio':>6} |")
    print(f"|{'-' * 60}|{'-' * 9}:|{'-' * 9}:|{'-' * 7}:|")
    for key, name in ROWS:
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            print(f"| {name:<58} | {'-':>8} | {'-':>8} | {'':>6} |")
            continue
        print(f"| {name:<58} | {b:8.1f} | {a:8.1f} | {b / a:5.1f}x |")
    for label, result in (("before", before), ("after", after)):
        if "redis_error" in result:
            print(f"{label}: no Redis ({result['redis_error']})")


if __name__ == "__main__":
    main()
