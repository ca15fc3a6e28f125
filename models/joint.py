"""The joint model: shared embeddings + booster (teacher) + light net (student).

``JointModel.forward(features)`` is the evaluation / export path and returns the
light net's logits only — the booster never runs there (TorchEasyRec's
``rocket_launching`` style). ``forward_joint`` runs both nets for training.
Losses live in ``training/distill/losses.py``, not here.

Parameter groups (identity-based, so they stay right whatever the sharing mode):

* booster-only: the booster, and the tables only the booster reads (privileged
  features; the booster copy of each "Share*" feature);
* light-only: the light net, the hint projection, and the light copy of each
  "Share*" feature;
* shared: tables both nets read.

Its constructor arguments, :class:`~models.joint_args.JointModelArgs`, are plain
data (``models/joint_args.py``), so a checkpoint carrying ``args.to_dict()``
rebuilds its model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from torch import Tensor, nn

from models.booster import DCNBooster, MLPBooster
from models.contract.feature_spec import FeatureSpec, Side
from models.cost import count_flops, count_parameters, flops_per_candidate
from models.embedding import (
    BOOSTER,
    LIGHT,
    BagEmbedding,
    CategoricalEmbedding,
    EmbeddingCollection,
    seeded_init,
)
from models.joint_args import BOOSTER_KINDS, LIGHT_KINDS, JointModelArgs, check_features
from models.light import MLPLight, MLPScorer, TwoTower, TwoTowerScorer


class JointOutput(NamedTuple):
    """What ``JointModel.forward_joint`` returns (``None`` for a net that was not run).

    Attributes:
        booster_logit: ``[B]``.
        light_logit: ``[B]``.
        booster_hidden: ``[B, Hb]`` — booster representation before its output layer.
        light_hidden: ``[B, Hl]`` — light representation before its output layer
            (two-tower: ``[u ‖ v]``).
        light_hint: ``[B, Hb]`` — the hint projection of ``light_hidden`` into the
            booster's hidden space (only with ``hint_projection``).
    """

    booster_logit: Tensor | None
    light_logit: Tensor | None
    booster_hidden: Tensor | None
    light_hidden: Tensor | None
    light_hint: Tensor | None = None


class JointModel(nn.Module):
    """Shared embeddings + booster + light net.

    Args:
        args: see :class:`JointModelArgs`.
        init_seed: seed each sub-network on its own (``models.embedding.seeded_init``):
            every table from ``(init_seed, "table", net, name)``, the booster from
            ``(init_seed, "booster")``, the light net from ``(init_seed, "light")``,
            the hint projection from ``(init_seed, "hint_projection")``. Changing the
            booster (or the privileged features) then leaves the light net's and its
            tables' initial weights bit-identical, and building the model does not
            advance the global torch RNG. None: everything draws from the global
            stream in construction order (models rebuilt to load weights into).

    Raises:
        ValueError: naming the problem (unknown feature, a cross-side feature
            served by a two-tower net, an empty tower, ...).
    """

    def __init__(self, args: JointModelArgs, init_seed: int | None = None) -> None:
        super().__init__()
        self.args = args
        specs = {d["name"]: FeatureSpec.from_dict(d) for d in args.features}
        served, privileged = list(args.served), list(args.privileged)
        check_features(specs, served, privileged)
        if args.light_kind not in LIGHT_KINDS:
            raise ValueError(f"light_kind must be one of {LIGHT_KINDS}, got {args.light_kind!r}")
        if args.booster_kind not in BOOSTER_KINDS:
            raise ValueError(
                f"booster_kind must be one of {BOOSTER_KINDS}, got {args.booster_kind!r}"
            )
        missing_sep = sorted(set(args.separate_tables) - set(served))
        if missing_sep:
            raise ValueError(
                f"separate_tables lists {missing_sep}: only served features are read by both nets"
            )
        self.served = served
        self.privileged = privileged
        self.sides = {name: specs[name].side for name in served}

        self.embeddings = EmbeddingCollection(
            [specs[n] for n in served + privileged],
            args.cardinalities,
            dims=args.embedding_dims,
            separate=args.separate_tables,
            sparse=args.sparse,
            sparse_min_rows=args.sparse_min_rows,
            init_seed=init_seed,
        )

        # SparseArch views: booster reads served + privileged, light reads served.
        self.booster_input = self.embeddings.view(served + privileged, BOOSTER)
        with seeded_init(init_seed, "booster"):
            self.booster = _build_booster(self.booster_input.dim, args)

        detach = args.detach_shared_for_light
        self.two_tower = args.light_kind == "two_tower"
        if self.two_tower:
            cross = [n for n in served if self.sides[n] is Side.CROSS]
            if cross:
                raise ValueError(
                    f"two-tower light net cannot read user×item (cross) features {cross}; "
                    "make them privileged"
                )
            user_names = [n for n in served if self.sides[n] in (Side.USER, Side.CONTEXT)]
            item_names = [n for n in served if self.sides[n] is Side.ITEM]
            if not user_names or not item_names:
                raise ValueError(
                    "two-tower light net needs served user/context features and item features; "
                    f"got user/context={user_names}, item={item_names}"
                )
            self.user_input = self.embeddings.view(user_names, LIGHT, detach_shared=detach)
            self.item_input = self.embeddings.view(item_names, LIGHT, detach_shared=detach)
            with seeded_init(init_seed, "light"):
                self.light: nn.Module = TwoTower(
                    self.user_input.dim,
                    self.item_input.dim,
                    args.light_dims,
                    scale=args.scale,
                    learn_scale=args.learn_scale,
                    bias=args.tower_bias,
                    norm=args.norm,
                    dropout=args.dropout,
                )
        else:
            self.light_input = self.embeddings.view(served, LIGHT, detach_shared=detach)
            with seeded_init(init_seed, "light"):
                self.light = MLPLight(
                    self.light_input.dim, args.light_dims, norm=args.norm, dropout=args.dropout
                )
        self.hint_projection: nn.Linear | None = None
        if args.hint_projection:
            with seeded_init(init_seed, "hint_projection"):
                self.hint_projection = nn.Linear(self.light.hidden_dim, self.booster.hidden_dim)

    # ------------------------------------------------------------------ forward paths
    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Light-net logits ``[B]`` — the evaluation and export path (no booster)."""
        return self._light(features)[0]

    def booster_logit(self, features: dict[str, Tensor]) -> Tensor:
        """Booster logits ``[B]`` (teacher evaluation; privileged features required)."""
        return self.booster(self.booster_input(features))[0]

    def forward_joint(
        self, features: dict[str, Tensor], run_booster: bool = True, run_light: bool = True
    ) -> JointOutput:
        """Run booster and/or light net on one batch (training path).

        Args:
            features: encoded batch, served and privileged features.
            run_booster, run_light: skip a net the loss does not need
                (``light_alone`` / ``booster_alone`` baselines); its fields are ``None``.
        """
        booster_logit = booster_hidden = light_logit = light_hidden = light_hint = None
        # one lookup per shared table for both nets (gradients then meet before the
        # embedding backward, which runs once per table)
        cache: dict[int, Tensor] = {}
        if run_booster:
            x = self.booster_input.forward_cached(features, cache)
            booster_logit, booster_hidden = self.booster(x)
        if run_light:
            light_logit, light_hidden = self._light(features, cache)
            if self.hint_projection is not None:
                light_hint = self.hint_projection(light_hidden)
        return JointOutput(booster_logit, light_logit, booster_hidden, light_hidden, light_hint)

    def _light(
        self, features: dict[str, Tensor], cache: dict[int, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        cache = {} if cache is None else cache
        if self.two_tower:
            xu = self.user_input.forward_cached(features, cache)
            xi = self.item_input.forward_cached(features, cache)
            return self.light(xu, xi)
        return self.light(self.light_input.forward_cached(features, cache))

    # ------------------------------------------------------------------ export
    def light_scorer(self) -> nn.Module:
        """A standalone copy of the light net and the tables it reads, in eval mode.

        Holds no booster, privileged-feature or hint-projection parameters;
        ``torch.jit.script`` compiles it; implements the TorchScript interface of
        ``docs/INTERNALS.md`` (``forward``; two-tower also ``user_vector`` and
        ``item_vector``). It is a deep copy: training the joint model further does
        not change it, and quantising it does not touch the joint model.
        """
        if self.two_tower:
            scorer: nn.Module = TwoTowerScorer(self.user_input, self.item_input, self.light)
        else:
            scorer = MLPScorer(self.light_input, self.light)
        scorer = copy.deepcopy(scorer)
        for module in scorer.modules():
            if isinstance(module, CategoricalEmbedding | BagEmbedding):
                module.detach = False  # inference has no gradient to cut
        return scorer.eval()

    def light_features(self) -> dict[str, list[str]]:
        """Served feature names by side: ``{"user": [...], "item": [...], "context": [...]}``."""
        out: dict[str, list[str]] = {"user": [], "item": [], "context": []}
        for name in self.served:
            side = str(self.sides[name])
            out.setdefault(side, []).append(name)
        return out

    # ------------------------------------------------------------------ parameter groups
    def _booster_modules(self) -> list[nn.Module]:
        return [self.booster_input, self.booster]

    def _light_modules(self) -> list[nn.Module]:
        views = [self.user_input, self.item_input] if self.two_tower else [self.light_input]
        extra = [self.hint_projection] if self.hint_projection is not None else []
        return [*views, self.light, *extra]

    def _group(self, kind: str) -> Iterator[tuple[str, nn.Parameter]]:
        booster = {id(p) for m in self._booster_modules() for p in m.parameters()}
        light = {id(p) for m in self._light_modules() for p in m.parameters()}
        for name, p in self.named_parameters():
            in_b, in_l = id(p) in booster, id(p) in light
            if (kind, in_b, in_l) in (
                ("booster", True, False),
                ("light", False, True),
                ("shared", True, True),
            ):
                yield name, p

    def booster_only_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` read by the booster path only."""
        return list(self._group("booster"))

    def light_only_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` read by the light path only (hint projection included)."""
        return list(self._group("light"))

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` read by both paths (shared embedding tables)."""
        return list(self._group("shared"))

    def embedding_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Embedding tables (sparse gradients when ``args.sparse``; the "sparse" lr group)."""
        table_ids = {id(p) for p in self.embeddings.parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in table_ids]

    def sparse_gradient_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Embedding tables whose gradients are sparse (a subset of ``embedding_parameters``)."""
        sparse_ids = {
            id(m.weight)
            for m in self.embeddings.modules()
            if isinstance(m, nn.Embedding) and m.sparse
        }
        return [(n, p) for n, p in self.embedding_parameters() if id(p) in sparse_ids]

    def dense_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter that is not an embedding table (the "dense" lr group)."""
        table_ids = {id(p) for p in self.embeddings.parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in table_ids]

    # ------------------------------------------------------------------ cost
    def cost_report(self, features: dict[str, Tensor]) -> dict[str, float]:
        """Parameter counts and FLOPs per candidate of booster and light net.

        ``light_serving_flops_per_candidate`` is what serving pays per candidate:
        the full light forward for an MLP; for two-tower the dot product with a
        precomputed item vector (``2·d``) — the user tower runs once per request.
        Embedding lookups count as 0 FLOPs; parameters include the tables.
        """
        was_training = self.training
        self.eval()
        try:
            scorer = self.light_scorer()
            booster_flops = flops_per_candidate(self.booster_logit, features)
            light_flops = flops_per_candidate(scorer, features)
            if self.two_tower:
                serving = 2.0 * self.light.out_dim
                user_flops = count_flops(scorer.user_vector, dict(features)) / _rows(features)
            else:
                serving, user_flops = light_flops, 0.0
        finally:
            self.train(was_training)
        booster_ids = {id(p) for m in self._booster_modules() for p in m.parameters()}
        return {
            "booster_params": float(
                count_parameters(p for p in self.parameters() if id(p) in booster_ids)
            ),
            "light_params": float(count_parameters(scorer)),
            "booster_flops_per_candidate": booster_flops,
            "light_flops_per_candidate": light_flops,
            "light_serving_flops_per_candidate": serving,
            "light_user_tower_flops_per_request": user_flops,
        }


def _build_booster(in_dim: int, args: JointModelArgs) -> nn.Module:
    """The booster ``args.booster_kind`` over ``in_dim`` input features."""
    if args.booster_kind == "mlp":
        return MLPBooster(in_dim, args.booster_dims, norm=args.norm, dropout=args.dropout)
    return DCNBooster(
        in_dim,
        args.booster_dims,
        cross_layers=args.cross_layers,
        cross_rank=args.cross_rank,
        structure=args.dcn_structure,
        norm=args.norm,
        dropout=args.dropout,
    )


def _rows(features: Mapping[str, Tensor]) -> int:
    return int(next(iter(features.values())).shape[0])


__all__ = ["JointModel", "JointOutput"]
