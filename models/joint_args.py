"""The arguments of a :class:`~models.joint.JointModel`, as plain data.

``JointModelArgs`` holds every constructor argument as plain data, so a
checkpoint carrying ``args.to_dict()`` rebuilds its model; ``LIGHT_KINDS`` and
``BOOSTER_KINDS`` name the nets it can ask for, and :func:`check_features`
validates its served / privileged feature lists.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models.contract.feature_spec import FeatureSpec

LIGHT_KINDS = ("mlp", "two_tower")
BOOSTER_KINDS = ("mlp", "dcn")


@dataclass
class JointModelArgs:
    """Everything needed to build a :class:`~models.joint.JointModel` (JSON-serialisable).

    Attributes:
        features: ``FeatureSpec.to_dict()`` of every feature in ``served`` and ``privileged``.
        cardinalities: table size per sparse feature (``FeatureEncoder.cardinality``).
        served: features the light net reads (available at serving time).
        privileged: features only the booster reads (PFD's X*; interacted
            features for a two-tower student).
        light_kind: "mlp" (fine) or "two_tower" (coarse).
        light_dims: light MLP hidden widths, or the tower widths (last = vector dim d).
        scale: two-tower cosine scale (initial value when learned).
        learn_scale: learn the two-tower scale.
        tower_bias: learn a scalar logit bias for the two-tower net.
        booster_kind: "mlp" or "dcn" (DCN-v2).
        booster_dims: booster deep widths.
        cross_layers: DCN cross layers.
        cross_rank: DCN cross rank (0 = full rank).
        dcn_structure: "stacked" or "parallel".
        norm: "none", "batch" or "layer" in every MLP.
        dropout: dropout in every MLP.
        embedding_dims: per-feature embedding dim overrides.
        separate_tables: "Share*" — features with one table per net.
        sparse: sparse embedding gradients.
        sparse_min_rows: with ``sparse``, tables under this many rows keep dense
            gradients (see :class:`~models.embedding.EmbeddingCollection`); 0 = every
            table sparse, the default, so arguments saved before the option load unchanged.
        hint_projection: build the FitNets projection light hidden → booster hidden.
        detach_shared_for_light: cut light/hint gradients into the shared tables.
            A different method from Rocket Launching (the shared embeddings are
            then learnt by the booster alone); offered only as a named ablation.
    """

    features: list[dict[str, Any]]
    cardinalities: dict[str, int]
    served: list[str]
    privileged: list[str] = field(default_factory=list)
    light_kind: str = "mlp"
    light_dims: list[int] = field(default_factory=lambda: [64, 32])
    scale: float = 10.0
    learn_scale: bool = True
    tower_bias: bool = False
    booster_kind: str = "mlp"
    booster_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    cross_layers: int = 3
    cross_rank: int = 0
    dcn_structure: str = "stacked"
    norm: str = "none"
    dropout: float = 0.0
    embedding_dims: dict[str, int] = field(default_factory=dict)
    separate_tables: list[str] = field(default_factory=list)
    sparse: bool = False
    sparse_min_rows: int = 0
    hint_projection: bool = False
    detach_shared_for_light: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JointModelArgs:
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"JointModelArgs: unknown key(s) {unknown}")
        return cls(**copy.deepcopy(dict(data)))


def check_features(
    specs: Mapping[str, FeatureSpec], served: Sequence[str], privileged: Sequence[str]
) -> None:
    """Raise ``ValueError`` naming a served / privileged feature list that is wrong."""
    if not served:
        raise ValueError("the light net needs at least one served feature")
    for kind, names in (("served", served), ("privileged", privileged)):
        dup = sorted({n for n in names if list(names).count(n) > 1})
        if dup:
            raise ValueError(f"{kind} features listed twice: {dup}")
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ValueError(f"{kind} features {unknown} have no FeatureSpec in args.features")
    both = sorted(set(served) & set(privileged))
    if both:
        raise ValueError(f"features {both} are both served and privileged")
