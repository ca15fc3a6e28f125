"""Distillation by name: the variants and hints, each variant's defaults, and its rules.

The formulas the names stand for are in :mod:`training.distill.losses` (variants) and
:mod:`training.distill.hints` (hints).
"""

from __future__ import annotations

from enum import StrEnum


class Variant(StrEnum):
    LIGHT_ALONE = "light_alone"
    BOOSTER_ALONE = "booster_alone"
    TWO_STAGE_KD = "two_stage_kd"
    ROCKET = "rocket"
    ROCKET_NO_GRADIENT_BLOCK = "rocket_no_gradient_block"
    PFD = "pfd"
    PFD_MD = "pfd_md"


class Hint(StrEnum):
    LOGIT_MSE = "logit_mse"
    SOFT_BCE = "soft_bce"
    KL = "kl"
    HIDDEN = "hidden"
    LISTWISE = "listwise"
    OFF = "off"


ROCKET_VARIANTS = frozenset({Variant.ROCKET, Variant.ROCKET_NO_GRADIENT_BLOCK})
PFD_VARIANTS = frozenset({Variant.PFD, Variant.PFD_MD})


def default_hint(variant: Variant) -> Hint:
    """The hint a variant uses when the config does not name one."""
    variant = Variant(variant)
    if variant in ROCKET_VARIANTS:
        return Hint.LOGIT_MSE
    if variant in PFD_VARIANTS or variant is Variant.TWO_STAGE_KD:
        return Hint.SOFT_BCE
    return Hint.OFF


def default_gradient_block(variant: Variant) -> bool:
    """True except for ``rocket_no_gradient_block`` (the ablation without ``sg``)."""
    return Variant(variant) is not Variant.ROCKET_NO_GRADIENT_BLOCK


def default_lambda(variant: Variant) -> float:
    """γ = 1.0 for the Rocket variants (added to two BCEs), λ = 0.5 otherwise (a mix)."""
    return 1.0 if Variant(variant) in ROCKET_VARIANTS else 0.5


def rule_violation(
    variant: Variant, hint: Hint | None, lam: float | None, gradient_block: bool | None
) -> tuple[str, str] | None:
    """The first distillation rule a setting breaks, as ``(key, message)``, else None.

    The one home of these rules: the run config
    (``training.config.distill_section.DistillConfig``, which prefixes
    ``distill.<key>``) and :class:`~training.distill.losses.DistillSettings` both ask here.
    ``None`` means "the variant's default" for ``hint``, ``lam`` and ``gradient_block``.

    Rules: a single-net variant (``light_alone``, ``booster_alone``) has no hint;
    ``rocket_no_gradient_block`` cannot have ``gradient_block: true``; the PFD and
    two-stage KD variants mix two losses as ``(1−λ)`` and ``λ``, so ``λ <= 1``.
    """
    variant = Variant(variant)
    if lam is not None and lam > 1 and variant in PFD_VARIANTS | {Variant.TWO_STAGE_KD}:
        return "lambda", f"{variant} mixes two losses with λ and 1−λ, so λ must be <= 1 (got {lam})"
    single = variant in (Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE)
    if single and hint not in (None, Hint.OFF):
        return "hint", f"variant {variant} trains one net: it has no hint (hint must be 'off')"
    if gradient_block is True and variant is Variant.ROCKET_NO_GRADIENT_BLOCK:
        return "gradient_block", "true contradicts variant rocket_no_gradient_block"
    return None


def nets_needed(variant: Variant) -> tuple[bool, bool]:
    """``(run_booster, run_light)`` for ``JointModel.forward_joint`` under ``variant``.

    ``two_stage_kd`` needs booster logits too, but from the frozen pretrained
    booster: run its forward under ``torch.no_grad()`` (see
    :func:`~training.distill.losses.compute_loss`).
    """
    variant = Variant(variant)
    if variant is Variant.LIGHT_ALONE:
        return False, True
    if variant is Variant.BOOSTER_ALONE:
        return True, False
    return True, True


__all__ = [
    "PFD_VARIANTS",
    "ROCKET_VARIANTS",
    "Hint",
    "Variant",
    "default_gradient_block",
    "default_hint",
    "default_lambda",
    "nets_needed",
    "rule_violation",
]
