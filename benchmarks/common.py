"""Shared timing helpers: interleaved repeats, medians, ratios, a markdown table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(
    contenders: dict[str, Callable[[], None]],
    steps: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Seconds per call of each contender, median over `repeats` rounds.

    Every round runs each contender for `steps` calls, in a rotated order, so that
    machine noise (the other core's load, frequency changes) falls on all alike.
    `clock=time.thread_time` counts only this thread's CPU time: for single-threaded
    work it leaves out the time other processes held the core.
    """
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn = contenders[name]
            start = clock()
            for _ in range(steps):
                fn()
            samples[name].append((clock() - start) / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
