"""The pieces of one optimiser step: the forward a variant needs, the NaN check, clipping.

:func:`training.loop.trainer._step` is ``forward_for_loss`` → ``compute_loss`` →
backward → gradient sync → :func:`check_finite` → clip per :func:`clip_groups` →
optimiser step; a pre-training epoch (``distill.teacher_pretrain_epochs``) uses
:data:`PRETRAIN_SETTINGS` instead of the run's distillation settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from models.joint import JointModel, JointOutput
from training.distill.losses import DistillSettings, LossTerms
from training.distill.rules import Hint, Variant, nets_needed
from training.distill.schedules import LambdaSchedule
from training.loop.errors import TrainingDivergedError, TrainingError


def forward_for_loss(
    model: JointModel,
    features: Mapping[str, Tensor],
    variant: Variant,
    teacher: JointModel | None,
) -> JointOutput:
    """The outputs ``compute_loss`` needs for ``variant``.

    With a frozen ``teacher`` (``two_stage_kd``'s pretrained booster, or the
    booster frozen at its best validation state by ``distill.teacher_stop``) the
    booster outputs (logit and hidden layer) come from the teacher under
    ``no_grad`` and the model's own booster never runs.
    """
    feats = dict(features)
    if variant is Variant.TWO_STAGE_KD and teacher is None:
        raise TrainingError(
            "variant two_stage_kd needs a pretrained booster: train booster_alone first "
            "and pass it as the teacher (rocketrank ablate does both)"
        )
    run_booster, run_light = nets_needed(variant)
    if teacher is not None and run_booster and run_light:
        with torch.no_grad():
            taught = teacher.forward_joint(feats, run_booster=True, run_light=False)
        out = model.forward_joint(feats, run_booster=False, run_light=True)
        return out._replace(
            booster_logit=taught.booster_logit, booster_hidden=taught.booster_hidden
        )
    return model.forward_joint(feats, run_booster=run_booster, run_light=run_light)


def check_finite(terms: LossTerms, variant: Variant, hint: Hint, step: int, epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` naming the first non-finite term of this step."""
    total = float(terms.total.detach())
    if math.isfinite(total):
        return
    run_booster, run_light = nets_needed(variant)
    candidates = []
    if run_booster:
        candidates.append(("booster_bce", terms.booster))
    if run_light:
        candidates.append(("light_bce", terms.light))
    if hint is not Hint.OFF:
        candidates.append(("hint", terms.hint))
    bad = [(n, float(v)) for n, v in candidates if not math.isfinite(float(v))]
    what = ", ".join(f"{n}={v}" for n, v in bad) or f"total={total}"
    raise TrainingDivergedError(
        f"loss is not finite at step {step} (epoch {epoch}): {what}. Training stopped; the "
        f"last checkpoint holds the state before the divergence. Lower the learning rates "
        f"(optim.lr_dense / optim.lr_sparse), set optim.max_grad_norm, or check the inputs."
    )


PRETRAIN_SETTINGS = DistillSettings(
    variant=Variant.BOOSTER_ALONE, hint=Hint.OFF, schedule=LambdaSchedule(value=0.0)
)
"""The loss of a pre-training epoch: the booster's BCE alone."""


def clip_groups(model: JointModel) -> list[list[torch.nn.Parameter]]:
    """Booster-only, light-only and shared parameters, each clipped on its own.

    Clipping them together would let a large hint gradient on the light side
    shrink the booster's update (one norm, one factor); per group, each net's
    step depends on its own gradients only. Tables with sparse gradients are left
    out (``clip_grad_norm_`` needs dense gradients).
    """
    sparse = {id(p) for _, p in model.sparse_gradient_parameters()}
    groups = []
    for params in (
        model.booster_only_parameters(),
        model.light_only_parameters(),
        model.shared_parameters(),
    ):
        kept = [p for _, p in params if p.requires_grad and id(p) not in sparse]
        if kept:
            groups.append(kept)
    return groups


__all__ = ["PRETRAIN_SETTINGS", "check_finite", "clip_groups", "forward_for_loss"]
