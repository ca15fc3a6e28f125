"""Sharding, gradient sync and prediction gathering of ``training.distributed``.

The collectives run in real spawned processes over gloo; the reference is the
same computation on the whole batch in this process.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.distributed import collectives_worker, reference_gradients, spawn_gloo
from tests.helpers.trainer import tiny_config
from training.commands import train as train_cli
from training.loop.distributed import (
    SINGLE_PROCESS,
    DistContext,
    init_from_env,
    shard_bounds,
    slice_batch,
)
from training.loop.errors import DistributedError
from training.loop.launch import forwarded_argv, torchrun_command


@given(rows=st.integers(0, 5000), world=st.integers(1, 9))
def test_shards_cover_the_batch_once_in_order_and_balanced(rows: int, world: int) -> None:
    bounds = [shard_bounds(rows, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank 2 outside world of size 2"):
        shard_bounds(10, 2, 2)


def test_rank_slices_of_a_batch_concatenate_to_the_batch() -> None:
    from training.data.dataset import Batch

    n = 11
    batch = Batch(
        features={"a": torch.arange(n), "bag": torch.arange(2 * n).view(n, 2)},
        labels={"click": torch.arange(n, dtype=torch.float32)},
        group=torch.arange(n) // 3,
        user=torch.arange(n) + 100,
    )
    ctx = [DistContext(rank=r, world_size=3, backend="gloo") for r in range(3)]
    parts = [next(c.shard_batches([batch])) for c in ctx]
    assert [len(p) for p in parts] == [3, 4, 4]
    for key in ("a", "bag"):
        assert torch.equal(torch.cat([p.features[key] for p in parts]), batch.features[key])
    assert torch.equal(torch.cat([p.labels["click"] for p in parts]), batch.labels["click"])
    assert torch.equal(torch.cat([p.group for p in parts]), batch.group)
    assert torch.equal(slice_batch(batch, 2, 5).user, batch.user[2:5])


def test_single_process_context_changes_nothing() -> None:
    batches = [object(), object()]
    assert list(SINGLE_PROCESS.shard_batches(batches)) == batches
    terms = object()
    assert SINGLE_PROCESS.sync_step(torch.nn.Linear(1, 1), terms, 7) == (terms, 7)  # type: ignore[arg-type]
    assert SINGLE_PROCESS.is_main and not SINGLE_PROCESS.distributed


def test_without_torchrun_env_the_run_is_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env() is SINGLE_PROCESS


def test_incomplete_torchrun_env_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(DistributedError, match="MASTER_PORT"):
        init_from_env()


def test_configs_that_cannot_match_one_process_are_refused() -> None:
    ctx = DistContext(rank=0, world_size=2, backend="gloo")
    with pytest.raises(DistributedError, match="listwise"):
        ctx.check_config(tiny_config("rocket", distill={"hint": "listwise"}))
    with pytest.raises(DistributedError, match="norm 'batch'"):
        ctx.check_config(tiny_config("rocket", model={"norm": "batch"}))
    ctx.check_config(tiny_config("rocket", model={"norm": "layer"}))
    SINGLE_PROCESS.check_config(tiny_config("rocket", distill={"hint": "listwise"}))


def test_workers_get_the_same_train_options_minus_nproc() -> None:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    argv = [
        "--config", "c.yaml", "--data", "d", "--out", "o", "--resume", "--epochs", "3",
        "--no-progress", "--nproc", "2", "--threads", "1",
    ]  # fmt: skip
    args = parser.parse_args(argv)
    args.command_path, args._module = "train", "training.commands.train"
    forwarded = forwarded_argv(args)
    assert "--nproc" not in forwarded
    again = parser.parse_args(forwarded)
    expected = {k: v for k, v in vars(args).items() if k not in ("command_path", "_module")}
    assert {**vars(again), "nproc": 2} == expected
    cmd = torchrun_command(2, forwarded, port=29999)
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "127.0.0.1:29999"
    assert cmd[-len(forwarded) - 2 :] == ["rocketrank.cli", "train", *forwarded]


# ------------------------------------------------------------------ real process groups

WORLD = 3
# 7 rows: uneven slices (2, 2, 3); 2 rows: rank 0 has no rows at all; 12: even
SYNC_ROWS = [7, 2, 12]
PREDICTION_ROWS = 11


@pytest.fixture(scope="module")
def collectives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collectives")
    spawn_gloo(collectives_worker, WORLD, SYNC_ROWS, PREDICTION_ROWS, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rows", SYNC_ROWS)
def test_synced_gradients_equal_the_whole_batch_gradient(collectives: Path, rows: int) -> None:
    got = json.loads((collectives / f"grads_{rows}.json").read_text())
    want = reference_gradients(rows)

    assert got["rows"] == rows
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-6)
    # parameters no loss reached keep grad None, as in one process (AdamW then skips them)
    assert got["unused_head.weight"] is None and got["unused_head.bias"] is None
    assert got["unused_table.weight"] is None
    # the table gradient is sparse over exactly the rows the global batch touched
    assert got["table.weight"]["rows"] == want["table.weight"]["rows"]
    np.testing.assert_allclose(
        got["table.weight"]["dense"], want["table.weight"]["dense"], atol=1e-6
    )
    for name in ("head.weight", "head.bias"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)


@pytest.mark.slow
def test_predictions_are_gathered_in_split_order_on_every_rank(collectives: Path) -> None:
    for rank in range(WORLD):
        got = json.loads((collectives / f"pred.{rank}").read_text())
        assert got["light"] == [2.0 * i for i in range(PREDICTION_ROWS)]
        assert got["booster"] == [-float(i) for i in range(PREDICTION_ROWS)]


def test_nproc_refuses_an_unsupported_config_before_launching(tmp_path, capsys) -> None:
    import yaml

    cfg_path = tmp_path / "listwise.yaml"
    cfg_path.write_text(
        yaml.safe_dump(tiny_config("rocket", distill={"hint": "listwise"}).to_dict())
    )
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    argv = ["--config", str(cfg_path), "--data", str(tmp_path / "absent"), "--out", str(tmp_path)]
    args = parser.parse_args([*argv, "--nproc", "2"])
    assert train_cli.run(args) == 2
    assert "listwise" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()  # nothing ran
