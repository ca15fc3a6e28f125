"""The typed run config: one YAML file per training run.

Example (``configs/fine_ctr.yaml``)::

    task: ctr
    seed: 0
    data: {batch_size: 2048, chunk_rows: 0}
    model:
      light: mlp
      light_dims: [32, 16]
      booster: dcn
      booster_dims: [256, 128, 64]
    distill: {variant: rocket, lambda: 1.0, schedule: constant}
    optim: {lr_dense: 0.001, lr_sparse: 0.01, epochs: 2}

Every section and key is optional except ``task``. Unknown keys anywhere are
errors naming the key with its path (``distill.lamda``); values are checked by
type (``gradient_block: "False"`` is rejected — YAML ``false`` is the bool).
The sections are pydantic dataclasses (:mod:`training.config.strict`: strict types,
``extra="forbid"``); ``configs/run_config.schema.json`` is their JSON Schema for
editors (:mod:`training.config.schema` writes it).

This module holds :class:`RunConfig`, its data and optim sections and
:func:`load_config`; the model section is in :mod:`training.config.model_section`,
the distill section in :mod:`training.config.distill_section`.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from training.config.distill_section import DistillConfig
from training.config.errors import ConfigError
from training.config.model_section import ModelConfig
from training.config.strict import (
    Bool,
    Int,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Str,
    dump,
    load,
    none_is_empty,
    section,
)


@section("data")
class DataConfig:
    """Batching.

    Attributes:
        batch_size: training rows per optimiser step.
        eval_batch_size: rows per evaluation forward pass.
        chunk_rows: stream the training split in chunks of this many rows
            (0 = load it into memory).
        shuffle_unit: what the training shuffle permutes: ``rows`` (the chunked
            row shuffle) or ``requests`` (whole requests in a seeded order, so a
            batch holds every row of its requests and the listwise hint sees
            complete lists; in-memory splits only, see
            ``training.data.shuffle.request_order``).
        shard_by_rank: under torchrun, each rank reads only its own chunks of
            the streamed training split (``training.data.rank_shard``) and rank 0
            alone runs the validation/fit pass; statistically, not bitwise, the
            one-process run. Needs ``chunk_rows > 0``; off: every rank reads
            every global batch and keeps its slice (exact).
    """

    batch_size: PositiveInt = 1024
    eval_batch_size: PositiveInt = 8192
    chunk_rows: NonNegativeInt = 0
    shuffle_unit: Literal["rows", "requests"] = "rows"
    shard_by_rank: Bool = False

    def __post_init__(self) -> None:
        if self.shuffle_unit == "requests" and self.chunk_rows:
            raise ConfigError(
                "data.shuffle_unit: 'requests' needs the split in memory (chunk_rows: 0)"
            )
        if self.shard_by_rank and not self.chunk_rows:
            raise ConfigError("data.shard_by_rank needs a streamed split (data.chunk_rows > 0)")


@section("optim")
class OptimConfig:
    """Optimisation.

    Attributes:
        lr_dense: Adam learning rate of the dense parameters.
        lr_sparse: learning rate of the embedding tables (SparseAdam when ``model.sparse``).
        weight_decay: dense parameters only.
        epochs: passes over the training split.
        early_stopping_patience: stop after this many evaluations without a better
            validation metric (0 = off).
        max_grad_norm: clip the gradient norm of each parameter group on its
            own — booster-only, light-only, shared (``JointModel`` groups) — so
            the hint's gradients never rescale the booster's update (0 = off).
            Tables with sparse gradients are not clipped.
    """

    lr_dense: PositiveFloat = 1e-3
    lr_sparse: PositiveFloat = 1e-2
    weight_decay: NonNegativeFloat = 0.0
    epochs: PositiveInt = 1
    early_stopping_patience: NonNegativeInt = 0
    max_grad_norm: NonNegativeFloat = 0.0


@section("")
class RunConfig:
    """One training run.

    Attributes:
        task: the schema task (its label and privileged features), e.g. "ctr", "cvr".
        stage: "coarse" or "fine" (recorded in the artifact manifest).
        seed: seeds torch, numpy and the batch order.
        data: batching (:class:`DataConfig`).
        model: the booster's and the light net's architecture (:class:`ModelConfig`).
        distill: the distillation method (:class:`DistillConfig`).
        optim: optimisation (:class:`OptimConfig`).
    """

    task: Str
    stage: Literal["coarse", "fine"] = "fine"
    seed: Int = 0
    data: Annotated[DataConfig, none_is_empty(DataConfig)] = field(default_factory=DataConfig)
    model: Annotated[ModelConfig, none_is_empty(ModelConfig)] = field(default_factory=ModelConfig)
    distill: Annotated[DistillConfig, none_is_empty(DistillConfig)] = field(
        default_factory=DistillConfig
    )
    optim: Annotated[OptimConfig, none_is_empty(OptimConfig)] = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if not self.task:
            raise ConfigError("task: must be a non-empty task name from the schema")

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """Build from parsed YAML; raises :class:`ConfigError` naming the key."""
        return load(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON data that :meth:`from_dict` reads back to an equal config."""
        return dump(self)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"run config not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


__all__ = ["DataConfig", "OptimConfig", "RunConfig", "load_config"]
