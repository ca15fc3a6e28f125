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
The loader is deliberately hand-written over dataclasses (no ``**kwargs``):
types are enforced strictly and bools are never coerced from strings or ints.
"""

# Over 400 lines: the five config sections and the strict loader that enforces their
# types sit together so a key's type, default and check are read in one place.

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml

from models.contract.features import Side
from models.joint import JointModelArgs
from training.data.schema import Schema
from training.distill import (
    DistillSettings,
    Hint,
    LambdaSchedule,
    Schedule,
    Variant,
    default_gradient_block,
    default_hint,
    default_lambda,
    rule_violation,
)


class ConfigError(ValueError):
    """The run config is invalid; the message names the key (``section.key``)."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
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
    """

    batch_size: int = 1024
    eval_batch_size: int = 8192
    chunk_rows: int = 0
    shuffle_unit: Literal["rows", "requests"] = "rows"

    def __post_init__(self) -> None:
        _positive("data.batch_size", self.batch_size)
        _positive("data.eval_batch_size", self.eval_batch_size)
        _non_negative("data.chunk_rows", self.chunk_rows)
        if self.shuffle_unit == "requests" and self.chunk_rows:
            raise ConfigError(
                "data.shuffle_unit: 'requests' needs the split in memory (chunk_rows: 0)"
            )


def _arg(name: str) -> dict[str, str]:
    """Field metadata: the ``JointModelArgs`` argument a field fills under another name."""
    return {"arg": name}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of booster and light net: the YAML face of ``JointModelArgs``.

    Every field fills the :class:`~models.joint.JointModelArgs` argument of the
    same name (or the one its ``_arg`` metadata names), so :func:`model_args`
    maps them without a hand-written list, and a model argument with no field
    here is an error at import (:func:`_check_model_fields`). The arguments left
    out are the ones the schema and the data decide (:data:`DATA_ARGS`). The
    YAML keys, tuples instead of lists, ``Literal`` values checked on load, and
    two defaults (``booster: dcn``, ``sparse_min_rows: 4096``) are the run
    config's own.

    Attributes:
        light: "mlp" (fine ranking) or "two_tower" (coarse ranking).
        light_dims: light MLP hidden widths, or the tower widths (last = vector dim).
        tower_scale: two-tower cosine scale (initial value if learned).
        learn_scale: learn the two-tower scale.
        tower_bias: learn a logit bias for the two-tower net.
        booster: "mlp" or "dcn" (DCN-v2).
        booster_dims: booster deep widths.
        cross_layers, cross_rank, dcn_structure: DCN-v2 cross network (rank 0 = full).
        norm: "none", "batch" or "layer"; dropout: in every MLP.
        embedding_dims: per-feature embedding dim overrides (default: the schema's ``dim``).
        sharing: "full" (booster and light net share every served table) or
            "separate" (PFD's Share*: ``separate_tables`` get one table per net).
            Not a model argument: ``separate_tables`` says it all.
        separate_tables: features with a table per net (``sharing: separate`` only).
        sparse: sparse embedding gradients (trainer uses SparseAdam for the tables).
        sparse_min_rows: with ``sparse``, only tables of at least this many rows
            get sparse gradients; smaller ones (most rows touched by every batch)
            are updated densely with the dense parameters' fused AdamW at
            ``optim.lr_sparse``, no weight decay. 0 = every table sparse.
        detach_shared_for_light: cut light/hint gradients into shared tables. Not
            Rocket Launching (the booster alone then learns the shared embeddings);
            a named ablation only.
    """

    light: Literal["mlp", "two_tower"] = field(default="mlp", metadata=_arg("light_kind"))
    light_dims: tuple[int, ...] = (64, 32)
    tower_scale: float = field(default=10.0, metadata=_arg("scale"))
    learn_scale: bool = True
    tower_bias: bool = False
    booster: Literal["mlp", "dcn"] = field(default="dcn", metadata=_arg("booster_kind"))
    booster_dims: tuple[int, ...] = (512, 256, 128)
    cross_layers: int = 3
    cross_rank: int = 0
    dcn_structure: Literal["stacked", "parallel"] = "stacked"
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: float = 0.0
    embedding_dims: dict[str, int] = field(default_factory=dict)
    sharing: Literal["full", "separate"] = field(default="full", metadata={"arg": None})
    separate_tables: tuple[str, ...] = ()
    sparse: bool = False
    sparse_min_rows: int = 4096
    detach_shared_for_light: bool = False

    def __post_init__(self) -> None:
        for key in ("light_dims", "booster_dims"):
            dims = getattr(self, key)
            if not dims or any(d <= 0 for d in dims):
                raise ConfigError(f"model.{key}: needs one or more positive widths, got {dims}")
        _positive("model.tower_scale", self.tower_scale)
        _positive("model.cross_layers", self.cross_layers)
        _non_negative("model.cross_rank", self.cross_rank)
        _non_negative("model.sparse_min_rows", self.sparse_min_rows)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        for name, dim in self.embedding_dims.items():
            if dim <= 0:
                raise ConfigError(f"model.embedding_dims.{name}: must be > 0, got {dim}")
        if self.sharing == "separate" and not self.separate_tables:
            raise ConfigError(
                "model.separate_tables: sharing 'separate' needs at least one feature"
            )
        if self.sharing == "full" and self.separate_tables:
            raise ConfigError(
                "model.separate_tables: only allowed with sharing 'separate' "
                f"(got {list(self.separate_tables)} with sharing 'full')"
            )


@dataclass(frozen=True)
class DistillConfig:
    """The distillation method (see ``training/distill.py`` for the exact losses).

    Attributes:
        variant: light_alone, booster_alone, two_stage_kd, rocket,
            rocket_no_gradient_block, pfd, pfd_md.
        hint: logit_mse, soft_bce, kl, hidden, listwise, off (default: the variant's).
        lam: YAML key ``lambda`` — the hint weight: γ for Rocket variants
            (default 1.0), λ for PFD and two-stage KD (default 0.5, must be ≤ 1).
        schedule: constant, step (0 for ``warmup_steps`` then λ), linear
            (ramp over ``warmup_steps``), anneal (λ → 0 linearly over training).
        warmup_steps: k for step / linear.
        warmup_epochs: the same k as a fraction of an epoch (e.g. 0.25), resolved
            to steps from the training split's size, so the warm-up scales with the
            log; exclusive with ``warmup_steps``.
        temperature: T for the kl and listwise hints.
        gradient_block: stop-gradient on the booster side of the hint. A YAML
            bool; default true (false for rocket_no_gradient_block).
        teacher_stop: per-net early stopping of the booster in the synchronous
            variants (rocket, rocket_no_gradient_block, pfd, pfd_md). ``never``:
            the booster trains every epoch. ``best_valid``: the booster's own
            validation metric (the trainer's early-stopping metric) is tracked at
            every epoch end; after ``teacher_patience`` evaluations without a
            better value, or once it has trained ``teacher_max_epochs`` epochs, the
            booster is restored to its best-validation state and frozen, and the
            light net goes on learning from that frozen teacher until its own
            early stopping (``optim.early_stopping_patience``) or ``optim.epochs``.
            Needs a validation split.
        teacher_patience: evaluations without a better booster value before the
            freeze (>= 1; 1 = freeze at the first epoch that does not improve).
        teacher_max_epochs: freeze the booster after this many epochs of training
            (its pre-training included) at the best of them (0 = no cap).
        teacher_pretrain_epochs: the booster trains alone for this many epochs
            before the joint phase (light BCE and hint off, light parameters not
            stepped; the λ schedule and the light net's early stopping start with
            the joint phase).
    """

    variant: Variant = Variant.ROCKET
    hint: Hint | None = None
    lam: float | None = field(default=None, metadata={"key": "lambda"})
    schedule: Schedule = Schedule.CONSTANT
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    temperature: float = 1.0
    gradient_block: bool | None = None
    teacher_stop: Literal["never", "best_valid"] = "never"
    teacher_patience: int = 1
    teacher_max_epochs: int = 0
    teacher_pretrain_epochs: int = 0

    def __post_init__(self) -> None:
        _positive("distill.teacher_patience", self.teacher_patience)
        _non_negative("distill.teacher_max_epochs", self.teacher_max_epochs)
        _non_negative("distill.teacher_pretrain_epochs", self.teacher_pretrain_epochs)
        if self.teacher_max_epochs and self.teacher_stop == "never":
            raise ConfigError(
                "distill.teacher_max_epochs: only with teacher_stop 'best_valid' "
                "(the cap says when the booster is frozen at its best state)"
            )
        _non_negative("distill.warmup_steps", self.warmup_steps)
        _non_negative("distill.warmup_epochs", self.warmup_epochs)
        if self.warmup_steps and self.warmup_epochs:
            raise ConfigError("distill: give warmup_steps or warmup_epochs, not both")
        _positive("distill.temperature", self.temperature)
        if self.lam is not None:
            _non_negative("distill.lambda", self.lam)
        broken = rule_violation(self.variant, self.hint, self.lam, self.gradient_block)
        if broken is not None:
            raise ConfigError(f"distill.{broken[0]}: {broken[1]}")
        if self.schedule is Schedule.LINEAR and not (self.warmup_steps or self.warmup_epochs):
            raise ConfigError("distill.warmup_steps: schedule 'linear' needs the ramp length > 0")

    @property
    def resolved_hint(self) -> Hint:
        return default_hint(self.variant) if self.hint is None else self.hint

    @property
    def resolved_lambda(self) -> float:
        if self.resolved_hint is Hint.OFF:
            return 0.0
        if self.lam is not None:
            return self.lam
        return default_lambda(self.variant)

    @property
    def resolved_gradient_block(self) -> bool:
        if self.gradient_block is None:
            return default_gradient_block(self.variant)
        return self.gradient_block

    def warmup_steps_for(self, steps_per_epoch: int) -> int:
        """The warm-up in optimiser steps for an epoch of ``steps_per_epoch`` steps."""
        if self.warmup_epochs:
            return max(1, round(self.warmup_epochs * steps_per_epoch))
        return self.warmup_steps

    def settings(self, total_steps: int = 0, steps_per_epoch: int = 0) -> DistillSettings:
        """The :class:`DistillSettings` for :func:`training.distill.compute_loss`.

        Args:
            total_steps: optimiser steps of the whole run (needed by ``anneal``).
            steps_per_epoch: optimiser steps per epoch (needed by ``warmup_epochs``).
        """
        if self.warmup_epochs and steps_per_epoch <= 0:
            raise ConfigError("distill.warmup_epochs: needs the run's steps per epoch")
        if self.schedule is Schedule.ANNEAL and total_steps <= 0:
            raise ConfigError("distill.schedule: 'anneal' needs the run's total step count")
        return DistillSettings(
            variant=self.variant,
            hint=self.resolved_hint,
            schedule=LambdaSchedule(
                kind=self.schedule,
                value=self.resolved_lambda,
                warmup_steps=self.warmup_steps_for(steps_per_epoch),
                total_steps=total_steps,
            ),
            temperature=self.temperature,
            gradient_block=self.resolved_gradient_block,
        )


@dataclass(frozen=True)
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

    lr_dense: float = 1e-3
    lr_sparse: float = 1e-2
    weight_decay: float = 0.0
    epochs: int = 1
    early_stopping_patience: int = 0
    max_grad_norm: float = 0.0

    def __post_init__(self) -> None:
        _positive("optim.lr_dense", self.lr_dense)
        _positive("optim.lr_sparse", self.lr_sparse)
        _non_negative("optim.weight_decay", self.weight_decay)
        _positive("optim.epochs", self.epochs)
        _non_negative("optim.early_stopping_patience", self.early_stopping_patience)
        _non_negative("optim.max_grad_norm", self.max_grad_norm)


@dataclass(frozen=True)
class RunConfig:
    """One training run.

    Attributes:
        task: the schema task (its label and privileged features), e.g. "ctr", "cvr".
        stage: "coarse" or "fine" (recorded in the artifact manifest).
        seed: seeds torch, numpy and the batch order.
    """

    task: str
    stage: Literal["coarse", "fine"] = "fine"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if not self.task:
            raise ConfigError("task: must be a non-empty task name from the schema")

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """Build from parsed YAML; raises :class:`ConfigError` naming the key."""
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON data that :meth:`from_dict` reads back to an equal config."""
        return _dump(self)


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


# --------------------------------------------------------------------------- model args


def model_args(cfg: RunConfig, schema: Schema, cardinality: Callable[[str], int]) -> JointModelArgs:
    """The :class:`~models.joint.JointModelArgs` of a run.

    Served and privileged features come from the schema's task. A two-tower
    light net cannot read user×item (``side: cross``) features, so any such
    served feature becomes privileged (booster only) — the coarse-stage
    setting of the design.

    Args:
        cfg: the run config.
        schema: a ``training.data.schema.Schema``.
        cardinality: ``FeatureEncoder.cardinality`` (or any ``name -> rows`` callable)
            of an encoder fitted on the training split.

    Raises:
        ConfigError: a feature named in the model section is not used by the task.
    """
    served, privileged = schema.task_features(cfg.task)
    m = cfg.model
    if m.light == "two_tower":
        moved = [n for n in served if schema.feature(n).side is Side.CROSS]
        served = [n for n in served if n not in moved]
        privileged = [n for n in schema.feature_names if n in set(privileged) | set(moved)]
    used = served + privileged
    for name in m.embedding_dims:
        if name not in used:
            raise ConfigError(
                f"model.embedding_dims.{name}: not a feature of task {cfg.task!r} "
                f"(features: {used})"
            )
    for name in m.separate_tables:
        if name not in served:
            raise ConfigError(
                f"model.separate_tables: {name!r} is not a served feature of task {cfg.task!r} "
                f"(served: {served})"
            )
    specs = [schema.feature(n) for n in used]
    return JointModelArgs(
        features=[s.to_dict() for s in specs],
        cardinalities={s.name: int(cardinality(s.name)) for s in specs if s.is_sparse},
        served=list(served),
        privileged=list(privileged),
        hint_projection=cfg.distill.resolved_hint is Hint.HIDDEN,
        **architecture_args(m),
    )


DATA_ARGS = frozenset({"features", "cardinalities", "served", "privileged", "hint_projection"})
"""``JointModelArgs`` arguments the schema, the data and the hint decide (not ``model:``)."""


def architecture_args(model: ModelConfig) -> dict[str, Any]:
    """The model section as ``JointModelArgs`` keyword arguments (JSON-plain values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ModelConfig):
        arg = f.metadata.get("arg", f.name)
        if arg is None:
            continue
        value = getattr(model, f.name)
        out[arg] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
    return out


def _check_model_fields() -> None:
    """Fail at import when the model section and ``JointModelArgs`` drift apart."""
    filled = {f.metadata.get("arg", f.name) for f in dataclasses.fields(ModelConfig)} - {None}
    wanted = {f.name for f in dataclasses.fields(JointModelArgs)} - DATA_ARGS
    if filled != wanted:
        raise TypeError(
            "training.config.ModelConfig does not match models.joint.JointModelArgs: "
            f"missing {sorted(wanted - filled)}, unknown {sorted(filled - wanted)}"
        )


_check_model_fields()


# --------------------------------------------------------------------------- strict loading


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")


def _non_negative(key: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{key}: must be >= 0, got {value!r}")


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if data is None and path:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    by_key = {_key(f): f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in by_key:
            raise ConfigError(
                f"{path + '.' if path else ''}{key}: unknown key; allowed: {sorted(by_key)}"
            )
    kwargs: dict[str, Any] = {}
    for key, f in by_key.items():
        full = f"{path}.{key}" if path else key
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key], full)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{full}: required key missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            raise ConfigError(f"{key}: must be one of {list(args)}, got {_type_name(value)}")
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        allowed = [e.value for e in tp]
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(f"{key}: must be one of {allowed}, got {_type_name(value)}")
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be a YAML bool (true/false), got {_type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {_type_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {_type_name(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {_type_name(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list, got {_type_name(value)}")
        return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping, got {_type_name(value)}")
        return {
            _convert(args[0], k, f"{key}"): _convert(args[1], v, f"{key}.{k}")
            for k, v in value.items()
        }
    raise ConfigError(f"{key}: unsupported config type {tp!r}")  # pragma: no cover


def _dump(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_key(f): _dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [_dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    return obj


__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "load_config",
    "model_args",
]
