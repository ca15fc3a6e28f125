"""Training-path lookups of the embedding collection: size-gated sparse gradients and
``forward_cached`` (index_select backward) against the plain ``nn.Embedding`` path."""

from __future__ import annotations

import pytest
import torch

from models.contract.feature_spec import FeatureSpec
from models.embedding import LIGHT, EmbeddingCollection

SPECS = [
    FeatureSpec(name="uid", type="categorical", side="user", dim=4),
    FeatureSpec(name="tags", type="multi_categorical", side="item", dim=3, max_len=3),
    FeatureSpec(name="price", type="numeric", side="item"),
]
CARD = {"uid": 50, "tags": 7}
BATCH = {
    "uid": torch.tensor([1, 2, 2, 49]),
    "tags": torch.tensor([[2, 0, 0], [3, 4, 0], [0, 0, 0], [6, 6, 1]]),
    "price": torch.tensor([0.5, -1.0, 2.0, 0.0]),
}


def test_sparse_min_rows_keeps_small_tables_dense() -> None:
    coll = EmbeddingCollection(SPECS, CARD, sparse=True, sparse_min_rows=20)
    assert coll.tables["uid"].sparse and not coll.tables["tags"].sparse
    coll.view(["uid", "tags", "price"], LIGHT).forward_cached(BATCH, {}).sum().backward()
    assert coll.tables["uid"].weight.grad.is_sparse
    assert not coll.tables["tags"].weight.grad.is_sparse
    with pytest.raises(ValueError, match="sparse_min_rows"):
        EmbeddingCollection(SPECS, CARD, sparse=True, sparse_min_rows=-1)


@pytest.mark.parametrize("sparse_min_rows", [0, 20, 1000])
def test_forward_cached_matches_plain_forward_values_and_gradients(sparse_min_rows: int) -> None:
    torch.manual_seed(0)
    coll = EmbeddingCollection(SPECS, CARD, sparse=True, sparse_min_rows=sparse_min_rows)
    view = coll.view(["uid", "tags", "price"], LIGHT)
    weights = torch.randn(4, view.dim)

    def grads(out: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for table in coll.tables.values():
            table.weight.grad = None
        (out * weights).sum().backward()
        return out.detach(), [t.weight.grad.to_dense() for t in coll.tables.values()]

    plain, plain_grads = grads(view(BATCH))
    cached, cached_grads = grads(view.forward_cached(BATCH, {}))
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    for got, want in zip(cached_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want)
    # the padding-only bag pools to zeros
    assert torch.all(cached[2, 4:7] == 0)
