"""Ablation statistics against hand computations and brute-force definitions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training.ablate.auc import (
    StatsError,
    group_bootstrap_counts,
    group_bootstrap_weights,
    group_index,
    replicate_aucs,
    weighted_auc,
)
from training.ablate.stats import (
    AUCInterval,
    PairedDifference,
    auc_interval,
    describe_gain,
    paired_difference,
)
from training.ablate.t_interval import MeanCI, mean_ci, t_quantile
from training.evaluate import auc

# ----------------------------------------------------------------- references and fixtures


def brute_weighted_auc(y, s, w):
    """Σ over every (positive, negative) pair of w_i·w_j·(win + ½·tie) / (W_pos·W_neg)."""
    num = den = 0.0
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            pair = w[i] * w[j]
            den += pair
            num += pair * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den if den > 0 else math.nan


def tied_case(seed: int, n: int = 40):
    """Labels with both classes and integer scores with many ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    y[:2] = [0.0, 1.0]
    s = rng.integers(0, 5, n).astype(float) + 0.5 * y * rng.integers(0, 2, n)
    return y, s


def grouped_case(seed: int = 0, n_groups: int = 300, rows_per_group: int = 8):
    """Requests of equal size with a group-level score offset, so groups matter."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), rows_per_group)
    offset = rng.normal(0.0, 1.0, n_groups)[groups]
    y = (rng.random(groups.size) < 1.0 / (1.0 + np.exp(-offset))).astype(float)
    a = offset + rng.normal(0.0, 1.0, groups.size)
    return y, groups, a, rng


# ----------------------------------------------------------------- weighted AUC


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_weighted_auc_with_unit_weights_matches_evaluate_auc_and_brute_force(seed):
    y, s = tied_case(seed)
    ones = np.ones_like(y)
    assert weighted_auc(y, s) == pytest.approx(auc(y, s), abs=1e-12)
    assert weighted_auc(y, s, ones) == pytest.approx(brute_weighted_auc(y, s, ones), abs=1e-12)


def test_weighted_auc_hand_example_with_ties():
    # pos {2, 1}, neg {1, 0}: pairs (2>1, 2>0, 1=1 → ½, 1>0) = 3.5 of 4
    assert weighted_auc([1, 1, 0, 0], [2.0, 1.0, 1.0, 0.0]) == pytest.approx(0.875)
    # all scores equal: every pair is a tie
    assert weighted_auc([1, 0, 1, 0], [3.0, 3.0, 3.0, 3.0]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_weights_equal_duplicated_rows(seed):
    y, s = tied_case(seed)
    w = np.random.default_rng(seed + 10).integers(0, 4, y.size)
    w[:2] = 1  # keep both classes
    expected = auc(np.repeat(y, w), np.repeat(s, w))
    assert weighted_auc(y, s, w) == pytest.approx(expected, abs=1e-12)
    assert weighted_auc(y, s, w) == pytest.approx(brute_weighted_auc(y, s, w), abs=1e-12)


def test_real_valued_weights_match_brute_force():
    y, s = tied_case(5)
    w = np.random.default_rng(5).random(y.size)
    assert weighted_auc(y, s, w) == pytest.approx(brute_weighted_auc(y, s, w), abs=1e-12)


def test_weighted_auc_undefined_and_invalid_inputs():
    assert math.isnan(weighted_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(weighted_auc([1, 0, 1], [0.1, 0.2, 0.3], [0.0, 1.0, 0.0]))
    with pytest.raises(StatsError, match="rows"):
        weighted_auc([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(StatsError, match="non-negative"):
        weighted_auc([1, 0], [0.1, 0.2], [1.0, -1.0])
    with pytest.raises(StatsError, match="0 or 1"):
        weighted_auc([2, 0], [0.1, 0.2])
    with pytest.raises(StatsError, match="NaN"):
        weighted_auc([1, 0], [math.nan, 0.2])


# ----------------------------------------------------------------- group bootstrap


def test_group_bootstrap_counts_are_multinomial_draws_and_deterministic():
    counts = group_bootstrap_counts(7, 50, np.random.default_rng(3))
    assert counts.shape == (50, 7)
    assert (counts >= 0).all()
    assert (counts.sum(axis=1) == 7).all()
    again = group_bootstrap_counts(7, 50, np.random.default_rng(3))
    np.testing.assert_array_equal(counts, again)
    # each group is drawn once per replicate on average
    many = group_bootstrap_counts(5, 20_000, np.random.default_rng(0))
    np.testing.assert_allclose(many.mean(axis=0), 1.0, atol=0.05)


def test_group_bootstrap_weights_move_whole_groups():
    groups = np.array(["u3", "u1", "u3", "u2", "u1", "u3"])
    weights = group_bootstrap_weights(groups, 200, np.random.default_rng(1))
    assert weights.shape == (200, 6)
    ids, n_groups = group_index(groups)
    assert n_groups == 3
    for g in range(n_groups):
        rows = np.flatnonzero(ids == g)
        assert (weights[:, rows] == weights[:, rows[:1]]).all()
    # total groups drawn per replicate is the number of groups
    first_row = np.array([np.flatnonzero(ids == g)[0] for g in range(n_groups)])
    assert (weights[:, first_row].sum(axis=1) == n_groups).all()
    counts = group_bootstrap_counts(n_groups, 200, np.random.default_rng(1))
    np.testing.assert_array_equal(weights, counts[:, ids])


def test_replicate_aucs_equal_weighted_auc_with_the_same_weights():
    y, s = tied_case(7, n=60)
    groups = np.random.default_rng(7).integers(0, 12, y.size)
    ids, n_groups = group_index(groups)
    counts = group_bootstrap_counts(n_groups, 64, np.random.default_rng(8))
    reps = replicate_aucs(y, s, ids, counts)
    assert reps.shape == (64,)
    for b in range(64):
        expected = weighted_auc(y, s, counts[b, ids])
        if math.isnan(expected):
            assert math.isnan(reps[b])
        else:
            assert reps[b] == pytest.approx(expected, abs=1e-12)


def test_replicate_auc_with_unit_counts_is_the_plain_auc():
    y, s = tied_case(2)
    ids, n_groups = group_index(None, y.size)
    reps = replicate_aucs(y, s, ids, np.ones((3, n_groups), dtype=np.int64))
    np.testing.assert_allclose(reps, auc(y, s), atol=1e-12)


def test_replicate_that_draws_one_class_is_nan():
    y = np.array([1.0, 0.0])
    s = np.array([0.9, 0.1])
    counts = np.array([[2, 0], [1, 1]])  # first replicate drew the positive row twice
    reps = replicate_aucs(y, s, np.array([0, 1]), counts)
    assert math.isnan(reps[0])
    assert reps[1] == pytest.approx(1.0)


# ----------------------------------------------------------------- t interval


@pytest.mark.parametrize(
    ("level", "df", "expected"),
    [
        (0.95, 1, 12.706205),
        (0.95, 2, 4.302653),
        (0.95, 3, 3.182446),
        (0.95, 4, 2.776445),
        (0.95, 10, 2.228139),
        (0.95, 30, 2.042272),
        (0.95, 100, 1.983972),
        (0.99, 5, 4.032143),
        (0.90, 7, 1.894579),
    ],
)
def test_t_quantile_matches_printed_tables(level, df, expected):
    assert t_quantile(level, df) == pytest.approx(expected, abs=1e-6)


def test_mean_ci_hand_example():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # 1.290994
    half = 3.182446 * sd / 2.0
    assert isinstance(ci, MeanCI)
    assert ci.mean == pytest.approx(2.5)
    assert ci.sd == pytest.approx(1.290994, abs=1e-6)
    assert ci.low == pytest.approx(2.5 - half, abs=1e-5)
    assert ci.high == pytest.approx(2.5 + half, abs=1e-5)
    assert (ci.n, ci.n_nan) == (4, 0)


def test_mean_ci_drops_nan_and_rejects_empty():
    with_nan = mean_ci([1.0, math.nan, 2.0, 3.0, 4.0])
    assert with_nan.n_nan == 1
    assert with_nan.low == pytest.approx(mean_ci([1.0, 2.0, 3.0, 4.0]).low)
    one = mean_ci([0.7])
    assert one.mean == pytest.approx(0.7)
    assert math.isnan(one.low)
    assert math.isnan(one.high)
    with pytest.raises(StatsError, match="none"):
        mean_ci([])
    with pytest.raises(StatsError, match="all NaN"):
        mean_ci([math.nan, math.nan])
    with pytest.raises(StatsError, match="level"):
        mean_ci([1.0, 2.0], level=1.5)


# ----------------------------------------------------------------- paired difference


def test_identical_variants_have_zero_difference_and_zero_interval():
    y, groups, a, _ = grouped_case()
    result = paired_difference(y, groups, [a, a + 0.0], [a.copy(), a.copy()], n_boot=200)
    assert isinstance(result, PairedDifference)
    assert result.mean == 0.0
    assert (result.low, result.high) == (0.0, 0.0)
    assert result.per_seed == (0.0, 0.0)
    assert result.p_value_two_sided == 1.0
    assert (result.n_seeds, result.n_boot, result.level) == (2, 200, 0.95)


def test_strictly_better_variant_has_interval_above_zero():
    y, groups, a, rng = grouped_case()
    seeds_a, seeds_b = [], []
    for _ in range(3):
        a_s = a + rng.normal(0.0, 0.1, a.size)
        boosted = (y == 1) & (rng.random(a.size) < 0.4)
        seeds_a.append(a_s)
        seeds_b.append(a_s + 0.5 * boosted)
    result = paired_difference(y, groups, seeds_a, seeds_b, n_boot=500)
    assert all(d > 0 for d in result.per_seed)
    assert 0.0 < result.low <= result.mean <= result.high
    assert result.p_value_two_sided == 0.0
    assert describe_gain(result).endswith("]")  # no "interval includes 0"


def test_pairing_narrows_the_interval():
    # The test set's sampling moves both AUCs together; the paired difference cancels it.
    y, groups, a, rng = grouped_case(seed=1)
    b = a + 0.3 * ((y == 1) & (rng.random(a.size) < 0.2))
    paired = paired_difference(y, groups, [a], [b], n_boot=500)
    own_a = auc_interval(y, groups, [a], n_boot=500)
    own_b = auc_interval(y, groups, [b], n_boot=500)
    assert isinstance(own_a, AUCInterval)
    unpaired_width = (own_a.high - own_a.low) + (own_b.high - own_b.low)
    assert paired.high - paired.low < unpaired_width / 4
    # and the unpaired intervals overlap, so without pairing the gain would look like noise
    assert own_b.low < own_a.high
    assert paired.low > 0


def test_one_seed_interval_is_the_group_bootstrap_of_the_difference():
    y, groups, a, rng = grouped_case(seed=2)
    b = a + rng.normal(0.0, 0.5, a.size)
    result = paired_difference(y, groups, [a], [b], n_boot=300, seed=11, level=0.9)
    ids, n_groups = group_index(groups)
    counts = group_bootstrap_counts(n_groups, 300, np.random.default_rng(11))
    diff = replicate_aucs(y, b, ids, counts) - replicate_aucs(y, a, ids, counts)
    low, high = np.quantile(diff, [0.05, 0.95])
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-12)
    assert result.mean == pytest.approx(auc(y, b) - auc(y, a), abs=1e-12)


def test_seed_spread_widens_the_interval():
    # Seed 0 gains a lot, seed 1 nothing: resampling seeds must reach both outcomes.
    y, groups, a, rng = grouped_case(seed=3)
    better = a + 0.8 * ((y == 1) & (rng.random(a.size) < 0.5))
    two_seeds = paired_difference(y, groups, [a, a], [better, a], n_boot=1000)
    only_seed_0 = paired_difference(y, groups, [a], [better], n_boot=1000)
    assert two_seeds.mean == pytest.approx(only_seed_0.mean / 2)
    assert only_seed_0.low > 0
    assert two_seeds.low < 0.25 * only_seed_0.mean
    assert two_seeds.high > 0.75 * only_seed_0.mean


def test_paired_difference_is_deterministic_for_a_seed():
    y, groups, a, rng = grouped_case(seed=4)
    b = a + rng.normal(0.0, 0.5, a.size)
    first = paired_difference(y, groups, [a, b], [b, a], n_boot=200, seed=5)
    again = paired_difference(y, groups, [a, b], [b, a], n_boot=200, seed=5)
    other = paired_difference(y, groups, [a, b], [b, a], n_boot=200, seed=6)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert json.loads(json.dumps(first.to_dict()))["per_seed"] == list(first.per_seed)


def test_paired_difference_rejects_bad_inputs():
    y, groups, a, _ = grouped_case()
    with pytest.raises(StatsError, match="rows"):
        paired_difference(y, groups, [a], [a[:-1]])
    with pytest.raises(StatsError, match="groups have"):
        paired_difference(y, groups[:-1], [a], [a])
    with pytest.raises(StatsError, match="seeds"):
        paired_difference(y, groups, [a, a], [a])
    with pytest.raises(StatsError, match="no seeds"):
        paired_difference(y, groups, [], [])
    with pytest.raises(StatsError, match="list of"):
        paired_difference(y, groups, a, a)
    with pytest.raises(StatsError, match="positive and negative"):
        paired_difference(np.ones_like(y), groups, [a], [a])
    with pytest.raises(StatsError, match="level"):
        paired_difference(y, groups, [a], [a], level=0.0)


# ----------------------------------------------------------------- rendering


def test_describe_gain_formats_and_flags_zero():
    assert describe_gain(0.0042, 0.0011, 0.0073) == "+0.0042 [+0.0011, +0.0073]"
    assert describe_gain(-0.001, -0.004, 0.002) == (
        "-0.0010 [-0.0040, +0.0020] (interval includes 0)"
    )
    assert describe_gain(0.7121, math.nan, math.nan) == "+0.7121 (no interval)"
    assert describe_gain(mean_ci([1.0, 2.0, 3.0, 4.0]), digits=2) == "+2.50 [+0.45, +4.55]"
    with pytest.raises(StatsError):
        describe_gain(0.1)
