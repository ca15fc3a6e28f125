"""Platt's slope from validation with the intercept anchored to a pooled base rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.calibration import fit_platt_pooled_rate, pooled_rate, shift_to_rate
from training.evaluate import apply_platt, calibration, fit_platt, sigmoid


def test_pooled_rate_matches_a_hand_computation():
    valid = np.array([1] * 2 + [0] * 8)  # 0.2 over 10 rows
    train = np.array([1] * 30 + [0] * 70)  # 0.3 over 100 rows
    base = pooled_rate(valid, train)
    p = 32 / 110
    z = (0.3 - 0.2) / math.sqrt(p * (1 - p) * (1 / 10 + 1 / 100))
    assert base.pooled and base.rate == pytest.approx(p)
    assert base.z == pytest.approx(z)
    assert (base.valid_rate, base.train_rate) == pytest.approx((0.2, 0.3))


def test_rates_that_differ_beyond_noise_are_not_pooled():
    # e.g. a training split padded with sampled negatives: 1% against validation's 30%
    valid = np.array([1] * 300 + [0] * 700)
    train = np.array([1] * 100 + [0] * 9_900)
    base = pooled_rate(valid, train)
    assert not base.pooled and base.rate == pytest.approx(0.3) and base.z < -3
    a, b, fitted = fit_platt_pooled_rate(np.linspace(-2, 2, 1000), valid, train)
    assert (a, b) == pytest.approx(fit_platt(np.linspace(-2, 2, 1000), valid))
    assert not fitted.pooled


def test_shift_to_rate_hits_the_rate():
    z = np.random.default_rng(0).normal(-2.0, 1.5, 5_000)
    for rate in (0.01, 0.08, 0.5, 0.97):
        c = shift_to_rate(z, rate)
        assert float(sigmoid(z + c).mean()) == pytest.approx(rate, rel=1e-9)
    assert shift_to_rate(z, 0.0) == 0.0 and shift_to_rate(z, float("nan")) == 0.0


def test_a_validation_split_short_of_positives_no_longer_sets_the_calibrated_rate():
    """The CVR failure: valid's rate is low by chance, plain Platt copies it to test."""
    rng = np.random.default_rng(3)

    def draw(n):
        z = rng.normal(0.0, 1.0, n)
        return z, (rng.random(n) < sigmoid(0.8 * z - 2.5)).astype(np.float64)

    _, y_train = draw(40_000)
    z_test, y_test = draw(200_000)
    z_valid, y_valid = draw(4_000)
    # validation drew 15% fewer positives than its expectation (unlucky, not drift)
    pos = np.flatnonzero(y_valid == 1)
    y_valid[pos[: int(0.15 * len(pos))]] = 0.0

    plain_a, plain_b = fit_platt(z_valid, y_valid)
    a, b, base = fit_platt_pooled_rate(z_valid, y_valid, y_train)
    assert base.pooled
    assert a == pytest.approx(plain_a)  # the shape is validation's fit
    # the calibrated mean on valid is the pooled rate, not valid's own
    assert float(sigmoid(apply_platt(z_valid, a, b)).mean()) == pytest.approx(base.rate)
    plain = calibration(y_test, apply_platt(z_test, plain_a, plain_b))
    fixed = calibration(y_test, apply_platt(z_test, a, b))
    assert plain < 0.9  # plain Platt inherits valid's 15% shortfall
    assert abs(fixed - 1) < 0.05


def test_a_streamed_or_sharded_training_split_keeps_plain_platt():
    """The loop passes no training labels for a split that is not in memory."""
    from training.loop.outputs import _in_memory_labels

    class Streamed:  # what a StreamingSplit or RankShard is to the loop: not an EncodedSplit
        @property
        def labels(self):
            raise AssertionError("a streamed split's labels must not be read for calibration")

    assert _in_memory_labels(Streamed(), "click").size == 0
