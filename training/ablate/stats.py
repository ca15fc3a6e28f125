"""Statistics for the ablation report: AUC intervals a reviewer can trust.

A distillation gain is read as a **paired** difference of test AUC between a
variant (b) and the baseline (a, ``light_alone``) on the same test rows,
averaged over model seeds (init and data order; the data stay fixed). Its
interval comes from a hierarchical bootstrap: each replicate resamples the
seeds with replacement *and* the test groups (requests or users) with
replacement, and applies the same group weights to a and b, so the noise the
two variants share (which test rows happened to be drawn) cancels.

Everything here is a pure numpy function of flat arrays:

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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

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


# ----------------------------------------------------------------- paired difference


@dataclass(frozen=True)
class PairedDifference:
    """Paired AUC difference (variant b − baseline a), averaged over seeds.

    Attributes:
        mean: mean over seeds of AUC_b − AUC_a on the full test set.
        low, high: percentile interval of the hierarchical bootstrap.
        n_seeds: S, the number of seeds (score arrays per variant).
        n_boot: replicates drawn.
        level: coverage of the interval, e.g. 0.95.
        per_seed: AUC_b − AUC_a of every seed, in input order.
        p_value_two_sided: share of replicates on the other side of 0 from
            ``mean`` (0 counts as the other side), doubled, capped at 1; 1
            when ``mean`` is 0. 0 means below the resolution 1 / n_valid.
        n_degenerate: replicates dropped because they drew a single class.
    """

    mean: float
    low: float
    high: float
    n_seeds: int
    n_boot: int
    level: float
    per_seed: tuple[float, ...]
    p_value_two_sided: float
    n_degenerate: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``report.json``."""
        d = asdict(self)
        d["per_seed"] = list(self.per_seed)
        return d


@dataclass(frozen=True)
class AUCInterval:
    """One variant's test AUC, averaged over seeds, with a hierarchical bootstrap interval.

    Attributes:
        mean: mean over seeds of the full-test-set AUC.
        low, high: percentile interval (seeds and groups resampled).
        n_seeds: S.
        n_boot: replicates drawn.
        level: coverage, e.g. 0.95.
        per_seed: AUC of every seed, in input order.
        n_degenerate: replicates dropped because they drew a single class.
    """

    mean: float
    low: float
    high: float
    n_seeds: int
    n_boot: int
    level: float
    per_seed: tuple[float, ...]
    n_degenerate: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``report.json``."""
        d = asdict(self)
        d["per_seed"] = list(self.per_seed)
        return d


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise StatsError(f"level must lie in (0, 1), got {level}")


def _seed_arrays(scores_by_seed: Sequence[Any], n: int, name: str) -> list[np.ndarray]:
    if isinstance(scores_by_seed, np.ndarray) and scores_by_seed.ndim == 1:
        raise StatsError(f"{name} must be a list of [N] arrays, one per seed")
    arrays = [_scores(s, n, f"{name}[{k}]") for k, s in enumerate(scores_by_seed)]
    if not arrays:
        raise StatsError(f"{name} holds no seeds")
    return arrays


def _hierarchical_replicates(
    y: np.ndarray, groups: Any, arrays: Sequence[np.ndarray], n_boot: int, seed: int
) -> np.ndarray:
    """AUC replicates ``[S, B]`` of every score array under the same group resamples.

    Group counts come from ``default_rng(seed)`` (the same draws as
    ``group_bootstrap_counts(G, n_boot, default_rng(seed))``), streamed in
    blocks so ``[B, G]`` is never held at once; every array is sorted once.
    """
    if n_boot < 1:
        raise StatsError(f"n_boot must be ≥ 1, got {n_boot}")
    ids, n_groups = group_index(groups, y.size)
    sorted_arrays = [_SortedAUC(y, s, ids) for s in arrays]
    reps = np.empty((len(arrays), n_boot))
    start = 0
    for counts in _count_blocks(n_groups, n_boot, np.random.default_rng(seed)):
        for k, sa in enumerate(sorted_arrays):
            reps[k, start : start + counts.shape[0]] = sa.replicates(counts)
        start += counts.shape[0]
    return reps


def _seed_counts(n_seeds: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each seed is drawn per replicate, int ``[B, S]``.

    A stream of its own (``default_rng([seed, 1])``) so the group draws do not
    depend on the number of seeds. With one seed multinomial(1, [1]) is always
    [1]: the seed resampling is a no-op.
    """
    rng = np.random.default_rng([seed, 1])
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot)


def _percentile_interval(
    replicates: np.ndarray, level: float
) -> tuple[float, float, np.ndarray, int]:
    valid = replicates[np.isfinite(replicates)]
    n_degenerate = replicates.size - valid.size
    if valid.size == 0:
        raise StatsError("every bootstrap replicate drew a single class; too few groups")
    alpha = 1.0 - level
    low, high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high), valid, n_degenerate


def paired_difference(
    labels: Any,
    groups: Any,
    scores_by_seed_a: Sequence[Any],
    scores_by_seed_b: Sequence[Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Paired AUC difference of variant b over baseline a on the same test rows.

    Point estimate: mean over seeds of AUC(b_s) − AUC(a_s). Interval:
    percentile interval of a hierarchical bootstrap; replicate r draws seeds
    with replacement (weights ``m_r[s]``) and groups with replacement (counts
    ``c_r``), applies the *same* group weights to a and b (the pairing), and
    returns Σ_s m_r[s]·(AUC_r(b_s) − AUC_r(a_s)) / S. Seed s of a and seed s of
    b are paired too (same init seed and data order).

    With one seed the seed resampling is a no-op: the interval then covers
    only test-set sampling, not the spread between training runs, and is too
    narrow for a claim about the recipe.

    Args:
        labels: ``[N]`` 0/1 test labels, both classes present.
        groups: ``[N]`` request or user ids resampled as units; None resamples rows.
        scores_by_seed_a: S arrays ``[N]``, the baseline's test scores per seed.
        scores_by_seed_b: S arrays ``[N]``, the variant's, same rows and order.
        n_boot: replicates.
        seed: seeds the bootstrap; same inputs and seed give the same result.
        level: interval coverage in (0, 1).

    Returns:
        A :class:`PairedDifference`.

    Raises:
        StatsError: on length or seed-count mismatches, a single-class test
            set, non-finite scores, or a level outside (0, 1).
    """
    _check_level(level)
    y = _labels(labels)
    _require_both_classes(y)
    a = _seed_arrays(scores_by_seed_a, y.size, "scores_by_seed_a")
    b = _seed_arrays(scores_by_seed_b, y.size, "scores_by_seed_b")
    if len(a) != len(b):
        raise StatsError(f"baseline has {len(a)} seeds but the variant has {len(b)}")
    n_seeds = len(a)
    per_seed = tuple(weighted_auc(y, sb) - weighted_auc(y, sa) for sa, sb in zip(a, b))
    reps = _hierarchical_replicates(y, groups, [*a, *b], n_boot, seed)
    diff = reps[n_seeds:] - reps[:n_seeds]  # [S, B]
    replicates = np.einsum("bs,sb->b", _seed_counts(n_seeds, n_boot, seed), diff) / n_seeds
    low, high, valid, n_degenerate = _percentile_interval(replicates, level)
    mean = float(np.mean(per_seed))
    if mean > 0:
        p = 2.0 * float(np.mean(valid <= 0))
    elif mean < 0:
        p = 2.0 * float(np.mean(valid >= 0))
    else:
        p = 1.0
    return PairedDifference(
        mean=mean,
        low=low,
        high=high,
        n_seeds=n_seeds,
        n_boot=n_boot,
        level=level,
        per_seed=per_seed,
        p_value_two_sided=min(1.0, p),
        n_degenerate=n_degenerate,
    )


def auc_interval(
    labels: Any,
    groups: Any,
    scores_by_seed: Sequence[Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> AUCInterval:
    """One variant's AUC over seeds, with the hierarchical bootstrap of :func:`paired_difference`.

    Same resampling (seeds and groups with replacement; with one seed only the
    groups), and with the same ``seed`` the same group draws, so comparing
    this interval's width with the paired one shows what the pairing removes.

    Args:
        labels: ``[N]`` 0/1, both classes present.
        groups: ``[N]`` request or user ids; None resamples rows.
        scores_by_seed: S arrays ``[N]``.
        n_boot: replicates.
        seed: seeds the bootstrap.
        level: interval coverage in (0, 1).

    Returns:
        An :class:`AUCInterval`.
    """
    _check_level(level)
    y = _labels(labels)
    _require_both_classes(y)
    arrays = _seed_arrays(scores_by_seed, y.size, "scores_by_seed")
    per_seed = tuple(weighted_auc(y, s) for s in arrays)
    reps = _hierarchical_replicates(y, groups, arrays, n_boot, seed)  # [S, B]
    seed_counts = _seed_counts(len(arrays), n_boot, seed)
    replicates = np.einsum("bs,sb->b", seed_counts, reps) / len(arrays)
    low, high, _, n_degenerate = _percentile_interval(replicates, level)
    return AUCInterval(
        mean=float(np.mean(per_seed)),
        low=low,
        high=high,
        n_seeds=len(arrays),
        n_boot=n_boot,
        level=level,
        per_seed=per_seed,
        n_degenerate=n_degenerate,
    )


# ----------------------------------------------------------------- mean ± t interval


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


# ----------------------------------------------------------------- rendering


class _HasInterval(Protocol):
    mean: float
    low: float
    high: float


def describe_gain(
    gain: float | _HasInterval,
    low: float | None = None,
    high: float | None = None,
    *,
    digits: int = 4,
) -> str:
    """Render a gain and its interval, e.g. ``"+0.0042 [+0.0011, +0.0073]"``.

    Appends ``" (interval includes 0)"`` when it does, so a reader cannot
    mistake noise for a gain, and ``" (no interval)"`` when there is none
    (a single seed's t-interval).

    Args:
        gain: the point estimate, or any result with ``mean``, ``low`` and
            ``high`` (:class:`PairedDifference`, :class:`AUCInterval`, :class:`MeanCI`).
        low, high: the interval when ``gain`` is a number.
        digits: decimals shown.
    """
    if not isinstance(gain, int | float):
        gain, low, high = gain.mean, gain.low, gain.high
    if low is None or high is None:
        raise StatsError("describe_gain needs low and high with a plain number")

    def fmt(x: float) -> str:
        return "nan" if math.isnan(x) else f"{x:+.{digits}f}"

    text = fmt(float(gain))
    if math.isnan(low) or math.isnan(high):
        return text + " (no interval)"
    text += f" [{fmt(float(low))}, {fmt(float(high))}]"
    if low <= 0.0 <= high:
        text += " (interval includes 0)"
    return text
