"""Helpers for the distributed-training tests: real gloo process groups on this machine.

Two ways to get N processes, both real:

* :func:`spawn_gloo` — ``torch.multiprocessing`` children that join a gloo
  group on a free port and run a function of this module (unit tests of the
  collectives, a few seconds);
* :func:`run_torchrun` — ``python -m torch.distributed.run`` on a script or
  module, exactly as ``rocketrank train --nproc`` launches the trainer.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from tests.helpers.net import free_port
from tests.helpers.repo import ROOT
from training.distill.losses import LossTerms
from training.loop.distributed import DistContext, shard_bounds
from training.loop.launch import torchrun_prefix

# Launched as a module (``-m``), never by path: run as a script, this folder would come
# first on sys.path and its models.py / service.py would shadow the real packages.
WORKER_MODULE = "tests.helpers.distributed_worker"


# --------------------------------------------------------------------------- launching


def spawn_gloo(fn: Any, world_size: int, *args: Any) -> None:
    """Run ``fn(ctx, *args)`` in ``world_size`` spawned processes joined by gloo."""
    port = free_port()
    mp.start_processes(
        _gloo_entry,
        args=(fn, world_size, port, args),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )


def _gloo_entry(rank: int, fn: Any, world_size: int, port: int, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        fn(DistContext(rank=rank, world_size=world_size, backend="gloo"), *args)
    finally:
        tdist.destroy_process_group()


def run_torchrun(nproc: int, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node N <argv>`` on a free port."""
    cmd = [*torchrun_prefix(nproc), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_cli(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m rocketrank.cli <argv>`` as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "rocketrank.cli", *argv],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- gradient sync


class TinySparseNet(nn.Module):
    """``mean((w·E[x] + b − y)²)`` with a sparse table, plus parameters no loss reaches.

    Mirrors what :func:`training.distributed` expects of ``JointModel``:
    ``args.sparse`` and ``embedding_parameters()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.args = SimpleNamespace(sparse=True)
        self.table = nn.Embedding(40, 3, sparse=True)
        self.unused_table = nn.Embedding(10, 3, sparse=True)
        self.head = nn.Linear(3, 1)
        self.unused_head = nn.Linear(2, 2)

    def embedding_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            ("table.weight", self.table.weight),
            ("unused_table.weight", self.unused_table.weight),
        ]

    def loss(self, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.head(self.table(ids)).squeeze(-1) - y) ** 2).mean()


def global_batch(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``int64 [rows]`` (with repeats, so rows collide) and targets ``float32 [rows]``."""
    g = torch.Generator().manual_seed(rows)
    return torch.randint(0, 12, (rows,), generator=g), torch.randn(rows, generator=g)


def reference_gradients(rows: int) -> dict[str, Any]:
    """Gradients and loss of the whole batch in one process."""
    torch.manual_seed(0)
    net = TinySparseNet()
    ids, y = global_batch(rows)
    loss = net.loss(ids, y)
    loss.backward()
    return _grads(net) | {"loss": float(loss.detach()), "rows": rows}


def _grads(net: TinySparseNet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in net.named_parameters():
        if p.grad is None:
            out[name] = None
        elif p.grad.is_sparse:
            g = p.grad.coalesce()
            out[name] = {"rows": g.indices()[0].tolist(), "dense": g.to_dense().tolist()}
        else:
            out[name] = p.grad.tolist()
    return out


def sync_worker(ctx: DistContext, rows: int, result_path: str) -> None:
    """Rank r's slice of a ``rows``-row batch → backward → ``sync_step``; rank 0 writes JSON."""
    torch.manual_seed(0)
    net = TinySparseNet()
    ids, y = global_batch(rows)
    start, stop = shard_bounds(rows, ctx.rank, ctx.world_size)
    loss = net.loss(ids[start:stop], y[start:stop])  # NaN on an empty slice
    loss.backward()
    nan = torch.tensor(math.nan)
    terms = LossTerms(total=loss, booster=nan, light=loss.detach(), hint=torch.tensor(0.0), lam=0)
    synced, total_rows = ctx.sync_step(net, terms, stop - start)
    if ctx.is_main:
        Path(result_path).write_text(
            json.dumps(_grads(net) | {"loss": float(synced.total), "rows": total_rows})
        )


# --------------------------------------------------------------------------- predictions


class FakeSplit:
    """A split of ``n`` rows whose row i scores ``i`` (duck-types ``filter_rows``)."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def filter_rows(self, mask: torch.Tensor) -> FakeSplit:
        return FakeSplit(self.values[mask])


def fake_predict(model: Any, split: FakeSplit, batch_size: int, scale: float = 1.0) -> dict:
    return {
        "light": split.values.double().numpy() * scale,
        "booster": -split.values.double().numpy(),
    }


def predictions_worker(ctx: DistContext, rows: int, result_path: str) -> None:
    """``all_predictions`` over a ``rows``-row split; every rank writes what it got."""
    got = ctx.all_predictions(fake_predict, None, FakeSplit(torch.arange(rows)), 4, scale=2.0)
    Path(f"{result_path}.{ctx.rank}").write_text(
        json.dumps({k: v.tolist() for k, v in got.items()})
    )


def collectives_worker(
    ctx: DistContext, sync_rows: list[int], prediction_rows: int, out_dir: str
) -> None:
    """Every collective check in one process group (spawning costs seconds per group).

    Writes ``OUT/grads_<rows>.json`` (rank 0) and ``OUT/pred.<rank>``.
    """
    for rows in sync_rows:
        sync_worker(ctx, rows, f"{out_dir}/grads_{rows}.json")
    predictions_worker(ctx, prediction_rows, f"{out_dir}/pred")
