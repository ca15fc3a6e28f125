"""What a run is built from: seeds, the joint model, its two optimisers.

Also :func:`load_trained_model`, the model of a finished run (a teacher for
two-stage KD), read through the one run loader ``training.export.run_loader``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.joint import JointModel
from models.joint_args import JointModelArgs
from training.config.model_section import model_args
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.loop.errors import TrainingError


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` from one run seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model(cfg: RunConfig, data: PreparedData) -> tuple[JointModel, JointModelArgs]:
    """The joint model of a run, each sub-network seeded on its own from ``cfg.seed``.

    ``JointModel(args, init_seed=cfg.seed)``: the light net and its tables start
    from the same weights whatever the booster (``light_alone`` and ``pfd_md`` at
    one seed share the light init), and building does not touch the global RNG.
    """
    args = model_args(cfg, data.dataset.schema, data.dataset.encoder.cardinality)
    return JointModel(args, init_seed=cfg.seed), args


def build_optimizers(model: JointModel, cfg: RunConfig) -> dict[str, torch.optim.Optimizer]:
    """``{"sparse": tables, "dense": the rest}`` over trainable parameters.

    With sparse gradients the tables use ``SparseAdam`` (moments updated only
    for the rows in the batch, no full-table pass per step); otherwise ``Adam``.
    Tables kept dense under ``model.sparse_min_rows`` join the dense optimiser
    as their own group (``lr_sparse``, no weight decay — AdamW without decay is
    Adam), so one fused kernel updates them with the nets' weights instead of a
    coalesce and row gathers per tiny table per step.
    Weight decay applies to dense parameters only: decaying every table row
    each step is exactly the full-table update sparse training avoids.
    """
    tables = [p for _, p in model.embedding_parameters() if p.requires_grad]
    sparse_ids = {id(p) for _, p in model.sparse_gradient_parameters()}
    sparse_tables = [p for p in tables if id(p) in sparse_ids]
    dense_tables = [p for p in tables if id(p) not in sparse_ids]
    dense = [p for _, p in model.dense_parameters() if p.requires_grad]
    opt = cfg.optim
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if not model.args.sparse:
        if tables:
            optimizers["sparse"] = torch.optim.Adam(tables, lr=opt.lr_sparse, foreach=True)
        dense_tables = []
    elif sparse_tables:
        optimizers["sparse"] = torch.optim.SparseAdam(sparse_tables, lr=opt.lr_sparse)
    groups: list[dict[str, Any]] = []
    if dense:
        groups.append({"params": dense, "lr": opt.lr_dense, "weight_decay": opt.weight_decay})
    if dense_tables:
        groups.append({"params": dense_tables, "lr": opt.lr_sparse, "weight_decay": 0.0})
    if groups:
        optimizers["dense"] = torch.optim.AdamW(groups, lr=opt.lr_dense, fused=True)
    return optimizers


def load_trained_model(run_dir: str | Path) -> JointModel:
    """The model of a finished run (``RUN/model.pt``, ``weights_only``), eval mode.

    Raises:
        TrainingError: the run has no usable ``model.pt``.
    """
    from training.export.run_loader import RunLoadError, load_model

    try:
        return load_model(run_dir)
    except RunLoadError as exc:
        raise TrainingError(str(exc)) from exc


__all__ = ["build_model", "build_optimizers", "load_trained_model", "seed_everything"]
