"""The labels of the log: clicks day by day, post-click behaviour and conversions.

Clicks are drawn from the world's click logit, a sum of terms (``LOGIT_TERMS``),
one day at a time, so each day's interacted features see the log's earlier
clicks. A clicked row then gets post-click behaviour driven by a purchase
intent, and a conversion probability from it (docs/SYNTHETIC.md).
"""

from __future__ import annotations

import numpy as np

from training.synth.catalogue import Items
from training.synth.config import SynthConfig
from training.synth.history import (
    EventIndex,
    history_indexes,
    interacted_features,
    interacted_logit,
)
from training.synth.impressions import Impressions
from training.synth.log_schema import INTERACTED_FEATURES
from training.synth.world import SECONDS_PER_DAY
from training.synth.worlds import ConversionModel

LOGIT_TERMS = ["affinity", "position", "context", "user_item_bias", "taste", "interacted"]
"""Names of the click-logit terms: the columns of the per-row diagnostics frame."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_clicks(
    rng: np.random.Generator,
    cfg: SynthConfig,
    imp: Impressions,
    items: Items,
    background: tuple[EventIndex, EventIndex],
    terms: dict[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Clicks day by day: each day's interacted features include the log's earlier clicks.

    Args:
        terms: click-logit terms per row; the ``"interacted"`` term is filled in here.

    Returns:
        (click bool [N], interacted feature columns).
    """
    n = len(imp.user)
    feats = {name: np.zeros(n, np.int64) for name in INTERACTED_FEATURES}
    feats["user_shop_days_since_click"] = np.zeros(n)
    click = np.zeros(n, dtype=bool)
    bounds = np.searchsorted(imp.t, np.arange(cfg.days + 1) * SECONDS_PER_DAY)
    for day in range(cfg.days):
        rows = slice(bounds[day], bounds[day + 1])
        if rows.start == rows.stop:
            continue
        history = [background]
        earlier = np.flatnonzero(click[: rows.start])
        if len(earlier):
            history.append(
                history_indexes(
                    imp.user[earlier], imp.item[earlier], imp.t[earlier], items, cfg.days
                )
            )
        day_feats = interacted_features(imp, rows, day, items, history)
        for name, values in day_feats.items():
            feats[name][rows] = values
        terms["interacted"][rows] = interacted_logit(day_feats, cfg.spec.click)
        logit = cfg.spec.click.intercept + sum(term[rows] for term in terms.values())
        click[rows] = rng.random(rows.stop - rows.start) < sigmoid(logit)
    return click, feats


def post_click(
    rng: np.random.Generator,
    affinity: np.ndarray,
    quality: np.ndarray,
    over_budget: np.ndarray,
    m: ConversionModel,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Post-click behaviour of clicked rows and their true conversion probability."""
    n = len(affinity)
    intent = (
        m.intent_affinity * affinity
        + m.intent_quality * quality
        + m.intent_over_budget * over_budget
        + rng.normal(size=n)
    )
    base, slope, noise = m.dwell_log_seconds
    dwell = np.round(np.exp(base + slope * intent + noise * rng.normal(size=n)), 1)
    feats = {
        "dwell_time_s": np.maximum(dwell, 0.1),
        "reviews_viewed": rng.poisson(
            np.exp(m.reviews_log_rate[0] + m.reviews_log_rate[1] * intent)
        ),
        "chatted_with_seller": rng.random(n) < sigmoid(m.chat_logit[0] + m.chat_logit[1] * intent),
        "added_to_cart": rng.random(n) < sigmoid(m.cart_logit[0] + m.cart_logit[1] * intent),
    }
    feats = {k: v.astype(np.float64 if k == "dwell_time_s" else np.int64) for k, v in feats.items()}
    logit = (
        m.intercept
        + m.added_to_cart * feats["added_to_cart"]
        + m.chatted_with_seller * feats["chatted_with_seller"]
        + m.log_reviews * np.log1p(feats["reviews_viewed"])
        + m.log_dwell * (np.log(feats["dwell_time_s"]) - 3.0)
        + m.affinity * affinity
        + m.price_over_budget * over_budget
    )
    return feats, sigmoid(logit)
