"""Summary statistics of a generated log and its oracle AUCs (``stats.json``).

Sizes, rates and the ceilings a trained model is compared with: the AUC of the
true probabilities, of the true logit without the position, and of the part
of the logit a function of (user, item) alone can express
(:func:`user_item_oracle_logit`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from training.evaluate import auc
from training.synth import config
from training.synth.config import SPLITS, SynthConfig
from training.synth.history import interacted_pieces
from training.synth.labels import LOGIT_TERMS
from training.synth.worlds import ClickModel

REFERENCE_POSITION = 1
"""The position the debiased oracle scores every row at (the top slot, ln 1 = 0)."""


def _pair_mean(train: pd.DataFrame, values: np.ndarray, rows: pd.DataFrame, key: str) -> np.ndarray:
    """Train mean of ``values`` per (user_id, ``key``) pair, looked up for ``rows``;
    the global train mean for a pair train never showed."""
    if len(train) == 0:
        return np.zeros(len(rows))
    means = (
        pd.DataFrame({"user_id": train["user_id"], key: train[key], "v": values})
        .groupby(["user_id", key], sort=False)["v"]
        .mean()
    )
    index = pd.MultiIndex.from_arrays([rows["user_id"], rows[key]])
    return means.reindex(index).fillna(float(values.mean())).to_numpy()


def user_item_oracle_logit(
    train: pd.DataFrame, test: pd.DataFrame, test_terms: pd.DataFrame, click: ClickModel
) -> np.ndarray:
    """The true click logit a function of (user, item) alone can express, per test row.

    The (user, item) terms (affinity, user/item bias, taste) as they are; no
    position and no context (hour, device); each interacted term replaced by
    its train-time mean for the row's pair -- the category count per
    (user, category_id), the shop count and shop recency per (user, shop_id) --
    or by its global train mean when train never showed the pair. The
    intercept is left out (it does not change an AUC).

    Args:
        train, test: the log's train and test frames.
        test_terms: click-logit terms of the test rows (``LOGIT_TERMS`` columns).
        click: the world's click model.

    Returns:
        float64 [len(test)].
    """
    cat_train, shop_count, shop_recency = interacted_pieces(train, click)
    by_category = _pair_mean(train, cat_train, test, "category_id")
    by_shop = _pair_mean(train, shop_count + shop_recency, test, "shop_id")
    served = test_terms[["affinity", "user_item_bias", "taste"]].sum(axis=1).to_numpy()
    return served + by_category + by_shop


def compute_stats(
    frames: dict[str, pd.DataFrame], cfg: SynthConfig, logit_terms: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Summary of a generated log: sizes, rates and the oracle (true-probability) AUCs.

    Args:
        frames: the output of :func:`generate`.
        cfg: the config that produced it.
        logit_terms: click-logit terms per row of the whole log (train, valid,
            test in order); adds their spread and the no-position oracle.
    """
    log = pd.concat([frames[s] for s in SPLITS], ignore_index=True)
    test = frames["test"]
    clicks = int(log["click"].sum())
    conversions = int(log["conversion"].sum())
    clicked_test = test[test["click"] == 1]
    y_test = test["click"].to_numpy()

    def _num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    stats: dict[str, Any] = {
        "world": cfg.world,
        "world_params": cfg.spec.params(),
        "rows": len(log),
        "seed": cfg.seed,
        "requests": int(log["request_id"].nunique()),
        "page_size": cfg.page_size,
        "days": cfg.days,
        "users": len(frames["users"]),
        "items": len(frames["items"]),
        "users_in_log": int(log["user_id"].nunique()),
        "items_in_log": int(log["item_id"].nunique()),
        "clicks": clicks,
        "conversions": conversions,
        "ctr": _num(clicks / len(log)),
        "cvr": _num(conversions / clicks) if clicks else None,
        "mean_p_click": _num(log["p_click"].mean()),
        "oracle_auc_click": _num(auc(y_test, test["p_click"].to_numpy())),
        "oracle_auc_conversion": _num(
            auc(clicked_test["conversion"].to_numpy(), clicked_test["p_conversion"].to_numpy())
        ),
    }
    train_users = frames["train"]["user_id"].unique()
    unseen = ~test["user_id"].isin(train_users)
    stats["test_rows_user_unseen_in_train"] = _num(unseen.mean()) if len(test) else None
    stats["test_users_unseen_in_train"] = (
        _num(test.loc[unseen, "user_id"].nunique() / test["user_id"].nunique())
        if len(test)
        else None
    )
    if logit_terms is not None:
        test_terms = logit_terms.iloc[len(log) - len(test) :]
        # the ceiling of a model that cannot see the position (e.g. the served light net)
        no_position = test_terms.drop(columns="position").sum(axis=1).to_numpy()
        stats["oracle_auc_click_no_position"] = _num(auc(y_test, no_position))
        # position enters the logit additively, so fixing it at the reference shifts every
        # logit by one constant: the same ranking as without it
        debiased = no_position + cfg.spec.click.log_position * math.log(REFERENCE_POSITION)
        stats["oracle_auc_click_debiased"] = _num(auc(y_test, debiased))
        stats["oracle_reference_position"] = REFERENCE_POSITION
        user_item = user_item_oracle_logit(frames["train"], test, test_terms, cfg.spec.click)
        stats["oracle_auc_click_user_item"] = _num(auc(y_test, user_item))
        stats["click_logit_std"] = {k: round(float(logit_terms[k].std()), 4) for k in LOGIT_TERMS}
    by_position = log.groupby("position")["click"].mean()
    stats["ctr_by_position"] = {int(k): round(float(v), 5) for k, v in by_position.items()}
    stats["splits"] = {s: len(frames[s]) for s in SPLITS}
    stats["clicks_per_split"] = {s: int(frames[s]["click"].sum()) for s in SPLITS}
    stats["row_group_rows"] = config.ROW_GROUP_ROWS
    return stats
