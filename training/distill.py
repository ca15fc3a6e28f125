"""Joint distillation losses: variants, hints, λ schedules and the gradient block.

Notation: ``z_b`` booster (teacher) logit, ``z_l`` light (student) logit,
``y`` label, ``sg`` stop-gradient (``detach``), ``w(t)`` the scheduled hint
weight (γ in Rocket Launching, λ in PFD / KD).

Variants (:class:`Variant`):

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

Hints (:class:`Hint`), each ``≥ 0`` and minimised when the student matches the teacher:

* ``logit_mse``: ``mean((z_l − z_b)²)``.
* ``soft_bce``: ``BCE(σ(z_b), z_l)`` (soft labels; PFD's ``L_d``).
* ``kl``: binary ``KL(σ(z_b/T) ‖ σ(z_l/T))·T²`` (Hinton), batch mean.
* ``hidden``: ``mean((P h_l − h_b)²)`` with ``P`` the learned projection
  (``JointModel.hint_projection``, light side) — FitNets.
* ``listwise``: per request, ``KL(softmax(z_b/T) ‖ softmax(z_l/T))·T²`` over the
  request's items, averaged over requests with ≥ 2 items (vectorised).
* ``off``: no hint.

Schedules (:class:`LambdaSchedule`) give ``w(t) = value · f(t)`` at optimiser step t:
``constant`` f=1; ``step`` f = 0 for t < warmup_steps else 1; ``linear``
f = min(1, t / warmup_steps); ``anneal`` (teacher annealing) f = max(0, 1 − t / total_steps),
i.e. the teacher's weight decays linearly from ``value`` to 0 over training
and the student ends on the true labels only.
"""

# Over 400 lines: every variant's loss, hint and schedule in one module, so the formulas
# of the docstring and the code that computes them are read side by side.

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

from models.joint import JointOutput


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


class Schedule(StrEnum):
    CONSTANT = "constant"
    STEP = "step"
    LINEAR = "linear"
    ANNEAL = "anneal"


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

    The one home of these rules: the run config (``training.config.DistillConfig``,
    which prefixes ``distill.<key>``) and :class:`DistillSettings` both ask here.
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
    booster: run its forward under ``torch.no_grad()`` (see :func:`compute_loss`).
    """
    variant = Variant(variant)
    if variant is Variant.LIGHT_ALONE:
        return False, True
    if variant is Variant.BOOSTER_ALONE:
        return True, False
    return True, True


# --------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class LambdaSchedule:
    """The hint weight ``w(t)`` at optimiser step ``t`` (0-based).

    Args:
        kind: constant, step, linear or anneal (see the module docstring).
        value: the weight λ (or γ) the schedule scales.
        warmup_steps: k for ``step`` (0 for k steps) and ``linear`` (ramp length).
        total_steps: training length for ``anneal`` (the step at which w reaches 0).
    """

    kind: Schedule = Schedule.CONSTANT
    value: float = 1.0
    warmup_steps: int = 0
    total_steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Schedule(self.kind))
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"lambda schedule: value must be finite and >= 0, got {self.value}")
        if self.warmup_steps < 0:
            raise ValueError(f"lambda schedule: warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.kind is Schedule.LINEAR and self.warmup_steps == 0:
            raise ValueError("lambda schedule 'linear' needs warmup_steps > 0 (the ramp length)")
        if self.kind is Schedule.ANNEAL and self.total_steps <= 0:
            raise ValueError("lambda schedule 'anneal' needs total_steps > 0")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.kind is Schedule.CONSTANT:
            factor = 1.0
        elif self.kind is Schedule.STEP:
            factor = 0.0 if step < self.warmup_steps else 1.0
        elif self.kind is Schedule.LINEAR:
            factor = min(1.0, step / self.warmup_steps)
        else:
            factor = max(0.0, 1.0 - step / self.total_steps)
        return self.value * factor


# --------------------------------------------------------------------------- hints


def logit_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """``mean((z_l − z_b)²)`` over ``[B]`` logits."""
    return F.mse_loss(student, teacher)


def soft_bce(student: Tensor, teacher: Tensor) -> Tensor:
    """BCE of student logits ``[B]`` against the teacher's probabilities ``σ(z_b)``."""
    return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))


def binary_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(σ(z_b/T) ‖ σ(z_l/T))·T²``, mean over the batch (``[B]`` logits → scalar).

    Each logit is the two-class distribution ``softmax([z, 0]/T)``.
    """
    zeros = torch.zeros_like(student)
    log_q = F.log_softmax(torch.stack([student, zeros], dim=-1) / temperature, dim=-1)
    log_p = F.log_softmax(torch.stack([teacher, zeros], dim=-1) / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return kl.mean() * temperature**2


def hidden_mse(student_projected: Tensor, teacher_hidden: Tensor) -> Tensor:
    """FitNets hint ``mean((P h_l − h_b)²)``; ``[B, H]`` each. Pulls features together."""
    if student_projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"hidden hint: projected light hidden {tuple(student_projected.shape)} does not "
            f"match booster hidden {tuple(teacher_hidden.shape)}"
        )
    return F.mse_loss(student_projected, teacher_hidden)


def _segment_log_softmax(x: Tensor, seg: Tensor, n: int) -> Tensor:
    """Log-softmax of ``x [B]`` within segments ``seg [B]`` (values 0..n-1)."""
    seg_max = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    seg_max = seg_max.scatter_reduce(0, seg, x, reduce="amax", include_self=True)
    # The max is a constant shift for numerical stability; it carries no gradient.
    shifted = x - seg_max.detach()[seg]
    sums = torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, seg, shifted.exp())
    return shifted - sums.log()[seg]


def listwise_kl(
    student: Tensor, teacher: Tensor, group: Tensor, temperature: float = 1.0
) -> Tensor:
    """Per-request ``KL(softmax(z_b/T) ‖ softmax(z_l/T))·T²``, mean over requests.

    Args:
        student, teacher: logits ``[B]``.
        group: request id per row ``int64 [B]`` (any values; rows need not be sorted).
        temperature: T.

    Requests with a single row have zero KL by definition and are left out of the
    mean; a batch without any multi-row request gives 0.
    """
    if group.shape != student.shape:
        raise ValueError(
            f"listwise hint: group {tuple(group.shape)} vs logits {tuple(student.shape)}"
        )
    _, seg = torch.unique(group, return_inverse=True)
    n = int(seg.max().item()) + 1 if seg.numel() else 0
    log_q = _segment_log_softmax(student / temperature, seg, n)
    log_p = _segment_log_softmax(teacher / temperature, seg, n)
    per_row = log_p.exp() * (log_p - log_q)
    per_group = torch.zeros(n, dtype=student.dtype, device=student.device).index_add(
        0, seg, per_row
    )
    sizes = torch.bincount(seg, minlength=n)
    multi = sizes > 1
    if not bool(multi.any()):
        return student.sum() * 0.0
    return per_group[multi].mean() * temperature**2


# --------------------------------------------------------------------------- the loss


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
    schedule: LambdaSchedule = LambdaSchedule()
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


__all__ = [
    "PFD_VARIANTS",
    "ROCKET_VARIANTS",
    "DistillSettings",
    "Hint",
    "LambdaSchedule",
    "LossTerms",
    "Schedule",
    "Variant",
    "binary_kl",
    "compute_loss",
    "default_gradient_block",
    "default_hint",
    "hidden_mse",
    "hint_loss",
    "listwise_kl",
    "logit_mse",
    "nets_needed",
    "soft_bce",
]
