"""WebVTT of a call's transcript: one cue per turn, the speaker as a voice span
(`<v Alice>Hello.`), times from the recording's media epoch (its files' sample 0)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TIME = re.compile(r"^(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})$")
_VOICE = re.compile(r"^<v(?:\.[^ >]+)? ([^>]+)>(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Cue:
    start_ms: int
    end_ms: int
    speaker: str
    text: str


def timestamp(ms: int) -> str:
    """`HH:MM:SS.mmm`."""
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render(cues: Iterable[Cue]) -> str:
    """The WebVTT document of `cues` (empty texts skipped)."""
    lines = ["WEBVTT", ""]
    for n, cue in enumerate((c for c in cues if c.text.strip()), 1):
        speaker = _escape(cue.speaker.replace("\n", " ")).replace(">", "")
        text = _escape(" ".join(cue.text.split()))
        lines += [str(n), f"{timestamp(cue.start_ms)} --> {timestamp(cue.end_ms)}"]
        lines += [f"<v {speaker}>{text}", ""]
    return "\n".join(lines)


def _parse_time(text: str) -> int:
    match = _TIME.match(text.strip())
    if match is None:
        raise ValueError(f"not a WebVTT timestamp: {text!r}")
    hours, minutes, seconds, millis = (int(g or 0) for g in match.groups())
    if minutes > 59 or seconds > 59:
        raise ValueError(f"not a WebVTT timestamp: {text!r}")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis


def parse(document: str) -> list[Cue]:
    """The cues of a WebVTT document (strict about what `render` writes: header, timings,
    voice spans); raises ValueError on anything else."""
    blocks = document.replace("\r\n", "\n").strip("\n").split("\n\n")
    if not blocks or not blocks[0].startswith("WEBVTT"):
        raise ValueError("not a WebVTT document: no WEBVTT header")
    cues: list[Cue] = []
    for block in blocks[1:]:
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        if "-->" not in lines[0]:
            lines = lines[1:]  # the cue identifier
        if not lines or "-->" not in lines[0]:
            raise ValueError(f"cue without timings: {block!r}")
        start, end = (part.split()[0] for part in lines[0].split("-->"))
        start_ms, end_ms = _parse_time(start), _parse_time(end)
        if end_ms < start_ms:
            raise ValueError(f"cue ends before it starts: {lines[0]!r}")
        voice = _VOICE.match("\n".join(lines[1:]))
        if voice is None:
            raise ValueError(f"cue without a speaker: {block!r}")
        cues.append(Cue(start_ms, end_ms, _unescape(voice[1]), _unescape(voice[2])))
    return cues
