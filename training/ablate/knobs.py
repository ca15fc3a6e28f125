"""The tuning search spaces: each knob's config key and range, and which knobs a variant searches.

Also the untuned values of a config (trial 0) and the overrides that set a trial's values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from training.config.run import RunConfig
from training.distill.rules import ROCKET_VARIANTS, Hint, Variant
from training.distill.schedules import Schedule


@dataclass(frozen=True)
class Knob:
    """One tuned setting: a config key and the range searched.

    Attributes:
        name: the parameter's name in trial records (``lambda``, ``lr_dense``, ...).
        section: config section of the key.
        key: YAML key in that section.
        low, high: inclusive range.
        log: sample on a log scale.
        integer: an integer knob (``epochs``).
    """

    name: str
    section: Literal["distill", "optim"]
    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high or (self.log and self.low <= 0):
            raise ValueError(f"knob {self.name}: bad range [{self.low}, {self.high}]")

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high and (not self.integer or float(value).is_integer())


LR_DENSE = Knob("lr_dense", "optim", "lr_dense", 1e-4, 1e-2, log=True)
LR_SPARSE = Knob("lr_sparse", "optim", "lr_sparse", 1e-3, 1e-1, log=True)
EPOCHS = Knob("epochs", "optim", "epochs", 1, 4, integer=True)
MIX_LAMBDA = Knob("lambda", "distill", "lambda", 0.05, 0.95)
"""λ of the variants that mix (1−λ)·BCE + λ·hint (PFD, two-stage KD): below 1."""
ROCKET_GAMMA = Knob("lambda", "distill", "lambda", 0.03, 3.0, log=True)
"""γ of the Rocket variants, added to the two BCEs: any positive weight."""
WARMUP_EPOCHS = Knob("warmup_epochs", "distill", "warmup_epochs", 0.0, 1.0)
"""Epochs before the hint bites (``schedule: step``; ``linear``: the ramp length)."""
TEMPERATURE = Knob("temperature", "distill", "temperature", 0.5, 4.0, log=True)
"""T of the kl and listwise hints (the only hints that read it)."""

OPTIM_KNOBS: tuple[Knob, ...] = (LR_DENSE, LR_SPARSE, EPOCHS)


def search_space(cfg: RunConfig) -> tuple[Knob, ...]:
    """The knobs of one variant's config.

    * ``light_alone`` / ``booster_alone``: ``lr_dense``, ``lr_sparse``, ``epochs``;
    * distilled variants: those plus the hint weight (γ for Rocket, λ otherwise),
      the warm-up in epochs and, for the ``kl`` and ``listwise`` hints, the temperature.

    ``epochs`` reaches up to the config's own epochs when those are more than
    :data:`EPOCHS` allows (a config that trains 8 epochs with early stopping).
    """
    variant = Variant(cfg.distill.variant)
    epochs = dataclasses.replace(EPOCHS, high=max(EPOCHS.high, cfg.optim.epochs))
    optim_knobs = (LR_DENSE, LR_SPARSE, epochs)
    if cfg.distill.resolved_hint is Hint.OFF:
        return optim_knobs
    weight = ROCKET_GAMMA if variant in ROCKET_VARIANTS else MIX_LAMBDA
    knobs = (weight, WARMUP_EPOCHS, *optim_knobs)
    if cfg.distill.resolved_hint in (Hint.KL, Hint.LISTWISE):
        knobs += (TEMPERATURE,)
    return knobs


def current_values(cfg: RunConfig, knobs: Sequence[Knob], steps_per_epoch: int) -> dict[str, Any]:
    """The values ``cfg`` already has for ``knobs`` (the untuned trial)."""
    d, o = cfg.distill, cfg.optim
    warmup = 0.0
    if d.schedule in (Schedule.STEP, Schedule.LINEAR):
        warmup = d.warmup_epochs or d.warmup_steps / max(steps_per_epoch, 1)
    values = {
        "lr_dense": o.lr_dense,
        "lr_sparse": o.lr_sparse,
        "epochs": o.epochs,
        "lambda": d.resolved_lambda,
        "warmup_epochs": warmup,
        "temperature": d.temperature,
    }
    return {k.name: values[k.name] for k in knobs}


def knob_overrides(cfg: RunConfig, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` that sets ``params`` in ``cfg``.

    The warm-up knob sets ``warmup_epochs`` (and ``warmup_steps: 0``) under the
    ``step`` schedule, or the ``linear`` one when that is the config's (a ramp
    of length 0 is then ``constant``).
    """
    by_name = {k.name: k for k in (*OPTIM_KNOBS, ROCKET_GAMMA, WARMUP_EPOCHS, TEMPERATURE)}
    out: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        knob = by_name[name]
        out.setdefault(knob.section, {})[knob.key] = int(value) if knob.integer else float(value)
    if "warmup_epochs" in params:
        warmup = float(params["warmup_epochs"])
        schedule = Schedule.LINEAR if cfg.distill.schedule is Schedule.LINEAR else Schedule.STEP
        if schedule is Schedule.LINEAR and warmup == 0.0:
            schedule = Schedule.CONSTANT
        out["distill"].update(warmup_steps=0, schedule=schedule.value)
    return out


__all__ = [
    "EPOCHS",
    "LR_DENSE",
    "LR_SPARSE",
    "MIX_LAMBDA",
    "OPTIM_KNOBS",
    "ROCKET_GAMMA",
    "TEMPERATURE",
    "WARMUP_EPOCHS",
    "Knob",
    "current_values",
    "knob_overrides",
    "search_space",
]
