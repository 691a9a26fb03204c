"""Shared pieces of the fuzz harnesses (``tests/unit/**/test_*fuzz*.py``).

Inputs are the corpus files of ``tests/data/`` (each one also run unchanged, as an ``@example``)
mutated the way a coverage fuzzer would: bits flipped, bytes inserted, ranges deleted or repeated
(up to a thousand times, for the inputs whose cost grows with repetition), lines dropped or
duplicated, and tokens known to have broken parsers spliced in.

Budgets: the ``ci`` profile (default) runs every harness for about a minute in total on the CI
machine. ``SIPREC_FUZZ=long`` selects the ``long`` profile: ``SIPREC_FUZZ_SCALE`` (default 20)
times as many inputs per harness, for a longer run by hand, e.g.
``SIPREC_FUZZ=long .venv/bin/python -m pytest tests/unit -k fuzz --hypothesis-show-statistics``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st

DATA = Path(__file__).resolve().parent / "data"
F = TypeVar("F", bound=Callable[..., Any])

PROFILE = os.environ.get("SIPREC_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"SIPREC_FUZZ must be 'ci' or 'long', not {PROFILE!r}")
SCALE = float(os.environ.get("SIPREC_FUZZ_SCALE", "20")) if PROFILE == "long" else 1.0

# Tokens that broke (or could break) one parser or another: Unicode digits that str.isdigit
# accepts and int refuses, digit strings beyond int's 4,300-digit limit, NUL, encodings expat
# cannot take, deep nesting, entity and DTD declarations, boundaries, SDP and SIP line starts.
TOKENS: tuple[bytes, ...] = (
    "\u00b2".encode(),
    "\u0663".encode(),
    b"9" * 5000,
    b"4294967296",
    b"-1",
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b" \t",
    b'"',
    b"\\",
    b"<",
    b">",
    b";",
    b",",
    b":",
    b"=",
    b"/",
    b'<?xml version="1.0" encoding="x"?>',
    b'<?xml version="1.0" encoding="UTF-7"?>',
    b'<?xml version="1.0" encoding="utf-16"?>',
    b"<x>" * 200,
    b"</x>",
    b'<!DOCTYPE r [<!ENTITY e "x">]>',
    b"&e;",
    b"<![CDATA[x]]>",
    b'xmlns:p="urn:x"',
    b"<send>s1 s1 s1</send>",
    b"--",
    b"--siprec-boundary\r\n",
    b"Content-Type: multipart/mixed;boundary=inner\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"m=audio 0 RTP/AVP 0\r\n",
    b"m=audio 65536 RTP/AVP 0\r\n",
    b"m=video 4000 RTP/AVP 96\r\n",
    b"a=label:1\r\n",
    b"a=rtpmap:96 opus/48000/2\r\n",
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n",
    b"a=inactive\r\n",
    b"c=IN IP4 0.0.0.0\r\n",
    b"c=IN IP6 ::\r\n",
    b"Content-Length: 99999999999\r\n",
    b"Session-Expires: 90\r\n",
    b"Require: siprec, x\r\n",
    b"Via: SIP/2.0/UDP [::1\r\n",
    b"To: <sip:a@b>;tag=\r\n",
    b" folded\r\n",
    b"\xff\xfe",
    b"\xc3\x28",
)


def corpus(folder: str, suffix: str, *, include_bad: bool = True) -> list[bytes]:
    """The bytes of every ``tests/data/<folder>/*<suffix>`` file (sorted by name)."""
    paths = sorted((DATA / folder).rglob(f"*{suffix}"))
    return [
        p.read_bytes() for p in paths if include_bad or not p.name.startswith(("bad_", "invalid"))
    ]


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], tokens: Sequence[bytes] = TOKENS) -> bytes:
    """One of ``seeds`` with zero to five mutations."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "token", "lines"]))
        pos = draw(st.integers(0, len(data)))
        end = min(len(data), pos + draw(st.integers(0, 80)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:end]
        elif op == "repeat":
            data[pos:end] = bytes(data[pos:end]) * draw(st.integers(2, 1000))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(list(tokens)))
        else:
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            action = draw(st.sampled_from(["drop", "duplicate", "swap"]))
            if action == "drop":
                del lines[index]
            elif action == "duplicate":
                lines.insert(index, lines[index])
            else:
                other = draw(st.integers(0, len(lines) - 1))
                lines[index], lines[other] = lines[other], lines[index]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def fuzz_settings(ci_examples: int) -> settings:
    """Settings of one harness: ``ci_examples`` inputs in CI, ``SCALE`` times more when long.

    No deadline (a loaded CI machine must not fail an input for being slow: the scaling tests
    judge time), and the example database off so that CI runs are independent of each other.
    """
    return settings(
        max_examples=max(1, int(ci_examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def with_examples(seeds: Sequence[Any]) -> Callable[[F], F]:
    """Run the test on each seed unchanged as well (``@example``; a tuple is the arguments)."""

    def decorate(test: F) -> F:
        for seed in seeds:
            test = (example(*seed) if isinstance(seed, tuple) else example(seed))(test)
        return test

    return decorate
