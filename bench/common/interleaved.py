"""Time several callables in one process, interleaved round by round.

Interleaving makes machine noise (other processes on a shared machine) hit
every case alike, so the ratios between cases mean something even when the
absolute times do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def summary(ms: Sequence[float]) -> dict[str, float]:
    """``median_ms``, ``p10_ms`` and ``p90_ms`` of per-call times in milliseconds."""
    qs = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return {"median_ms": statistics.median(ms), "p10_ms": qs[0], "p90_ms": qs[-1]}


def time_interleaved(
    cases: Sequence[tuple[dict[str, Any], Callable[[], Any]]], repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """Each case's record merged with :func:`summary` of its call times.

    Args:
        cases: ``(record, fn)`` pairs; ``fn`` is called with no arguments.
        repeats: timed rounds; each round calls every case once, in order.
        warmup: untimed rounds first (TorchScript profiling runs, the allocator).
    """
    times: list[list[float]] = [[] for _ in cases]
    with torch.inference_mode():
        for _ in range(warmup):
            for _, fn in cases:
                fn()
        for _ in range(repeats):
            for k, (_, fn) in enumerate(cases):
                start = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - start) * 1e3)
    return [{**record, **summary(ms)} for (record, _), ms in zip(cases, times, strict=True)]


__all__ = ["summary", "time_interleaved"]
