"""Mean over seeds with a Student-t interval: the exact t quantile and :func:`mean_ci`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.ablate.auc import StatsError, _check_level


def _t_central_probability(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``df`` (closed form, A&S 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        # 1 + (1/2)c² + (1·3)/(2·4)c⁴ + … up to c^(df−2)
        k = np.arange(1, df // 2)
        terms = np.cumprod((2 * k - 1) / (2 * k) * c2)
        return s * (1.0 + float(terms.sum()))
    if df == 1:
        return 2.0 * theta / math.pi
    # θ + sinθ·(cosθ + (2/3)cos³θ + (2·4)/(3·5)cos⁵θ + … up to cos^(df−2)θ)
    k = np.arange(1, (df - 1) // 2)
    terms = np.cumprod((2 * k) / (2 * k + 1) * c2)
    return 2.0 / math.pi * (theta + s * math.sqrt(c2) * (1.0 + float(terms.sum())))


def t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t critical value: the t with P(|T| ≤ t) = ``level``.

    ``t_quantile(0.95, 3)`` = 3.182446 (the 0.975 quantile). Exact for any
    integer ``df`` ≥ 1 (closed-form CDF, inverted by bisection), so there is
    no table to run off the end of and no scipy dependency.

    Args:
        level: central coverage in (0, 1).
        df: degrees of freedom, integer ≥ 1.
    """
    _check_level(level)
    if int(df) != df or df < 1:
        raise StatsError(f"df must be an integer ≥ 1, got {df}")
    df = int(df)
    lo, hi = 0.0, 1.0
    while _t_central_probability(hi, df) < level:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if _t_central_probability(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class MeanCI:
    """Mean over seeds with a Student-t interval.

    Attributes:
        mean: mean of the finite values.
        low, high: mean ∓ t(level, n−1)·sd/√n; NaN when n = 1 (no spread to
            estimate from one value).
        n: finite values used.
        n_nan: NaN values dropped (e.g. a seed whose metric was undefined).
        sd: sample standard deviation (ddof 1); NaN when n = 1.
        level: coverage, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    n_nan: int
    sd: float
    level: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``report.json``."""
        return asdict(self)


def mean_ci(values: Any, level: float = 0.95) -> MeanCI:
    """Mean ± Student-t interval over seeds.

    Args:
        values: ``[S]`` one metric per seed; NaN entries are dropped and counted.
        level: central coverage in (0, 1).

    Returns:
        A :class:`MeanCI`; with a single finite value the interval is NaN.

    Raises:
        StatsError: when ``values`` is empty or holds only NaN, or holds ±inf.
    """
    _check_level(level)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise StatsError("mean_ci needs at least one value, got none")
    if np.isinf(v).any():
        raise StatsError("mean_ci values contain ±inf")
    finite = v[~np.isnan(v)]
    n_nan = v.size - finite.size
    if finite.size == 0:
        raise StatsError(f"mean_ci got {v.size} values, all NaN")
    mean = float(finite.mean())
    if finite.size == 1:
        return MeanCI(mean, math.nan, math.nan, 1, n_nan, math.nan, level)
    sd = float(finite.std(ddof=1))
    half = t_quantile(level, finite.size - 1) * sd / math.sqrt(finite.size)
    return MeanCI(mean, mean - half, mean + half, int(finite.size), n_nan, sd, level)
