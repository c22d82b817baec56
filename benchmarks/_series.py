"""Cumulative query counts sampled over time: the value at a moment, the highest rate.

Pure functions over ``[(time, count), ...]`` lists, shared by the benchmarks
and by ``outage_plot.py`` (which must not need the test fixtures).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["count_at", "peak_rate"]


def count_at(points: Sequence[tuple[float, float]], when: float) -> float:
    """The cumulative count at ``when``, interpolated linearly between samples."""
    if not points:
        return 0.0
    if when <= points[0][0]:
        return points[0][1]
    for (t0, c0), (t1, c1) in itertools.pairwise(points):
        if t0 <= when <= t1:
            return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)
    return points[-1][1]


def peak_rate(
    points: Sequence[tuple[float, float]],
    start: float,
    end: float,
    window: float = 1.0,
    step: float = 0.05,
) -> float:
    """Highest count in any ``window`` s within [start, end], per second.

    The window slides in ``step`` s, so a burst is caught whole however it falls
    against the sampling clock; within one sample interval the count is taken as
    spread evenly (the samples are 0.5 s apart).
    """
    best = 0.0
    at = start
    while at + window <= end + 1e-9:
        best = max(best, (count_at(points, at + window) - count_at(points, at)) / window)
        at += step
    return best
