"""A finalisation process: finalises the recordings its node sends it, one at a time.

    python -m siprec_node.recorder.finalise_worker --fd N --run MODULE:FUNCTION --parent PID

The node (``recorder/finalise_pool.py``) starts one per ``recording.finalise_workers`` with one
end of a socket pair as ``--fd``. On it each way goes a frame: a 4-byte big-endian length, then
a pickle. The node sends a job; the process answers ``(True, result)`` of ``FUNCTION(job)`` or
``(False, exception)``, then reads the next job. The node closing its end stops the process.

It runs :func:`~siprec_node.child_process.init_child` (the node's signals ignored, dies with its
node, logs like it) and lowers its CPU priority before it imports the finalisation code.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

from siprec_node.child_process import init_child

HEADER = struct.Struct("!I")
"""A frame's length prefix."""

NICENESS = 10
"""Added to a finalisation process's nice value: on a node short of CPU, the SIP process
(answering INVITEs within milliseconds) and the media workers (whose sockets hold seconds of
packets) go first; a finalisation has seconds to spare. At 100 calls/s on a saturated 2-core
machine (bench/e2e) INVITE→200 p99 went from 1.9-3.2 s to 0.35 s, finalisation from 8 s to 14 s
late."""


HEAP_MMAP_THRESHOLD = 4 << 20
"""Allocations from this size up get pages of their own from the kernel (glibc's default:
128 KiB, raised as such blocks are freed); the blocks of a finalisation (8 s of stereo at up to
48 kHz, 1.5 MB) stay below it."""
HEAP_TRIM_THRESHOLD = 16 << 20
"""Free memory at the top of the heap kept for the next finalisation rather than handed back
to the kernel (glibc's default: twice the mmap threshold, 256 KiB to 64 MiB)."""


def keep_heap() -> bool:
    """Make glibc's malloc keep the memory a finalisation frees for the next one (whether it
    could: not glibc, no change). By default the heap is trimmed after every call and each
    block's arrays come back as fresh pages: 200 page faults and about a third of a
    millisecond of kernel time per 20-second call (bench/finalise --short)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, HEAP_MMAP_THRESHOLD)) and bool(
        mallopt(m_trim_threshold, HEAP_TRIM_THRESHOLD)
    )


def function_name(function: Callable[..., Any]) -> str:
    """``MODULE:QUALNAME`` of a module-level function, as ``--run`` takes it."""
    qualname = getattr(function, "__qualname__", None)
    if qualname is None or "<" in qualname:  # a callable object, a lambda, a nested function
        raise ValueError(f"a finalisation process runs a module-level function, not {function!r}")
    return f"{function.__module__}:{qualname}"


def resolve(name: str) -> Callable[[Any], Any]:
    """The function named ``MODULE:QUALNAME``."""
    module, _, qualname = name.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


def serve(sock: socket.socket, run: Callable[[Any], Any]) -> None:
    """Answer jobs until the node closes its end of ``sock``."""
    stream = sock.makefile("rb")
    while True:
        header = stream.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        (size,) = HEADER.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return
        try:
            reply: tuple[bool, Any] = (True, run(pickle.loads(payload)))
        except Exception as exc:
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception (or result) that does not pickle: say what it was
            error = reply[1] if not reply[0] else exc
            data = pickle.dumps((False, RuntimeError(f"{type(error).__name__}: {error}")))
        sock.sendall(HEADER.pack(len(data)) + data)


def main(argv: list[str] | None = None) -> int:
    """The process's entry point (``python -m siprec_node.recorder.finalise_worker``)."""
    parser = argparse.ArgumentParser(prog="siprec-node-finalise-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json")
    args = parser.parse_args(argv)
    init_child(args.log_level, args.log_format, args.parent, "finalise_worker")
    os.nice(NICENESS)
    keep_heap()
    run = resolve(args.run)  # imports the finalisation code (numpy, PyAV) only now
    with socket.socket(fileno=args.fd) as sock:
        serve(sock, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
