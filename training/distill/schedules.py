"""λ schedules: the hint weight ``w(t)`` at each optimiser step.

Schedules (:class:`LambdaSchedule`) give ``w(t) = value · f(t)`` at optimiser step t:
``constant`` f=1; ``step`` f = 0 for t < warmup_steps else 1; ``linear``
f = min(1, t / warmup_steps); ``anneal`` (teacher annealing) f = max(0, 1 − t / total_steps),
i.e. the teacher's weight decays linearly from ``value`` to 0 over training
and the student ends on the true labels only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Schedule(StrEnum):
    CONSTANT = "constant"
    STEP = "step"
    LINEAR = "linear"
    ANNEAL = "anneal"


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


__all__ = ["LambdaSchedule", "Schedule"]
