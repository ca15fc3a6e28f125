"""Latency percentiles with a documented interpolation, computed by numpy.

``percentile(values, q)`` is ``numpy.percentile(values, q, method="linear")``:
*linear interpolation between closest ranks* (Hyndman & Fan type 7, numpy's
default). With the n sorted values ``x[0] <= ... <= x[n-1]``, the rank is
``h = (n - 1) * q / 100`` and the result is
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. So p0 is the
minimum, p100 the maximum, and with fewer than ~1000 samples p99.9 lies between
the two largest values: report ``count`` next to it. What this module adds to
numpy is the input checks (numpy returns NaN for a NaN sample instead of failing)
and the benchmarks' JSON summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

REPORTED = (("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0), ("p999_ms", 99.9))
"""JSON key and percentile of every latency figure a benchmark reports."""

METHOD = "linear"
"""``numpy.percentile``'s method: type 7, the interpolation documented above."""


def _checked(data: np.ndarray, qs: Sequence[float]) -> None:
    for q in qs:
        if not 0.0 <= q <= 100.0 or math.isnan(q):
            raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if data.size == 0:
        raise ValueError("percentile of an empty sample")
    if np.isnan(data).any():
        raise ValueError("percentile of a sample holding NaN")


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
    data = np.fromiter((float(v) for v in values), dtype=np.float64)
    _checked(data, [q])
    return float(np.percentile(data, q, method=METHOD))


def percentile_sorted(data: Sequence[float], q: float) -> float:
    """Like :func:`percentile`; kept for callers that hold sorted samples (numpy
    sorts anyway, by partition, so pre-sorting is no longer needed)."""
    return percentile(data, q)


def summarise(latencies_ms: Iterable[float]) -> dict[str, float | int | None]:
    """``count``, ``mean_ms``, ``max_ms`` and the :data:`REPORTED` percentiles.

    An empty sample gives ``count = 0`` and ``None`` for every figure, so a run in
    which every request failed still serialises to JSON.
    """
    data = np.fromiter((float(v) for v in latencies_ms), dtype=np.float64)
    if data.size == 0:
        return {"count": 0, "mean_ms": None, "max_ms": None, **{k: None for k, _ in REPORTED}}
    qs = [q for _, q in REPORTED]
    _checked(data, qs)
    values = np.percentile(data, qs, method=METHOD)
    out: dict[str, float | int | None] = {
        "count": int(data.size),
        "mean_ms": float(data.mean()),
        "max_ms": float(data.max()),
    }
    for (key, _), value in zip(REPORTED, values, strict=True):
        out[key] = float(value)
    return out


def median(values: Iterable[float]) -> float:
    """Median (the type-7 50th percentile)."""
    return percentile(values, 50.0)


__all__ = ["METHOD", "REPORTED", "median", "percentile", "percentile_sorted", "summarise"]
