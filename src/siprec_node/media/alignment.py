"""Legs of a call moved into line by their RTCP sender reports (finalisation; see the module
docstring of ``media/finalise.py`` for the rules): each stream's ``shift`` is set and the
sidecar's ``alignment`` returned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .stream_parts import SR_MIN_REPORTS, StreamParts, number

ALIGN_MIN_S = 0.001
"""Legs whose SR offsets differ by less are left where they are (aligned already)."""
ALIGN_MAX_S = 0.5
"""Legs whose SR offsets differ by more are not moved: not one sender's clock (noted)."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:+.1f} ms"


def align(streams: Sequence[StreamParts], epoch: float, end: float) -> dict[str, Any]:
    """Move the streams so that their SR offsets agree (``media/finalise.py``'s docstring);
    sets each moved stream's `shift` and returns the sidecar's `alignment`."""
    notes: list[str] = []
    measured = [(s, o) for s in streams if (o := s.sr_offset()) is not None]
    if len(measured) < 2:
        if measured or any(number(s.info.get("sr_offset_ms")) is not None for s in streams):
            notes.append(
                f"RTCP sender reports (at least {SR_MIN_REPORTS}) on fewer than two streams: "
                "aligned by arrival"
            )
        return {"method": "arrival", "reference": None, "notes": notes}

    def trusted(of: float) -> int:
        return sum(abs(o - of) <= ALIGN_MAX_S for _, o in measured)

    # the reference: the stream most others agree with (the first offered on a tie)
    reference, ref_offset = max(measured, key=lambda m: trusted(m[1]))
    late: dict[int, float] = {}  # stream index: how late it sits against the reference (s)
    group: list[StreamParts] = []
    for s, offset in measured:
        delta = offset - ref_offset
        if abs(delta) > ALIGN_MAX_S:
            text = (
                f"RTCP sender reports put stream {s.index} {_ms(delta)} from stream "
                f"{reference.index}: beyond {ALIGN_MAX_S * 1000:.0f} ms, not one sender's "
                "clock; not trusted, aligned by arrival"
            )
            s.problems.append(text)
            notes.append(text)
            continue
        group.append(s)
        late[s.index] = delta if abs(delta) >= ALIGN_MIN_S else 0.0
    if len(group) < 2:
        return {"method": "arrival", "reference": None, "notes": notes}
    if not any(late.values()):
        notes.append(
            f"RTCP sender reports agree with arrival within {ALIGN_MIN_S * 1000:.0f} ms: "
            "nothing moved"
        )
        return {"method": "rtcp", "reference": reference.index, "notes": notes}

    # shift_i = c - late_i; c = min(late): only late legs move, earlier. Each may move earlier
    # only through its leading silence (c >= late_i - lead_i) and later only through its
    # trailing silence (c <= late_i + tail_i).
    lead = {s.index: s.lead(epoch) for s in group}
    tail = {s.index: s.tail(epoch, end) for s in group}
    c = max(min(late.values()), max(late[i] - lead[i] for i in late))
    blocked = [s for s in group if c - late[s.index] > tail[s.index] + 1e-9]
    if blocked:
        s = blocked[0]
        notes.append(
            f"RTCP sender reports put the legs up to "
            f"{(max(late.values()) - min(late.values())) * 1000:.1f} ms apart, but stream "
            f"{s.index} cannot be moved that far without cutting audio: aligned by arrival"
        )
        return {"method": "arrival", "reference": None, "notes": notes}
    for s in group:
        lo = -int(np.floor(lead[s.index] * s.rate + 1e-6))
        hi = int(np.floor(tail[s.index] * s.rate + 1e-6))
        samples = min(max(round((c - late[s.index]) * s.rate), lo), hi)
        s.shift = samples / s.rate
        if samples:
            notes.append(
                f"stream {s.index} moved {_ms(s.shift)}: its RTCP sender reports put it "
                f"{_ms(late[s.index])} from stream {reference.index}"
            )
    return {"method": "rtcp", "reference": reference.index, "notes": notes}
