"""Set-up of the node's helper processes (the finalisation processes, the transcription pool):
the node's stop signals are the node's, the process dies with the node, it logs like it.

Kept light (no numpy, nothing of the recorder's) so that a child runs :func:`init_child`, and is
tied to its node, before it imports the heavy work it is there for.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

NODE_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
"""The signals that stop the node: the node's to handle, never its helper processes'."""

PR_SET_PDEATHSIG = 1

PARENT_CHECK_S = 1.0
"""How often a child checks that its node is still there (where PR_SET_PDEATHSIG is not)."""


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Block the node's signals in this thread while it may start a child: the child inherits
    the mask, so a Ctrl-C or systemd stop signalling the whole group cannot interrupt it while
    it starts (before :func:`init_child` ignores them); the node gets them once unblocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, NODE_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def init_child(log_level: str, log_format: str, parent: int, name: str) -> None:
    """A child's initializer: ignore the node's signals, die with the node (``parent``, its
    pid), log through the node's set-up with ``name`` bound to this process's pid."""
    for sig in NODE_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, NODE_SIGNALS)  # blocked since the spawn
    _die_with_parent()
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)  # a job cut here leaves its call finalising: the next start redoes it

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    import structlog

    from siprec_node.log import configure_logging

    configure_logging(log_level, log_format)
    structlog.contextvars.bind_contextvars(**{name: os.getpid()})


def _die_with_parent() -> None:
    """Linux: SIGKILL as soon as the node dies (PR_SET_PDEATHSIG), so that nothing, such as a
    pipe to the node's log reader, outlives it; elsewhere the watch thread's check is all."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
