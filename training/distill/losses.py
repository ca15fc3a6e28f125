"""Joint distillation losses: each variant's loss and the gradient block.

Notation: ``z_b`` booster (teacher) logit, ``z_l`` light (student) logit,
``y`` label, ``sg`` stop-gradient (``detach``), ``w(t)`` the scheduled hint
weight (γ in Rocket Launching, λ in PFD / KD; :mod:`training.distill.schedules`).

Variants (:class:`~training.distill.rules.Variant`):

* ``light_alone``: ``L = BCE(y, z_l)``.
* ``booster_alone``: ``L = BCE(y, z_b)``.
* ``two_stage_kd``: ``L = (1−λ)·BCE(y, z_l) + λ·hint(z_l, sg(z_b))`` where
  ``z_b`` comes from a frozen, pretrained booster (the booster BCE is reported
  but not optimised).
* ``rocket``: ``L = BCE(y, z_b) + BCE(y, z_l) + γ·hint(z_l, sg(z_b))``;
  default hint: logit MSE (Rocket Launching found it best).
* ``rocket_no_gradient_block``: the same without ``sg`` — the hint also
  reaches booster-only parameters (the paper's ablation).
* ``pfd`` / ``pfd_md``: ``L = L_t(y, z_t) + (1−λ)·L_s(y, z_s) + λ·L_d(σ(sg z_t), z_s)``;
  default hint: soft-label BCE; the teacher is updated by ``L_t`` only.
  (``pfd_md`` differs by its larger teacher architecture, a config matter.)

The gradient block is ``sg`` on every booster-side quantity the hint reads
(logit, probability, hidden layer). It never detaches the light side's inputs:
shared embeddings get the light BCE and the hint through the light path.
The hints themselves are in :mod:`training.distill.hints`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.joint import JointOutput
from training.distill.hints import binary_kl, hidden_mse, listwise_kl, logit_mse, soft_bce
from training.distill.rules import (
    PFD_VARIANTS,
    ROCKET_VARIANTS,
    Hint,
    Variant,
    default_gradient_block,
    default_hint,
    rule_violation,
)
from training.distill.schedules import LambdaSchedule


@dataclass(frozen=True)
class DistillSettings:
    """What :func:`compute_loss` needs, resolved from the run config.

    Args:
        variant: the method.
        hint: the hint loss (``None`` → :func:`default_hint` of the variant).
        schedule: hint weight schedule (its ``value`` is γ or λ).
        temperature: T for ``kl`` and ``listwise``.
        gradient_block: stop-gradient on the booster side of the hint
            (``None`` → :func:`default_gradient_block`). Must be a real bool.
    """

    variant: Variant
    hint: Hint | None = None
    # LambdaSchedule is a frozen dataclass: one shared default instance is safe.
    schedule: LambdaSchedule = LambdaSchedule()  # noqa: RUF009
    temperature: float = 1.0
    gradient_block: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))
        hint = default_hint(self.variant) if self.hint is None else Hint(self.hint)
        object.__setattr__(self, "hint", hint)
        if self.gradient_block is not None and not isinstance(self.gradient_block, bool):
            raise TypeError(
                f"gradient_block must be a bool, got {type(self.gradient_block).__name__} "
                f"{self.gradient_block!r}"
            )
        broken = rule_violation(self.variant, hint, self.schedule.value, self.gradient_block)
        if broken is not None:
            raise ValueError(f"{broken[0]}: {broken[1]}")
        block = self.gradient_block
        object.__setattr__(
            self, "gradient_block", default_gradient_block(self.variant) if block is None else block
        )
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class LossTerms:
    """Loss terms of one step. ``total`` carries the graph; the rest are for logging.

    Attributes:
        total: the optimised loss (scalar tensor).
        booster: booster BCE (detached; NaN when the booster did not run).
        light: light BCE (detached; NaN when the light net did not run).
        hint: hint loss before weighting (detached; 0 when off).
        lam: the hint weight w(t) used this step.
    """

    total: Tensor
    booster: Tensor
    light: Tensor
    hint: Tensor
    lam: float

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "booster_bce": float(self.booster),
            "light_bce": float(self.light),
            "hint": float(self.hint),
            "lambda": float(self.lam),
        }


def hint_loss(out: JointOutput, settings: DistillSettings, group: Tensor | None = None) -> Tensor:
    """The (unweighted) hint of ``settings.hint`` between light and booster outputs.

    Applies the gradient block to the booster side only.
    """
    hint = settings.hint
    block = settings.gradient_block
    if out.light_logit is None or out.booster_logit is None:
        raise ValueError(f"hint {hint} needs both booster and light outputs")
    teacher = out.booster_logit.detach() if block else out.booster_logit
    student = out.light_logit
    if hint is Hint.LOGIT_MSE:
        return logit_mse(student, teacher)
    if hint is Hint.SOFT_BCE:
        return soft_bce(student, teacher)
    if hint is Hint.KL:
        return binary_kl(student, teacher, settings.temperature)
    if hint is Hint.LISTWISE:
        if group is None:
            raise ValueError("listwise hint needs the batch's group (request) ids")
        return listwise_kl(student, teacher, group, settings.temperature)
    if hint is Hint.HIDDEN:
        if out.light_hint is None or out.booster_hidden is None:
            raise ValueError(
                "hidden hint needs the model built with hint_projection=True "
                "(JointModelArgs.hint_projection)"
            )
        target = out.booster_hidden.detach() if block else out.booster_hidden
        return hidden_mse(out.light_hint, target)
    raise ValueError(f"hint {hint} has no loss")


def compute_loss(
    out: JointOutput,
    labels: Tensor,
    settings: DistillSettings,
    step: int,
    group: Tensor | None = None,
) -> LossTerms:
    """Loss of one batch under ``settings.variant`` (see the module docstring).

    Args:
        out: ``JointModel.forward_joint`` output (for ``two_stage_kd``,
            ``booster_logit`` from the frozen pretrained booster).
        labels: float ``[B]`` in {0, 1}.
        settings: resolved distillation settings.
        step: optimiser step (0-based) for the λ schedule.
        group: request ids ``int64 [B]`` (listwise hint only).

    Returns:
        :class:`LossTerms`.
    """
    variant = settings.variant
    labels = labels.to(torch.float32)
    nan = torch.tensor(float("nan"))
    zero = torch.tensor(0.0)
    l_b = l_l = None
    if out.booster_logit is not None:
        l_b = F.binary_cross_entropy_with_logits(out.booster_logit, labels)
    if out.light_logit is not None:
        l_l = F.binary_cross_entropy_with_logits(out.light_logit, labels)

    def need(term: Tensor | None, what: str) -> Tensor:
        if term is None:
            raise ValueError(f"variant {variant} needs the {what} output of forward_joint")
        return term

    lam = settings.schedule(step) if settings.hint is not Hint.OFF else 0.0
    hint = hint_loss(out, settings, group) if settings.hint is not Hint.OFF else None

    if variant is Variant.LIGHT_ALONE:
        total = need(l_l, "light")
    elif variant is Variant.BOOSTER_ALONE:
        total = need(l_b, "booster")
    elif variant in ROCKET_VARIANTS:
        total = need(l_b, "booster") + need(l_l, "light")
        if hint is not None:
            total = total + lam * hint
    elif variant in PFD_VARIANTS:
        total = need(l_b, "booster") + (1.0 - lam) * need(l_l, "light")
        if hint is not None:
            total = total + lam * hint
    elif variant is Variant.TWO_STAGE_KD:
        total = (1.0 - lam) * need(l_l, "light")
        if hint is not None:
            total = total + lam * hint
    else:  # pragma: no cover - the enum is closed
        raise ValueError(f"unknown variant {variant}")

    return LossTerms(
        total=total,
        booster=l_b.detach() if l_b is not None else nan,
        light=l_l.detach() if l_l is not None else nan,
        hint=hint.detach() if hint is not None else zero,
        lam=float(lam),
    )


__all__ = ["DistillSettings", "LossTerms", "compute_loss", "hint_loss"]
