"""Offline evaluation metrics for binary ranking tasks (numpy, vectorised).

Every metric takes flat arrays of one evaluation split: ``labels`` (0/1,
shape ``[N]``), ``logits`` (pre-sigmoid scores, ``[N]``) and, for the
per-user and per-request metrics, integer group keys (``[N]``). No metric loops
over users or requests in Python: rows are sorted once by (group, score) and
per-group sums come from ``np.add.reduceat`` / ``np.bincount``.

Conventions (stated because papers and libraries differ):

* **AUC** is the Mann-Whitney statistic with average ranks for tied scores, so
  a constant predictor scores exactly 0.5.
* **GAUC** is the impression-weighted mean of per-user AUCs; users whose rows
  are all positive or all negative are skipped (their AUC is undefined).
* **NDCG@k / MAP@k** are averaged over groups (requests, or users when the log
  has no request ids) that contain at least one positive. Tied scores are
  ordered pessimistically (negatives first) so a constant predictor cannot look
  good by accident of row order.
* **calibration** is mean predicted probability / observed label rate
  (1.0 = calibrated, > 1 over-predicts).
* **gap closed** = (m(distilled light) − m(light alone)) / (m(booster) − m(light alone)).
* **Platt calibration** (:func:`fit_platt`, :func:`apply_platt`): calibrated
  logit ``a·z + b`` with ``(a, b)`` minimising the log-loss on a held-out split
  (the trainer fits it on validation); for ``a > 0`` every ranking metric is
  unchanged.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("auc", "gauc", "logloss", "ndcg@10", "map@5", "calibration")


class MetricError(ValueError):
    """Evaluation inputs are inconsistent (shapes, non-binary labels, non-finite scores)."""


def _check(labels: np.ndarray, scores: np.ndarray, *groups: np.ndarray) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricError(f"labels have {y.size} rows but scores have {s.size}")
    if not np.isfinite(s).all():
        raise MetricError(f"scores contain {int((~np.isfinite(s)).sum())} NaN/inf values")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise MetricError("labels must be 0 or 1")
    out = [y, s]
    for g in groups:
        g = np.asarray(g).ravel()
        if g.shape != y.shape:
            raise MetricError(f"group ids have {g.size} rows but labels have {y.size}")
        out.append(g)
    return tuple(out)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _average_ranks(
    sorted_scores: np.ndarray, segment_start: np.ndarray | None = None
) -> np.ndarray:
    """1-based ranks of already sorted scores, ties sharing their average rank.

    Args:
        sorted_scores: ``[N]`` ascending within each segment.
        segment_start: ``[N]`` bool, True where a new segment (group) begins;
            ranks restart at 1 in every segment. None = one segment.
    """
    n = sorted_scores.size
    if n == 0:
        return np.zeros(0)
    new_value = np.empty(n, dtype=bool)
    new_value[0] = True
    new_value[1:] = sorted_scores[1:] != sorted_scores[:-1]
    if segment_start is not None:
        new_value |= segment_start
    tie_id = np.cumsum(new_value) - 1
    tie_first = np.flatnonzero(new_value)
    tie_size = np.diff(np.append(tie_first, n))
    if segment_start is None:
        seg_first_pos = np.zeros(n, dtype=np.int64)
    else:
        seg_id = np.cumsum(segment_start) - 1
        seg_first_pos = np.flatnonzero(segment_start)[seg_id]
    # position of the tie block's first row inside its segment, then the mean rank of the block
    first_in_seg = tie_first - seg_first_pos[tie_first]
    mean_rank = first_in_seg + (tie_size + 1) / 2.0
    return mean_rank[tie_id]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (tie-aware). NaN when only one class is present."""
    y, s = _check(labels, scores)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    ranks = _average_ranks(s[order])
    rank_sum = ranks[y[order] == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by ``keys``: (segment_start bool [N], segment start offsets [G])."""
    n = keys.size
    start = np.empty(n, dtype=bool)
    if n:
        start[0] = True
        start[1:] = keys[1:] != keys[:-1]
    return start, np.flatnonzero(start)


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC; single-class users are skipped.

    Returns NaN when no user has both a positive and a negative row.
    """
    y, s, u = _check(labels, scores, users)
    if y.size == 0:
        return math.nan
    order = np.lexsort((s, u))
    y_o, s_o, u_o = y[order], s[order], u[order]
    seg_start, offsets = _segments(u_o)
    ranks = _average_ranks(s_o, seg_start)
    n_rows = np.diff(np.append(offsets, y.size)).astype(np.float64)
    n_pos = np.add.reduceat(y_o, offsets)
    pos_rank_sum = np.add.reduceat(ranks * y_o, offsets)
    n_neg = n_rows - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return math.nan
    user_auc = (pos_rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0) / (
        n_pos[valid] * n_neg[valid]
    )
    weights = n_rows[valid]
    return float((user_auc * weights).sum() / weights.sum())


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy computed from logits (no clipping needed)."""
    y, z = _check(labels, logits)
    if y.size == 0:
        return math.nan
    # BCE(y, σ(z)) = softplus(z) − y·z, evaluated stably
    softplus = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    return float((softplus - y * z).mean())


def calibration(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean predicted probability / observed positive rate (NaN without positives)."""
    y, z = _check(labels, logits)
    rate = y.mean() if y.size else 0.0
    if rate == 0:
        return math.nan
    return float(sigmoid(z).mean() / rate)


def _ranked_by_group(y: np.ndarray, s: np.ndarray, g: np.ndarray):
    """Rows sorted by group, then score descending, ties with negatives first.

    Returns (labels in that order, position within group [N] 0-based,
    group start offsets [G], rows per group [G], positives per group [G]).
    """
    order = np.lexsort((y, -s, g))
    y_o = y[order]
    seg_start, offsets = _segments(g[order])
    seg_id = np.cumsum(seg_start) - 1
    pos = np.arange(y.size) - offsets[seg_id]
    sizes = np.diff(np.append(offsets, y.size))
    n_pos = np.add.reduceat(y_o, offsets) if y.size else np.zeros(0)
    return y_o, pos, offsets, sizes, n_pos, seg_id


def ndcg_at_k(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups with at least one positive (binary gains)."""
    y, s, g = _check(labels, scores, groups)
    if k <= 0:
        raise MetricError(f"k must be positive, got {k}")
    if y.size == 0:
        return math.nan
    y_o, pos, offsets, _sizes, n_pos, seg_id = _ranked_by_group(y, s, g)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    in_top = pos < k
    dcg = np.bincount(
        seg_id[in_top], weights=y_o[in_top] * discount[pos[in_top]], minlength=offsets.size
    )
    # ideal DCG: all of a group's positives (at most k) at the top
    cum_discount = np.concatenate(([0.0], np.cumsum(discount)))
    idcg = cum_discount[np.minimum(n_pos, k).astype(np.int64)]
    valid = n_pos > 0
    if not valid.any():
        return math.nan
    return float((dcg[valid] / idcg[valid]).mean())


def map_at_k(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 5) -> float:
    """Mean average precision@k over groups with at least one positive.

    AP@k = Σ_{i≤k} P@i·rel_i / min(k, positives in the group).
    """
    y, s, g = _check(labels, scores, groups)
    if k <= 0:
        raise MetricError(f"k must be positive, got {k}")
    if y.size == 0:
        return math.nan
    y_o, pos, offsets, _sizes, n_pos, seg_id = _ranked_by_group(y, s, g)
    hits_so_far = np.cumsum(y_o)
    # subtract the running count before each group so counts restart per group
    before_group = np.concatenate(([0.0], hits_so_far))[offsets][seg_id]
    hits_in_group = hits_so_far - before_group
    precision = hits_in_group / (pos + 1.0)
    in_top = pos < k
    ap_sum = np.bincount(seg_id[in_top], weights=(precision * y_o)[in_top], minlength=offsets.size)
    valid = n_pos > 0
    if not valid.any():
        return math.nan
    return float((ap_sum[valid] / np.minimum(n_pos[valid], k)).mean())


def evaluate_scores(
    labels: np.ndarray,
    logits: np.ndarray,
    users: np.ndarray,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one model on one split.

    Args:
        labels: ``[N]`` 0/1.
        logits: ``[N]`` pre-sigmoid scores.
        users: ``[N]`` user ids (GAUC).
        groups: ``[N]`` request ids (NDCG/MAP); None = rank per user.

    Returns:
        ``{"auc", "gauc", "logloss", "ndcg@10", "map@5", "calibration", "rows",
        "positive_rate"}``; undefined metrics are NaN.
    """
    groups = users if groups is None else groups
    y = np.asarray(labels, dtype=np.float64).ravel()
    return {
        "auc": auc(y, logits),
        "gauc": gauc(y, logits, users),
        "logloss": logloss(y, logits),
        "ndcg@10": ndcg_at_k(y, logits, groups, 10),
        "map@5": map_at_k(y, logits, groups, 5),
        "calibration": calibration(y, logits),
        "rows": int(y.size),
        "positive_rate": float(y.mean()) if y.size else math.nan,
    }


def gap_closed(distilled: float, light_alone: float, booster: float) -> float:
    """Fraction of the booster-vs-light gap the distilled light net recovers.

    NaN when the gap is (numerically) zero or any input is NaN: a ratio over a
    zero gap says nothing.
    """
    gap = booster - light_alone
    if not all(math.isfinite(v) for v in (distilled, light_alone, booster)) or abs(gap) < 1e-12:
        return math.nan
    return (distilled - light_alone) / gap


def fit_platt(
    logits: np.ndarray, labels: np.ndarray, *, iterations: int = 50, ridge: float = 1e-6
) -> tuple[float, float]:
    """Platt scaling: ``(a, b)`` minimising ``mean BCE(y, σ(a·z + b))``, by Newton steps.

    The log-loss is convex in ``(a, b)``; each step solves the 2×2 Newton system
    (a tiny ``ridge`` keeps it solvable when every logit is equal) and halves the
    step until the loss does not increase, so the fit converges from ``(1, 0)``
    (the identity) in a handful of steps. Calibration must never reorder the
    candidates: when the optimum has ``a <= 0`` (a net that ranks worse than
    chance on the fitting split), ``a`` stays 1 and only the shift ``b`` is fitted.

    Args:
        logits: ``[N]`` pre-sigmoid scores.
        labels: ``[N]`` in {0, 1}.
        iterations: at most this many Newton steps.
        ridge: added to the Hessian's diagonal.

    Returns:
        ``(a, b)`` with ``a > 0``; ``(1.0, 0.0)`` when the labels are all one class.
    """
    y, z = _check(labels, logits)
    if y.size == 0 or y.min() == y.max():
        return 1.0, 0.0
    a, b = _newton_logloss(
        np.stack([z, np.ones_like(z)], axis=1), y, np.array([1.0, 0.0]), iterations, ridge
    )
    if a > 0:
        return a, b
    (shift,) = _newton_logloss(
        np.ones((z.size, 1)), y, np.array([0.0]), iterations, ridge, offset=z
    )
    return 1.0, shift


def _newton_logloss(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    iterations: int,
    ridge: float,
    offset: np.ndarray | float = 0.0,
) -> list[float]:
    """Weights ``w`` minimising ``mean BCE(y, σ(x @ w + offset))``: damped Newton steps."""
    loss = logloss(y, x @ w + offset)
    for _ in range(iterations):
        p = sigmoid(x @ w + offset)
        grad = x.T @ (p - y) / y.size
        hess = (x * (p * (1 - p))[:, None]).T @ x / y.size + ridge * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:
            candidate = w - scale * step
            new = logloss(y, x @ candidate + offset)
            if new <= loss:
                break
            scale /= 2
        else:
            break
        converged = loss - new < 1e-12
        w, loss = candidate, new
        if converged:
            break
    return [float(v) for v in w]


def apply_platt(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """Calibrated logits ``a·z + b`` (``float64 [N]``); probabilities are their sigmoid."""
    return a * np.asarray(logits, dtype=np.float64) + b


__all__ = [
    "METRIC_NAMES",
    "MetricError",
    "apply_platt",
    "auc",
    "calibration",
    "evaluate_scores",
    "fit_platt",
    "gap_closed",
    "gauc",
    "logloss",
    "map_at_k",
    "ndcg_at_k",
    "sigmoid",
]
