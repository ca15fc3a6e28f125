"""Statistics for the ablation report: AUC intervals a reviewer can trust.

A distillation gain is read as a **paired** difference of test AUC between a
variant (b) and the baseline (a, ``light_alone``) on the same test rows,
averaged over model seeds (init and data order; the data stay fixed). Its
interval comes from a hierarchical bootstrap: each replicate resamples the
seeds with replacement *and* the test groups (requests or users) with
replacement, and applies the same group weights to a and b, so the noise the
two variants share (which test rows happened to be drawn) cancels.

The AUC and the group resampling it builds on are in ``training.ablate.auc``
(array conventions there); the mean ± t interval over seeds is in
``training.ablate.t_interval``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from training.ablate.auc import (
    StatsError,
    _check_level,
    _count_blocks,
    _labels,
    _require_both_classes,
    _scores,
    _SortedAUC,
    group_index,
    weighted_auc,
)

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
