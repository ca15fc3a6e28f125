"""The ``/v1/rank`` metrics' children, cached by label values, and the observation of one
answered request (its count and duration)."""

from __future__ import annotations

import time
from typing import Any

from service.api.deps import ServiceState

# (metric, label values) -> child; children are never removed from these metrics.
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: prometheus_client's lookup takes a lock and
    builds a tuple per call, a dozen times per request (see docs/BENCHMARKS.md)."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def observe_request(state: ServiceState, stage: str, status: int, start: float) -> float:
    """Count one answered request and observe its duration; returns its seconds."""
    seconds = time.perf_counter() - start
    metrics = state.metrics
    child(metrics.requests, stage, str(status)).inc()
    child(metrics.request_duration, stage).observe(seconds)
    return seconds
