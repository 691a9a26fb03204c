"""The optional C receive path of the media workers (``_rtprecv.c``), where it was built.

``media.receive_path`` chooses: ``auto`` uses it when the extension is importable, ``c``
requires it, ``python`` never uses it (every datagram through the event loop and
:meth:`StreamRecorder.on_rtp`; the same files and statistics, ~3x the CPU per packet).
"""

from __future__ import annotations

from types import ModuleType

_built: ModuleType | None
try:
    import siprec_node.media._rtprecv as _rtprecv

    _built = _rtprecv
except ImportError:  # no compiler at install time, or not Linux
    _built = None

RECEIVE_PATHS = ("auto", "c", "python")


def available() -> bool:
    """Whether the C extension was built and imports."""
    return _built is not None


def module(receive_path: str = "auto") -> ModuleType | None:
    """The extension for ``receive_path`` (None: receive in Python)."""
    if receive_path not in RECEIVE_PATHS:
        raise ValueError(f"receive_path must be one of {', '.join(RECEIVE_PATHS)}")
    if receive_path == "python":
        return None
    if receive_path == "c" and _built is None:
        raise RuntimeError(
            "media.receive_path is 'c' but siprec_node.media._rtprecv was not built "
            "(reinstall with a C compiler on Linux)"
        )
    return _built
