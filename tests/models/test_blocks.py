"""Building blocks: embeddings (bags, numerics, Share*, sparse), MLP, DCN-v2, two-tower."""

from __future__ import annotations

import math

import pytest
import torch

from models.booster import CrossNet, DCNBooster, MLPBooster
from models.contract.feature_spec import FeatureSpec
from models.cost import count_parameters
from models.embedding import BOOSTER, LIGHT, EmbeddingCollection
from models.light import MAX_SCALE, TwoTower
from models.mlp import MLP

SPECS = [
    FeatureSpec(name="uid", type="categorical", side="user", dim=4),
    FeatureSpec(name="tags", type="multi_categorical", side="item", max_len=3, dim=2),
    FeatureSpec(name="price", type="numeric", side="item"),
    FeatureSpec(name="price_b", type="numeric", side="item", transform="bucketize", num_buckets=4),
]
CARD = {"uid": 10, "tags": 7, "price_b": 6}


def test_bag_is_the_mean_over_non_padding_ids_and_empty_bags_are_zero() -> None:
    coll = EmbeddingCollection(SPECS, CARD)
    view = coll.view(["tags"], LIGHT)
    ids = torch.tensor([[2, 3, 0], [4, 0, 0], [0, 0, 0], [5, 5, 6]])
    out = view({"tags": ids})
    w = coll.tables["tags"].weight
    expected = torch.stack([(w[2] + w[3]) / 2, w[4], torch.zeros(2), (2 * w[5] + w[6]) / 3])
    torch.testing.assert_close(out, expected)


def test_view_concatenates_in_order_with_numeric_passthrough_and_bucketised_tables() -> None:
    coll = EmbeddingCollection(SPECS, CARD, dims={"uid": 5})
    view = coll.view(["price", "uid", "price_b"], LIGHT)
    assert view.dim == 1 + 5 + 8  # numeric passthrough, uid override, bucketised spec.dim
    feats = {
        "price": torch.tensor([1.5, -2.0]),
        "uid": torch.tensor([3, 0]),
        "price_b": torch.tensor([2, 5]),
    }
    out = view(feats)
    assert out.shape == (2, view.dim)
    torch.testing.assert_close(out[:, 0], feats["price"])
    torch.testing.assert_close(out[:, 1:6], coll.tables["uid"].weight[feats["uid"]])
    torch.testing.assert_close(out[:, 6:], coll.tables["price_b"].weight[feats["price_b"]])


def test_share_star_gives_each_net_its_own_table() -> None:
    coll = EmbeddingCollection(SPECS, CARD, separate=["uid"])
    assert coll.table_for("uid", BOOSTER) is not coll.table_for("uid", LIGHT)
    assert coll.table_for("tags", BOOSTER) is coll.table_for("tags", LIGHT)
    assert not coll.is_shared("uid") and coll.is_shared("tags")
    with pytest.raises(ValueError, match="numeric"):
        EmbeddingCollection(SPECS, CARD, separate=["price"])
    with pytest.raises(ValueError, match="unknown feature"):
        EmbeddingCollection(SPECS, CARD, dims={"nope": 3})
    with pytest.raises(ValueError, match="cardinality"):
        EmbeddingCollection(SPECS, {"uid": 10})


def test_sparse_tables_get_sparse_gradients() -> None:
    coll = EmbeddingCollection(SPECS, CARD, sparse=True)
    view = coll.view(["uid", "tags"], LIGHT)
    view(
        {"uid": torch.tensor([1, 2]), "tags": torch.tensor([[2, 0, 0], [3, 4, 0]])}
    ).sum().backward()
    grad = coll.tables["uid"].weight.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == {1, 2}


def test_mlp_shapes_norms_and_validation() -> None:
    x = torch.randn(5, 6)
    for norm in ("none", "batch", "layer"):
        mlp = MLP(6, [4, 3], norm=norm, dropout=0.1)
        assert mlp(x).shape == (5, 3)
    assert (MLP(6, [4, 3])(x) >= 0).all()  # ReLU on the last layer
    assert (MLP(6, [4, 3], activate_last=False)(x) < 0).any()
    with pytest.raises(ValueError, match="norm"):
        MLP(6, [4], norm="group")
    with pytest.raises(ValueError, match="widths"):
        MLP(6, [])


def test_cross_layer_matches_the_dcn_v2_formula() -> None:
    torch.manual_seed(0)
    net = CrossNet(4, num_layers=2)
    x0 = torch.randn(3, 4)
    x1 = x0 * net.down[0](x0) + x0
    x2 = x0 * net.down[1](x1) + x1
    torch.testing.assert_close(net(x0), x2)
    low = CrossNet(4, num_layers=2, rank=1)
    # low rank: U (4×1, + bias 4) and V (1×4, no bias) per layer
    assert count_parameters(low) == 2 * (4 + 4 + 4)
    x1 = x0 * low.up[0](low.down[0](x0)) + x0
    torch.testing.assert_close(low(x0)[:, :], x0 * low.up[1](low.down[1](x1)) + x1)


def test_boosters_return_logit_and_hidden() -> None:
    x = torch.randn(7, 10)
    logit, hidden = MLPBooster(10, [8, 6])(x)
    assert logit.shape == (7,) and hidden.shape == (7, 6)
    for structure, h in (("stacked", 6), ("parallel", 16)):
        booster = DCNBooster(10, [8, 6], cross_layers=2, cross_rank=3, structure=structure)
        logit, hidden = booster(x)
        assert logit.shape == (7,) and hidden.shape == (7, h) and booster.hidden_dim == h


def test_two_tower_logit_is_scaled_cosine() -> None:
    torch.manual_seed(0)
    tt = TwoTower(5, 3, [4, 2], scale=7.0, learn_scale=False)
    xu, xi = torch.randn(6, 5), torch.randn(6, 3)
    logit, hidden = tt(xu, xi)
    cos = torch.nn.functional.cosine_similarity(tt.user_tower(xu), tt.item_tower(xi), dim=-1)
    torch.testing.assert_close(logit, 7.0 * cos)
    assert hidden.shape == (6, 4)
    assert not {"log_scale", "bias"} & {n for n, _ in tt.named_parameters()}  # fixed, none
    learned = TwoTower(5, 3, [4, 2], scale=7.0, learn_scale=True, bias=True)
    names = {n for n, _ in learned.named_parameters()}
    assert {"log_scale", "bias"} <= names
    with torch.no_grad():
        learned.log_scale.fill_(math.log(1e6))
    assert float(learned.scale()) == pytest.approx(MAX_SCALE)
