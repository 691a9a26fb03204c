"""The recording disk: free space against ``recording.min_free``, and what finalisation leaves.

:class:`DiskSpace` reads the free space of the recording directory's filesystem (one
``statvfs`` a ``CHECK_INTERVAL``, whatever the number of calls). Below ``recording.min_free`` it is
``low``: the SIP layer answers new INVITEs 503 and ``/readyz`` says why, while live calls keep
recording as long as the filesystem takes their writes. Crossing the threshold either way is
logged once (``disk_space_low``, ``disk_space_recovered``).

The rest of the module knows a recording's files **by name** (``media/paths.py``): the temporary
files an interrupted finalisation may have left are tried one by one rather than found by
listing the day folder (which holds every recording of the day: a per-call listing would cost
more with every call), and parts folders are removed once their recording is final.

:func:`unfinalised_parts` is the one listing, made once at start-up: parts folders of recent
days without a final sidecar whose streams are all closed, or untouched for ``STALE_S`` (a live
recorder rewrites its stream JSON every 30 s): recordings whose node stopped before finalising
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from siprec_node.config.sizes import format_size

from .audio_out import TEMP_PREFIX, TEMP_SUFFIX
from .paths import PARTS_SUFFIX, recording_dir

log = structlog.get_logger("siprec_node.media.disk")

CHECK_INTERVAL = 1.0
"""Seconds between two reads of the free space."""
OUTPUT_EXTENSIONS = ("wav", "flac", "opus")
"""Every extension a final audio file may have (``finalise.EXTENSIONS``)."""
MAX_STREAM_FILES = 64
"""Stream indexes tried for leftover per-stream files (``media.max_streams_per_call`` is 8)."""
RECOVER_DAYS = 7
"""Day folders scanned at start-up for recordings left unfinalised."""
STALE_S = 120.0
"""A parts folder none of whose files changed for this long has no live recorder."""


def _existing(path: str | os.PathLike[str]) -> Path:
    """``path``, or its nearest existing parent (a recording directory not made yet)."""
    place = Path(path).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    return place


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path`` (or its
    nearest existing parent)."""
    stat = os.statvfs(_existing(path))
    return stat.f_bavail * stat.f_frsize


def ext4_without_journal(path: str | os.PathLike[str], sys_root: str = "/sys") -> str | None:
    """The block device name when ``path`` (or its nearest existing parent) is on an ext4
    filesystem mounted without a journal, else None (another filesystem, a journal, or a
    kernel that does not say).

    Without a journal, ext4 skips every free inode deleted in the last 5 s (300 s while its
    inode-table block is not yet written back) when it allocates one, checking each in turn:
    a node that creates and deletes recording files all day pays for every file of the last
    minutes at each creation (up to a millisecond of CPU per file, seen on a 2-core machine
    at 50 calls/s, against 10-20 µs with a journal).
    """
    device = os.stat(_existing(path)).st_dev
    block = Path(sys_root, "dev", "block", f"{os.major(device)}:{os.minor(device)}")
    try:
        name = block.resolve(strict=True).name
        task = Path(sys_root, "fs", "ext4", name, "journal_task").read_text().strip()
    except OSError:
        return None
    return name if task == "<none>" else None


class DiskSpace:
    """Free space of the recording disk against ``min_free`` (0: never low)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        min_free: int = 0,
        *,
        probe: Callable[[str | os.PathLike[str]], int] = free_bytes,
        interval: float = CHECK_INTERVAL,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.min_free = min_free
        self.probe = probe
        self.interval = interval
        self.on_recovered = on_recovered
        self.free: int | None = None
        self.low = False
        self._task: asyncio.Task[None] | None = None

    @property
    def reason(self) -> str | None:
        """Why the node refuses calls, while ``low``."""
        if not self.low:
            return None
        return (
            f"recording disk low: {self.free} bytes free in {self.root}, below "
            f"recording.min_free ({format_size(self.min_free)})"
        )

    def check(self) -> bool:
        """Read the free space now; True when it is below ``min_free``."""
        try:
            self.free = self.probe(self.root)
        except OSError as exc:
            log.warning("disk_space_unknown", directory=str(self.root), error=str(exc))
            return self.low
        low = self.min_free > 0 and self.free < self.min_free
        if low and not self.low:
            log.warning(
                "disk_space_low", directory=str(self.root), free=self.free, min_free=self.min_free
            )
        elif self.low and not low:
            log.info(
                "disk_space_recovered",
                directory=str(self.root),
                free=self.free,
                min_free=self.min_free,
            )
            if self.on_recovered is not None:
                self.on_recovered()
        self.low = low
        return low

    def start(self) -> None:
        """Check now, then every ``interval`` in the background."""
        self.check()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            self._task = None


# -- files known by name ---------------------------------------------------------------------


def output_names(stem: str, streams: Iterable[int] = range(MAX_STREAM_FILES)) -> list[str]:
    """Every final file name a recording with ``stem`` may have (audio in every format, one
    per stream, and the sidecar)."""
    names = [f"{stem}.json"]
    for ext in OUTPUT_EXTENSIONS:
        names.append(f"{stem}.{ext}")
        names.extend(f"{stem}.stream-{i}.{ext}" for i in streams)
    return names


def clean_leftovers(directory: Path, stem: str, streams: Iterable[int] = ()) -> int:
    """Remove the temporary files an interrupted finalisation of ``stem`` may have left, by
    name (no listing of ``directory``). ``streams``: the recording's stream indexes (more are
    harmless). Returns how many were removed."""
    removed = 0
    indexes = sorted(set(streams)) or range(MAX_STREAM_FILES)
    folder = os.fspath(directory)
    for name in output_names(stem, indexes):
        # str paths: a Path per name cost more than the (failing) unlink itself
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, f"{TEMP_PREFIX}{name}{TEMP_SUFFIX}"))
            removed += 1
    return removed


def remove_parts(parts: str | os.PathLike[str]) -> bool:
    """Remove a finalised recording's parts folder; False when there was none."""
    path = Path(parts)
    if not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


# -- start-up: recordings left unfinalised ---------------------------------------------------


@dataclass(frozen=True)
class LeftParts:
    """A parts folder without a final sidecar, and what its stem says of the call."""

    parts: Path
    directory: Path
    stem: str
    started_at: datetime
    call_id: str
    session_id: str
    final: bool = False
    """The final sidecar is there: only the removal of the parts was cut short."""


_STEM = re.compile(r"^(\d{8}T\d{6}Z)_(.*)_([^_]+)$")
_STREAM_JSON = re.compile(r"^stream-\d+\.json$")


def parse_stem(stem: str) -> tuple[datetime, str, str] | None:
    """(start, call id, session id) as ``paths.recording_stem`` wrote them (cleaned)."""
    match = _STEM.match(stem)
    if match is None:
        return None
    started = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return started, match.group(2), match.group(3)


def _abandoned(parts: Path, now: float, stale_s: float) -> bool:
    """No recorder writes into ``parts``: every stream JSON says ``closed`` (its call ended),
    or no file changed for ``stale_s`` (a live recorder rewrites its JSON every 30 s)."""
    newest = parts.stat().st_mtime
    closed: list[bool] = []
    with os.scandir(parts) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat().st_mtime)
                if _STREAM_JSON.match(entry.name):
                    closed.append(_closed(Path(entry.path)))
    return (bool(closed) and all(closed)) or now - newest >= stale_s


def _closed(path: Path) -> bool:
    try:
        return json.loads(path.read_bytes()).get("closed") is True
    except (OSError, ValueError, AttributeError):
        return False


def unfinalised_parts(
    root: str | os.PathLike[str],
    *,
    days: int = RECOVER_DAYS,
    stale_s: float = STALE_S,
    now: float | None = None,
    with_final: bool = False,
) -> list[LeftParts]:
    """Parts folders of the last ``days`` day folders that have no ``<stem>.json`` beside them
    and no recorder any more: every stream closed, or no file changed for ``stale_s`` (start-up
    only: this lists day folders). ``with_final``: also those beside a final sidecar (``final``
    set: a finalisation cut between its sidecar and the removal of its parts)."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, UTC)
    found: list[LeftParts] = []
    for back in range(days):
        directory = recording_dir(root, today - timedelta(days=back))
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not entry.name.endswith(PARTS_SUFFIX) or not entry.is_dir():
                continue
            stem = entry.name[: -len(PARTS_SUFFIX)]
            final = (directory / f"{stem}.json").exists()
            if final and not with_final:
                continue
            parsed = parse_stem(stem)
            try:
                if parsed is None or not _abandoned(Path(entry.path), now, stale_s):
                    continue
            except OSError:
                continue
            found.append(LeftParts(Path(entry.path), directory, stem, *parsed, final=final))
    return found
