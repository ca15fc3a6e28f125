"""Tie-aware weighted AUC and its group bootstrap: the resampling behind the ablation's intervals.

Also the input checks and the :class:`StatsError` every statistic of the
ablation raises. Everything here is a pure numpy function of flat arrays:

* ``labels`` — 0/1, shape ``[N]``;
* ``scores`` — one score (logit or probability) per row, ``[N]``; AUC only
  uses their order;
* ``groups`` — any hashable-per-row key (request or user id), ``[N]``; rows of
  one group are resampled together;
* bootstrap ``counts`` — how often each group was drawn, ``[B, G]``.

Speed: :func:`replicate_aucs` sorts the scores once and then costs O(N) per
replicate (cumulative sums of the negatives' weights, looked up at each
positive's tie boundaries), so thousands of replicates over 100k rows take
seconds, not a Python loop per row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

# Element budget of one [replicates, rows] block; bounds memory at ~32 MB per array.
_BLOCK_ELEMENTS = 1 << 22


class StatsError(ValueError):
    """Inputs to a statistic are inconsistent (shapes, labels, weights, seeds)."""


# ----------------------------------------------------------------- input checks


def _labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise StatsError("labels must be 0 or 1")
    return y


def _scores(scores: Any, n: int, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size != n:
        raise StatsError(f"{what} have {s.size} rows but labels have {n}")
    if not np.isfinite(s).all():
        raise StatsError(f"{what} contain {int((~np.isfinite(s)).sum())} NaN/inf values")
    return s


def _require_both_classes(y: np.ndarray) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise StatsError(
            f"AUC needs positive and negative rows; got {n_pos} positives of {y.size} rows"
        )


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise StatsError(f"level must lie in (0, 1), got {level}")


# ----------------------------------------------------------------- AUC


def weighted_auc(labels: Any, scores: Any, weights: Any = None) -> float:
    """Tie-aware ROC AUC with non-negative row weights.

    AUC = Σ_{i pos, j neg} w_i·w_j·([s_i > s_j] + ½[s_i = s_j]) / (W_pos·W_neg),
    the Mann-Whitney statistic in which a row of integer weight k counts as k
    copies of that row. With all weights 1 it equals ``training.evaluate.auc``.

    Args:
        labels: ``[N]`` 0/1.
        scores: ``[N]`` finite scores; only their order matters.
        weights: ``[N]`` finite, non-negative; None means all 1.

    Returns:
        The AUC in [0, 1]; NaN when the positive or the negative rows carry no
        weight (for example a single-class input).

    Raises:
        StatsError: on mismatched lengths, non-binary labels, non-finite
            scores, or negative / non-finite weights.
    """
    y = _labels(labels)
    s = _scores(scores, y.size)
    if weights is None:
        w = np.ones_like(y)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size != y.size:
            raise StatsError(f"weights have {w.size} rows but labels have {y.size}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise StatsError("weights must be finite and non-negative")
    pos = y == 1
    w_pos_total = w[pos].sum()
    w_neg_total = w[~pos].sum()
    if w_pos_total <= 0 or w_neg_total <= 0:
        return math.nan
    neg_order = np.argsort(s[~pos], kind="stable")
    neg_scores = s[~pos][neg_order]
    neg_cum = np.concatenate(([0.0], np.cumsum(w[~pos][neg_order])))
    lo = np.searchsorted(neg_scores, s[pos], side="left")
    hi = np.searchsorted(neg_scores, s[pos], side="right")
    # neg weight strictly below + half the tied neg weight = (cum[lo] + cum[hi]) / 2
    wins = (w[pos] * (neg_cum[lo] + neg_cum[hi])).sum() / 2.0
    return float(wins / (w_pos_total * w_neg_total))


# ----------------------------------------------------------------- group bootstrap


def group_index(groups: Any, n: int | None = None) -> tuple[np.ndarray, int]:
    """Dense group ids for bootstrap resampling.

    Args:
        groups: ``[N]`` request or user ids of any sortable dtype, or None for
            one group per row (an ordinary row bootstrap).
        n: number of rows; required when ``groups`` is None, checked otherwise.

    Returns:
        ``(ids, n_groups)``: ``ids`` is int64 ``[N]`` in ``[0, n_groups)``.
    """
    if groups is None:
        if n is None:
            raise StatsError("group_index needs n when groups is None")
        return np.arange(n, dtype=np.int64), n
    g = np.asarray(groups).ravel()
    if n is not None and g.size != n:
        raise StatsError(f"groups have {g.size} rows but labels have {n}")
    uniques, inverse = np.unique(g, return_inverse=True)
    return inverse.ravel().astype(np.int64), int(uniques.size)


def _count_blocks(n_groups: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of :func:`group_bootstrap_counts`' rows, in order, each int64 ``[b, G]``."""
    if n_groups < 1 or n_boot < 1:
        raise StatsError(f"need n_groups ≥ 1 and n_boot ≥ 1, got {n_groups} and {n_boot}")
    block = max(1, _BLOCK_ELEMENTS // n_groups)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups), dtype=np.int64)
        counts = np.empty((b, n_groups), dtype=np.int64)
        for r in range(b):
            counts[r] = np.bincount(draws[r], minlength=n_groups)
        yield counts


def group_bootstrap_counts(n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each group is drawn when ``n_groups`` groups are resampled with replacement.

    Each row of the result is one multinomial(n_groups, uniform) draw: the
    group indices of a block of replicates are drawn at once and each
    replicate's are counted with one ``bincount`` (a loop over replicates,
    never over rows or groups; a per-replicate output stays in cache, which
    measured faster than one flat ``bincount`` or ``rng.multinomial``).

    Args:
        n_groups: G ≥ 1.
        n_boot: B ≥ 1 replicates.
        rng: source of randomness; the result is a deterministic function of its state.

    Returns:
        int64 ``[B, G]``; every row sums to G.
    """
    return np.concatenate(list(_count_blocks(n_groups, n_boot, rng)))


def group_bootstrap_weights(groups: Any, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Per-row bootstrap weights from resampling groups with replacement.

    A row's weight in a replicate is how often its group was drawn, so all
    rows of a group move together. Equivalent to
    ``group_bootstrap_counts(G, n_boot, rng)[:, ids]``; for large inputs pass
    the counts to :func:`replicate_aucs` instead of materialising ``[B, N]``.

    Args:
        groups: ``[N]`` request or user ids.
        n_boot: B replicates.
        rng: numpy Generator.

    Returns:
        int64 ``[B, N]``.
    """
    ids, n_groups = group_index(groups)
    return group_bootstrap_counts(n_groups, n_boot, rng)[:, ids]


class _SortedAUC:
    """One score array sorted once, ready to score any number of group-weighted replicates.

    Args:
        y: ``[N]`` 0/1 with both classes.
        s: ``[N]`` finite scores.
        ids: int64 ``[N]`` dense group ids.
    """

    def __init__(self, y: np.ndarray, s: np.ndarray, ids: np.ndarray) -> None:
        pos = y == 1
        neg_order = np.argsort(s[~pos], kind="stable")
        neg_scores = s[~pos][neg_order]
        self.neg_ids = ids[~pos][neg_order]
        # positives in score order, so the lookups into the cumulative sums walk forward
        pos_order = np.argsort(s[pos], kind="stable")
        pos_scores = s[pos][pos_order]
        self.pos_ids = ids[pos][pos_order]
        self.lo = np.searchsorted(neg_scores, pos_scores, side="left")
        self.hi = np.searchsorted(neg_scores, pos_scores, side="right")

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        """AUC of each replicate; ``counts`` ``[b, G]`` → float64 ``[b]`` (NaN: one class drawn)."""
        out = np.empty(counts.shape[0], dtype=np.float64)
        block = max(1, _BLOCK_ELEMENTS // max(self.neg_ids.size + self.pos_ids.size, 1))
        for start in range(0, counts.shape[0], block):
            cb = counts[start : start + block].astype(np.float64, copy=False)
            neg_cum = np.zeros((cb.shape[0], self.neg_ids.size + 1))
            np.cumsum(cb[:, self.neg_ids], axis=1, out=neg_cum[:, 1:])
            w_pos = cb[:, self.pos_ids]
            # neg weight strictly below + half the tied neg weight, per positive
            wins = np.einsum("bi,bi->b", w_pos, neg_cum[:, self.lo] + neg_cum[:, self.hi]) / 2.0
            denom = w_pos.sum(axis=1) * neg_cum[:, -1]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + cb.shape[0]] = np.where(denom > 0, wins / denom, np.nan)
        return out


def replicate_aucs(labels: Any, scores: Any, group_ids: Any, counts: Any) -> np.ndarray:
    """AUC of many group-bootstrap replicates, sorting the scores once.

    Replicate ``b`` gives row ``i`` the weight ``counts[b, group_ids[i]]`` and
    is equal to ``weighted_auc(labels, scores, counts[b, group_ids])``. The
    negatives are sorted by score once; each positive's tie boundaries among
    them are found once (``searchsorted``); then each replicate is a gather,
    a cumulative sum over the negatives and a weighted sum over the
    positives — O(N), vectorised over blocks of replicates.

    Args:
        labels: ``[N]`` 0/1, both classes present.
        scores: ``[N]`` finite.
        group_ids: int ``[N]`` in ``[0, G)`` (from :func:`group_index`).
        counts: non-negative ``[B, G]`` (from :func:`group_bootstrap_counts`).

    Returns:
        float64 ``[B]``; NaN for a replicate that drew no positive or no
        negative row.
    """
    y = _labels(labels)
    s = _scores(scores, y.size)
    _require_both_classes(y)
    ids = np.asarray(group_ids, dtype=np.int64).ravel()
    if ids.size != y.size:
        raise StatsError(f"group_ids have {ids.size} rows but labels have {y.size}")
    c = np.asarray(counts)
    if c.ndim != 2:
        raise StatsError(f"counts must be [B, G], got shape {c.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= c.shape[1]):
        raise StatsError(f"group_ids must lie in [0, {c.shape[1]})")
    return _SortedAUC(y, s, ids).replicates(c)
