"""Where a recording's files go: a file-system safe stem and the dated folders around it.

    <root>/<YYYY>/<MM>/<DD>/<stem>.<ext>      final files (audio, sidecar `<stem>.json`)
    <root>/<YYYY>/<MM>/<DD>/<stem>.parts/     per-stream working files (media/FORMAT.md)

The date is the call's start in UTC. The stem is
`<YYYYMMDDTHHMMSSZ>_<call id>_<session id>` with both identifiers reduced to ASCII letters,
digits, `.`, `-` and `_`; whatever a SIP Call-ID or an SRC's metadata holds (`/`, `..`, NUL,
control characters, spaces, non-ASCII, a Windows device name), the stem is one plain path
component no longer than `MAX_STEM_LENGTH`. Uniqueness comes from the session id: when cleaning
changed it or shortened it, a hash of the original is appended, so two different session ids
never share a stem.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

MAX_STEM_LENGTH = 160
"""Bytes; leaves room under NAME_MAX (255) for `.parts`, extensions and temporary suffixes."""

PARTS_SUFFIX = ".parts"

_CALL_ID_MAX = 60
_SESSION_ID_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("started_at must be timezone-aware (a naive time has no known zone)")
    return value.astimezone(UTC)


def _clean(text: str, limit: int) -> str:
    """ASCII letters, digits, `.`, `-`, `_` only; runs of anything else become one `_`."""
    cleaned = _UNSAFE.sub("_", text)
    # dots never start or end a part (no `..`, no hidden files); collapse runs of dots
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("._-")
    return cleaned[:limit].rstrip("._-")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def recording_stem(started_at: datetime, call_id: str, session_id: str) -> str:
    """The file-system safe stem shared by all files of one recording."""
    stamp = _utc(started_at).strftime("%Y%m%dT%H%M%SZ")
    call = _clean(call_id, _CALL_ID_MAX) or "call"
    session = _clean(session_id, _SESSION_ID_MAX)
    if session != session_id or not session:
        session = f"{session[: _SESSION_ID_MAX - 13]}-{_digest(session_id)}".lstrip("-")
    stem = f"{stamp}_{call}_{session}"
    if len(stem) > MAX_STEM_LENGTH:  # only reachable if the limits above are changed
        stem = f"{stamp}_{_digest(call_id)}_{session}"[:MAX_STEM_LENGTH]
    return stem


def recording_dir(root: str | os.PathLike[str], started_at: datetime) -> Path:
    """`<root>/<YYYY>/<MM>/<DD>` for the call's UTC start date."""
    day = _utc(started_at)
    return Path(root) / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"


def parts_dir(root: str | os.PathLike[str], started_at: datetime, stem: str) -> Path:
    """The per-stream working folder of a recording (media/FORMAT.md)."""
    if not stem or os.sep in stem or "/" in stem or stem in (".", ".."):
        raise ValueError(f"not a recording stem: {stem!r}")
    return recording_dir(root, started_at) / f"{stem}{PARTS_SUFFIX}"
