"""Measure how a function's time grows with its input: the log-log slope over doubling sizes.

A parser whose cost is linear in its input has a slope near 1; a list scan per element makes
it 2. Times are the minimum of several runs (the least disturbed by other processes), the
garbage collector is paused while timing, and a measurement that looks superlinear is taken
again before the test fails, so that a busy machine does not fail a linear parser while a
quadratic one still fails every attempt.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_SLOPE = 1.5


def best_time(run: Callable[[T], object], data: T, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``run(data)``, in seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run(data)
        best = min(best, time.perf_counter() - start)
    return best


def slope(sizes: Sequence[int], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs = [math.log(n) for n in sizes]
    ys = [math.log(max(t, 1e-9)) for t in times]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mean_x) ** 2 for x in xs)
    return num / den


def growth(
    build: Callable[[int], T],
    run: Callable[[T], object],
    base: int,
    *,
    steps: int = 4,
    repeats: int = 3,
    attempts: int = 3,
) -> tuple[float, list[tuple[int, float]]]:
    """The smallest slope seen over ``attempts`` measurements at ``base * 2**k`` (k < steps),
    with the (size, seconds) figures of that measurement."""
    sizes = [base * 2**k for k in range(steps)]
    inputs = [build(n) for n in sizes]
    best: tuple[float, list[tuple[int, float]]] = (math.inf, [])
    for _ in range(attempts):
        enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            times = [best_time(run, data, repeats) for data in inputs]
        finally:
            if enabled:
                gc.enable()
        measured = slope(sizes, times)
        if measured < best[0]:
            best = (measured, list(zip(sizes, times, strict=True)))
        if measured < MAX_SLOPE:
            break
    return best


def assert_linear(
    build: Callable[[int], T], run: Callable[[T], object], base: int, **kwargs: int
) -> None:
    """Fail unless doubling the input at most about doubles the time (slope < 1.5)."""
    measured, figures = growth(build, run, base, **kwargs)
    shown = ", ".join(f"{n}: {t * 1000:.2f} ms" for n, t in figures)
    assert measured < MAX_SLOPE, f"time grows as size^{measured:.2f} ({shown})"
