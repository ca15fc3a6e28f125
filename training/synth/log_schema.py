"""The columns of the generated log and its schema (``schema.yaml``).

Column groups (user, item, context, interacted, post-click features) and the
schema that declares them for ``training.data.schema``: which features each
task may use, which are privileged, and their encodings.
"""

from __future__ import annotations

from typing import Any

import yaml

from training.synth.catalogue import MAX_TAGS
from training.synth.history import NO_SHOP_CLICK_DAYS

USER_FEATURES = ["age_bucket", "gender", "city_tier", "activity_level", "purchasing_power"]
ITEM_FEATURES = ["category_id", "shop_id", "brand_id", "price", "price_bucket", "tags"]
CONTEXT_FEATURES = ["position", "hour", "device"]
INTERACTED_FEATURES = ["user_cat_clicks_7d", "user_shop_clicks_30d", "user_shop_days_since_click"]
POST_CLICK_FEATURES = ["dwell_time_s", "reviews_viewed", "chatted_with_seller", "added_to_cart"]


def _categorical(name: str, side: str, dim: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "categorical", "side": side, **extra, "dim": dim}


def _numeric(name: str, side: str, transform: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "numeric", "side": side, "transform": transform, **extra}


def schema_dict(name: str = "synthetic_feed") -> dict[str, Any]:
    """The schema of the generated log (valid for ``training.data.schema``).

    Ids take a vocabulary fitted on train; ids seen once map to the OOV row
    (``min_count: 2``), which is also what an unseen id gets at serving time.
    """
    log1p_std = "log1p_standardize"
    feats = [
        _categorical("user_id", "user", 16, min_count=2),
        *(_categorical(n, "user", 4) for n in USER_FEATURES),
        _categorical("item_id", "item", 16, min_count=2),
        _categorical("category_id", "item", 8),
        _categorical("shop_id", "item", 8, min_count=2),
        _categorical("brand_id", "item", 8, min_count=2),
        _numeric("price", "item", log1p_std),
        _categorical("price_bucket", "item", 4),
        {
            "name": "tags",
            "type": "multi_categorical",
            "side": "item",
            "max_len": MAX_TAGS,
            "dim": 8,
        },
        *(_categorical(n, "context", 4) for n in CONTEXT_FEATURES),
        _numeric("user_cat_clicks_7d", "cross", log1p_std, default=0.0),
        _numeric("user_shop_clicks_30d", "cross", log1p_std, default=0.0),
        _numeric("user_shop_days_since_click", "cross", log1p_std, default=NO_SHOP_CLICK_DAYS),
        _numeric("dwell_time_s", "cross", log1p_std, default=0.0),
        _numeric("reviews_viewed", "cross", log1p_std, default=0.0),
        _numeric("chatted_with_seller", "cross", "none", default=0.0),
        _numeric("added_to_cart", "cross", "none", default=0.0),
    ]
    return {
        "version": 1,
        "name": name,
        "ids": {"request": "request_id", "user": "user_id", "item": "item_id", "timestamp": "ts"},
        "labels": {"click": {"column": "click"}, "conversion": {"column": "conversion"}},
        "tasks": {
            # position is known only after ranking: the booster may use it, the served net not.
            # Post-click features are nonzero exactly on clicked rows: no CTR model may see them.
            "ctr": {
                "label": "click",
                "privileged": [*INTERACTED_FEATURES, "position"],
                "exclude": POST_CLICK_FEATURES,
            },
            "cvr": {
                "label": "conversion",
                "where": "click",
                "privileged": [*POST_CLICK_FEATURES, *INTERACTED_FEATURES, "position"],
            },
        },
        "features": feats,
    }


_FEATURE_GROUPS = (
    ("user", ["user_id", *USER_FEATURES]),
    ("item", ["item_id", *ITEM_FEATURES]),
    ("context (position is known only after ranking: privileged)", CONTEXT_FEATURES),
    ("user×item interacted, daily batch of the click history (privileged)", INTERACTED_FEATURES),
    (
        "post-click, 0 on unclicked rows (privileged for cvr, excluded from ctr)",
        POST_CLICK_FEATURES,
    ),
)


def schema_yaml() -> str:
    """``schema_dict()`` as commented YAML, one feature per line."""
    data = schema_dict()
    head = {k: v for k, v in data.items() if k != "features"}
    by_name = {f["name"]: f for f in data["features"]}
    lines = [
        "# Schema of the synthetic feed written by `rocketrank synth` (docs/SYNTHETIC.md).",
        yaml.safe_dump(head, sort_keys=False).rstrip(),
        "features:",
    ]
    for title, names in _FEATURE_GROUPS:
        lines.append(f"  # {title}")
        for name in names:
            flow = yaml.safe_dump(
                by_name.pop(name), default_flow_style=True, sort_keys=False, width=1000
            )
            lines.append(f"  - {flow.strip()}")
    if by_name:  # keeps the groups honest when a feature is added
        raise AssertionError(f"features without a group in schema.yaml: {sorted(by_name)}")
    return "\n".join(lines) + "\n"
