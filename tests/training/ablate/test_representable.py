"""The representable teacher on a hand-built split: pair means, reference position, inputs."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.contract.feature_spec import FeatureSpec
from models.contract.features import FeatureEncoder
from training.ablate.representable import (
    RepresentableSpec,
    default_pair_key,
    gap_closed_against,
    pair_means,
    representable_features,
    representable_teacher_logits,
)
from training.data.dataset import Batch, EncodedColumns, EncodedSplit

SPECS = [
    FeatureSpec("position", "categorical", "context"),
    FeatureSpec("hour", "categorical", "context"),
    FeatureSpec("item_id", "categorical", "item"),
    FeatureSpec("category_id", "categorical", "item"),
    FeatureSpec("shop_id", "categorical", "item"),
    FeatureSpec("user_cat_clicks_7d", "numeric", "cross"),
    FeatureSpec("user_shop_clicks_30d", "numeric", "cross"),
]
PRIVILEGED = ["user_cat_clicks_7d", "user_shop_clicks_30d", "position"]

# train: user 1 sees category 10 three times (cat clicks 1, 2, 6 -> mean 3), category 20
# once (4); user 2 sees category 10 once (8). Shops: (1, 100) -> 0, 2, 4; (1, 200) -> 5.
TRAIN = {
    "user": [1, 1, 1, 1, 2],
    "position": [1, 2, 2, 3, 2],
    "hour": [5, 5, 6, 6, 7],
    "item_id": [1000, 1001, 1002, 1003, 1000],
    "category_id": [10, 10, 10, 20, 10],
    "shop_id": [100, 100, 100, 200, 200],
    "user_cat_clicks_7d": [1.0, 2.0, 6.0, 4.0, 8.0],
    "user_shop_clicks_30d": [0.0, 2.0, 4.0, 5.0, 9.0],
}
# test: (1, 10) seen, (2, 20) unseen -> global mean, (3, 10) an unseen user -> global mean
TEST = {
    "user": [1, 2, 3, 1],
    "position": [3, 1, 2, 1],
    "hour": [5, 6, 7, 5],
    "item_id": [1001, 1003, 1000, 1003],
    "category_id": [10, 20, 10, 20],
    "shop_id": [100, 200, 100, 200],
    "user_cat_clicks_7d": [50.0, 60.0, 70.0, 80.0],
    "user_shop_clicks_30d": [50.0, 60.0, 70.0, 80.0],
}
CAT_MEAN = (1 + 2 + 6 + 4 + 8) / 5
SHOP_MEAN = (0 + 2 + 4 + 5 + 9) / 5
EXPECTED_CAT = [3.0, CAT_MEAN, CAT_MEAN, 4.0]
# (2, 200): user 2 saw shop 200 in train (9); (3, 100) unseen; (1, 200) -> 5
EXPECTED_SHOP = [2.0, 9.0, SHOP_MEAN, 5.0]

ENCODER = FeatureEncoder(SPECS).fit({k: np.asarray(v) for k, v in TRAIN.items() if k != "user"})


def _split(rows: dict[str, list], name: str) -> EncodedSplit:
    raw = {k: np.asarray(v) for k, v in rows.items() if k != "user"}
    features = {k: torch.from_numpy(v) for k, v in ENCODER.transform(raw).items()}
    user = torch.tensor(rows["user"], dtype=torch.int64)
    labels = {"click": torch.zeros(len(user))}
    return EncodedSplit(EncodedColumns(features, labels, user.clone(), user), name=name)


class RecordingBooster(nn.Module):
    """Stands in for a JointModel: records every input batch of ``booster_logit``."""

    def __init__(self) -> None:
        super().__init__()
        self.privileged = list(PRIVILEGED)
        self.calls: list[dict[str, Tensor]] = []
        self.modes: list[bool] = []

    def booster_logit(self, features: dict[str, Tensor]) -> Tensor:
        self.calls.append({k: v.clone() for k, v in features.items()})
        self.modes.append(self.training)
        return features["user_cat_clicks_7d"] + 10.0 * features["position"].float()


class Streamed:
    """A train split seen only through ``iter_batches`` (as a ``StreamingSplit`` is)."""

    def __init__(self, split: EncodedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def iter_batches(self, batch_size: int, shuffle: bool = False) -> Iterator[Batch]:
        return self.split.iter_batches(batch_size, shuffle=shuffle)


def _cat(calls: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.cat([c[k] for c in calls]) for k in calls[0]}


def test_pair_means_are_the_hand_computed_ones_with_the_global_fallback() -> None:
    features = representable_features(
        _split(TEST, "test"), _split(TRAIN, "train"), ENCODER, PRIVILEGED, item_id="item_id"
    )
    np.testing.assert_allclose(features["user_cat_clicks_7d"].numpy(), EXPECTED_CAT, rtol=1e-6)
    np.testing.assert_allclose(features["user_shop_clicks_30d"].numpy(), EXPECTED_SHOP, rtol=1e-6)
    assert features["user_cat_clicks_7d"].dtype == torch.float32


def test_pair_means_on_raw_arrays() -> None:
    got = pair_means(
        np.array([1, 1, 2]), np.array([7, 7, 7]), np.array([1.0, 3.0, 5.0]),
        np.array([1, 2, 2]), np.array([7, 7, 8]),
    )  # fmt: skip
    np.testing.assert_allclose(got, [2.0, 5.0, 3.0])


def test_position_is_the_most_frequent_train_code_or_the_given_value() -> None:
    test, train = _split(TEST, "test"), _split(TRAIN, "train")
    mode = representable_features(test, train, ENCODER, PRIVILEGED)["position"]
    code_of_2 = int(ENCODER.encode_column("position", np.array([2]))[0])
    assert mode.tolist() == [code_of_2] * 4  # position 2 is the most frequent on train
    spec = RepresentableSpec(reference_position=1)
    fixed = representable_features(test, train, ENCODER, PRIVILEGED, spec=spec)["position"]
    assert fixed.tolist() == [int(ENCODER.encode_column("position", np.array([1]))[0])] * 4
    assert fixed.dtype == test.features["position"].dtype


def test_booster_sees_exactly_the_replaced_inputs_and_the_split_is_untouched() -> None:
    test, train = _split(TEST, "test"), _split(TRAIN, "train")
    before = {k: v.clone() for k, v in test.features.items()}
    booster = RecordingBooster()
    logits = representable_teacher_logits(
        booster, test, train, ENCODER, item_id="item_id", batch_size=3
    )
    assert [len(c["position"]) for c in booster.calls] == [3, 1]
    seen = _cat(booster.calls)
    assert set(seen) == set(test.features)
    code_of_2 = int(ENCODER.encode_column("position", np.array([2]))[0])
    assert seen["position"].tolist() == [code_of_2] * 4
    np.testing.assert_allclose(seen["user_cat_clicks_7d"].numpy(), EXPECTED_CAT, rtol=1e-6)
    np.testing.assert_allclose(seen["user_shop_clicks_30d"].numpy(), EXPECTED_SHOP, rtol=1e-6)
    for name in ("hour", "item_id", "category_id", "shop_id"):  # served features as they are
        assert torch.equal(seen[name], before[name]), name
    np.testing.assert_allclose(logits, np.asarray(EXPECTED_CAT) + 10.0 * code_of_2, rtol=1e-6)
    assert logits.dtype == np.float64 and logits.shape == (4,)
    for name, values in before.items():
        assert torch.equal(test.features[name], values), name
    assert booster.modes == [False, False] and booster.training  # eval inside, mode restored


def test_a_streamed_train_split_gives_the_same_means() -> None:
    test, train = _split(TEST, "test"), _split(TRAIN, "train")
    in_memory = representable_features(test, train, ENCODER, PRIVILEGED)
    streamed = representable_features(test, Streamed(train), ENCODER, PRIVILEGED, batch_size=2)
    for name in in_memory:
        assert torch.equal(in_memory[name], streamed[name]), name


def test_configured_key_and_feature_list() -> None:
    spec = RepresentableSpec(
        position=None, pair_keys={"user_cat_clicks_7d": "item_id"}, features=("user_cat_clicks_7d",)
    )
    test, train = _split(TEST, "test"), _split(TRAIN, "train")
    features = representable_features(test, train, ENCODER, PRIVILEGED, spec=spec)
    # (1, 1001) -> 2; (2, 1003) unseen; (3, 1000) unseen; (1, 1003) -> 4
    np.testing.assert_allclose(
        features["user_cat_clicks_7d"].numpy(), [2.0, CAT_MEAN, CAT_MEAN, 4.0]
    )
    assert torch.equal(features["user_shop_clicks_30d"], test.features["user_shop_clicks_30d"])
    assert torch.equal(features["position"], test.features["position"])


def test_default_pair_key_from_the_feature_name() -> None:
    items = ["item_id", "category_id", "shop_id", "brand_id"]
    assert default_pair_key("user_cat_clicks_7d", items, "item_id") == "category_id"
    assert default_pair_key("user_shop_days_since_click", items, "item_id") == "shop_id"
    assert default_pair_key("user_brand_clicks", items, "item_id") == "brand_id"
    assert default_pair_key("dwell_time_s", items, "item_id") == "item_id"
    with pytest.raises(ValueError, match="pair_keys"):
        default_pair_key("dwell_time_s", ["category_id"], None)


def test_a_code_valued_cross_feature_is_refused() -> None:
    specs = [*SPECS, FeatureSpec("user_cat_bucket", "numeric", "cross", transform="bucketize")]
    rows = {**TRAIN, "user_cat_bucket": [1.0, 2.0, 3.0, 4.0, 5.0]}
    encoder = FeatureEncoder(specs).fit({k: np.asarray(v) for k, v in rows.items() if k != "user"})
    raw = {k: np.asarray(v) for k, v in rows.items() if k != "user"}
    feats = {k: torch.from_numpy(v) for k, v in encoder.transform(raw).items()}
    user = torch.tensor(rows["user"])
    split = EncodedSplit(EncodedColumns(feats, {}, user, user))
    with pytest.raises(ValueError, match="user_cat_bucket"):
        representable_features(split, split, encoder, ["user_cat_bucket"])


def test_gap_closed_against_a_hand_computation() -> None:
    assert gap_closed_against(0.72, 0.70, 0.78) == pytest.approx(0.25)
    assert gap_closed_against(0.69, 0.70, 0.74) == pytest.approx(-0.25)
    assert gap_closed_against(0.72, 0.70, 0.70) is None  # no gap to close
    assert gap_closed_against(0.72, 0.70, 0.69) is None
    assert gap_closed_against(math.nan, 0.70, 0.78) is None


def test_an_untrained_joint_model_on_the_synthetic_log(tmp_path) -> None:
    from tests.helpers.trainer import tiny_config, write_tiny_data
    from training.ablate.representable import representable_teacher_on
    from training.data.prepare import prepare_data
    from training.loop.build import build_model

    cfg = tiny_config("rocket", light="two_tower")
    data = prepare_data(write_tiny_data(tmp_path / "data", rows=3_000), cfg, cache=False)
    model, _ = build_model(cfg, data)
    assert data.test is not None
    before = {k: v.clone() for k, v in data.test.features.items()}
    logits = representable_teacher_on(model, data, "test")
    feats = representable_features(
        data.test, data.train, data.dataset.encoder, model.privileged, item_id="item_id"
    )
    top = int(data.dataset.encoder.encode_column("position", np.array([1]))[0])
    assert set(feats["position"].tolist()) == {top}  # whole pages: a tie, won by position 1
    assert logits.shape == (len(data.test),) and np.isfinite(logits).all()
    for name, values in before.items():
        assert torch.equal(data.test.features[name], values), name
    # what is left is a function of (user, served features): the realised privileged
    # values of a row (here shuffled across rows) do not change its logit
    test = data.test
    shuffled = {
        k: v[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))]
        if k in model.privileged
        else v
        for k, v in test.features.items()
    }
    other = EncodedSplit(EncodedColumns(shuffled, test.labels, test.group, test.user))
    assert not torch.equal(
        other.features["user_cat_clicks_7d"], test.features["user_cat_clicks_7d"]
    )
    again = representable_teacher_logits(
        model, other, data.train, data.dataset.encoder, item_id="item_id"
    )
    np.testing.assert_allclose(again, logits, rtol=1e-5, atol=1e-6)
