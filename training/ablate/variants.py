"""The variants an ablation trains and the run config of each.

``rocketrank ablate`` and ``rocketrank bench train`` derive every variant's
config from the base config with :func:`with_variant` (:func:`variant_config`
adds the PFD teacher's size). The PFD variants apply only when the task, as the
light net sees it, has privileged features.
"""

from __future__ import annotations

import dataclasses

from training.config import RunConfig, model_args
from training.data.prepare import PreparedData
from training.distill import PFD_VARIANTS, ROCKET_VARIANTS, Variant


def with_variant(cfg: RunConfig, variant: Variant | str) -> RunConfig:
    """``cfg`` with another distillation variant, keeping hint settings that still apply.

    The config's hint, λ, schedule and temperature are kept for variants of the
    same family (Rocket: rocket, rocket_no_gradient_block; PFD: pfd, pfd_md);
    other variants use their own defaults (``training.distill.default_hint``).
    """
    variant = Variant(variant)
    d = cfg.distill
    same_family = any(
        variant in fam and d.variant in fam for fam in (ROCKET_VARIANTS, PFD_VARIANTS)
    ) or (variant is d.variant)
    if same_family:
        distill = dataclasses.replace(d, variant=variant, gradient_block=None)
    else:
        distill = dataclasses.replace(
            d,
            variant=variant,
            hint=None,
            lam=None,
            schedule=type(d.schedule)("constant"),
            warmup_steps=0,
            gradient_block=None,
        )
    return dataclasses.replace(cfg, distill=distill)


VARIANTS: tuple[Variant, ...] = (
    Variant.LIGHT_ALONE,
    Variant.BOOSTER_ALONE,
    Variant.TWO_STAGE_KD,
    Variant.ROCKET,
    Variant.ROCKET_NO_GRADIENT_BLOCK,
    Variant.PFD,
    Variant.PFD_MD,
)
PRIVILEGED_ONLY = frozenset({Variant.PFD, Variant.PFD_MD})


def privileged_features(cfg: RunConfig, data: PreparedData) -> list[str]:
    """Features only the booster reads for this config (task + light-net kind)."""
    args = model_args(cfg, data.dataset.schema, data.dataset.encoder.cardinality)
    return list(args.privileged)


def applicable_variants(cfg: RunConfig, data: PreparedData) -> list[Variant]:
    """Every variant of :data:`VARIANTS` that applies to this config and data."""
    has_privileged = bool(privileged_features(cfg, data))
    return [v for v in VARIANTS if v not in PRIVILEGED_ONLY or has_privileged]


def variant_config(cfg: RunConfig, variant: Variant) -> RunConfig:
    """The run config of one variant (see the module docstring)."""
    out = with_variant(cfg, variant)
    if variant is Variant.PFD:
        # PFD without model distillation: the teacher has the student's capacity
        model = dataclasses.replace(
            out.model, booster="mlp", booster_dims=tuple(cfg.model.light_dims)
        )
        out = dataclasses.replace(out, model=model)
    return out


__all__ = [
    "PRIVILEGED_ONLY",
    "VARIANTS",
    "applicable_variants",
    "privileged_features",
    "variant_config",
    "with_variant",
]
