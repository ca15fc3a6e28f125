"""data.shuffle_unit: requests — whole requests per batch, seeded by (seed, epoch)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.helpers.data import make_log, schema
from training.data.dataset import encode_split, fit_encoder
from training.data.readers import frame_to_columns
from training.data.shuffle import request_plan


def _groups(n: int, seed: int = 0, max_len: int = 12) -> np.ndarray:
    """Request ids with random request lengths 1..max_len, in a scattered row order."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=n)
    ids = np.repeat(np.arange(lengths.size) * 7 + 3, lengths)[:n]
    return ids[rng.permutation(n)]


def _batches(group: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order, starts = request_plan(group, batch_size, seed, epoch)
    return [order[a:b] for a, b in itertools.pairwise(starts)]


@pytest.mark.parametrize("batch_size", [16, 50, 64])
def test_every_request_is_whole_in_one_batch(batch_size) -> None:
    group = _groups(1000)
    batches = _batches(group, batch_size, seed=1, epoch=0)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))  # every row exactly once
    assert len(batches) == -(-1000 // batch_size)  # the step count of a row shuffle
    assert all(len(b) > 0 for b in batches)
    seen: dict[int, int] = {}
    for k, b in enumerate(batches):
        for request in np.unique(group[b]):
            assert seen.setdefault(int(request), k) == k, f"request {request} split"
    # batches stay near the target size: each cut moves back to the request boundary
    # before the multiple of batch_size, by less than one request (<= 12 rows here)
    assert all(batch_size - 12 < len(b) < batch_size + 12 for b in batches[:-1])


def test_request_order_is_a_function_of_seed_and_epoch() -> None:
    group = _groups(500)
    a = request_plan(group, 32, seed=4, epoch=2)
    b = request_plan(group, 32, seed=4, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], request_plan(group, 32, seed=4, epoch=3)[0])
    assert not np.array_equal(a[0], request_plan(group, 32, seed=5, epoch=2)[0])
    # the request order is shuffled, not the file's
    first_rows = [int(np.flatnonzero(group == g)[0]) for g in dict.fromkeys(group[a[0]])]
    assert first_rows != sorted(first_rows)


def test_a_request_longer_than_a_batch_is_cut_and_nothing_is_empty() -> None:
    group = np.array([1] * 10 + [2] * 3 + [3] * 25 + [4] * 2)
    batches = _batches(group, 8, seed=0, epoch=0)
    assert len(batches) == 5 and all(len(b) > 0 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(group.size))


def test_split_iter_batches_with_unit_requests_yields_the_plan() -> None:
    cols = frame_to_columns(make_log(300, 0))
    split = encode_split(schema(), fit_encoder(schema(), cols), cols, name="train")
    batches = list(split.iter_batches(40, shuffle=True, seed=2, epoch=1, unit="requests"))
    order, starts = request_plan(split.group.numpy(), 40, 2, 1)
    assert [len(b) for b in batches] == np.diff(starts).tolist()
    assert torch.equal(torch.cat([b.group for b in batches]), split.group[torch.from_numpy(order)])
    assert len(batches) == split.num_batches(40)
    with pytest.raises(ValueError, match="unit"):
        next(split.iter_batches(40, shuffle=True, unit="users"))
