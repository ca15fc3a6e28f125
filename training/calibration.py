"""Post-hoc calibration of the light logit: Platt's shape from validation, a pooled base rate.

Plain Platt scaling (:func:`training.evaluate.fit_platt`) fitted on the
validation split reproduces that split's label rate exactly (the log-loss
optimum with an intercept has ``mean σ(a·z + b) = mean y``). When the
validation split holds few positives — CVR trains on clicked rows only, a few
hundred conversions in validation — its label rate is itself a noisy estimate,
and the calibrated model inherits that error on every later split: with
268 conversions in 3,846 clicked validation rows (rate 0.0697, against 0.0785
on train and 0.0844 on test) the test calibration after Platt was 0.83 whatever
the model.

:func:`fit_platt_pooled_rate` keeps Platt's slope ``a`` (the *shape*, which
needs held-out scores: train scores are over-confident) and re-anchors the
intercept so the mean calibrated probability on validation equals the base
rate pooled over the training and validation *labels*
(:func:`pooled_rate`). Labels, not scores, so the training split's
over-fitting does not enter. The two rates are pooled only when they agree
within sampling noise (two-proportion z-test, :data:`MAX_RATE_Z`); a real
difference — a drift over time, or a training split with sampled negatives —
keeps validation's own rate, i.e. plain Platt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.evaluate import fit_platt, sigmoid

MAX_RATE_Z = 3.0
"""Pool the train and validation label rates only when |z| of their difference is at most this."""


@dataclass(frozen=True)
class BaseRate:
    """The base rate the calibrated intercept is anchored to.

    Attributes:
        rate: the anchored rate (pooled, or validation's own).
        pooled: whether the training labels were pooled in.
        valid_rate, valid_rows: validation's label rate and row count.
        train_rate, train_rows: the training split's.
        z: two-proportion z statistic of train − valid (0 when undefined).
    """

    rate: float
    pooled: bool
    valid_rate: float
    valid_rows: int
    train_rate: float
    train_rows: int
    z: float

    def to_dict(self) -> dict[str, float | int | bool]:
        return dict(self.__dict__)


def pooled_rate(
    valid_labels: np.ndarray, train_labels: np.ndarray, *, max_z: float = MAX_RATE_Z
) -> BaseRate:
    """The label rate of train ∪ valid when the two agree within sampling noise, else valid's.

    Args:
        valid_labels: ``[Nv]`` in {0, 1}.
        train_labels: ``[Nt]`` in {0, 1} (may be empty: validation's rate is kept).
        max_z: pool only when ``|z| <= max_z``.
    """
    yv = np.asarray(valid_labels, dtype=np.float64)
    yt = np.asarray(train_labels, dtype=np.float64)
    nv, nt = yv.size, yt.size
    rv = float(yv.mean()) if nv else math.nan
    rt = float(yt.mean()) if nt else math.nan
    if not nv or not nt:
        return BaseRate(rv, False, rv, nv, rt, nt, 0.0)
    p = (yv.sum() + yt.sum()) / (nv + nt)
    se = math.sqrt(p * (1 - p) * (1 / nv + 1 / nt))
    z = (rt - rv) / se if se > 0 else 0.0
    pooled = abs(z) <= max_z
    return BaseRate(float(p) if pooled else rv, pooled, rv, nv, rt, nt, float(z))


def shift_to_rate(logits: np.ndarray, rate: float, *, iterations: int = 200) -> float:
    """The shift ``c`` with ``mean σ(z + c) = rate`` (bisection; the mean is increasing in c).

    Args:
        logits: ``[N]`` logits (N ≥ 1).
        rate: target in (0, 1); 0 or 1 (or NaN) returns 0 (no finite shift).
    """
    z = np.asarray(logits, dtype=np.float64)
    if not z.size or not 0.0 < rate < 1.0:
        return 0.0
    logit_rate = math.log(rate / (1 - rate))
    # mean σ(z + c) lies between σ(min z + c) and σ(max z + c): this bracket holds the root
    low, high = logit_rate - float(z.max()) - 1.0, logit_rate - float(z.min()) + 1.0
    for _ in range(iterations):
        mid = (low + high) / 2
        if float(sigmoid(z + mid).mean()) < rate:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def fit_platt_pooled_rate(
    logits: np.ndarray, labels: np.ndarray, train_labels: np.ndarray
) -> tuple[float, float, BaseRate]:
    """Platt's ``(a, b)`` on validation, ``b`` re-anchored to :func:`pooled_rate`.

    Args:
        logits: ``[N]`` validation logits.
        labels: ``[N]`` validation labels.
        train_labels: the training split's labels (only their rate is used).

    Returns:
        ``(a, b, base)``: calibrated probability ``σ(a·z + b)``, whose mean over
        the validation rows is ``base.rate``; when the rates are not pooled this
        is plain Platt.
    """
    a, b = fit_platt(logits, labels)
    base = pooled_rate(labels, train_labels)
    if base.pooled:
        b += shift_to_rate(a * np.asarray(logits, dtype=np.float64) + b, base.rate)
    return a, b, base


__all__ = ["MAX_RATE_Z", "BaseRate", "fit_platt_pooled_rate", "pooled_rate", "shift_to_rate"]
