"""Latency percentiles with a documented interpolation.

``percentile(values, q)`` uses *linear interpolation between closest ranks*
(Hyndman & Fan type 7, numpy's default ``method="linear"``): with the n sorted
values ``x[0] <= ... <= x[n-1]``, the rank is ``h = (n - 1) * q / 100`` and the
result is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
So p0 is the minimum, p100 the maximum, and with fewer than ~1000 samples
p99.9 lies between the two largest values: report ``count`` next to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

REPORTED = (("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0), ("p999_ms", 99.9))
"""JSON key and percentile of every latency figure a benchmark reports."""


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (type-7 linear interpolation).

    Args:
        values: samples (any order); must not be empty or hold NaN.
        q: percentile in ``[0, 100]``.

    Returns:
        The interpolated percentile.

    Raises:
        ValueError: no samples, a NaN sample or ``q`` outside ``[0, 100]``.
    """
    data = sorted(float(v) for v in values)
    return percentile_sorted(data, q)


def percentile_sorted(data: Sequence[float], q: float) -> float:
    """Like :func:`percentile` for ``data`` already sorted ascending (no copy)."""
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    n = len(data)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    if math.isnan(data[0]) or math.isnan(data[-1]):
        raise ValueError("percentile of a sample holding NaN")
    h = (n - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return data[lo] + (h - lo) * (data[hi] - data[lo])


def summarise(latencies_ms: Iterable[float]) -> dict[str, float | int | None]:
    """``count``, ``mean_ms``, ``max_ms`` and the :data:`REPORTED` percentiles.

    An empty sample gives ``count = 0`` and ``None`` for every figure, so a run in
    which every request failed still serialises to JSON.
    """
    data = sorted(float(v) for v in latencies_ms)
    if not data:
        return {"count": 0, "mean_ms": None, "max_ms": None, **{k: None for k, _ in REPORTED}}
    out: dict[str, float | int | None] = {
        "count": len(data),
        "mean_ms": sum(data) / len(data),
        "max_ms": data[-1],
    }
    for key, q in REPORTED:
        out[key] = percentile_sorted(data, q)
    return out


def median(values: Iterable[float]) -> float:
    """Median (the type-7 50th percentile)."""
    return percentile(values, 50.0)


__all__ = ["REPORTED", "median", "percentile", "percentile_sorted", "summarise"]
