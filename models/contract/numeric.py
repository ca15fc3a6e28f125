"""Numeric features: fitted statistics, transforms, imputation and buckets.

:func:`fit_numeric` / :func:`numeric_stats` give a feature's stats (mean, std,
imputation value, bucket boundaries for ``bucketize``); :func:`encode_numeric`
applies them, counting the values it had to impute. Part of the feature contract
(:mod:`models.contract.features`); numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.contract.feature_spec import FIRST_INDEX, FeatureSpec, Transform


def fit_numeric(x: np.ndarray, spec: FeatureSpec) -> dict[str, Any]:
    """The stats of one numeric feature from all its train values ``x`` (float ``[N]``)."""
    finite = x[np.isfinite(x)]
    if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
        finite = np.log1p(np.clip(finite, 0.0, None))
    mean = float(finite.mean()) if len(finite) else 0.0
    std = float(finite.std()) if len(finite) else 1.0
    return numeric_stats(spec, mean, std, finite)


def numeric_stats(
    spec: FeatureSpec, mean: float, std: float, quantile_values: np.ndarray
) -> dict[str, Any]:
    """The encoder's stats of one numeric feature from its fitted moments.

    Args:
        spec: the feature.
        mean, std: of the (transformed) finite values.
        quantile_values: float ``[M]`` the bucket boundaries are taken from
            (all finite values, or a sample of them when fitted in chunks).
    """
    stats: dict[str, Any] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
    if spec.transform is Transform.BUCKETIZE:
        qs = np.linspace(0, 1, spec.num_buckets + 1)[1:-1]
        bounds = (
            np.unique(np.quantile(quantile_values, qs)) if len(quantile_values) else np.zeros(0)
        )
        stats["boundaries"] = bounds.tolist()
    if spec.default is not None:
        raw_default = float(spec.default)
        if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
            raw_default = float(np.log1p(max(raw_default, 0.0)))
        stats["impute"] = raw_default
    else:
        stats["impute"] = mean
    return stats


def encode_numeric(col: Any, spec: FeatureSpec, stats: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """Returns (encoded values, number of imputed NaN/inf/non-numeric values)."""
    raw = np.asarray(col)
    if raw.dtype == object or raw.dtype.kind in "US":
        x = np.array([_as_float(v) for v in raw.ravel()], dtype=np.float64).reshape(raw.shape)
    else:
        x = raw.astype(np.float64)
    bad = ~np.isfinite(x)
    if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
        with np.errstate(invalid="ignore"):
            x = np.log1p(np.clip(x, 0.0, None))
    n_bad = int(bad.sum())
    if n_bad:
        x = np.where(bad, stats["impute"], x)
    if spec.transform in (Transform.STANDARDIZE, Transform.LOG1P_STANDARDIZE):
        x = (x - stats["mean"]) / stats["std"]
    if spec.transform is Transform.BUCKETIZE:
        idx = np.searchsorted(np.asarray(stats["boundaries"]), x, side="right") + FIRST_INDEX
        return idx.astype(np.int64), n_bad
    return x.astype(np.float32), n_bad


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
