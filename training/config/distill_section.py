"""The distill section of the run config: the method, its hint weight and the teacher stop.

:class:`DistillConfig` checks a setting against the distillation rules
(:func:`training.distill.rules.rule_violation`) and resolves it, with the run's step
counts, to the :class:`~training.distill.losses.DistillSettings` the loss uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from training.config.errors import ConfigError
from training.config.strict import (
    Bool,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    section,
)
from training.distill.losses import DistillSettings
from training.distill.rules import (
    Hint,
    Variant,
    default_gradient_block,
    default_hint,
    default_lambda,
    rule_violation,
)
from training.distill.schedules import LambdaSchedule, Schedule


@section("distill")
class DistillConfig:
    """The distillation method (see ``training/distill/losses.py`` for the exact losses).

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
    lam: NonNegativeFloat | None = Field(default=None, alias="lambda")
    schedule: Schedule = Schedule.CONSTANT
    warmup_steps: NonNegativeInt = 0
    warmup_epochs: NonNegativeFloat = 0.0
    temperature: PositiveFloat = 1.0
    gradient_block: Bool | None = None
    teacher_stop: Literal["never", "best_valid"] = "never"
    teacher_patience: PositiveInt = 1
    teacher_max_epochs: NonNegativeInt = 0
    teacher_pretrain_epochs: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if self.teacher_max_epochs and self.teacher_stop == "never":
            raise ConfigError(
                "distill.teacher_max_epochs: only with teacher_stop 'best_valid' "
                "(the cap says when the booster is frozen at its best state)"
            )
        if self.warmup_steps and self.warmup_epochs:
            raise ConfigError("distill: give warmup_steps or warmup_epochs, not both")
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
        """The :class:`DistillSettings` for :func:`training.distill.losses.compute_loss`.

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


__all__ = ["DistillConfig"]
