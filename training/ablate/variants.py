"""Variants of one run config: the same run with another distillation variant.

``rocketrank ablate`` and ``rocketrank bench train`` derive every variant's
config from the base config with :func:`with_variant`.
"""

from __future__ import annotations

import dataclasses

from training.config import RunConfig
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


__all__ = ["with_variant"]
