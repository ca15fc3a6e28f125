"""Evaluation metrics against hand computations and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.provenance import json_safe
from training.evaluate import (
    MetricError,
    apply_platt,
    auc,
    calibration,
    evaluate_scores,
    fit_platt,
    gap_closed,
    gauc,
    logloss,
    map_at_k,
    ndcg_at_k,
    sigmoid,
)

# ----------------------------------------------------------------- brute-force references


def brute_auc(y, s):
    """P(score_pos > score_neg) + 0.5·P(tie), over every positive/negative pair."""
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def brute_gauc(y, s, u):
    num = den = 0.0
    for user in np.unique(u):
        m = u == user
        a = brute_auc(y[m], s[m])
        if not math.isnan(a):
            num += a * m.sum()
            den += m.sum()
    return num / den if den else math.nan


def pessimistic_order(y, s):
    """Indices sorted by score descending, negatives first among ties."""
    return sorted(range(len(s)), key=lambda i: (-s[i], y[i]))


def brute_ndcg(y, s, g, k):
    vals = []
    for grp in np.unique(g):
        idx = np.flatnonzero(g == grp)
        yy, ss = y[idx], s[idx]
        if yy.sum() == 0:
            continue
        ranked = [yy[i] for i in pessimistic_order(yy, ss)][:k]
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(ranked))
        ideal = sorted(yy, reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        vals.append(dcg / idcg)
    return float(np.mean(vals)) if vals else math.nan


def brute_map(y, s, g, k):
    vals = []
    for grp in np.unique(g):
        idx = np.flatnonzero(g == grp)
        yy, ss = y[idx], s[idx]
        if yy.sum() == 0:
            continue
        ranked = [yy[i] for i in pessimistic_order(yy, ss)][:k]
        hits, total = 0, 0.0
        for i, r in enumerate(ranked):
            if r:
                hits += 1
                total += hits / (i + 1)
        vals.append(total / min(k, yy.sum()))
    return float(np.mean(vals)) if vals else math.nan


def random_case(seed, n=300, users=17, tie_levels=7):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    # few distinct score values so ties are frequent
    s = rng.integers(0, tie_levels, n).astype(np.float64) + 0.3 * y
    u = rng.integers(0, users, n) * 1000 + 7
    return y, s, u


# ----------------------------------------------------------------- hand computations


def test_auc_hand_computed_with_ties():
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.9, 0.9, 0.5, 0.1, 0.1])
    # pairs (pos, neg): (0.9,0.9)=.5 (0.9,0.1)=1 (0.5,0.9)=0 (0.5,0.1)=1 (0.1,0.9)=0 (0.1,0.1)=.5
    assert auc(y, s) == pytest.approx(3.0 / 6.0)


def test_auc_perfect_inverse_constant_and_one_class():
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([1.0, 2, 3, 4])) == 1.0
    assert auc(y, np.array([4.0, 3, 2, 1])) == 0.0
    assert auc(y, np.zeros(4)) == 0.5
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))


def test_gauc_skips_single_class_users_and_weights_by_impressions():
    y = np.array([1, 0, 0, 1, 0, 1, 1])
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.5, 0.3, 0.4])
    u = np.array([1, 1, 2, 2, 2, 3, 3])
    # user 1: AUC 1 (2 rows); user 2: pos 0.2 vs negs 0.8, 0.5 → 0 (3 rows); user 3 skipped
    assert gauc(y, s, u) == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)


def test_logloss_and_calibration_hand_computed():
    y = np.array([1.0, 0.0])
    z = np.array([0.0, math.log(3.0)])  # p = 0.5, 0.75
    assert logloss(y, z) == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    assert calibration(y, z) == pytest.approx(((0.5 + 0.75) / 2) / 0.5)


def test_logloss_is_finite_for_extreme_logits():
    y = np.array([1.0, 0.0])
    assert logloss(y, np.array([800.0, -800.0])) == pytest.approx(0.0, abs=1e-12)
    assert logloss(y, np.array([-800.0, 800.0])) == pytest.approx(800.0)


def test_ndcg_and_map_hand_computed():
    # one request: scores rank the items as [0, 1, 1, 0] by label
    y = np.array([1, 1, 0, 0])
    s = np.array([0.2, 0.3, 0.9, 0.1])
    g = np.zeros(4, dtype=np.int64)
    order_labels = [0, 1, 1, 0]  # by score: 0.9(y0) 0.3(y1) 0.2(y1) 0.1(y0)
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(order_labels))
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(y, s, g, 10) == pytest.approx(dcg / idcg)
    # AP@5: hits at ranks 2 and 3 → (1/2 + 2/3) / 2
    assert map_at_k(y, s, g, 5) == pytest.approx((0.5 + 2 / 3) / 2)


def test_ranking_metrics_do_not_reward_ties():
    y = np.array([0, 0, 0, 1])
    s = np.zeros(4)
    g = np.zeros(4)
    # pessimistic tie order puts the positive last
    assert ndcg_at_k(y, s, g, 10) == pytest.approx(1 / math.log2(5))
    assert map_at_k(y, s, g, 5) == pytest.approx(1 / 4)


def test_groups_without_positives_are_skipped():
    y = np.array([0, 0, 1, 0])
    s = np.array([0.5, 0.4, 0.9, 0.1])
    g = np.array([1, 1, 2, 2])
    assert ndcg_at_k(y, s, g, 10) == 1.0
    assert map_at_k(y, s, g, 5) == 1.0
    assert math.isnan(ndcg_at_k(np.zeros(3), np.arange(3.0), np.zeros(3), 10))


# ----------------------------------------------------------------- brute force, many random cases


@pytest.mark.parametrize("seed", range(8))
def test_metrics_match_brute_force(seed):
    y, s, u = random_case(seed)
    assert auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert gauc(y, s, u) == pytest.approx(brute_gauc(y, s, u), abs=1e-12)
    for k in (1, 3, 10):
        assert ndcg_at_k(y, s, u, k) == pytest.approx(brute_ndcg(y, s, u, k), abs=1e-12)
        assert map_at_k(y, s, u, k) == pytest.approx(brute_map(y, s, u, k), abs=1e-12)
    p = 1 / (1 + np.exp(-s))
    ref_ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert logloss(y, s) == pytest.approx(ref_ll, rel=1e-12)


def test_metrics_do_not_depend_on_row_order():
    y, s, u = random_case(42)
    perm = np.random.default_rng(0).permutation(len(y))
    a = evaluate_scores(y, s, u)
    b = evaluate_scores(y[perm], s[perm], u[perm])
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_evaluate_scores_uses_request_groups_when_given():
    y = np.array([1, 0, 0, 1])
    s = np.array([0.9, 0.1, 0.8, 0.2])
    users = np.array([1, 1, 1, 1])
    requests = np.array([10, 10, 20, 20])
    per_user = evaluate_scores(y, s, users)
    per_request = evaluate_scores(y, s, users, requests)
    assert per_request["map@5"] == pytest.approx((1.0 + 0.5) / 2)
    assert per_user["map@5"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert per_request["gauc"] == per_user["gauc"] == pytest.approx(auc(y, s))
    assert set(per_user) >= {"auc", "gauc", "logloss", "ndcg@10", "map@5", "calibration"}


def test_gap_closed():
    assert gap_closed(0.71, 0.70, 0.74) == pytest.approx(0.25)
    assert gap_closed(0.69, 0.70, 0.74) == pytest.approx(-0.25)
    assert math.isnan(gap_closed(0.7, 0.7, 0.7))
    assert math.isnan(gap_closed(math.nan, 0.7, 0.8))


def test_bad_inputs_are_named():
    with pytest.raises(MetricError, match="rows"):
        auc(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(MetricError, match="NaN"):
        auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(MetricError, match="0 or 1"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(MetricError, match="group"):
        gauc(np.array([0, 1]), np.array([0.1, 0.2]), np.array([1]))


def test_sigmoid_and_json_safe():
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]
    assert json_safe({"a": math.nan, "b": [1.0, math.inf], "c": 2}) == {
        "a": None,
        "b": [1.0, None],
        "c": 2,
    }


def test_platt_fit_recovers_the_generating_scale_and_shift():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, size=200_000)
    # true probability σ(0.5·z − 2): the raw logit over-predicts and is too confident
    y = (rng.random(z.size) < sigmoid(0.5 * z - 2.0)).astype(np.float64)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.02) and b == pytest.approx(-2.0, abs=0.05)
    calibrated = apply_platt(z, a, b)
    assert logloss(y, calibrated) < logloss(y, z)
    assert calibration(y, calibrated) == pytest.approx(1.0, abs=0.01)
    # a monotone map: the ranking metric does not move
    assert auc(y, calibrated) == auc(y, z)
    # the fit is the log-loss minimum: nudging either parameter costs
    best = logloss(y, calibrated)
    for da, db in ((0.02, 0), (-0.02, 0), (0, 0.05), (0, -0.05)):
        assert logloss(y, apply_platt(z, a + da, b + db)) > best


def test_platt_fit_of_a_calibrated_logit_is_the_identity_and_one_class_is_left_alone():
    rng = np.random.default_rng(1)
    z = rng.normal(-1.0, 1.5, size=100_000)
    y = (rng.random(z.size) < sigmoid(z)).astype(np.float64)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(1.0, abs=0.03) and b == pytest.approx(0.0, abs=0.03)
    assert fit_platt(z[:10], np.zeros(10)) == (1.0, 0.0)
    # constant logits: only a·z + b is identified, and it must be the log-odds of the rate
    a, b = fit_platt(np.full(50, 0.3), (np.arange(50) % 5 == 0).astype(float))
    assert a * 0.3 + b == pytest.approx(math.log(0.2 / 0.8), abs=1e-3)


def test_platt_never_flips_the_ranking_of_an_anti_correlated_logit():
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 1.0, size=50_000)
    y = (rng.random(z.size) < sigmoid(-z - 2.0)).astype(np.float64)  # worse than chance
    a, b = fit_platt(z, y)
    assert a == 1.0  # only the shift is fitted
    assert calibration(y, apply_platt(z, a, b)) == pytest.approx(1.0, abs=0.02)
    assert auc(y, apply_platt(z, a, b)) == auc(y, z)
