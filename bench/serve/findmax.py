"""Search for the highest request rate a server sustains within its latency SLO.

A rate *passes* when the run had zero errors, its p99 latency (measured from
the due time, see :mod:`bench.serve.loadgen`) is at most the SLO, and the
achieved QPS is at least ``min_achieved`` of the offered rate (a server that
silently falls behind fails even if the answers it did give were quick).

The search assumes pass/fail is monotone in the rate: exponential steps
(×``growth``) from ``start_rate`` until a rate fails (or ``max_rate`` passes),
halving instead when ``start_rate`` already fails; then bisection between the
highest passing and the lowest failing rate until they are within
``tolerance`` of each other or ``max_probes`` runs were spent. The answer is
the highest rate that *passed* -- never an interpolation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

SLO_P99_MS = {"coarse": 10.0, "fine": 8.0, "cascade": 15.0}
"""The design's p99 latency objective per stage, at one worker on this machine."""


@dataclass(frozen=True)
class Probe:
    """One run of the search: the offered rate, its summary and the verdict."""

    rate: float
    passed: bool
    reason: str
    summary: Mapping[str, Any]


@dataclass
class SearchResult:
    """Outcome of :func:`find_max_rate`.

    Attributes:
        max_rate: highest offered rate that passed (0.0 when none did).
        first_failing_rate: lowest offered rate that failed (``None`` if none failed).
        capped: ``max_rate`` equals the search's upper bound (the true maximum may be higher).
        probes: every run, in the order it was made.
    """

    max_rate: float
    first_failing_rate: float | None
    capped: bool
    probes: list[Probe] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_rate": self.max_rate,
            "first_failing_rate": self.first_failing_rate,
            "capped": self.capped,
            "probes": [
                {"rate": p.rate, "passed": p.passed, "reason": p.reason, **dict(p.summary)}
                for p in self.probes
            ],
        }


def verdict(
    summary: Mapping[str, Any], rate: float, slo_p99_ms: float, min_achieved: float = 0.95
) -> tuple[bool, str]:
    """Whether one run's summary meets the SLO, and why not.

    Args:
        summary: needs ``errors``, ``p99_ms`` (``None`` when nothing succeeded) and ``qps``.
        rate: the offered rate.
        slo_p99_ms: p99 bound in ms.
        min_achieved: required fraction of the offered rate actually served.
    """
    if summary["errors"]:
        return False, f"{summary['errors']} error(s)"
    p99 = summary["p99_ms"]
    if p99 is None:
        return False, "no successful request"
    if p99 > slo_p99_ms:
        return False, f"p99 {p99:.2f} ms > {slo_p99_ms:g} ms"
    if summary["qps"] < min_achieved * rate:
        return False, f"achieved {summary['qps']:.1f} < {min_achieved:.0%} of {rate:g} req/s"
    return True, "ok"


# Long (~85 lines, half of them the docstring): the exponential and bisection phases
# share the pass/fail bounds and the probe budget, and read best in one place.
def find_max_rate(
    probe: Callable[[float], Mapping[str, Any]],
    slo_p99_ms: float,
    *,
    start_rate: float = 100.0,
    max_rate: float = 5000.0,
    min_rate: float = 1.0,
    growth: float = 2.0,
    tolerance: float = 0.05,
    max_probes: int = 12,
    min_achieved: float = 0.95,
) -> SearchResult:
    """Highest rate in ``[min_rate, max_rate]`` whose run meets the SLO.

    Args:
        probe: runs the load at a rate and returns its summary
            (:meth:`bench.serve.loadgen.RunResult.summary`).
        slo_p99_ms: p99 bound in ms.
        start_rate: first rate tried.
        max_rate: upper bound of the search (a pass here ends it with ``capped``).
        min_rate: below this the search gives up (``max_rate = 0``).
        growth: factor of the exponential phase (> 1).
        tolerance: stop bisecting when ``(fail - pass) / pass <= tolerance``.
        max_probes: total runs allowed.
        min_achieved: see :func:`verdict`.

    Returns:
        The :class:`SearchResult` with every probe.

    Raises:
        ValueError: inconsistent bounds.
    """
    if not 0 < min_rate <= start_rate <= max_rate:
        raise ValueError(
            f"need 0 < min_rate <= start_rate <= max_rate, got {min_rate}, {start_rate}, {max_rate}"
        )
    if growth <= 1 or tolerance <= 0 or max_probes < 1:
        raise ValueError("need growth > 1, tolerance > 0 and max_probes >= 1")
    result = SearchResult(max_rate=0.0, first_failing_rate=None, capped=False)

    def run(rate: float) -> bool:
        summary = probe(rate)
        ok, reason = verdict(summary, rate, slo_p99_ms, min_achieved)
        result.probes.append(Probe(rate, ok, reason, summary))
        if ok:
            result.max_rate = max(result.max_rate, rate)
        elif result.first_failing_rate is None or rate < result.first_failing_rate:
            result.first_failing_rate = rate
        return ok

    lo: float | None = None  # highest passing rate
    hi: float | None = None  # lowest failing rate
    rate = start_rate
    if run(rate):
        lo = rate
        while len(result.probes) < max_probes:
            if rate >= max_rate:
                result.capped = True
                return result
            rate = min(rate * growth, max_rate)
            if run(rate):
                lo = rate
            else:
                hi = rate
                break
    else:
        hi = rate
        while len(result.probes) < max_probes:
            rate = rate / growth
            if rate < min_rate:
                return result
            if run(rate):
                lo = rate
                break
            hi = rate
    if lo is None or hi is None:
        return result
    while len(result.probes) < max_probes and (hi - lo) / lo > tolerance:
        mid = (lo + hi) / 2
        if run(mid):
            lo = mid
        else:
            hi = mid
    return result


__all__ = ["SLO_P99_MS", "Probe", "SearchResult", "find_max_rate", "verdict"]
