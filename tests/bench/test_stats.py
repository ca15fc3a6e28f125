"""Percentile arithmetic and the max-throughput search of the benchmark harness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.common.percentiles import percentile, summarise
from bench.serve.findmax import find_max_rate, verdict

# ----------------------------------------------------------------------------- percentiles


def test_percentile_matches_numpy_linear_interpolation_on_latency_like_data():
    rng = np.random.default_rng(0)
    lat = rng.lognormal(mean=1.0, sigma=0.6, size=12_345)
    for q in (0, 1, 50, 95, 99, 99.9, 100):
        assert percentile(lat, q) == pytest.approx(np.percentile(lat, q, method="linear"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 100),
)
def test_percentile_equals_numpy_type7_for_any_sample(values, q):
    assert percentile(values, q) == pytest.approx(
        float(np.percentile(values, q, method="linear")), rel=1e-12, abs=1e-9
    )


def test_percentile_hand_computed():
    # n = 5, h = 4 * 0.99 = 3.96 → 40 + 0.96 * (1000 - 40)
    assert percentile([10, 20, 30, 40, 1000], 99) == pytest.approx(961.6)
    assert percentile([10, 20, 30, 40, 1000], 50) == 30
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 100) == 3


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="NaN"):
        percentile([1.0, math.nan], 50)


def test_summarise_keys_and_empty_sample():
    s = summarise([1.0, 2.0, 3.0, 4.0])
    assert s["count"] == 4 and s["mean_ms"] == 2.5 and s["max_ms"] == 4.0
    assert s["p50_ms"] == 2.5 and s["p999_ms"] == pytest.approx(3.997)
    empty = summarise([])
    assert empty["count"] == 0
    assert all(empty[k] is None for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "mean_ms"))


# ----------------------------------------------------------------------------- find-max


def fake_server(capacity: float, floor_ms: float = 2.0):
    """p99 rises steeply towards ``capacity``; above it the server falls behind."""
    calls: list[float] = []

    def probe(rate: float) -> dict:
        calls.append(rate)
        if rate >= capacity:
            return {"errors": 0, "p99_ms": 500.0, "qps": capacity * 0.9}
        p99 = floor_ms + 8.0 * (rate / capacity) ** 6 / (1 - rate / capacity + 1e-9) ** 0.1
        return {"errors": 0, "p99_ms": p99, "qps": rate}

    return probe, calls


def true_threshold(probe, slo: float, hi: float) -> float:
    """Highest rate passing the SLO, by a fine scan of the fake curve."""
    rates = np.linspace(1, hi, 200_000)
    ok = [r for r in rates if verdict(probe(r), r, slo)[0]]
    return max(ok)


def test_find_max_brackets_the_true_threshold_within_tolerance():
    probe, calls = fake_server(capacity=1300.0)
    truth = true_threshold(fake_server(1300.0)[0], 10.0, 1300.0)
    res = find_max_rate(probe, 10.0, start_rate=100, max_rate=5000, tolerance=0.02, max_probes=30)
    assert res.max_rate <= truth  # only rates that passed are reported
    assert res.first_failing_rate is not None and res.first_failing_rate > truth
    assert (res.first_failing_rate - res.max_rate) / res.max_rate <= 0.02
    # exponential phase first: 100, 200, 400, 800, 1600 (fail), then bisection
    assert calls[:5] == [100, 200, 400, 800, 1600]
    assert not res.capped
    assert [p.rate for p in res.probes] == calls


def test_find_max_halves_when_the_start_rate_already_fails():
    probe, calls = fake_server(capacity=60.0)
    res = find_max_rate(probe, 10.0, start_rate=400, max_rate=5000, tolerance=0.05, max_probes=30)
    assert calls[:4] == [400, 200, 100, 50]
    assert 0 < res.max_rate < 60
    assert (res.first_failing_rate - res.max_rate) / res.max_rate <= 0.05


def test_find_max_reports_capped_when_the_upper_bound_passes():
    probe, _ = fake_server(capacity=1e9)
    res = find_max_rate(probe, 10.0, start_rate=100, max_rate=700, max_probes=30)
    assert res.capped and res.max_rate == 700 and res.first_failing_rate is None


def test_find_max_returns_zero_when_nothing_meets_the_slo():
    res = find_max_rate(
        lambda r: {"errors": 0, "p99_ms": 50.0, "qps": r}, 10.0, start_rate=16, min_rate=1
    )
    assert res.max_rate == 0.0 and [p.rate for p in res.probes] == [16, 8, 4, 2, 1]


def test_find_max_respects_the_probe_budget():
    probe, calls = fake_server(capacity=1300.0)
    find_max_rate(probe, 10.0, start_rate=100, tolerance=1e-6, max_probes=7)
    assert len(calls) == 7


def test_verdict_fails_on_errors_slow_p99_or_falling_behind():
    good = {"errors": 0, "p99_ms": 4.0, "qps": 99.0}
    assert verdict(good, 100, 10.0) == (True, "ok")
    assert not verdict({**good, "errors": 1}, 100, 10.0)[0]
    assert "p99" in verdict({**good, "p99_ms": 10.5}, 100, 10.0)[1]
    assert "achieved" in verdict({**good, "qps": 80.0}, 100, 10.0)[1]
    assert not verdict({**good, "p99_ms": None}, 100, 10.0)[0]
