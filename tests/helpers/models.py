"""Tiny feature set and batches for the model and distillation tests."""

from __future__ import annotations

import torch
from torch import Tensor

from models.contract.feature_spec import FeatureSpec
from models.joint import JointModel
from models.joint_args import JointModelArgs

SPECS = [
    FeatureSpec(name="user_id", type="categorical", side="user", dim=6),
    FeatureSpec(name="user_age", type="numeric", side="user"),
    FeatureSpec(name="hour", type="categorical", side="context", dim=3),
    FeatureSpec(name="item_id", type="categorical", side="item", dim=6),
    FeatureSpec(name="tags", type="multi_categorical", side="item", max_len=4, dim=4),
    FeatureSpec(name="price", type="numeric", side="item"),
    # privileged: user×item interaction count (cross) and a post-click dwell time
    FeatureSpec(name="user_cat_clicks", type="categorical", side="cross", dim=4),
    FeatureSpec(name="dwell", type="numeric", side="cross"),
]
CARD = {"user_id": 20, "hour": 26, "item_id": 30, "tags": 12, "user_cat_clicks": 9}
SERVED = ["user_id", "user_age", "hour", "item_id", "tags", "price"]
PRIVILEGED = ["user_cat_clicks", "dwell"]


def make_args(**overrides) -> JointModelArgs:
    kwargs = dict(
        features=[s.to_dict() for s in SPECS],
        cardinalities=dict(CARD),
        served=list(SERVED),
        privileged=list(PRIVILEGED),
        light_dims=[8, 4],
        booster_dims=[16, 8],
    )
    kwargs.update(overrides)
    return JointModelArgs(**kwargs)


def make_model(seed: int = 0, **overrides) -> JointModel:
    torch.manual_seed(seed)
    return JointModel(make_args(**overrides))


def make_batch(rows: int = 16, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    tags = torch.randint(2, CARD["tags"], (rows, 4), generator=g)
    tags[::3, 2:] = 0  # some short bags
    tags[1] = 0  # one empty bag
    return {
        "user_id": torch.randint(0, CARD["user_id"], (rows,), generator=g),
        "user_age": torch.randn(rows, generator=g),
        "hour": torch.randint(0, CARD["hour"], (rows,), generator=g),
        "item_id": torch.randint(0, CARD["item_id"], (rows,), generator=g),
        "tags": tags,
        "price": torch.randn(rows, generator=g),
        "user_cat_clicks": torch.randint(0, CARD["user_cat_clicks"], (rows,), generator=g),
        "dwell": torch.rand(rows, generator=g) * 3,
    }


def make_labels(rows: int = 16, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand(rows, generator=g) < 0.4).float()
