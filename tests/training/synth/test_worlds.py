"""The data-generating worlds: typed parameters, determinism, each world's structure in the log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rocketrank.cli import main as rocketrank
from training.synth import sampling
from training.synth.config import SPLITS, SynthConfig, SynthConfigError
from training.synth.generator import _generate, generate
from training.synth.stats import compute_stats, user_item_oracle_logit
from training.synth.worlds import FEED, INTERESTS, WORLDS, World, get_world, max_normal_moments

ROWS = 40_000


@pytest.fixture(scope="module")
def stats() -> dict[str, dict]:
    out = {}
    for name in WORLDS:
        cfg = SynthConfig(ROWS, seed=2, world=name)
        frames, terms = _generate(cfg)
        out[name] = compute_stats(frames, cfg, terms) | {"frames": frames}
    return out


def test_worlds_are_typed_frozen_and_named() -> None:
    assert set(WORLDS) == {"feed", "interests"}
    for name, w in WORLDS.items():
        assert isinstance(w, World) and w.name == name
        assert json.loads(json.dumps(w.params()))["name"] == name
    with pytest.raises(AttributeError):
        FEED.interests = 3  # type: ignore[misc]
    with pytest.raises(KeyError, match="interests"):
        get_world("nope")
    with pytest.raises(SynthConfigError, match="world"):
        generate(1_000, world="nope")
    with pytest.raises(ValueError, match="interests"):
        World(name="bad", summary="", interests=0)


def test_the_feed_world_is_the_log_it_always_was() -> None:
    # pinned from the generator before worlds existed (rocketrank synth --rows 30000 --seed 3)
    frames = generate(30_000, seed=3)
    log = pd.concat([frames[s] for s in SPLITS], ignore_index=True)
    assert int(log["click"].sum()) == 1_299
    assert int(log["conversion"].sum()) == 107
    assert log["user_id"].nunique() == 1_613
    assert log["p_click"].mean() == pytest.approx(0.044165, abs=1e-6)


def test_each_world_is_deterministic_per_seed_and_the_worlds_differ() -> None:
    kwargs = {"users": 400, "items": 300, "world": "interests"}
    a = generate(3_000, seed=11, **kwargs)
    b = generate(3_000, seed=11, **kwargs)
    c = generate(3_000, seed=12, **kwargs)
    feed = generate(3_000, seed=11, users=400, items=300)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not np.allclose(a["train"]["p_click"], c["train"]["p_click"])
    assert not np.allclose(a["train"]["p_click"], feed["train"]["p_click"])


def test_stats_record_the_world_and_its_parameters(stats: dict[str, dict]) -> None:
    for name, s in stats.items():
        assert s["world"] == name
        assert s["world_params"] == WORLDS[name].params()
        for key in ("oracle_auc_click_user_item", "oracle_auc_click_debiased"):
            assert 0.6 < s[key] < 1.0, (name, key)
        # position is additive in the logit: at a fixed position the ranking is the no-position one
        assert s["oracle_auc_click_debiased"] == s["oracle_auc_click_no_position"]
        # day-varying interacted values and context are out of reach of a (user, item) function
        assert s["oracle_auc_click_user_item"] < s["oracle_auc_click"]


def test_the_logit_spread_per_term_follows_the_parameters(stats: dict[str, dict]) -> None:
    for name, s in stats.items():
        click = WORLDS[name].click
        log_pos_std = np.log(np.concatenate([s["frames"][x]["position"] for x in SPLITS])).std()
        assert s["click_logit_std"]["position"] == pytest.approx(
            abs(click.log_position) * log_pos_std, rel=1e-3
        ), name
    assert stats["feed"]["click_logit_std"]["taste"] == 0.0
    taste = stats["interests"]["click_logit_std"]
    # the per (user, category) taste dominates the latent affinity in the interests world
    assert taste["taste"] > 1.4 * taste["affinity"]
    assert taste["taste"] == pytest.approx(INTERESTS.click.category_taste, rel=0.25)


def test_weaker_position_bias_in_the_interests_world(stats: dict[str, dict]) -> None:
    def first_to_last(s: dict) -> float:
        by_pos = s["ctr_by_position"]
        return by_pos[1] / by_pos[10]

    assert first_to_last(stats["feed"]) > 5
    assert first_to_last(stats["interests"]) < 0.7 * first_to_last(stats["feed"])


def test_more_test_users_are_new_in_the_interests_world(stats: dict[str, dict]) -> None:
    feed, interests = stats["feed"], stats["interests"]
    assert interests["test_users_unseen_in_train"] > feed["test_users_unseen_in_train"] + 0.1
    assert interests["test_rows_user_unseen_in_train"] > feed["test_rows_user_unseen_in_train"]
    test, train = (interests["frames"][s] for s in ("test", "train"))
    unseen = ~test["user_id"].isin(train["user_id"])
    assert unseen.mean() == pytest.approx(interests["test_rows_user_unseen_in_train"], abs=1e-6)


def test_a_heavier_item_tail_in_the_interests_world(stats: dict[str, dict]) -> None:
    def top_share(s: dict) -> float:
        log = pd.concat([s["frames"][x] for x in SPLITS])
        counts = log["item_id"].value_counts().to_numpy()
        return counts[: max(1, len(s["frames"]["items"]) // 100)].sum() / len(log)

    assert top_share(stats["interests"]) > 1.3 * top_share(stats["feed"])


def test_best_of_k_interests_is_standardised_and_keeps_the_order() -> None:
    mean, std = max_normal_moments(3)
    assert (mean, std) == pytest.approx((0.8463, 0.7480), abs=1e-3)
    assert max_normal_moments(1) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    interests = rng.normal(size=(200, 3, 16)).astype(np.float32)
    items = rng.normal(size=(300, 16)).astype(np.float32)
    ui, vi = rng.integers(0, 200, 50_000), rng.integers(0, 300, 50_000)
    best = sampling.best_interest(interests, items, ui, vi)
    assert best.mean() == pytest.approx(0.0, abs=0.05) and best.std() == pytest.approx(
        1.0, abs=0.05
    )
    each = [sampling.affinity(interests[:, k], items, ui, vi) for k in range(3)]
    np.testing.assert_allclose(best, (np.max(each, axis=0) - mean) / std, rtol=1e-9)


def test_user_item_oracle_takes_train_pair_means_and_falls_back_to_the_global_mean() -> None:
    train = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "category_id": [10, 10, 10],
            "shop_id": [5, 6, 5],
            "user_cat_clicks_7d": [0, np.e - 1, 0],  # log1p: 0, 1, 0
            "user_shop_clicks_30d": [0, 0, 0],
            "user_shop_days_since_click": [90.0, 90.0, 0.0],  # recency: ~0, ~0, 1
        }
    )
    test = pd.DataFrame({"user_id": [1, 3], "category_id": [10, 10], "shop_id": [5, 5]})
    terms = pd.DataFrame(
        {"affinity": [0.5, 0.0], "user_item_bias": [0.1, 0.0], "taste": [0.0, 0.2]}
    )
    click = FEED.click
    got = user_item_oracle_logit(train, test, terms, click)
    recency_90 = click.shop_recency * np.exp(-90 / 7)
    cat_user1 = click.cat_clicks_7d * 0.5
    cat_global = click.cat_clicks_7d / 3
    shop_global = (2 * recency_90 + click.shop_recency) / 3
    np.testing.assert_allclose(got, [0.6 + cat_user1 + recency_90, 0.2 + cat_global + shop_global])


def test_cli_selects_the_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    argv = ["synth", "--out", str(out), "--rows", "2000", "--users", "300", "--world", "interests"]
    assert rocketrank(argv) == 0
    assert "world 'interests'" in capsys.readouterr().out
    assert json.loads((out / "stats.json").read_text())["world"] == "interests"
    with pytest.raises(SystemExit):
        rocketrank(["synth", "--out", str(tmp_path / "x"), "--world", "nope"])


def test_cli_prints_a_tiny_log_without_its_missing_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny"
    argv = ["synth", "--out", str(out), "--rows", "200", "--seed", "1", "--users", "20"]
    assert rocketrank([*argv, "--items", "30"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["oracle_auc_conversion"] is None  # no conversion in this tiny test split
    assert "conversion n/a" in capsys.readouterr().out
