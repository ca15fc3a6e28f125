"""The model section of the run config and its mapping to ``JointModelArgs``.

:class:`ModelConfig` is the YAML face of :class:`~models.joint_args.JointModelArgs`;
:func:`architecture_args` maps it field by field, :func:`model_args` adds what the
schema, the data and the hint decide (:data:`DATA_ARGS`), and an import-time check
fails when the two drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from models.contract.feature_spec import Side
from models.joint_args import JointModelArgs
from training.config.errors import ConfigError
from training.config.strict import (
    Bool,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Str,
    none_is_empty,
    section,
)
from training.data.schema import Schema
from training.distill.rules import Hint

if TYPE_CHECKING:
    from training.config.run import RunConfig


def _arg(name: str) -> dict[str, str]:
    """Field metadata: the ``JointModelArgs`` argument a field fills under another name."""
    return {"arg": name}


Widths = Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
"""One or more positive layer widths (a YAML list)."""
EmbeddingDims = dict[Str, PositiveInt]
"""Feature name -> embedding dim."""


@section("model")
class ModelConfig:
    """Architecture of booster and light net: the YAML face of ``JointModelArgs``.

    Every field fills the :class:`~models.joint_args.JointModelArgs` argument of the
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
        norm: "none", "batch" or "layer".
        dropout: dropout rate in every MLP, in [0, 1).
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
    light_dims: Widths = (64, 32)
    tower_scale: PositiveFloat = field(default=10.0, metadata=_arg("scale"))
    learn_scale: Bool = True
    tower_bias: Bool = False
    booster: Literal["mlp", "dcn"] = field(default="dcn", metadata=_arg("booster_kind"))
    booster_dims: Widths = (512, 256, 128)
    cross_layers: PositiveInt = 3
    cross_rank: NonNegativeInt = 0
    dcn_structure: Literal["stacked", "parallel"] = "stacked"
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: Annotated[NonNegativeFloat, Field(lt=1)] = 0.0
    embedding_dims: Annotated[EmbeddingDims, none_is_empty(EmbeddingDims)] = field(
        default_factory=dict
    )
    sharing: Literal["full", "separate"] = field(default="full", metadata={"arg": None})
    separate_tables: tuple[Str, ...] = ()
    sparse: Bool = False
    sparse_min_rows: NonNegativeInt = 4096
    detach_shared_for_light: Bool = False

    def __post_init__(self) -> None:
        if self.sharing == "separate" and not self.separate_tables:
            raise ConfigError(
                "model.separate_tables: sharing 'separate' needs at least one feature"
            )
        if self.sharing == "full" and self.separate_tables:
            raise ConfigError(
                "model.separate_tables: only allowed with sharing 'separate' "
                f"(got {list(self.separate_tables)} with sharing 'full')"
            )


def model_args(cfg: RunConfig, schema: Schema, cardinality: Callable[[str], int]) -> JointModelArgs:
    """The :class:`~models.joint_args.JointModelArgs` of a run.

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
            "training.config.model_section.ModelConfig does not match "
            "models.joint_args.JointModelArgs: "
            f"missing {sorted(wanted - filled)}, unknown {sorted(filled - wanted)}"
        )


_check_model_fields()


__all__ = ["DATA_ARGS", "ModelConfig", "architecture_args", "model_args"]
